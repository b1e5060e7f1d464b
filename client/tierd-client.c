/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: the tierd_client_* calls of tierd-client.h.  The
 * acquisition objects (and the tierd_acquisition_* and tierd_dtype_*
 * calls) are in tierd-client-acq.c, the request multiplexer in
 * tierd-client-mux.c, connect and reconnect in tierd-client-conn.c; what
 * they share is in tierd-client-int.h.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tierd-client-int.h"

EXPORT int tierd_client_connect(struct tierd_client **out, const char *path, const char *name)
{
	return tierd_client_connect_node(out, path, name, TIERD_CLIENT_NODE_DEFAULT);
}

EXPORT int tierd_client_connect_node(struct tierd_client **out, const char *path, const char *name,
				     int numa_node)
{
	struct tierd_client *c = calloc(1, sizeof(*c));
	const char *env;
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
	c->numa_node = numa_node == TIERD_CLIENT_NODE_DEFAULT ? tdc_numa_node_default() :
		       numa_node < 0 ? TIERD_NODE_UNSAID : numa_node;
	c->fd = -1;
	c->stale_fd = -1;
	c->next_id = 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	/* The switch for comparisons and for doubt: every acquire through the
	 * socket (TIERD_CLIENT_F_SOCKET). */
	env = getenv("TIERD_NO_FASTPATH");
	if (env && *env && strcmp(env, "0"))
		c->flags |= TIERD_CLIENT_F_SOCKET;
	LIST_INIT(&c->layouts);
	r = tdc_conn_open(c);
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
	while (!LIST_EMPTY(&c->acqs)) {
		struct tierd_acquisition *a = LIST_FIRST(&c->acqs);

		LIST_REMOVE(a, link);
		tdc_acq_free(a);
	}
	c->held = 0;
	tdc_pending_list_free(&c->pending);
	tdc_pending_list_free(&c->completed);
	/* The acquisitions and the fast path held the last references on
	 * the layouts: c->layouts is empty now. */
	tdc_fast_close(c);
	for (uint32_t i = 0; i < c->npools; i++)
		tdc_mapping_unref(c->pools[i]);
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
	r = tdc_ensure_conn(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

EXPORT void tierd_client_last_error(struct tierd_client *c, char *buf, size_t len)
{
	pthread_mutex_lock(&c->lock);
	snprintf(buf, len, "%s", c->last_error);
	pthread_mutex_unlock(&c->lock);
}

EXPORT void tierd_client_set_flags(struct tierd_client *c, unsigned flags)
{
	pthread_mutex_lock(&c->lock);
	c->flags = flags & TIERD_CLIENT_F_ALL;
	pthread_mutex_unlock(&c->lock);
}

EXPORT unsigned tierd_client_flags(struct tierd_client *c)
{
	unsigned f;

	pthread_mutex_lock(&c->lock);
	f = c->flags;
	pthread_mutex_unlock(&c->lock);
	return f;
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
	r = tdc_ensure_conn(c);
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
	int r = tdc_ensure_conn(c);

	*out = NULL;
	if (r)
		return r;
	*out = tdc_pending_new(c, answer);
	return *out ? 0 : -ENOMEM;
}

/* A request's end (lock held).  A request abandoned on timeout belongs to the
 * reader, which frees it when (if) the answer comes. */
static void request_close(struct tierd_client *c, struct pending *p)
{
	if (!p || p->abandoned)
		return;
	tdc_pending_unlink(c, p);
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
		r = tdc_send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), type, 0, p->id,
							       (const struct tierd_key *)keys, (uint32_t)n),
				    timeout_ms);
	if (!r)
		r = tdc_wait_pending(c, p, timeout_ms, NULL, NULL);
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
		r = tdc_send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_ACQUIRE, 0, p->id,
							       (const struct tierd_key *)keys, (uint32_t)n),
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
	if (!tdc_fast_acquire(c, keys, n, &a)) {
		*out = a;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	r = acquire_send(c, keys, n, timeout_ms, &p);
	if (r)
		goto out;
	r = tdc_wait_pending(c, p, timeout_ms, NULL, NULL);
	if (r == -ETIMEDOUT)
		goto out;	/* the reader releases the pins when they come */
	if (!r && !p->acq)
		r = -EBADMSG;	/* dispatch() lets only ACQUIRED or ERROR through: a guard */
	if (!r) {
		r = tdc_acq_new(c, p->keys, n, p->acq, &a);
		p->keys = NULL;
		p->acq = NULL;
	}
	request_close(c, p);
	if (!r)
		tdc_fast_learn(c, a);
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
	r = tdc_ensure_conn(c);
	if (!r) {
		tdc_read_round(c, timeout_ms);
		r = tdc_run_completed(c);
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
	LIST_REMOVE(a, link);
	c->held -= a->n;
	/*
	 * A broken or lost acquisition holds no pin in the current daemon.
	 * The release needs no answer: the socket keeps order, so the daemon
	 * has processed it before anything this client sends next, and a
	 * failure (which can only mean the pin was already gone) is recorded
	 * in last_error when it arrives.  This keeps acquire+release at one
	 * round trip.
	 */
	if (a->fast)
		tdc_fast_release(c, a);
	else if (!a->status && c->fd >= 0)
		r = tdc_send_locked(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_RELEASE,
							       TIERD_PROTO_F_NOREPLY, c->next_id++,
							       (const struct tierd_key *)a->keys, (uint32_t)a->n),
				    REQUEST_TIMEOUT_MS);
	/* The connection broke, or tdc_send_locked() dropped it because the daemon
	 * stopped reading: either way the daemon drops the pins itself. */
	if (r == -ECONNRESET || r == -ENOTCONN || r == -ETIMEDOUT)
		r = 0;
	tdc_acq_free(a);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Fire-and-forget requests: errors come back asynchronously into last_error. */
static int send_noreply(struct tierd_client *c, long (*enc)(struct tierd_client *, uint64_t, const void *),
			const void *arg)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = tdc_ensure_conn(c);
	if (!r)
		r = tdc_send_locked(c, enc(c, c->next_id++, arg), REQUEST_TIMEOUT_MS);
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
		r = tdc_send_locked(c, tierd_proto_end(&b), timeout_ms);
	}
	if (!r)
		r = tdc_wait_pending(c, p, timeout_ms, NULL, NULL);
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
	return tierd_client_metrics_as(c, TIERD_METRICS_PROMETHEUS, text, len, timeout_ms);
}

_Static_assert(TIERD_CLIENT_METRICS_TEXT == TIERD_METRICS_PROMETHEUS &&
	       TIERD_CLIENT_METRICS_JSON == TIERD_METRICS_JSON, "the library's names are the protocol's");

EXPORT int tierd_client_metrics_as(struct tierd_client *c, unsigned format, char **text, size_t *len,
				   int timeout_ms)
{
	struct pending *p;
	int r;

	*text = NULL;
	if (len)
		*len = 0;
	pthread_mutex_lock(&c->lock);
	r = request_open(c, TIERD_MSG_METRICS_DATA, &p);
	if (!r)
		r = tdc_send_locked(c, tierd_proto_encode_metrics(c->tx, sizeof(c->tx), p->id, format),
				    timeout_ms);
	if (!r)
		r = tdc_wait_pending(c, p, timeout_ms, NULL, NULL);
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
		r = tdc_send_locked(c, tierd_proto_encode_warm(c->tx, sizeof(c->tx), p->id, &w), timeout_ms);
	}
	if (!r)
		r = tdc_wait_pending(c, p, timeout_ms, progress, arg);
	if (!r)
		done = p->value;
	request_close(c, p);
	pthread_mutex_unlock(&c->lock);
	/* Without the lock, like every other callback: it may call us. */
	if (!r && progress)
		progress(done, done, arg);
	return r;
}
