/* SPDX-License-Identifier: MIT */
/*
 * Requests in: a client's packets read, decoded and dispatched by message
 * type; HELLO, STATS, METRICS, routing hints and token reports answered
 * here.  A malformed message closes that client only, with the reason
 * logged and sent back.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server-int.h"
#include "telemetry.h"

/* Packets per client per wakeup.  One: epoll is level-triggered and comes
 * back for the rest, which costs less than the recvmsg that would find
 * nothing after a lone request (the common case: a blocking acquire). */
#define SERVER_READ_BURST	1
/* Tokens one report may carry: far above any real batch, and low enough that
 * the 64-bit totals (Prometheus counters) cannot be wrapped by a client. */
#define SERVER_MAX_TOKEN_REPORT	(1ull << 32)

static int client_welcome(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_hello *m)
{
	struct server *s = c->srv;
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	struct tierd_proto_buf b;
	int nmodels = engine_model_count(s->engine);
	int npools = engine_pool_count(s->engine);
	int fds[TIERD_PROTO_MAX_FDS];
	int nfds, r;

	if (!w)
		return -ENOMEM;
	snprintf(c->name, sizeof(c->name), "%s", m->name);
	c->allowed = calloc((size_t)nmodels + 1, sizeof(bool));
	if (!c->allowed) {
		free(w);
		return -ENOMEM;
	}
	client_authorize(c);
	client_numa_choose(c, m->numa_node);
	c->hello = true;
	w->instance = s->instance;
	w->nmodels = (uint32_t)nmodels;
	w->npools = c->may_map ? (uint32_t)npools : 0;
	for (uint32_t i = 0; i < w->npools; i++) {
		w->pool_size[i] = engine_pool_size(s->engine, i);
		fds[i] = engine_pool_fd(s->engine, i);
	}
	for (int i = 0; i < nmodels; i++) {
		const struct catalog *cat = engine_model_catalog(s->engine, (uint32_t)i);
		struct tierd_proto_model *pm = &w->models[i];

		pm->name = engine_model_name(s->engine, (uint32_t)i);
		pm->flags = c->allowed[i] ? TIERD_MODEL_F_ALLOWED : 0;
		pm->nlayers = cat->nlayers;
		pm->experts_per_layer = cat->experts_per_layer;
		pm->top_k = cat->top_k;
		pm->nexperts = cat->nexperts;
		pm->slot_bytes = cat->slot_bytes;
	}
	nfds = (int)w->npools;
	client_fast_open(c, h->minor, w, fds, &nfds);
	tierd_proto_begin(&b, s->tx, sizeof(s->tx), TIERD_MSG_WELCOME, 0, h->request_id);
	tierd_proto_put_welcome(&b, w);
	free(w);
	log_info("client %u: pid %d uid %u gid %u \"%s\" connected (%s, NUMA node %d (%s), pool %u)",
		 c->id, (int)c->pid, (unsigned)c->uid, (unsigned)c->gid, c->name,
		 c->may_map ? "pool mapped" : "no pool access", c->node, client_node_how[c->node_how],
		 c->pool);
	r = client_send(c, s->tx, tierd_proto_end(&b), fds, nfds);
	if (!r)
		client_fast_sent(c);
	return r;
}

static void client_stats(struct client *c, uint64_t id)
{
	uint64_t v[TIERD_STAT_COUNT];

	server_fast_sweep(c->srv);	/* hits through pin areas, up to now */
	server_get_stats(c->srv, v);
	client_send(c, c->srv->tx, tierd_proto_encode_stats(c->srv->tx, sizeof(c->srv->tx), id, v,
							      TIERD_STAT_COUNT), NULL, 0);
}

/* METRICS: a fresh sample (probes read, energy advanced), rendered and sent
 * in chunks.  Open to every client, like STATS: the HTTP endpoint, when on,
 * serves the same text to anyone on the host. */
static int client_metrics(struct client *c, uint64_t id, const struct tierd_msg_metrics *m)
{
	struct server *s = c->srv;
	char *text = NULL;
	size_t len = 0;
	uint64_t off = 0;
	int r;

	if (m->format != TIERD_METRICS_PROMETHEUS && m->format != TIERD_METRICS_JSON)
		return client_error(c, id, -EOPNOTSUPP, "metrics format %u: unknown (0: Prometheus text, "
				    "1: JSON)", m->format);
	if (!s->tel)
		return client_error(c, id, -ENOTSUP, "this tierd runs without telemetry");
	telemetry_refresh(s->tel, s->engine, telemetry_now_ns());
	r = telemetry_render_as(s->tel, m->format == TIERD_METRICS_JSON ? METRICS_JSON : METRICS_TEXT,
				&text, &len);
	if (r)
		return client_error(c, id, r, "rendering metrics: %s", strerror(-r));
	/* The chunks are sent at once: what the socket cannot take waits in
	 * the client's queue, whose bound would drop the client instead. */
	_Static_assert(SERVER_MAX_QUEUED <= TIERD_PROTO_MAX_METRICS, "the queue is the tighter bound");
	if (len > SERVER_MAX_QUEUED) {
		free(text);
		return client_error(c, id, -E2BIG, "metrics of %zu bytes exceed what one answer may carry (%u)",
				    len, SERVER_MAX_QUEUED);
	}
	do {
		size_t n;
		long pl = tierd_proto_encode_metrics_data(s->tx, sizeof(s->tx), id, text, len, off, &n);

		r = client_send(c, s->tx, pl, NULL, 0);
		off += n;
	} while (!r && off < len);
	free(text);
	return r;
}

/* A protocol fault: log, tell the client why, close it.  The daemon goes on. */
static void client_malformed(struct client *c, const struct tierd_msg_hdr *h, int err, const char *why)
{
	char reason[256];

	snprintf(reason, sizeof(reason), "malformed %s message: %s",
		 h ? tierd_proto_type_name(h->type) : "", why);
	log_warn("client pid %d uid %u: %s: closing the connection", (int)c->pid, (unsigned)c->uid, reason);
	c->srv->counters[TIERD_STAT_PROTOCOL_ERRORS]++;
	/* Best effort, not queued: the connection is closing. */
	send_packet(c->fd, c->srv->tx,
		    (size_t)tierd_proto_encode_error(c->srv->tx, sizeof(c->srv->tx),
						     h ? h->request_id : 0, err, reason), NULL, 0);
	client_drop(c, reason);
}

/* Handles one packet.  Returns -ECONNRESET when the client was dropped. */
static int client_handle(struct client *c, const uint8_t *buf, size_t len)
{
	struct server *s = c->srv;
	struct tierd_msg_hdr h;
	const uint8_t *p = buf + sizeof(h);
	const struct tierd_key *keys;
	const char *why = NULL;
	uint32_t n;
	int r;

	r = tierd_proto_decode_hdr(buf, len, &h, &why);
	if (r == -EPROTO) {
		char reason[160];

		snprintf(reason, sizeof(reason),
			 "client speaks protocol %u.%u, tierd speaks %u.%u: refused",
			 h.major, h.minor, TIERD_PROTO_MAJOR, TIERD_PROTO_MINOR);
		log_warn("client pid %d uid %u: %s", (int)c->pid, (unsigned)c->uid, reason);
		s->counters[TIERD_STAT_REFUSED]++;
		s->refused_by[refuse_reason(-EPROTONOSUPPORT)]++;
		send_packet(c->fd, s->tx, (size_t)tierd_proto_encode_error(s->tx, sizeof(s->tx),
									h.request_id, -EPROTONOSUPPORT, reason),
			    NULL, 0);
		client_drop(c, "protocol version mismatch");
		return -ECONNRESET;
	}
	if (r) {
		client_malformed(c, NULL, r, why);
		return -ECONNRESET;
	}
	if (!h.request_id) {
		client_malformed(c, &h, -EBADMSG, "request id 0 is reserved");
		return -ECONNRESET;
	}
	if (c->refuse[0]) {
		/* Refused at accept: told now, then closed. */
		send_packet(c->fd, s->tx, (size_t)tierd_proto_encode_error(s->tx, sizeof(s->tx), h.request_id,
									  -EUSERS, c->refuse), NULL, 0);
		client_drop(c, c->refuse);
		return -ECONNRESET;
	}
	if (!c->hello && h.type != TIERD_MSG_HELLO) {
		client_malformed(c, &h, -EBADMSG, "the first message must be HELLO");
		return -ECONNRESET;
	}
	s->counters[TIERD_STAT_REQUESTS]++;
	switch ((enum tierd_msg_type)h.type) {
	case TIERD_MSG_HELLO: {
		struct tierd_msg_hello m;

		if (c->hello)
			why = "HELLO sent twice";
		else if (!tierd_proto_decode_hello(p, h.length, &m, &why)) {
			r = client_welcome(c, &h, &m);
			if (r == -ENOMEM) {
				client_drop(c, "out of memory");
				return -ECONNRESET;
			}
			return r;
		}
		break;
	}
	case TIERD_MSG_PREFETCH:
	case TIERD_MSG_ACQUIRE:
	case TIERD_MSG_RELEASE:
	case TIERD_MSG_EVICT:
	case TIERD_MSG_PIN:
	case TIERD_MSG_UNPIN:
		if (tierd_proto_decode_keys(p, h.length, &keys, &n, &why))
			break;
		if (h.type == TIERD_MSG_RELEASE) {
			client_release(c, &h, keys, n, &c->pins);
			return 0;
		}
		if (h.type == TIERD_MSG_EVICT || h.type == TIERD_MSG_PIN || h.type == TIERD_MSG_UNPIN) {
			if (!c->operator) {
				return client_error(c, h.request_id, -EPERM,
						    "%s is for operators (root or the daemon's user), not uid %u",
						    tierd_proto_type_name(h.type), (unsigned)c->uid);
			}
			if (h.type == TIERD_MSG_UNPIN) {
				client_release(c, &h, keys, n, &s->opins);
				return 0;
			}
		}
		/* A prefetch moves experts into the pool others read from and
		 * may evict theirs: only for clients that may read the pool. */
		r = client_check_keys(c, h.request_id, keys, n,
				      h.type == TIERD_MSG_ACQUIRE || h.type == TIERD_MSG_PREFETCH);
		if (r)
			return r;
		if (h.type == TIERD_MSG_EVICT) {
			client_evict(c, &h, keys, n);
		} else if (h.type == TIERD_MSG_PREFETCH) {
			client_prefetch(c, &h, keys, n);
		} else {
			client_acquire(c, &h, keys, n, h.type == TIERD_MSG_PIN ? REQ_PIN : REQ_ACQUIRE);
		}
		return 0;
	case TIERD_MSG_ROUTING_HINT: {
		struct tierd_msg_hint m;

		if (tierd_proto_decode_hint(p, h.length, &m, &why))
			break;
		if (m.model >= (uint32_t)engine_model_count(s->engine) || !c->allowed[m.model])
			return client_error(c, h.request_id, -ENOENT, "routing hint for model index %u: not usable",
					    m.model);
		if (s->obs && s->obs->hints)
			s->obs->hints(s->obs_arg, c->id, m.model, m.layer, m.hints, m.count);
		s->counters[TIERD_STAT_HINTS] += m.count;
		return client_ok(c, h.request_id, h.flags, m.count);
	}
	case TIERD_MSG_TOKEN_REPORT: {
		struct tierd_msg_tokens m;

		if (tierd_proto_decode_tokens(p, h.length, &m, &why))
			break;
		if (m.model >= (uint32_t)engine_model_count(s->engine) || !c->allowed[m.model])
			return client_error(c, h.request_id, -ENOENT, "token report for model index %u: not usable",
					    m.model);
		if (m.tokens > SERVER_MAX_TOKEN_REPORT)
			return client_error(c, h.request_id, -ERANGE,
					    "token report of %llu tokens: at most %llu in one report",
					    (unsigned long long)m.tokens, SERVER_MAX_TOKEN_REPORT);
		s->counters[TIERD_STAT_TOKENS] += m.tokens;
		if (s->obs && s->obs->tokens)
			s->obs->tokens(s->obs_arg, c->id, m.model, m.tokens);
		return client_ok(c, h.request_id, h.flags, m.tokens);
	}
	case TIERD_MSG_STATS:
		if (h.length) {
			why = "STATS carries no payload";
			break;
		}
		client_stats(c, h.request_id);
		return 0;
	case TIERD_MSG_METRICS: {
		struct tierd_msg_metrics m;

		if (tierd_proto_decode_metrics(p, h.length, &m, &why))
			break;
		return client_metrics(c, h.request_id, &m);
	}
	case TIERD_MSG_WARM: {
		struct tierd_msg_warm m;

		if (tierd_proto_decode_warm(p, h.length, &m, &why))
			break;
		if (!c->operator) {
			return client_error(c, h.request_id, -EPERM, "WARM is for operators, not uid %u",
					    (unsigned)c->uid);
		}
		client_warm(c, &h, &m);
		return 0;
	}
	case TIERD_MSG_WELCOME:
	case TIERD_MSG_ERROR:
	case TIERD_MSG_OK:
	case TIERD_MSG_ACQUIRED:
	case TIERD_MSG_STATS_REPLY:
	case TIERD_MSG_PROGRESS:
	case TIERD_MSG_METRICS_DATA:
		why = "a daemon-to-client message sent to the daemon";
		break;
	}
	client_malformed(c, &h, -EBADMSG, why ? why : "unknown message type");
	return -ECONNRESET;
}

void client_read(struct client *c)
{
	struct server *s = c->srv;

	for (int i = 0; i < SERVER_READ_BURST; i++) {
		struct iovec iov = { .iov_base = s->rx, .iov_len = sizeof(s->rx) };
		union {
			char buf[CMSG_SPACE(sizeof(int) * 8)];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
		};
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			client_drop(c, strerror(errno));
			return;
		}
		if (n == 0) {
			client_drop(c, NULL);
			return;
		}
		if (mh.msg_controllen) {
			/* Clients never send descriptors: close what came and go. */
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
				if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
					for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
						int fd;

						memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
						close(fd);
					}
			client_malformed(c, NULL, -EBADMSG, "ancillary data (file descriptors) sent to the daemon");
			return;
		}
		if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			client_malformed(c, NULL, -EMSGSIZE, "message larger than the protocol allows");
			return;
		}
		client_handle(c, s->rx, (size_t)n);
		if (c->dead)
			return;
	}
}
