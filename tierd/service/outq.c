/* SPDX-License-Identifier: MIT */
/*
 * Answers.  Every client socket is non-blocking: answers that the socket
 * cannot take now wait in the client's output queue, and a client whose
 * queue grows past SERVER_MAX_QUEUED, or the biggest queue when all of them
 * together reach [daemon] max_queued_bytes, is dropped, so that a client
 * that stops reading never blocks or grows the daemon.  Also the ERROR and
 * OK answers, and refusals counted by reason and logged at a bounded rate.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "server-int.h"

#define SERVER_REFUSE_LOG_S	10		/* at most one refusal logged per this */

/* Reasons refusals are counted by (metrics label: the errno's name). */
const int refuse_errs[] = {
	EACCES, EPERM, EDQUOT, ENOSPC, ENOENT, E2BIG, ERANGE, EBUSY, EIO, ENOMEM, ESTALE, EUSERS,
	EPROTONOSUPPORT, 0,
};
const char *const refuse_names[] = {
	"EACCES", "EPERM", "EDQUOT", "ENOSPC", "ENOENT", "E2BIG", "ERANGE", "EBUSY", "EIO", "ENOMEM",
	"ESTALE", "EUSERS", "EPROTONOSUPPORT", "other",
};
_Static_assert(sizeof(refuse_errs) / sizeof(refuse_errs[0]) == SERVER_NREASONS, "one errno per reason");
_Static_assert(sizeof(refuse_names) / sizeof(refuse_names[0]) == SERVER_NREASONS, "one name per errno");

static int client_update_events(struct client *c)
{
	bool want = !STAILQ_EMPTY(&c->out);

	if (want == c->want_out)
		return 0;
	c->want_out = want;
	return loop_modify_fd(c->src, EPOLLIN | (want ? EPOLLOUT : 0));
}

ssize_t send_packet(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int) * TIERD_PROTO_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The client dropped when every client's queues together reach [daemon]
 * max_queued_bytes: the one with the most unread answers of the uid with the
 * most, so that a uid's many connections cannot get another uid's dropped. */
static struct client *server_biggest_queue(struct server *s)
{
	struct uidacct *top = NULL;
	struct client *big = NULL, *c;

	for (size_t i = 0; i < s->naccts; i++)
		if (s->accts[i].conns && (!top || s->accts[i].queued > top->queued))
			top = &s->accts[i];
	TAILQ_FOREACH(c, &s->clients, link)
		if (c->acct == top && (!big || c->out_bytes > big->out_bytes))
			big = c;
	return big;
}

/* Sends now if nothing waits, else queues.  The client may be dropped (its
 * queue overflowed or its socket failed): returns -ECONNRESET then, and c
 * must not be used. */
int client_send(struct client *c, const void *buf, long len, const int *fds, int nfds)
{
	struct server *s = c->srv;
	struct outmsg *m;

	if (c->dead)
		return -ECONNRESET;
	if (len < 0) {
		log_err("encoding an answer for pid %d failed: %s", (int)c->pid, strerror((int)-len));
		client_drop(c, "internal error: answer too large");
		return -ECONNRESET;
	}
	if (STAILQ_EMPTY(&c->out)) {
		ssize_t n = send_packet(c->fd, buf, (size_t)len, fds, nfds);

		if (n == len)
			return 0;
		if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			client_drop(c, n >= 0 ? "short send" : strerror(errno));
			return -ECONNRESET;
		}
	}
	if (c->out_bytes + (size_t)len > SERVER_MAX_QUEUED) {
		s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
		client_drop(c, "output queue full: the client does not read its answers");
		return -ECONNRESET;
	}
	/* The bound across clients: many connections that each stay under
	 * their own bound must not grow the daemon without limit.  The
	 * biggest reader-who-does-not-read goes first. */
	while (s->queued_bytes + (uint64_t)len > s->conf->max_queued_bytes) {
		struct client *big = server_biggest_queue(s);
		char why[160];

		if (!big || !big->out_bytes)
			big = c;
		snprintf(why, sizeof(why), "%zu bytes of answers unread while all clients' queues reach "
			 "[daemon] max_queued_bytes (%llu)", big->out_bytes,
			 (unsigned long long)s->conf->max_queued_bytes);
		s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
		client_drop(big, why);
		if (big == c)
			return -ECONNRESET;
	}
	m = malloc(sizeof(*m) + (size_t)len);
	if (!m) {
		client_drop(c, "out of memory");
		return -ECONNRESET;
	}
	m->len = (size_t)len;
	m->nfds = nfds;
	if (nfds)
		memcpy(m->fds, fds, sizeof(int) * (size_t)nfds);
	memcpy(m->data, buf, (size_t)len);
	STAILQ_INSERT_TAIL(&c->out, m, link);
	c->out_bytes += (size_t)len;
	c->acct->queued += (size_t)len;
	s->queued_bytes += (size_t)len;
	if (client_update_events(c)) {
		client_drop(c, "cannot watch the socket");
		return -ECONNRESET;
	}
	return 0;
}

void client_flush(struct client *c)
{
	while (!STAILQ_EMPTY(&c->out)) {
		struct outmsg *m = STAILQ_FIRST(&c->out);
		ssize_t n = send_packet(c->fd, m->data, m->len, m->fds, m->nfds);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n != (ssize_t)m->len) {
			client_drop(c, n < 0 ? strerror(errno) : "short send");
			return;
		}
		STAILQ_REMOVE_HEAD(&c->out, link);
		c->out_bytes -= m->len;
		c->acct->queued -= m->len;
		c->srv->queued_bytes -= m->len;
		free(m);
	}
	if (client_update_events(c))
		client_drop(c, "cannot watch the socket");
}

unsigned refuse_reason(int err)
{
	unsigned i;

	for (i = 0; i < SERVER_NREASONS - 1; i++)
		if (refuse_errs[i] == -err)
			break;
	return i;
}

/*
 * Counts a refusal and logs it, at most one line per SERVER_REFUSE_LOG_S
 * (a client retrying a refused request in a loop must not fill the
 * journal): the line says how many went unlogged since the last one.
 */
static void server_note_refusal(struct server *s, const struct client *c, uint64_t id, int err,
				const char *reason)
{
	struct timespec now;

	s->refused_by[refuse_reason(err)]++;
	s->counters[TIERD_STAT_REFUSED]++;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (s->refuse_logged.tv_sec && now.tv_sec - s->refuse_logged.tv_sec < SERVER_REFUSE_LOG_S) {
		s->refused_unlogged++;
		log_debug("client pid %d uid %u: request %llu refused: %s", (int)c->pid, (unsigned)c->uid,
			  (unsigned long long)id, reason);
		return;
	}
	if (s->refused_unlogged)
		log_notice("client pid %d uid %u: request %llu refused: %s (and %llu other refusals in the "
			   "last %lld s: see tierd_requests_refused_total)", (int)c->pid, (unsigned)c->uid,
			   (unsigned long long)id, reason, (unsigned long long)s->refused_unlogged,
			   (long long)(now.tv_sec - s->refuse_logged.tv_sec));
	else
		log_notice("client pid %d uid %u: request %llu refused: %s", (int)c->pid, (unsigned)c->uid,
			   (unsigned long long)id, reason);
	s->refused_unlogged = 0;
	s->refuse_logged = now;
}

/*
 * Answers ERROR and returns err, a negative errno (or -ECONNRESET if the
 * client was dropped meanwhile): never 0, so that "return client_error()"
 * stops the request it refuses.
 */
int client_error(struct client *c, uint64_t id, int err, const char *fmt, ...)
{
	char reason[TIERD_PROTO_MAX_REASON + 1];
	va_list ap;
	int r;

	if (err >= 0) {
		/* A caller bug: still refuse, never carry on. */
		log_err("internal error: refusing request %llu with errno %d", (unsigned long long)id, err);
		err = -EIO;
	}
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	server_note_refusal(c->srv, c, id, err, reason);
	r = client_send(c, c->srv->tx,
			tierd_proto_encode_error(c->srv->tx, sizeof(c->srv->tx), id, err, reason), NULL, 0);
	return r ? r : err;
}

int client_ok(struct client *c, uint64_t id, uint16_t flags, uint64_t v)
{
	if (flags & TIERD_PROTO_F_NOREPLY)
		return 0;
	return client_send(c, c->srv->tx,
			   tierd_proto_encode_u64(c->srv->tx, sizeof(c->srv->tx), TIERD_MSG_OK, id, v),
			   NULL, 0);
}
