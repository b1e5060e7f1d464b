/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client.  One mutex guards the client; one thread at a time polls
 * the socket (c->reading) while others wait on the condition variable for
 * their answer.  Answers are matched to requests by request id.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tierd-client.h"
#include "tierd-proto.h"

#define EXPORT __attribute__((visibility("default")))
/* Overridable so that the white-box test (tests/test-client.c) need not wait. */
#ifndef CONNECT_TIMEOUT_MS
#define CONNECT_TIMEOUT_MS	5000
#endif
/* Calls without a timeout argument, and sends that find the socket full. */
#ifndef REQUEST_TIMEOUT_MS
#define REQUEST_TIMEOUT_MS	TIERD_CLIENT_DEFAULT_TIMEOUT_MS
#endif

_Static_assert(sizeof(struct tierd_key) == sizeof(struct tierd_proto_key), "key layout");

struct mapping {
	void *base;
	uint64_t size;
	unsigned refs;
};

struct pending {
	struct pending *next;
	uint64_t id;
	uint16_t answer;		/* the message type that answers it (or ERROR) */
	bool warm;			/* PROGRESS may come before the answer */
	bool done;
	bool abandoned;			/* the waiter timed out: clean up on arrival */
	int err;
	char reason[TIERD_PROTO_MAX_REASON + 1];
	uint64_t value;
	struct tierd_msg_acquired *acq;
	struct tierd_msg_stats stats;
	bool progress_new;
	uint64_t progress_done, progress_total;
	char *mbuf;			/* METRICS: the text so far (NUL-terminated) */
	uint64_t mtotal, mgot;
	size_t nkeys;			/* acquire: what was asked, to check the answer */
	struct tierd_key *keys;
	tierd_acquire_fn fn;		/* async acquire */
	void *arg;
	struct tierd_acquisition *result;
};

/* Arrays of an acquisition that a reconnection replaced, and the old
 * daemon's pool mappings its tensors point into: the application may still
 * hold those pointers (a GPU copy in flight, a Python memoryview), so they
 * live until release. */
struct retired {
	struct retired *next;
	struct tierd_msg_acquired *raw;
	struct tierd_expert *experts;
	struct tierd_tensor *tensors;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS];
};

struct tierd_acquisition {
	struct tierd_acquisition *prev, *next;
	int status;
	size_t n;
	struct tierd_key *keys;
	char **model_names;		/* per expert: models are found again by name */
	struct tierd_msg_acquired *raw;
	struct tierd_expert *experts;
	struct tierd_tensor *tensors;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS];
	struct retired *retired;
};

struct model {
	char *name;
	struct tierd_proto_model info;
};

struct tierd_client {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *path;
	char name[65];
	int fd;				/* -1: broken, reconnect on next use */
	bool reading;			/* a thread reads the socket (others wait) */
	bool reader_blocked;		/* ... in a system call, without the lock */
	int stale_fd;			/* broken while the reader was blocked on it */
	uint64_t next_id;
	uint64_t instance;
	uint32_t nmodels;
	struct model *models;
	uint32_t npools;
	struct mapping *pools[TIERD_PROTO_MAX_POOLS];
	struct pending *pending;
	struct pending *completed;	/* async ones whose callbacks are due */
	struct tierd_acquisition *acqs;
	char last_error[TIERD_PROTO_MAX_REASON + 1];
	tierd_reconnect_fn reconnect_fn;
	void *reconnect_arg;
	alignas(8) uint8_t rx[TIERD_PROTO_MAX_MSG];
	alignas(8) uint8_t tx[TIERD_PROTO_MAX_MSG];
};

static void set_error(struct tierd_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct tierd_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mapping_unref(struct mapping *m)
{
	if (m && --m->refs == 0) {
		munmap(m->base, m->size);
		free(m);
	}
}

/* ---- acquisitions ---- */

static void pending_list_free(struct pending *p)
{
	while (p) {
		struct pending *next = p->next;

		free(p->acq);
		free(p->keys);
		free(p);
		p = next;
	}
}

static void acq_free_arrays(struct tierd_acquisition *a)
{
	free(a->raw);
	free(a->experts);
	free(a->tensors);
	for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
		mapping_unref(a->maps[i]);
	memset(a->maps, 0, sizeof(a->maps));
}

static void acq_free(struct tierd_acquisition *a)
{
	acq_free_arrays(a);
	while (a->retired) {
		struct retired *r = a->retired;

		a->retired = r->next;
		free(r->raw);
		free(r->experts);
		free(r->tensors);
		for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
			mapping_unref(r->maps[i]);
		free(r);
	}
	for (size_t i = 0; i < a->n; i++)
		free(a->model_names ? a->model_names[i] : NULL);
	free(a->model_names);
	free(a->keys);
	free(a);
}

/*
 * Turns a decoded ACQUIRED into host pointers.  Every tensor must lie inside
 * a pool this client mapped and the experts must be the ones asked for:
 * otherwise -EBADMSG, never a wrong pointer.
 */
static int acq_fill(struct tierd_client *c, struct tierd_acquisition *a, struct tierd_msg_acquired *m,
		    const struct tierd_key *asked, size_t n)
{
	size_t ntensors = 0, k = 0;

	if (m->count != n) {
		set_error(c, "daemon answered %u experts for %zu asked", m->count, n);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++) {
		const struct tierd_proto_key *got = &m->experts[i].key;

		if (got->model != asked[i].model || got->layer != asked[i].layer ||
		    got->expert != asked[i].expert) {
			set_error(c, "daemon answered another expert than asked");
			return -EBADMSG;
		}
		for (uint32_t j = 0; j < m->experts[i].ntensors; j++) {
			const struct tierd_proto_tensor *t = &m->experts[i].tensors[j];

			if (t->pool >= c->npools || t->offset > c->pools[t->pool]->size ||
			    t->length > c->pools[t->pool]->size - t->offset) {
				set_error(c, "tensor %s lies outside the mapped pool", t->name);
				return -EBADMSG;
			}
		}
		ntensors += m->experts[i].ntensors;
	}
	a->experts = calloc(n, sizeof(*a->experts));
	a->tensors = calloc(ntensors, sizeof(*a->tensors));
	if (!a->experts || !a->tensors) {
		free(a->experts);
		free(a->tensors);
		a->experts = NULL;
		a->tensors = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct tierd_proto_expert *pe = &m->experts[i];
		struct tierd_expert *e = &a->experts[i];

		e->key = asked[i];
		e->ntensors = pe->ntensors;
		e->tensors = &a->tensors[k];
		for (uint32_t j = 0; j < pe->ntensors; j++, k++) {
			const struct tierd_proto_tensor *pt = &pe->tensors[j];
			struct tierd_tensor *t = &a->tensors[k];

			t->name = pt->name;
			t->data = (const uint8_t *)c->pools[pt->pool]->base + pt->offset;
			t->length = pt->length;
			t->dtype = pt->dtype;
			t->ndim = pt->ndim;
			memcpy(t->shape, pt->shape, sizeof(t->shape));
			t->pool = pt->pool;
			t->offset = pt->offset;
		}
	}
	for (unsigned i = 0; i < c->npools; i++) {
		a->maps[i] = c->pools[i];
		a->maps[i]->refs++;
	}
	a->raw = m;
	return 0;
}

/* ---- connection ---- */

static void conn_lost(struct tierd_client *c, const char *why)
{
	if (c->fd >= 0) {
		/* shutdown() wakes a reader blocked on the fd, which close() does
		 * not; that reader closes it, so the number is not reused under it. */
		shutdown(c->fd, SHUT_RDWR);
		if (c->reader_blocked)
			c->stale_fd = c->fd;
		else
			close(c->fd);
		c->fd = -1;
		set_error(c, "connection to tierd lost: %s", why);
	}
	for (struct pending **pp = &c->pending; *pp;) {
		struct pending *p = *pp;

		*pp = p->next;
		p->done = true;
		p->err = -ECONNRESET;
		snprintf(p->reason, sizeof(p->reason), "connection to tierd lost: %s", why);
		if (p->abandoned) {
			free(p->acq);
			free(p->keys);
			free(p->mbuf);
			free(p);
		} else if (p->fn) {
			p->next = c->completed;
			c->completed = p;
		}
		/* Synchronous waiters find p->done and free p themselves. */
	}
	for (struct tierd_acquisition *a = c->acqs; a; a = a->next)
		if (!a->status)
			a->status = -ENOTCONN;
	pthread_cond_broadcast(&c->cond);
}

/*
 * Sends c->tx, waiting at most timeout_ms (-1: no limit) for room in the
 * socket.  The lock stays held while waiting: c->tx is this message until
 * it is sent.  A daemon that stops reading (stopped, hung) fills the socket;
 * then the connection is dropped, because what could not be sent may be a
 * RELEASE and only a close makes the daemon give those pins back.
 */
static int send_locked(struct tierd_client *c, long len, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	ssize_t n;

	if (len < 0)
		return (int)len;
	if (c->fd < 0)
		return -ENOTCONN;
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
		int64_t left = deadline < 0 ? -1 : deadline - now_ms();

		n = send(c->fd, c->tx, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			break;
		if (errno == EINTR)
			continue;
		if (deadline >= 0 && left <= 0) {
			conn_lost(c, "tierd did not read its socket");
			set_error(c, "tierd did not read its socket within %d ms: connection dropped", timeout_ms);
			return -ETIMEDOUT;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			break;
	}
	if (n != len) {
		int err = n < 0 ? -errno : -EIO;

		conn_lost(c, n < 0 ? strerror(errno) : "short send");
		return err == -EPIPE ? -ECONNRESET : err;
	}
	return 0;
}

static struct pending *pending_new(struct tierd_client *c, uint16_t answer)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->id = c->next_id++;
	p->answer = answer;
	p->next = c->pending;
	c->pending = p;
	return p;
}

static void pending_unlink(struct tierd_client *c, struct pending *p)
{
	for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			return;
		}
	}
}

/* The daemon pinned experts nobody waits for any more: give them back. */
static void release_keys_noreply(struct tierd_client *c, const struct tierd_key *keys, size_t n)
{
	send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_RELEASE,
					       TIERD_PROTO_F_NOREPLY, c->next_id++,
					       (const struct tierd_proto_key *)keys, (uint32_t)n),
		    REQUEST_TIMEOUT_MS);
}

/*
 * The acquisition of an ACQUIRED answer m to the n keys asked (lock held).
 * Takes keys (malloc'd) and m whatever happens: on failure both are freed
 * and the pins the daemon granted are given back, so the caller holds
 * nothing to clean up.
 */
static int acq_new(struct tierd_client *c, struct tierd_key *keys, size_t n, struct tierd_msg_acquired *m,
		   struct tierd_acquisition **out)
{
	struct tierd_acquisition *a = calloc(1, sizeof(*a));
	int r = -ENOMEM;

	*out = NULL;
	if (!a) {
		set_error(c, "out of memory for an acquisition of %zu experts", n);
		release_keys_noreply(c, keys, n);
		free(keys);
		free(m);
		return -ENOMEM;
	}
	a->n = n;
	a->keys = keys;
	a->model_names = calloc(n, sizeof(char *));
	if (a->model_names) {
		r = 0;
		for (size_t i = 0; !r && i < n; i++) {
			if (keys[i].model >= c->nmodels)
				continue;	/* refused by the daemon; lost at a reconnection */
			a->model_names[i] = strdup(c->models[keys[i].model].name);
			if (!a->model_names[i])
				r = -ENOMEM;
		}
	}
	if (r)
		set_error(c, "out of memory for an acquisition of %zu experts", n);
	else
		r = acq_fill(c, a, m, keys, n);
	if (r) {
		release_keys_noreply(c, keys, n);
		acq_free(a);
		free(m);
		return r;
	}
	a->next = c->acqs;
	if (c->acqs)
		c->acqs->prev = a;
	c->acqs = a;
	*out = a;
	return 0;
}

/* Builds the acquisition of a completed async request (lock held). */
static void pending_complete_async(struct tierd_client *c, struct pending *p)
{
	if (p->err)
		return;
	if (!p->acq) {
		/* dispatch() lets only ACQUIRED or ERROR through: a guard. */
		p->err = -EBADMSG;
		snprintf(p->reason, sizeof(p->reason), "no ACQUIRED in tierd's answer");
		return;
	}
	p->err = acq_new(c, p->keys, p->nkeys, p->acq, &p->result);
	p->keys = NULL;
	p->acq = NULL;
	if (p->err)
		snprintf(p->reason, sizeof(p->reason), "%s", c->last_error);
}

/* One packet from the daemon (lock held). */
static void dispatch(struct tierd_client *c, const uint8_t *buf, size_t len)
{
	struct tierd_msg_hdr h;
	const uint8_t *pl = buf + sizeof(h);
	struct pending *p;
	const char *why = NULL;
	int r = tierd_proto_decode_hdr(buf, len, &h, &why);

	if (r) {
		conn_lost(c, why);
		return;
	}
	for (p = c->pending; p; p = p->next)
		if (p->id == h.request_id)
			break;
	if (!p) {
		/* An error answer to a NOREPLY request: keep the reason. */
		if (h.type == TIERD_MSG_ERROR) {
			struct tierd_msg_error e;

			if (!tierd_proto_decode_error(pl, h.length, &e, &why))
				set_error(c, "%s", e.reason);
		}
		return;
	}
	/* Another answer than the request's would pass for success without
	 * its data (an acquisition without experts, zero counters). */
	if (h.type != TIERD_MSG_ERROR && h.type != p->answer && !(h.type == TIERD_MSG_PROGRESS && p->warm)) {
		char what[96];

		snprintf(what, sizeof(what), "tierd answered %s where %s was due", tierd_proto_type_name(h.type),
			 tierd_proto_type_name(p->answer));
		conn_lost(c, what);
		return;
	}
	switch ((enum tierd_msg_type)h.type) {
	case TIERD_MSG_ERROR: {
		struct tierd_msg_error e;

		r = tierd_proto_decode_error(pl, h.length, &e, &why);
		if (!r) {
			p->err = e.err;
			snprintf(p->reason, sizeof(p->reason), "%s", e.reason);
		}
		break;
	}
	case TIERD_MSG_OK:
		r = tierd_proto_decode_u64(pl, h.length, &p->value, &why);
		break;
	case TIERD_MSG_ACQUIRED:
		r = tierd_proto_decode_acquired(pl, h.length, &p->acq, &why);
		break;
	case TIERD_MSG_STATS_REPLY:
		r = tierd_proto_decode_stats(pl, h.length, &p->stats, &why);
		break;
	case TIERD_MSG_PROGRESS: {
		struct tierd_msg_progress m;

		r = tierd_proto_decode_progress(pl, h.length, &m, &why);
		if (!r) {
			p->progress_done = m.done;
			p->progress_total = m.total;
			p->progress_new = true;
			pthread_cond_broadcast(&c->cond);
			return;		/* not the final answer */
		}
		break;
	}
	case TIERD_MSG_METRICS_DATA: {
		struct tierd_msg_metrics_data m;

		r = tierd_proto_decode_metrics_data(pl, h.length, &m, &why);
		if (r)
			break;
		if (!p->mbuf) {
			if (m.offset) {
				r = -EBADMSG;
				why = "metrics chunks out of order";
				break;
			}
			p->mtotal = m.total;
			p->mbuf = malloc(m.total + 1);
			if (!p->mbuf) {
				p->err = -ENOMEM;
				snprintf(p->reason, sizeof(p->reason), "out of memory for %llu bytes of metrics",
					 (unsigned long long)m.total);
				break;
			}
		} else if (m.total != p->mtotal || m.offset != p->mgot) {
			r = -EBADMSG;
			why = "metrics chunks out of order";
			break;
		}
		memcpy(p->mbuf + m.offset, m.data, m.length);
		p->mgot += m.length;
		p->mbuf[p->mgot] = 0;
		if (p->mgot < p->mtotal)
			return;		/* more chunks to come */
		break;
	}
	case TIERD_MSG_HELLO:
	case TIERD_MSG_WELCOME:
	case TIERD_MSG_METRICS:
	case TIERD_MSG_PREFETCH:
	case TIERD_MSG_ACQUIRE:
	case TIERD_MSG_RELEASE:
	case TIERD_MSG_ROUTING_HINT:
	case TIERD_MSG_TOKEN_REPORT:
	case TIERD_MSG_STATS:
	case TIERD_MSG_EVICT:
	case TIERD_MSG_PIN:
	case TIERD_MSG_UNPIN:
	case TIERD_MSG_WARM:
		r = -EBADMSG;
		why = "unexpected message type from the daemon";
		break;
	}
	if (r) {
		conn_lost(c, why);
		return;
	}
	pending_unlink(c, p);
	p->done = true;
	if (p->abandoned) {
		if (p->acq)
			release_keys_noreply(c, p->keys, p->nkeys);
		free(p->acq);
		free(p->keys);
		free(p->mbuf);
		free(p);
	} else if (p->fn) {
		pending_complete_async(c, p);
		p->next = c->completed;
		c->completed = p;
	}
	pthread_cond_broadcast(&c->cond);
}

/* Reads every packet that is there (lock held, c->reading owned). */
static void read_available(struct tierd_client *c)
{
	while (c->fd >= 0) {
		ssize_t n = recv(c->fd, c->rx, sizeof(c->rx), MSG_DONTWAIT | MSG_TRUNC);

		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				conn_lost(c, strerror(errno));
			return;
		}
		if (n == 0) {
			conn_lost(c, "tierd closed the connection");
			return;
		}
		if ((size_t)n > sizeof(c->rx)) {
			conn_lost(c, "message larger than the protocol allows");
			return;
		}
		dispatch(c, c->rx, (size_t)n);
	}
}

/* Runs due async callbacks without the lock; returns how many. */
static int run_completed(struct tierd_client *c)
{
	int count = 0;

	while (c->completed) {
		struct pending *p = c->completed;

		c->completed = p->next;
		if (p->err)
			snprintf(c->last_error, sizeof(c->last_error), "%s", p->reason);
		pthread_mutex_unlock(&c->lock);
		p->fn(c, p->err, p->result, p->arg);
		pthread_mutex_lock(&c->lock);
		free(p->acq);
		free(p->keys);
		free(p);
		count++;
	}
	return count;
}

/* One round of reading: poll for at most timeout_ms (lock held on entry and
 * exit; released while polling).  If another thread reads, waits for it. */
static void read_round(struct tierd_client *c, int timeout_ms)
{
	if (c->reading) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		if (timeout_ms < 0)
			timeout_ms = 1000;
		ts.tv_sec += timeout_ms / 1000;
		ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
		return;
	}
	if (c->fd < 0)
		return;
	c->reading = true;
	c->reader_blocked = true;
	if (timeout_ms < 0) {
		/* No deadline: one blocking recv, no poll, no draining recv that
		 * finds nothing.  This is the latency of every blocking acquire. */
		int fd = c->fd, err;
		ssize_t n;

		pthread_mutex_unlock(&c->lock);
		n = recv(fd, c->rx, sizeof(c->rx), MSG_TRUNC);
		err = errno;
		pthread_mutex_lock(&c->lock);
		c->reader_blocked = false;
		if (c->stale_fd >= 0) {
			close(c->stale_fd);
			c->stale_fd = -1;
		} else if (n == 0) {
			conn_lost(c, "tierd closed the connection");
		} else if (n < 0) {
			if (err != EINTR && err != EAGAIN)
				conn_lost(c, strerror(err));
		} else if ((size_t)n > sizeof(c->rx)) {
			conn_lost(c, "message larger than the protocol allows");
		} else {
			dispatch(c, c->rx, (size_t)n);
		}
	} else {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int r;

		pthread_mutex_unlock(&c->lock);
		r = poll(&pfd, 1, timeout_ms);
		pthread_mutex_lock(&c->lock);
		c->reader_blocked = false;
		if (c->stale_fd >= 0) {
			close(c->stale_fd);
			c->stale_fd = -1;
		} else if (r > 0) {
			read_available(c);
		}
	}
	c->reading = false;
	pthread_cond_broadcast(&c->cond);
}

/* Waits for p (lock held).  On timeout, p is abandoned to the reader. */
static int wait_pending(struct tierd_client *c, struct pending *p, int timeout_ms,
			tierd_progress_fn progress, void *arg)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

	while (!p->done) {
		int left = deadline < 0 ? -1 : (int)(deadline - now_ms());

		if (deadline >= 0 && left <= 0) {
			p->abandoned = true;
			set_error(c, "no answer from tierd within %d ms", timeout_ms);
			return -ETIMEDOUT;
		}
		if (c->fd < 0 && !c->reading) {
			/* conn_lost() answers every pending request; this is only a
			 * guard against spinning if one ever slipped through. */
			pending_unlink(c, p);
			p->done = true;
			p->err = -ECONNRESET;
			snprintf(p->reason, sizeof(p->reason), "connection to tierd lost");
			break;
		}
		read_round(c, left);
		if (p->progress_new && progress) {
			uint64_t d = p->progress_done, t = p->progress_total;

			p->progress_new = false;
			pthread_mutex_unlock(&c->lock);
			progress(d, t, arg);
			pthread_mutex_lock(&c->lock);
		}
		if (c->completed && !c->reading)
			run_completed(c);
	}
	if (p->err)
		snprintf(c->last_error, sizeof(c->last_error), "%s", p->reason);
	return p->err;
}

static int recv_with_fds(int fd, void *buf, size_t cap, int *fds, int *nfds, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * TIERD_PROTO_MAX_POOLS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;
	int r;

	*nfds = 0;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (int i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof(int));
				if (*nfds < (int)TIERD_PROTO_MAX_POOLS)
					fds[(*nfds)++] = f;
				else
					close(f);
			}
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EMSGSIZE;
	}
	return (int)n;
}

/* A synchronous request on the fresh connection (lock held, nobody else reads). */
static int conn_request(struct tierd_client *c, long len, uint64_t id, struct tierd_msg_acquired **acq)
{
	int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
	int r = send_locked(c, len, CONNECT_TIMEOUT_MS);

	if (r)
		return r;
	for (;;) {
		int fds[TIERD_PROTO_MAX_POOLS], nfds = 0, n = -ETIMEDOUT;
		int64_t left = deadline - now_ms();
		struct tierd_msg_hdr h;
		const char *why;

		/* Other packets can keep coming past the deadline: a negative
		 * timeout would make poll() wait forever, with the lock held. */
		if (left > 0)
			n = recv_with_fds(c->fd, c->rx, sizeof(c->rx), fds, &nfds, (int)left);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (n < 0) {
			/* The answer may still come, and pins with it: only a
			 * close keeps the daemon from holding them for nobody. */
			conn_lost(c, strerror(-n));
			if (n == -ETIMEDOUT)
				set_error(c, "no answer from tierd to a re-acquire within %d ms", CONNECT_TIMEOUT_MS);
			else
				set_error(c, "re-acquire after a reconnection: %s", strerror(-n));
			return n;
		}
		if (tierd_proto_decode_hdr(c->rx, (size_t)n, &h, &why) || h.request_id != id)
			continue;
		if (h.type == TIERD_MSG_ERROR) {
			struct tierd_msg_error e;

			if (tierd_proto_decode_error(c->rx + sizeof(h), h.length, &e, &why))
				return -EBADMSG;
			set_error(c, "%s", e.reason);
			/* The decoder allows only negative codes; an ERROR must
			 * never read as success to the caller. */
			return e.err < 0 ? e.err : -EBADMSG;
		}
		if (h.type == TIERD_MSG_ACQUIRED)
			r = tierd_proto_decode_acquired(c->rx + sizeof(h), h.length, acq, &why);
		else
			r = -EBADMSG;
		if (r) {
			/* The daemon may have pinned what it answered. */
			conn_lost(c, h.type == TIERD_MSG_ACQUIRED ? why : "unexpected answer to a re-acquire");
			return r;
		}
		return 0;
	}
}

/* Re-acquires what the old connection held; returns counts.  Fails if the
 * new connection breaks too; the acquisitions not re-established then stay
 * -ENOTCONN, for the next try. */
static int reestablish(struct tierd_client *c, unsigned *ok, unsigned *lost)
{
	for (struct tierd_acquisition *a = c->acqs; a; a = a->next) {
		struct tierd_key *keys;
		struct tierd_msg_acquired *m = NULL;
		uint64_t id;
		int r = 0;

		if (a->status != -ENOTCONN)
			continue;
		keys = calloc(a->n, sizeof(*keys));
		if (!keys)
			r = -ENOMEM;
		for (size_t i = 0; !r && i < a->n; i++) {
			int idx = -1;

			for (uint32_t j = 0; a->model_names[i] && j < c->nmodels; j++)
				if (!strcmp(c->models[j].name, a->model_names[i]))
					idx = (int)j;
			if (idx < 0)
				r = -ENOENT;
			keys[i] = a->keys[i];
			keys[i].model = (uint32_t)idx;
		}
		if (!r) {
			id = c->next_id++;
			r = conn_request(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_ACQUIRE, 0, id,
								    (const struct tierd_proto_key *)keys,
								    (uint32_t)a->n), id, &m);
			if (c->fd < 0) {
				free(keys);
				return r ? r : -ECONNRESET;
			}
		}
		if (!r) {
			struct retired *old = calloc(1, sizeof(*old));
			struct tierd_acquisition tmp = *a;

			if (!old) {
				r = -ENOMEM;
			} else {
				/* Keep the old arrays: the application may hold pointers. */
				tmp.raw = NULL;
				tmp.experts = NULL;
				tmp.tensors = NULL;
				memset(tmp.maps, 0, sizeof(tmp.maps));
				r = acq_fill(c, &tmp, m, keys, a->n);
				if (!r) {
					old->raw = a->raw;
					old->experts = a->experts;
					old->tensors = a->tensors;
					memcpy(old->maps, a->maps, sizeof(old->maps));
					old->next = a->retired;
					a->retired = old;
					a->raw = tmp.raw;
					a->experts = tmp.experts;
					a->tensors = tmp.tensors;
					memcpy(a->maps, tmp.maps, sizeof(a->maps));
					memcpy(a->keys, keys, a->n * sizeof(*keys));
					m = NULL;
				} else {
					release_keys_noreply(c, keys, a->n);
					free(old);
				}
			}
		}
		free(m);
		free(keys);
		a->status = r ? -ENOLINK : 0;
		if (r)
			(*lost)++;
		else
			(*ok)++;
	}
	return 0;
}

static int conn_open(struct tierd_client *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tierd_msg_welcome *w = NULL;
	struct tierd_msg_hdr h;
	struct model *models = NULL;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS] = { 0 };
	int fds[TIERD_PROTO_MAX_POOLS], nfds = 0, fd, n, r;
	const char *why = NULL;
	uint64_t id;

	if (strlen(c->path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, c->path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		r = -errno;
		set_error(c, "%s: %s", c->path, strerror(-r));
		close(fd);
		return r;
	}
	c->fd = fd;
	id = c->next_id++;
	r = send_locked(c, tierd_proto_encode_hello(c->tx, sizeof(c->tx), id, (uint32_t)getpid(), c->name),
			CONNECT_TIMEOUT_MS);
	if (r)
		return r;
	n = recv_with_fds(fd, c->rx, sizeof(c->rx), fds, &nfds, CONNECT_TIMEOUT_MS);
	if (n < 0) {
		r = n;
		set_error(c, "no WELCOME from tierd: %s", strerror(-r));
		goto fail;
	}
	r = tierd_proto_decode_hdr(c->rx, (size_t)n, &h, &why);
	if (r == -EPROTO) {
		struct tierd_msg_error e;

		/* The header and ERROR are the same in every version. */
		if (h.type == TIERD_MSG_ERROR && (size_t)n >= sizeof(h) &&
		    !tierd_proto_decode_error(c->rx + sizeof(h), (size_t)n - sizeof(h), &e, &why))
			set_error(c, "%s", e.reason);
		else
			set_error(c, "tierd speaks protocol %u.%u, this library %u.%u", h.major, h.minor,
				  TIERD_PROTO_MAJOR, TIERD_PROTO_MINOR);
		r = -EPROTONOSUPPORT;
		goto fail;
	}
	if (!r && h.type == TIERD_MSG_ERROR) {
		struct tierd_msg_error e;

		r = tierd_proto_decode_error(c->rx + sizeof(h), h.length, &e, &why);
		if (!r) {
			set_error(c, "%s", e.reason);
			r = e.err;
			goto fail;
		}
	}
	if (!r && h.type != TIERD_MSG_WELCOME) {
		r = -EBADMSG;
		why = "expected WELCOME";
	}
	w = malloc(sizeof(*w));
	if (!r && !w)
		r = -ENOMEM;
	if (!r)
		r = tierd_proto_decode_welcome(c->rx + sizeof(h), h.length, w, &why);
	if (!r && (int)w->npools != nfds) {
		r = -EBADMSG;
		why = "pool descriptors missing";
	}
	if (r) {
		if (why)
			set_error(c, "bad WELCOME from tierd: %s", why);
		goto fail;
	}
	for (uint32_t i = 0; i < w->npools; i++) {
		struct stat st;
		void *base;

		/* Pages past the end of the file would fault with SIGBUS when a
		 * tensor is read: the descriptor must back the size announced. */
		if (fstat(fds[i], &st) || st.st_size < 0 || (uint64_t)st.st_size < w->pool_size[i]) {
			r = -EBADMSG;
			set_error(c, "bad WELCOME from tierd: pool %u is smaller than its announced %llu bytes",
				  i, (unsigned long long)w->pool_size[i]);
			goto fail;
		}
		base = mmap(NULL, w->pool_size[i], PROT_READ, MAP_SHARED, fds[i], 0);

		maps[i] = calloc(1, sizeof(**maps));
		if (base == MAP_FAILED || !maps[i]) {
			r = base == MAP_FAILED ? -errno : -ENOMEM;
			if (base != MAP_FAILED)
				munmap(base, w->pool_size[i]);
			set_error(c, "cannot map pool %u: %s", i, strerror(-r));
			goto fail;
		}
		maps[i]->base = base;
		maps[i]->size = w->pool_size[i];
		maps[i]->refs = 1;
	}
	models = calloc(w->nmodels + 1, sizeof(*models));
	if (!models) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < w->nmodels; i++) {
		models[i].info = w->models[i];
		models[i].name = strdup(w->models[i].name);
		models[i].info.name = models[i].name;
		if (!models[i].name) {
			r = -ENOMEM;
			goto fail;
		}
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	nfds = 0;
	for (uint32_t i = 0; i < c->nmodels; i++)
		free(c->models[i].name);
	free(c->models);
	c->models = models;
	c->nmodels = w->nmodels;
	for (uint32_t i = 0; i < c->npools; i++)
		mapping_unref(c->pools[i]);
	memcpy(c->pools, maps, sizeof(maps));
	c->npools = w->npools;
	c->instance = w->instance;
	free(w);
	return 0;
fail:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
		mapping_unref(maps[i]);
	if (models) {
		for (uint32_t i = 0; i < w->nmodels; i++)
			free(models[i].name);
		free(models);
	}
	free(w);
	close(c->fd);
	c->fd = -1;
	return r;
}

/* Connected, or reconnects (lock held).  Runs the reconnect callback. */
static int ensure_conn(struct tierd_client *c)
{
	unsigned ok = 0, lost = 0;
	bool had = false;
	int r;

	if (c->fd >= 0)
		return 0;
	while (c->reading)
		pthread_cond_wait(&c->cond, &c->lock);
	if (c->fd >= 0)
		return 0;
	r = conn_open(c);
	if (r)
		return r;
	for (struct tierd_acquisition *a = c->acqs; a; a = a->next)
		had |= a->status == -ENOTCONN;
	if (!had)
		return 0;
	r = reestablish(c, &ok, &lost);
	if (r)
		return r;
	if (c->reconnect_fn) {
		tierd_reconnect_fn fn = c->reconnect_fn;
		void *arg = c->reconnect_arg;

		pthread_mutex_unlock(&c->lock);
		fn(c, ok, lost, arg);
		pthread_mutex_lock(&c->lock);
	}
	return 0;
}

EXPORT int tierd_client_connect(struct tierd_client **out, const char *path, const char *name)
{
	struct tierd_client *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	if (!path)
		path = getenv("TIERD_SOCKET");
	if (!path || !*path)
		path = TIERD_CLIENT_DEFAULT_SOCKET;
	c->path = strdup(path);
	if (!c->path) {
		free(c);
		return -ENOMEM;
	}
	snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
	for (char *p = c->name; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	c->fd = -1;
	c->stale_fd = -1;
	c->next_id = 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	r = conn_open(c);
	if (r) {
		tierd_client_close(c);
		return r;
	}
	*out = c;
	return 0;
}

EXPORT void tierd_client_close(struct tierd_client *c)
{
	if (!c)
		return;
	/* Closing the socket releases the daemon's pins. */
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	while (c->acqs) {
		struct tierd_acquisition *a = c->acqs;

		c->acqs = a->next;
		acq_free(a);
	}
	pending_list_free(c->pending);
	c->pending = NULL;
	pending_list_free(c->completed);
	c->completed = NULL;
	for (uint32_t i = 0; i < c->npools; i++)
		mapping_unref(c->pools[i]);
	for (uint32_t i = 0; i < c->nmodels; i++)
		free(c->models[i].name);
	free(c->models);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->path);
	free(c);
}

EXPORT int tierd_client_reconnect(struct tierd_client *c)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = ensure_conn(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT void tierd_client_last_error(struct tierd_client *c, char *buf, size_t len)
{
	pthread_mutex_lock(&c->lock);
	snprintf(buf, len, "%s", c->last_error);
	pthread_mutex_unlock(&c->lock);
}

EXPORT void tierd_client_set_reconnect_cb(struct tierd_client *c, tierd_reconnect_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->reconnect_fn = fn;
	c->reconnect_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

EXPORT int tierd_client_model_count(struct tierd_client *c)
{
	int n;

	pthread_mutex_lock(&c->lock);
	n = (int)c->nmodels;
	pthread_mutex_unlock(&c->lock);
	return n;
}

EXPORT int tierd_client_model_find(struct tierd_client *c, const char *name)
{
	int r = -ENOENT;

	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nmodels; i++)
		if (!strcmp(c->models[i].name, name))
			r = (int)i;
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_model_info(struct tierd_client *c, unsigned model, struct tierd_model_info *out)
{
	int r = -ENOENT;

	pthread_mutex_lock(&c->lock);
	if (model < c->nmodels) {
		const struct tierd_proto_model *m = &c->models[model].info;

		out->name = c->models[model].name;
		out->allowed = !!(m->flags & TIERD_MODEL_F_ALLOWED);
		out->nlayers = m->nlayers;
		out->experts_per_layer = m->experts_per_layer;
		out->top_k = m->top_k;
		out->nexperts = m->nexperts;
		out->slot_bytes = m->slot_bytes;
		r = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_pool_count(struct tierd_client *c)
{
	int n;

	pthread_mutex_lock(&c->lock);
	n = (int)c->npools;
	pthread_mutex_unlock(&c->lock);
	return n;
}

EXPORT const void *tierd_client_pool_base(struct tierd_client *c, unsigned pool, uint64_t *size)
{
	const void *base = NULL;

	pthread_mutex_lock(&c->lock);
	if (pool < c->npools) {
		base = c->pools[pool]->base;
		if (size)
			*size = c->pools[pool]->size;
	}
	pthread_mutex_unlock(&c->lock);
	return base;
}

EXPORT int tierd_client_fd(struct tierd_client *c)
{
	int fd, r;

	pthread_mutex_lock(&c->lock);
	r = ensure_conn(c);
	fd = c->fd;
	pthread_mutex_unlock(&c->lock);
	if (r)
		return r;
	return fd >= 0 ? fd : -ENOTCONN;
}

/* A request's start (lock held): a connection and a pending entry, whose id
 * the caller encodes into its message; answer is the message type due. */
static int request_open(struct tierd_client *c, uint16_t answer, struct pending **out)
{
	int r = ensure_conn(c);

	*out = NULL;
	if (r)
		return r;
	*out = pending_new(c, answer);
	return *out ? 0 : -ENOMEM;
}

/* A request's end (lock held).  A request abandoned on timeout belongs to the
 * reader, which frees it when (if) the answer comes. */
static void request_close(struct tierd_client *c, struct pending *p)
{
	if (!p || p->abandoned)
		return;
	pending_unlink(c, p);
	free(p->acq);
	free(p->keys);
	free(p->mbuf);
	free(p);
}

/* A request answered by OK (lock taken here). */
static int simple_request(struct tierd_client *c, uint16_t type, const struct tierd_key *keys, size_t n,
			  int timeout_ms, uint64_t *value)
{
	struct pending *p;
	int r;

	if (!n || n > TIERD_PROTO_MAX_BATCH)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = request_open(c, TIERD_MSG_OK, &p);
	if (!r)
		r = send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), type, 0, p->id,
							   (const struct tierd_proto_key *)keys, (uint32_t)n),
				timeout_ms);
	if (!r)
		r = wait_pending(c, p, timeout_ms, NULL, NULL);
	if (!r && value)
		*value = p->value;
	request_close(c, p);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_prefetch_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n,
					 int timeout_ms)
{
	return simple_request(c, TIERD_MSG_PREFETCH, keys, n, timeout_ms, NULL);
}

EXPORT int tierd_client_prefetch(struct tierd_client *c, const struct tierd_key *keys, size_t n)
{
	return simple_request(c, TIERD_MSG_PREFETCH, keys, n, REQUEST_TIMEOUT_MS, NULL);
}

EXPORT int tierd_client_evict_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n,
				      int timeout_ms)
{
	return simple_request(c, TIERD_MSG_EVICT, keys, n, timeout_ms, NULL);
}

EXPORT int tierd_client_evict(struct tierd_client *c, const struct tierd_key *keys, size_t n)
{
	return simple_request(c, TIERD_MSG_EVICT, keys, n, REQUEST_TIMEOUT_MS, NULL);
}

EXPORT int tierd_client_pin(struct tierd_client *c, const struct tierd_key *keys, size_t n, int timeout_ms)
{
	return simple_request(c, TIERD_MSG_PIN, keys, n, timeout_ms, NULL);
}

EXPORT int tierd_client_unpin_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n,
				      int timeout_ms)
{
	return simple_request(c, TIERD_MSG_UNPIN, keys, n, timeout_ms, NULL);
}

EXPORT int tierd_client_unpin(struct tierd_client *c, const struct tierd_key *keys, size_t n)
{
	return simple_request(c, TIERD_MSG_UNPIN, keys, n, REQUEST_TIMEOUT_MS, NULL);
}

/* Sends an ACQUIRE (lock held); p owns a copy of the keys. */
static int acquire_send(struct tierd_client *c, const struct tierd_key *keys, size_t n, int timeout_ms,
			struct pending **out)
{
	struct pending *p;
	int r;

	if (!n || n > TIERD_PROTO_MAX_BATCH)
		return -EINVAL;
	r = request_open(c, TIERD_MSG_ACQUIRED, &p);
	if (!r) {
		p->keys = malloc(n * sizeof(*keys));
		if (!p->keys)
			r = -ENOMEM;
	}
	if (!r) {
		memcpy(p->keys, keys, n * sizeof(*keys));
		p->nkeys = n;
		r = send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_ACQUIRE, 0, p->id,
							   (const struct tierd_proto_key *)keys, (uint32_t)n),
				timeout_ms);
	}
	if (r) {
		request_close(c, p);
		return r;
	}
	*out = p;
	return 0;
}

EXPORT int tierd_client_acquire(struct tierd_client *c, const struct tierd_key *keys, size_t n,
				int timeout_ms, struct tierd_acquisition **out)
{
	struct tierd_acquisition *a = NULL;
	struct pending *p;
	int r;

	pthread_mutex_lock(&c->lock);
	r = acquire_send(c, keys, n, timeout_ms, &p);
	if (r)
		goto out;
	r = wait_pending(c, p, timeout_ms, NULL, NULL);
	if (r == -ETIMEDOUT)
		goto out;	/* the reader releases the pins when they come */
	if (!r && !p->acq)
		r = -EBADMSG;	/* dispatch() lets only ACQUIRED or ERROR through: a guard */
	if (!r) {
		r = acq_new(c, p->keys, n, p->acq, &a);
		p->keys = NULL;
		p->acq = NULL;
	}
	request_close(c, p);
	if (!r)
		*out = a;
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_acquire_async(struct tierd_client *c, const struct tierd_key *keys, size_t n,
				      tierd_acquire_fn fn, void *arg)
{
	struct pending *p;
	int r;

	if (!fn)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = acquire_send(c, keys, n, REQUEST_TIMEOUT_MS, &p);
	if (!r) {
		p->fn = fn;
		p->arg = arg;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_process(struct tierd_client *c, int timeout_ms)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = ensure_conn(c);
	if (!r) {
		read_round(c, timeout_ms);
		r = run_completed(c);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_release(struct tierd_client *c, struct tierd_acquisition *a)
{
	int r = 0;

	if (!a)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (a->prev)
		a->prev->next = a->next;
	else
		c->acqs = a->next;
	if (a->next)
		a->next->prev = a->prev;
	/*
	 * A broken or lost acquisition holds no pin in the current daemon.
	 * The release needs no answer: the socket keeps order, so the daemon
	 * has processed it before anything this client sends next, and a
	 * failure (which can only mean the pin was already gone) is recorded
	 * in last_error when it arrives.  This keeps acquire+release at one
	 * round trip.
	 */
	if (!a->status && c->fd >= 0)
		r = send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_RELEASE,
							   TIERD_PROTO_F_NOREPLY, c->next_id++,
							   (const struct tierd_proto_key *)a->keys, (uint32_t)a->n),
				REQUEST_TIMEOUT_MS);
	/* The connection broke, or send_locked() dropped it because the daemon
	 * stopped reading: either way the daemon drops the pins itself. */
	if (r == -ECONNRESET || r == -ENOTCONN || r == -ETIMEDOUT)
		r = 0;
	acq_free(a);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT size_t tierd_acquisition_count(const struct tierd_acquisition *a)
{
	return a->n;
}

EXPORT const struct tierd_expert *tierd_acquisition_expert(const struct tierd_acquisition *a, size_t i)
{
	return i < a->n ? &a->experts[i] : NULL;
}

EXPORT int tierd_acquisition_status(struct tierd_client *c, const struct tierd_acquisition *a)
{
	int s;

	pthread_mutex_lock(&c->lock);
	s = a->status;
	pthread_mutex_unlock(&c->lock);
	return s;
}

/* Fire-and-forget requests: errors come back asynchronously into last_error. */
static int send_noreply(struct tierd_client *c, long (*enc)(struct tierd_client *, uint64_t, const void *),
			const void *arg)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = ensure_conn(c);
	if (!r)
		r = send_locked(c, enc(c, c->next_id++, arg), REQUEST_TIMEOUT_MS);
	pthread_mutex_unlock(&c->lock);
	return r;
}

struct hint_args {
	uint32_t model, layer;
	const uint32_t *experts;
	const float *weights;
	size_t n;
};

static long enc_hint(struct tierd_client *c, uint64_t id, const void *arg)
{
	const struct hint_args *h = arg;
	struct tierd_proto_hint v[TIERD_PROTO_MAX_BATCH];

	for (size_t i = 0; i < h->n; i++) {
		v[i].expert = h->experts[i];
		v[i].weight = h->weights ? h->weights[i] : 0.0f;
	}
	return tierd_proto_encode_hint(c->tx, sizeof(c->tx), TIERD_PROTO_F_NOREPLY, id, h->model, h->layer, v,
				       (uint32_t)h->n);
}

EXPORT int tierd_client_routing_hint(struct tierd_client *c, uint32_t model, uint32_t layer,
				     const uint32_t *experts, const float *weights, size_t n)
{
	struct hint_args h = { model, layer, experts, weights, n };

	if (!n || n > TIERD_PROTO_MAX_BATCH || !experts)
		return -EINVAL;
	for (size_t i = 0; weights && i < n; i++)
		if (!(weights[i] >= 0.0f && weights[i] <= 1.0f))
			return -EINVAL;
	return send_noreply(c, enc_hint, &h);
}

struct token_args {
	uint32_t model;
	uint64_t tokens;
};

static long enc_tokens(struct tierd_client *c, uint64_t id, const void *arg)
{
	const struct token_args *t = arg;

	return tierd_proto_encode_tokens(c->tx, sizeof(c->tx), TIERD_PROTO_F_NOREPLY, id, t->model, t->tokens);
}

EXPORT int tierd_client_report_tokens(struct tierd_client *c, uint32_t model, uint64_t tokens)
{
	struct token_args t = { model, tokens };

	return send_noreply(c, enc_tokens, &t);
}

EXPORT int tierd_client_stats_timeout(struct tierd_client *c, uint64_t *values, size_t n, int timeout_ms)
{
	struct tierd_proto_buf b;
	struct pending *p;
	int r;

	pthread_mutex_lock(&c->lock);
	r = request_open(c, TIERD_MSG_STATS_REPLY, &p);
	if (!r) {
		tierd_proto_begin(&b, c->tx, sizeof(c->tx), TIERD_MSG_STATS, 0, p->id);
		r = send_locked(c, tierd_proto_end(&b), timeout_ms);
	}
	if (!r)
		r = wait_pending(c, p, timeout_ms, NULL, NULL);
	if (!r) {
		size_t k = p->stats.count < TIERD_STAT_COUNT ? p->stats.count : TIERD_STAT_COUNT;

		if (k > n)
			k = n;
		memcpy(values, p->stats.value, k * sizeof(*values));
		r = (int)k;
	}
	request_close(c, p);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_stats(struct tierd_client *c, uint64_t *values, size_t n)
{
	return tierd_client_stats_timeout(c, values, n, REQUEST_TIMEOUT_MS);
}

EXPORT int tierd_client_metrics_timeout(struct tierd_client *c, char **text, size_t *len, int timeout_ms)
{
	struct pending *p;
	int r;

	*text = NULL;
	if (len)
		*len = 0;
	pthread_mutex_lock(&c->lock);
	r = request_open(c, TIERD_MSG_METRICS_DATA, &p);
	if (!r)
		r = send_locked(c, tierd_proto_encode_metrics(c->tx, sizeof(c->tx), p->id,
							      TIERD_METRICS_PROMETHEUS),
				timeout_ms);
	if (!r)
		r = wait_pending(c, p, timeout_ms, NULL, NULL);
	if (!r && !p->mbuf)
		r = -EBADMSG;	/* answered OK: not a 1.1 daemon */
	if (!r) {
		*text = p->mbuf;
		if (len)
			*len = (size_t)p->mgot;
		p->mbuf = NULL;
	}
	request_close(c, p);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT int tierd_client_metrics(struct tierd_client *c, char **text, size_t *len)
{
	return tierd_client_metrics_timeout(c, text, len, REQUEST_TIMEOUT_MS);
}

EXPORT const char *tierd_client_stat_name(unsigned i)
{
	return tierd_proto_stat_name(i);
}

EXPORT int tierd_client_warm(struct tierd_client *c, uint32_t model, uint32_t first_layer,
			     uint32_t last_layer, tierd_progress_fn progress, void *arg, int timeout_ms)
{
	struct tierd_msg_warm w = { model, first_layer, last_layer };
	struct pending *p;
	uint64_t done = 0;
	int r;

	if (last_layer < first_layer)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = request_open(c, TIERD_MSG_OK, &p);
	if (!r) {
		p->warm = true;
		r = send_locked(c, tierd_proto_encode_warm(c->tx, sizeof(c->tx), p->id, &w), timeout_ms);
	}
	if (!r)
		r = wait_pending(c, p, timeout_ms, progress, arg);
	if (!r)
		done = p->value;
	request_close(c, p);
	pthread_mutex_unlock(&c->lock);
	/* Without the lock, like every other callback: it may call us. */
	if (!r && progress)
		progress(done, done, arg);
	return r;
}

/* Indexed by enum tierd_dtype, which is the daemon's enum st_dtype on the wire. */
static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[TIERD_DTYPE_BOOL] = { "BOOL", 1 },
	[TIERD_DTYPE_U8] = { "U8", 1 },
	[TIERD_DTYPE_I8] = { "I8", 1 },
	[TIERD_DTYPE_F8_E4M3] = { "F8_E4M3", 1 },
	[TIERD_DTYPE_F8_E5M2] = { "F8_E5M2", 1 },
	[TIERD_DTYPE_I16] = { "I16", 2 },
	[TIERD_DTYPE_U16] = { "U16", 2 },
	[TIERD_DTYPE_F16] = { "F16", 2 },
	[TIERD_DTYPE_BF16] = { "BF16", 2 },
	[TIERD_DTYPE_I32] = { "I32", 4 },
	[TIERD_DTYPE_U32] = { "U32", 4 },
	[TIERD_DTYPE_F32] = { "F32", 4 },
	[TIERD_DTYPE_I64] = { "I64", 8 },
	[TIERD_DTYPE_U64] = { "U64", 8 },
	[TIERD_DTYPE_F64] = { "F64", 8 },
	[TIERD_DTYPE_F8_E8M0] = { "F8_E8M0", 1 },
};

EXPORT const char *tierd_dtype_name(uint32_t dtype)
{
	return dtype < sizeof(dtypes) / sizeof(dtypes[0]) && dtypes[dtype].name ? dtypes[dtype].name : "unknown";
}

EXPORT size_t tierd_dtype_size(uint32_t dtype)
{
	return dtype < sizeof(dtypes) / sizeof(dtypes[0]) ? dtypes[dtype].size : 0;
}
