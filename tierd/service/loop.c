/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/queue.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "loop.h"

enum loop_kind {
	LOOP_FD,
	LOOP_TIMER,
	LOOP_SIGNAL,
};

struct loop_source {
	struct loop *loop;
	enum loop_kind kind;
	int fd;
	int signo;
	bool removed;
	union {
		loop_fd_fn fd_fn;
		loop_timer_fn timer_fn;
		loop_signal_fn signal_fn;
	};
	void *arg;
	/* On the loop's sources until removed, then on its graveyard. */
	LIST_ENTRY(loop_source) link;
};

struct loop {
	int epfd;
	bool quit;
	int code;
	LIST_HEAD(, loop_source) sources;
	/* Removed during dispatch; freed when the batch is done, because later
	 * events of the same batch may still point at them. */
	LIST_HEAD(, loop_source) graveyard;
};

int loop_create(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return -ENOMEM;
	LIST_INIT(&l->sources);
	LIST_INIT(&l->graveyard);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		err = -errno;
		free(l);
		return err;
	}
	*out = l;
	return 0;
}

static void source_free(struct loop_source *s)
{
	if (s->kind != LOOP_FD && s->fd >= 0)
		close(s->fd);
	if (s->kind == LOOP_SIGNAL) {
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, s->signo);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
	}
	free(s);
}

static void loop_reap(struct loop *l)
{
	struct loop_source *s;

	while ((s = LIST_FIRST(&l->graveyard))) {
		LIST_REMOVE(s, link);
		source_free(s);
	}
}

void loop_destroy(struct loop *l)
{
	if (!l)
		return;
	loop_reap(l);
	struct loop_source *s;

	while ((s = LIST_FIRST(&l->sources))) {
		LIST_REMOVE(s, link);
		source_free(s);
	}
	close(l->epfd);
	free(l);
}

/* Takes s: on success the loop owns it, on failure it is freed here (with
 * its timerfd or signalfd), so no caller has a path that keeps it. */
static int loop_register(struct loop *l, struct loop_source *s, uint32_t events,
			 struct loop_source **out)
{
	struct epoll_event ev = { .events = events, .data.ptr = s };

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s->fd, &ev)) {
		int err = -errno;

		source_free(s);
		return err;
	}
	s->loop = l;
	LIST_INSERT_HEAD(&l->sources, s, link);
	if (out)
		*out = s;
	return 0;
}

int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg,
		struct loop_source **out)
{
	struct loop_source *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->kind = LOOP_FD;
	s->fd = fd;
	s->fd_fn = fn;
	s->arg = arg;
	return loop_register(l, s, events, out);
}

int loop_modify_fd(struct loop_source *s, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = s };

	if (epoll_ctl(s->loop->epfd, EPOLL_CTL_MOD, s->fd, &ev))
		return -errno;
	return 0;
}

int loop_timer_set(struct loop_source *s, uint64_t initial_ms, uint64_t interval_ms)
{
	struct itimerspec its = {
		.it_value = { (time_t)(initial_ms / 1000), (long)(initial_ms % 1000) * 1000000L },
		.it_interval = { (time_t)(interval_ms / 1000), (long)(interval_ms % 1000) * 1000000L },
	};

	/* 0 would disarm: fire as soon as possible instead. */
	if (!initial_ms)
		its.it_value.tv_nsec = 1;
	if (timerfd_settime(s->fd, 0, &its, NULL))
		return -errno;
	return 0;
}

int loop_timer_stop(struct loop_source *s)
{
	struct itimerspec its = { 0 };

	return timerfd_settime(s->fd, 0, &its, NULL) ? -errno : 0;
}

int loop_add_timer(struct loop *l, uint64_t initial_ms, uint64_t interval_ms, loop_timer_fn fn,
		   void *arg, struct loop_source **out)
{
	struct loop_source *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->kind = LOOP_TIMER;
	s->timer_fn = fn;
	s->arg = arg;
	s->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->fd < 0) {
		err = -errno;
		free(s);
		return err;
	}
	err = loop_timer_set(s, initial_ms, interval_ms);
	if (err) {
		source_free(s);
		return err;
	}
	return loop_register(l, s, EPOLLIN, out);
}

int loop_add_signal(struct loop *l, int signo, loop_signal_fn fn, void *arg, struct loop_source **out)
{
	struct loop_source *s = calloc(1, sizeof(*s));
	sigset_t set;
	int err;

	if (!s)
		return -ENOMEM;
	s->kind = LOOP_SIGNAL;
	s->signo = signo;
	s->signal_fn = fn;
	s->arg = arg;
	sigemptyset(&set);
	sigaddset(&set, signo);
	if (sigprocmask(SIG_BLOCK, &set, NULL)) {
		err = -errno;
		free(s);
		return err;
	}
	s->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->fd < 0) {
		err = -errno;
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		free(s);
		return err;
	}
	return loop_register(l, s, EPOLLIN, out);
}

void loop_remove(struct loop_source *s)
{
	struct loop *l;

	if (!s || s->removed)
		return;
	l = s->loop;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	s->removed = true;
	/* Constant time: a client's socket goes with every disconnect. */
	LIST_REMOVE(s, link);
	LIST_INSERT_HEAD(&l->graveyard, s, link);
}

static void loop_dispatch(struct loop_source *s, uint32_t events)
{
	switch (s->kind) {
	case LOOP_FD:
		s->fd_fn(s, s->fd, events, s->arg);
		return;
	case LOOP_TIMER: {
		uint64_t expirations;

		if (read(s->fd, &expirations, sizeof(expirations)) == sizeof(expirations))
			s->timer_fn(s, s->arg);
		return;
	}
	case LOOP_SIGNAL: {
		struct signalfd_siginfo si;

		while (!s->removed && read(s->fd, &si, sizeof(si)) == sizeof(si))
			s->signal_fn(s, (int)si.ssi_signo, s->arg);
		return;
	}
	}
}

int loop_run_once(struct loop *l, int timeout_ms)
{
	struct epoll_event ev[64];
	int n = epoll_wait(l->epfd, ev, 64, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct loop_source *s = ev[i].data.ptr;

		if (!s->removed)
			loop_dispatch(s, ev[i].events);
	}
	loop_reap(l);
	return n;
}

int loop_run(struct loop *l)
{
	l->quit = false;
	while (!l->quit) {
		int r = loop_run_once(l, -1);

		if (r < 0)
			return r;
	}
	return l->code;
}

void loop_quit(struct loop *l, int code)
{
	l->quit = true;
	l->code = code;
}
