/* SPDX-License-Identifier: MIT */
/* The event loop: fds, timers, signals, removal from inside a callback. */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <cmocka.h>

#include "loop.h"

struct counts {
	struct loop *l;
	int fd_calls, timer_calls, signal_calls, last_signal;
	struct loop_source *other;
};

static void on_fd(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct counts *c = arg;
	char b[16];

	assert_true(events & EPOLLIN);
	assert_true(read(fd, b, sizeof(b)) > 0);
	c->fd_calls++;
	/* Removing another source and ourselves from a callback is allowed. */
	loop_remove(c->other);
	c->other = NULL;
	loop_remove(src);
}

static void on_timer(struct loop_source *src, void *arg)
{
	struct counts *c = arg;

	if (++c->timer_calls == 3) {
		/* Disarmed, so that nothing is pending when the test asserts
		 * below that no source wakes any more. */
		assert_int_equal(loop_timer_stop(src), 0);
		loop_quit(c->l, 7);
	}
}

static void on_signal(struct loop_source *src, int signo, void *arg)
{
	struct counts *c = arg;

	c->signal_calls++;
	c->last_signal = signo;
}

static void test_loop(void **state)
{
	struct counts c = { 0 };
	int p[2], q[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(q), 0);
	assert_int_equal(loop_create(&c.l), 0);
	assert_int_equal(loop_add_fd(c.l, p[0], EPOLLIN, on_fd, &c, NULL), 0);
	assert_int_equal(loop_add_fd(c.l, q[0], EPOLLIN, on_fd, &c, &c.other), 0);
	assert_int_equal(loop_add_signal(c.l, SIGUSR1, on_signal, &c, NULL), 0);
	assert_int_equal(loop_add_timer(c.l, 1, 1, on_timer, &c, NULL), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(loop_run(c.l), 7);
	assert_int_equal(c.fd_calls, 1);
	assert_int_equal(c.timer_calls, 3);
	assert_int_equal(c.signal_calls, 1);
	assert_int_equal(c.last_signal, SIGUSR1);
	/* Both fd sources are gone and the timer is disarmed: more data wakes
	 * nobody, even after the timer's period has passed many times. */
	usleep(20000);
	assert_int_equal(write(q[1], "y", 1), 1);
	assert_int_equal(write(p[1], "y", 1), 1);
	assert_int_equal(loop_run_once(c.l, 0), 0);
	loop_destroy(c.l);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

static void test_duplicate_fd(void **state)
{
	struct loop *l;
	int p[2];

	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(loop_add_fd(l, p[0], EPOLLIN, on_fd, NULL, NULL), 0);
	assert_int_equal(loop_add_fd(l, p[0], EPOLLIN, on_fd, NULL, NULL), -EEXIST);
	loop_destroy(l);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loop),
		cmocka_unit_test(test_duplicate_fd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
