/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: the request multiplexer.  One mutex guards the client;
 * one thread at a time polls the socket (c->reading) while others wait on
 * the condition variable for their answer.  Answers are matched to pending
 * requests by request id.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tierd-client-int.h"

void tdc_set_error(struct tierd_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
}

void tdc_pending_list_free(struct pending_list *l)
{
	while (!SLIST_EMPTY(l)) {
		struct pending *p = SLIST_FIRST(l);

		SLIST_REMOVE_HEAD(l, link);
		free(p->acq);
		free(p->keys);
		/* A METRICS answer cut short by a timeout leaves its text here. */
		free(p->mbuf);
		free(p);
	}
}

void tdc_conn_lost(struct tierd_client *c, const char *why)
{
	struct tierd_acquisition *a;

	if (c->fd >= 0) {
		/* shutdown() wakes a reader blocked on the fd, which close() does
		 * not; that reader closes it, so the number is not reused under it. */
		shutdown(c->fd, SHUT_RDWR);
		if (c->reader_blocked)
			c->stale_fd = c->fd;
		else
			close(c->fd);
		c->fd = -1;
		tdc_set_error(c, "connection to tierd lost: %s", why);
	}
	while (!SLIST_EMPTY(&c->pending)) {
		struct pending *p = SLIST_FIRST(&c->pending);

		SLIST_REMOVE_HEAD(&c->pending, link);
		p->done = true;
		p->err = -ECONNRESET;
		snprintf(p->reason, sizeof(p->reason), "connection to tierd lost: %s", why);
		if (p->abandoned) {
			free(p->acq);
			free(p->keys);
			free(p->mbuf);
			free(p);
		} else if (p->fn) {
			SLIST_INSERT_HEAD(&c->completed, p, link);
		}
		/* Synchronous waiters find p->done and free p themselves. */
	}
	LIST_FOREACH(a, &c->acqs, link)
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
int tdc_send_locked(struct tierd_client *c, long len, int timeout_ms)
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
			tdc_conn_lost(c, "tierd did not read its socket");
			tdc_set_error(c, "tierd did not read its socket within %d ms: connection dropped",
				      timeout_ms);
			return -ETIMEDOUT;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			break;
	}
	if (n != len) {
		int err = n < 0 ? -errno : -EIO;

		tdc_conn_lost(c, n < 0 ? strerror(errno) : "short send");
		return err == -EPIPE ? -ECONNRESET : err;
	}
	return 0;
}

struct pending *tdc_pending_new(struct tierd_client *c, uint16_t answer)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->id = c->next_id++;
	p->answer = answer;
	SLIST_INSERT_HEAD(&c->pending, p, link);
	return p;
}

/* p may be out of the list already (answered, or dropped with the
 * connection): SLIST_REMOVE() alone would walk past the end looking for it. */
void tdc_pending_unlink(struct tierd_client *c, struct pending *p)
{
	struct pending *q;

	SLIST_FOREACH(q, &c->pending, link) {
		if (q == p) {
			SLIST_REMOVE(&c->pending, p, pending, link);
			return;
		}
	}
}

/* The daemon pinned experts nobody waits for any more: give them back. */
void tdc_release_keys_noreply(struct tierd_client *c, const struct tierd_key *keys, size_t n)
{
	tdc_send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_RELEASE,
						   TIERD_PROTO_F_NOREPLY, c->next_id++,
						   (const struct tierd_key *)keys, (uint32_t)n),
			REQUEST_TIMEOUT_MS);
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
	p->err = tdc_acq_new(c, p->keys, p->nkeys, p->acq, &p->result);
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
		tdc_conn_lost(c, why);
		return;
	}
	SLIST_FOREACH(p, &c->pending, link)
		if (p->id == h.request_id)
			break;
	if (!p) {
		/* An error answer to a NOREPLY request: keep the reason. */
		if (h.type == TIERD_MSG_ERROR) {
			struct tierd_msg_error e;

			if (!tierd_proto_decode_error(pl, h.length, &e, &why))
				tdc_set_error(c, "%s", e.reason);
		}
		return;
	}
	/* Another answer than the request's would pass for success without
	 * its data (an acquisition without experts, zero counters). */
	if (h.type != TIERD_MSG_ERROR && h.type != p->answer && !(h.type == TIERD_MSG_PROGRESS && p->warm)) {
		char what[96];

		snprintf(what, sizeof(what), "tierd answered %s where %s was due", tierd_proto_type_name(h.type),
			 tierd_proto_type_name(p->answer));
		tdc_conn_lost(c, what);
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
	case TIERD_MSG_TRACE:
		r = -EBADMSG;
		why = "unexpected message type from the daemon";
		break;
	}
	if (r) {
		tdc_conn_lost(c, why);
		return;
	}
	tdc_pending_unlink(c, p);
	p->done = true;
	if (p->abandoned) {
		if (p->acq)
			tdc_release_keys_noreply(c, p->keys, p->nkeys);
		free(p->acq);
		free(p->keys);
		free(p->mbuf);
		free(p);
	} else if (p->fn) {
		pending_complete_async(c, p);
		SLIST_INSERT_HEAD(&c->completed, p, link);
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
				tdc_conn_lost(c, strerror(errno));
			return;
		}
		if (n == 0) {
			tdc_conn_lost(c, "tierd closed the connection");
			return;
		}
		if ((size_t)n > sizeof(c->rx)) {
			tdc_conn_lost(c, "message larger than the protocol allows");
			return;
		}
		dispatch(c, c->rx, (size_t)n);
	}
}

/* Runs due async callbacks without the lock; returns how many. */
int tdc_run_completed(struct tierd_client *c)
{
	int count = 0;

	while (!SLIST_EMPTY(&c->completed)) {
		struct pending *p = SLIST_FIRST(&c->completed);

		SLIST_REMOVE_HEAD(&c->completed, link);
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
void tdc_read_round(struct tierd_client *c, int timeout_ms)
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
			tdc_conn_lost(c, "tierd closed the connection");
		} else if (n < 0) {
			if (err != EINTR && err != EAGAIN)
				tdc_conn_lost(c, strerror(err));
		} else if ((size_t)n > sizeof(c->rx)) {
			tdc_conn_lost(c, "message larger than the protocol allows");
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
int tdc_wait_pending(struct tierd_client *c, struct pending *p, int timeout_ms,
		     tierd_progress_fn progress, void *arg)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

	while (!p->done) {
		int left = deadline < 0 ? -1 : (int)(deadline - now_ms());

		if (deadline >= 0 && left <= 0) {
			p->abandoned = true;
			tdc_set_error(c, "no answer from tierd within %d ms", timeout_ms);
			return -ETIMEDOUT;
		}
		if (c->fd < 0 && !c->reading) {
			/* tdc_conn_lost() answers every pending request; this is only a
			 * guard against spinning if one ever slipped through. */
			tdc_pending_unlink(c, p);
			p->done = true;
			p->err = -ECONNRESET;
			snprintf(p->reason, sizeof(p->reason), "connection to tierd lost");
			break;
		}
		tdc_read_round(c, left);
		if (p->progress_new && progress) {
			uint64_t d = p->progress_done, t = p->progress_total;

			p->progress_new = false;
			pthread_mutex_unlock(&c->lock);
			progress(d, t, arg);
			pthread_mutex_lock(&c->lock);
		}
		if (!SLIST_EMPTY(&c->completed) && !c->reading)
			tdc_run_completed(c);
	}
	if (p->err)
		snprintf(c->last_error, sizeof(c->last_error), "%s", p->reason);
	return p->err;
}
