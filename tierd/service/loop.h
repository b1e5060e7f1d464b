/* SPDX-License-Identifier: MIT */
/*
 * The event loop: one epoll instance that owns every fd, timer (timerfd) and
 * signal (signalfd) of the daemon.  One thread; callbacks run from loop_run().
 *
 * Sources are opaque handles.  Removing a source from inside any callback is
 * safe, including the one running: the handle is freed after the current
 * batch of events is dispatched.
 */
#ifndef TIERD_LOOP_H
#define TIERD_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_source;

/* events: EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP as returned by epoll. */
typedef void (*loop_fd_fn)(struct loop_source *src, int fd, uint32_t events, void *arg);
typedef void (*loop_timer_fn)(struct loop_source *src, void *arg);
typedef void (*loop_signal_fn)(struct loop_source *src, int signo, void *arg);

int loop_create(struct loop **out);
/* Frees every source still registered (closing the timer and signal fds it
 * made; fds added with loop_add_fd stay open: their owner closes them). */
void loop_destroy(struct loop *l);

int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *arg,
		struct loop_source **out);
int loop_modify_fd(struct loop_source *src, uint32_t events);
/* Timer: first after initial_ms, then every interval_ms (0: once). */
int loop_add_timer(struct loop *l, uint64_t initial_ms, uint64_t interval_ms, loop_timer_fn fn,
		   void *arg, struct loop_source **out);
int loop_timer_set(struct loop_source *src, uint64_t initial_ms, uint64_t interval_ms);
/* Disarms a timer until the next loop_timer_set(). */
int loop_timer_stop(struct loop_source *src);
/* Blocks signo for the process and delivers it through a signalfd. */
int loop_add_signal(struct loop *l, int signo, loop_signal_fn fn, void *arg, struct loop_source **out);
/* Unregisters; NULL is a no-op. */
void loop_remove(struct loop_source *src);

/* Runs until loop_quit(); returns the code given to loop_quit, or a negative errno. */
int loop_run(struct loop *l);
/* One round: waits at most timeout_ms (-1: forever) and dispatches. */
int loop_run_once(struct loop *l, int timeout_ms);
void loop_quit(struct loop *l, int code);

#endif
