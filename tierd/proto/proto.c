/* SPDX-License-Identifier: MIT */
/*
 * Encoding and validating decoding of the wire protocol (tierd-proto.h).
 * Linked into both the daemon and libtierd-client, and fuzzed: it must not
 * read a byte outside the buffer whatever it is given, and never trust a count
 * before checking it against the bytes that are really there.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tierd-proto.h"

_Static_assert(sizeof(struct tierd_msg_hdr) == 24, "header layout is frozen");
_Static_assert(sizeof(struct tierd_key) == 12, "key layout");
_Static_assert(sizeof(struct tierd_proto_hint) == 8, "hint layout");

static const char *const stat_names[TIERD_STAT_COUNT] = {
	[TIERD_STAT_UPTIME_MS] = "uptime_ms",
	[TIERD_STAT_PID] = "pid",
	[TIERD_STAT_CLIENTS] = "clients",
	[TIERD_STAT_MODELS] = "models",
	[TIERD_STAT_POOLS] = "pools",
	[TIERD_STAT_POOL_BYTES] = "pool_bytes",
	[TIERD_STAT_BYTES_RESIDENT] = "bytes_resident",
	[TIERD_STAT_PINS] = "pins",
	[TIERD_STAT_OPERATOR_PINS] = "operator_pins",
	[TIERD_STAT_HITS] = "hits",
	[TIERD_STAT_MISSES] = "misses",
	[TIERD_STAT_EVICTIONS] = "evictions",
	[TIERD_STAT_FETCHES] = "fetches",
	[TIERD_STAT_FETCH_ERRORS] = "fetch_errors",
	[TIERD_STAT_CANCELLED] = "cancelled",
	[TIERD_STAT_BYTES_READ] = "bytes_read",
	[TIERD_STAT_REQUESTS] = "requests",
	[TIERD_STAT_ACQUIRES] = "acquires",
	[TIERD_STAT_PREFETCHES] = "prefetches",
	[TIERD_STAT_RELEASES] = "releases",
	[TIERD_STAT_HINTS] = "routing_hints",
	[TIERD_STAT_TOKENS] = "tokens",
	[TIERD_STAT_PROTOCOL_ERRORS] = "protocol_errors",
	[TIERD_STAT_CLIENTS_DROPPED] = "clients_dropped",
	[TIERD_STAT_REFUSED] = "refused",
	[TIERD_STAT_RELOADS] = "reloads",
	[TIERD_STAT_ACQUIRES_NOSPACE] = "acquires_nospace",
	[TIERD_STAT_TRACE_EVENTS] = "trace_events",
	[TIERD_STAT_TRACE_DROPPED] = "trace_dropped",
	[TIERD_STAT_TRACE_ACTIVE] = "trace_active",
};

static const char *const type_names[TIERD_MSG_TYPE_MAX + 1] = {
	[TIERD_MSG_HELLO] = "HELLO", [TIERD_MSG_WELCOME] = "WELCOME",
	[TIERD_MSG_ERROR] = "ERROR", [TIERD_MSG_OK] = "OK",
	[TIERD_MSG_PREFETCH] = "PREFETCH", [TIERD_MSG_ACQUIRE] = "ACQUIRE",
	[TIERD_MSG_ACQUIRED] = "ACQUIRED", [TIERD_MSG_RELEASE] = "RELEASE",
	[TIERD_MSG_ROUTING_HINT] = "ROUTING_HINT", [TIERD_MSG_TOKEN_REPORT] = "TOKEN_REPORT",
	[TIERD_MSG_STATS] = "STATS", [TIERD_MSG_STATS_REPLY] = "STATS_REPLY",
	[TIERD_MSG_EVICT] = "EVICT", [TIERD_MSG_PIN] = "PIN", [TIERD_MSG_UNPIN] = "UNPIN",
	[TIERD_MSG_WARM] = "WARM", [TIERD_MSG_PROGRESS] = "PROGRESS",
	[TIERD_MSG_METRICS] = "METRICS", [TIERD_MSG_METRICS_DATA] = "METRICS_DATA",
	[TIERD_MSG_TRACE] = "TRACE",
};

const char *tierd_proto_stat_name(unsigned i)
{
	return i < TIERD_STAT_COUNT ? stat_names[i] : NULL;
}

const char *tierd_proto_type_name(unsigned type)
{
	return type >= 1 && type <= TIERD_MSG_TYPE_MAX ? type_names[type] : "unknown";
}

/* ---- reading ---- */

struct rd {
	const uint8_t *p;
	size_t len, pos;
	const char *why;	/* first fault */
};

static bool rd_fail(struct rd *r, const char *why)
{
	if (!r->why)
		r->why = why;
	return false;
}

static bool rd_u32(struct rd *r, uint32_t *v)
{
	if (r->why)
		return false;
	if (r->len - r->pos < 4)
		return rd_fail(r, "message truncated");
	memcpy(v, r->p + r->pos, 4);
	r->pos += 4;
	return true;
}

static bool rd_u64(struct rd *r, uint64_t *v)
{
	if (r->why)
		return false;
	if (r->len - r->pos < 8)
		return rd_fail(r, "message truncated");
	memcpy(v, r->p + r->pos, 8);
	r->pos += 8;
	return true;
}

static bool rd_zero_u32(struct rd *r)
{
	uint32_t v;

	if (!rd_u32(r, &v))
		return false;
	return v == 0 || rd_fail(r, "reserved field is not zero");
}

/* A string: printable, no NUL inside, NUL-terminated, padded with zeros. */
static bool rd_str(struct rd *r, const char **s, uint32_t max, bool allow_empty)
{
	uint32_t n;
	size_t padded;

	if (!rd_u32(r, &n))
		return false;
	if (n > max)
		return rd_fail(r, "string longer than the protocol allows");
	if (!n && !allow_empty)
		return rd_fail(r, "empty name");
	padded = ((size_t)n + 1 + 3) & ~(size_t)3;
	if (r->len - r->pos < padded)
		return rd_fail(r, "string runs past the end of the message");
	for (uint32_t i = 0; i < n; i++) {
		uint8_t c = r->p[r->pos + i];

		if (c < 0x20 || c == 0x7f)
			return rd_fail(r, "string holds a control character or NUL");
	}
	for (size_t i = n; i < padded; i++)
		if (r->p[r->pos + i])
			return rd_fail(r, "string not NUL-terminated or padding not zero");
	*s = (const char *)r->p + r->pos;
	r->pos += padded;
	return true;
}

static int rd_end(struct rd *r, const char **why)
{
	if (!r->why && r->pos != r->len)
		r->why = "trailing bytes after the message";
	if (r->why) {
		*why = r->why;
		return -EBADMSG;
	}
	return 0;
}

static void rd_init(struct rd *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->pos = 0;
	r->why = NULL;
}

int tierd_proto_decode_hdr(const void *buf, size_t len, struct tierd_msg_hdr *hdr, const char **why)
{
	if (len < sizeof(*hdr)) {
		*why = "shorter than a message header";
		return -EBADMSG;
	}
	memcpy(hdr, buf, sizeof(*hdr));
	if (hdr->magic != TIERD_PROTO_MAGIC) {
		*why = "bad magic (not a tierd message)";
		return -EBADMSG;
	}
	if (hdr->major != TIERD_PROTO_MAJOR) {
		*why = "protocol major version differs";
		return -EPROTO;
	}
	if (len > TIERD_PROTO_MAX_MSG) {
		*why = "message larger than the protocol allows";
		return -EBADMSG;
	}
	if (hdr->length != len - sizeof(*hdr)) {
		*why = "length field does not match the packet size";
		return -EBADMSG;
	}
	if (hdr->type < 1 || hdr->type > TIERD_MSG_TYPE_MAX) {
		*why = "unknown message type";
		return -EBADMSG;
	}
	if (hdr->flags & ~TIERD_PROTO_F_ALL) {
		*why = "unknown flags";
		return -EBADMSG;
	}
	return 0;
}

int tierd_proto_decode_hello(const void *payload, size_t len, struct tierd_msg_hello *m, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u32(&r, &m->pid);
	rd_str(&r, &m->name, 64, true);
	m->numa_node = TIERD_NODE_UNSAID;
	if (!r.why && r.pos < r.len) {
		uint32_t node = 0;

		if (rd_u32(&r, &node) && node > TIERD_NODE_MAX)
			rd_fail(&r, "NUMA node out of range");
		m->numa_node = (int32_t)node;
	}
	return rd_end(&r, why);
}

int tierd_proto_decode_welcome(const void *payload, size_t len, struct tierd_msg_welcome *m,
			       const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u64(&r, &m->instance);
	rd_u32(&r, &m->npools);
	rd_u32(&r, &m->nmodels);
	if (!r.why && m->npools > TIERD_PROTO_MAX_POOLS)
		rd_fail(&r, "too many pools");
	if (!r.why && m->nmodels > TIERD_PROTO_MAX_MODELS)
		rd_fail(&r, "too many models");
	for (uint32_t i = 0; !r.why && i < m->npools; i++)
		if (rd_u64(&r, &m->pool_size[i]) && (!m->pool_size[i] || m->pool_size[i] % 4096))
			rd_fail(&r, "pool size is zero or not a multiple of 4096");
	for (uint32_t i = 0; !r.why && i < m->nmodels; i++) {
		struct tierd_proto_model *md = &m->models[i];

		rd_str(&r, &md->name, TIERD_PROTO_MAX_NAME, false);
		rd_u32(&r, &md->flags);
		rd_u32(&r, &md->nlayers);
		rd_u32(&r, &md->experts_per_layer);
		rd_u32(&r, &md->top_k);
		rd_u64(&r, &md->nexperts);
		rd_u64(&r, &md->slot_bytes);
		for (uint32_t j = 0; !r.why && j < i; j++)
			if (!strcmp(m->models[j].name, md->name))
				rd_fail(&r, "two models with one name");
	}
	m->fast = 0;
	m->fast_max_pins = 0;
	m->fast_table_size = m->fast_area_size = 0;
	if (!r.why && r.pos < r.len) {
		rd_u32(&r, &m->fast);
		rd_u32(&r, &m->fast_max_pins);
		rd_u64(&r, &m->fast_table_size);
		rd_u64(&r, &m->fast_area_size);
		if (!r.why && (m->fast & ~TIERD_WELCOME_F_FAST))
			rd_fail(&r, "reserved bits set in the fast path fields");
		if (!r.why && (m->fast & TIERD_WELCOME_F_FAST) &&
		    (!m->fast_table_size || m->fast_table_size % 4096 || !m->fast_area_size ||
		     m->fast_area_size % 4096 || m->fast_table_size > (1ull << 40) ||
		     m->fast_area_size > (1ull << 40)))
			rd_fail(&r, "fast path table or pin area size is zero or not a multiple of 4096");
	}
	return rd_end(&r, why);
}

int tierd_proto_decode_error(const void *payload, size_t len, struct tierd_msg_error *m, const char **why)
{
	struct rd r;
	uint32_t e;

	rd_init(&r, payload, len);
	if (rd_u32(&r, &e)) {
		m->err = (int32_t)e;
		if (m->err >= 0 || m->err < -4095)
			rd_fail(&r, "error code is not a negative errno");
	}
	rd_str(&r, &m->reason, TIERD_PROTO_MAX_REASON, true);
	return rd_end(&r, why);
}

int tierd_proto_decode_u64(const void *payload, size_t len, uint64_t *v, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u64(&r, v);
	return rd_end(&r, why);
}

int tierd_proto_decode_keys(const void *payload, size_t len, const struct tierd_key **keys,
			    uint32_t *count, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	if (rd_u32(&r, count) && (*count == 0 || *count > TIERD_PROTO_MAX_BATCH))
		rd_fail(&r, "key count is 0 or above the batch limit");
	rd_zero_u32(&r);
	if (!r.why) {
		if ((r.len - r.pos) / sizeof(**keys) < *count)
			rd_fail(&r, "fewer keys than the count says");
		else if ((uintptr_t)(r.p + r.pos) % 4)
			rd_fail(&r, "key array not aligned");
		else {
			*keys = (const struct tierd_key *)(const void *)(r.p + r.pos);
			r.pos += (size_t)*count * sizeof(**keys);
		}
	}
	return rd_end(&r, why);
}

int tierd_proto_decode_acquired(const void *payload, size_t len, struct tierd_msg_acquired **out,
				const char **why)
{
	struct rd r;
	uint32_t count = 0, ntensors = 0;
	size_t total_tensors = 0, names = 0, size;
	struct tierd_msg_acquired *a = NULL;
	struct tierd_proto_tensor *t;
	char *strings;

	*out = NULL;
	/* Pass 1: validate and size. */
	rd_init(&r, payload, len);
	if (rd_u32(&r, &count) && (count == 0 || count > TIERD_PROTO_MAX_BATCH))
		rd_fail(&r, "expert count is 0 or above the batch limit");
	rd_zero_u32(&r);
	for (uint32_t i = 0; !r.why && i < count; i++) {
		uint32_t k[3];

		rd_u32(&r, &k[0]);
		rd_u32(&r, &k[1]);
		rd_u32(&r, &k[2]);
		if (rd_u32(&r, &ntensors) && (ntensors == 0 || ntensors > TIERD_PROTO_MAX_TENSORS))
			rd_fail(&r, "tensor count is 0 or above the limit");
		total_tensors += ntensors;
		for (uint32_t j = 0; !r.why && j < ntensors; j++) {
			uint32_t pool, dtype, ndim;
			uint64_t off, length, dim;
			const char *name;

			rd_u32(&r, &pool);
			rd_u32(&r, &dtype);
			rd_u64(&r, &off);
			rd_u64(&r, &length);
			if (rd_u32(&r, &ndim) && ndim > TIERD_PROTO_MAX_DIMS)
				rd_fail(&r, "tensor has too many dimensions");
			if (!r.why && pool >= TIERD_PROTO_MAX_POOLS)
				rd_fail(&r, "pool index out of range");
			if (!r.why && (length == 0 || off + length < off))
				rd_fail(&r, "tensor extent is empty or wraps");
			for (uint32_t d = 0; !r.why && d < ndim; d++)
				rd_u64(&r, &dim);
			if (rd_str(&r, &name, TIERD_PROTO_MAX_NAME, false))
				names += strlen(name) + 1;
		}
	}
	if (rd_end(&r, why))
		return -EBADMSG;

	size = sizeof(*a) + count * sizeof(a->experts[0]) + total_tensors * sizeof(*t) + names;
	a = calloc(1, size);
	if (!a) {
		*why = "out of memory";
		return -ENOMEM;
	}
	t = (struct tierd_proto_tensor *)(void *)&a->experts[count];
	strings = (char *)&t[total_tensors];

	/* Pass 2: fill; everything was checked above. */
	rd_init(&r, payload, len);
	rd_u32(&r, &a->count);
	rd_zero_u32(&r);
	for (uint32_t i = 0; i < count; i++) {
		struct tierd_proto_expert *e = &a->experts[i];

		rd_u32(&r, &e->key.model);
		rd_u32(&r, &e->key.layer);
		rd_u32(&r, &e->key.expert);
		rd_u32(&r, &e->ntensors);
		e->tensors = t;
		for (uint32_t j = 0; j < e->ntensors; j++, t++) {
			const char *name = "";
			size_t n;

			rd_u32(&r, &t->pool);
			rd_u32(&r, &t->dtype);
			rd_u64(&r, &t->offset);
			rd_u64(&r, &t->length);
			rd_u32(&r, &t->ndim);
			for (uint32_t d = 0; d < t->ndim; d++)
				rd_u64(&r, &t->shape[d]);
			rd_str(&r, &name, TIERD_PROTO_MAX_NAME, false);
			n = strlen(name) + 1;
			memcpy(strings, name, n);
			t->name = strings;
			strings += n;
		}
	}
	*out = a;
	return 0;
}

int tierd_proto_decode_hint(const void *payload, size_t len, struct tierd_msg_hint *m, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u32(&r, &m->model);
	rd_u32(&r, &m->layer);
	if (rd_u32(&r, &m->count) && (m->count == 0 || m->count > TIERD_PROTO_MAX_BATCH))
		rd_fail(&r, "hint count is 0 or above the batch limit");
	rd_zero_u32(&r);
	if (!r.why) {
		if ((r.len - r.pos) / sizeof(struct tierd_proto_hint) < m->count)
			rd_fail(&r, "fewer hints than the count says");
		else if ((uintptr_t)(r.p + r.pos) % 4)
			rd_fail(&r, "hint array not aligned");
		else {
			m->hints = (const struct tierd_proto_hint *)(const void *)(r.p + r.pos);
			r.pos += (size_t)m->count * sizeof(struct tierd_proto_hint);
			for (uint32_t i = 0; i < m->count; i++) {
				float w = m->hints[i].weight;

				if (!isfinite(w) || w < 0.0f || w > 1.0f) {
					rd_fail(&r, "routing weight not in [0, 1]");
					break;
				}
			}
		}
	}
	return rd_end(&r, why);
}

int tierd_proto_decode_tokens(const void *payload, size_t len, struct tierd_msg_tokens *m, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u32(&r, &m->model);
	rd_zero_u32(&r);
	rd_u64(&r, &m->tokens);
	return rd_end(&r, why);
}

int tierd_proto_decode_stats(const void *payload, size_t len, struct tierd_msg_stats *m, const char **why)
{
	struct rd r;

	memset(m, 0, sizeof(*m));
	rd_init(&r, payload, len);
	if (rd_u32(&r, &m->count) && m->count > TIERD_PROTO_MAX_STATS)
		rd_fail(&r, "too many counters");
	rd_zero_u32(&r);
	for (uint32_t i = 0; !r.why && i < m->count; i++) {
		uint64_t v;

		if (rd_u64(&r, &v) && i < TIERD_STAT_COUNT)
			m->value[i] = v;
	}
	return rd_end(&r, why);
}

int tierd_proto_decode_warm(const void *payload, size_t len, struct tierd_msg_warm *m, const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u32(&r, &m->model);
	rd_u32(&r, &m->first_layer);
	rd_u32(&r, &m->last_layer);
	rd_zero_u32(&r);
	if (!r.why && m->last_layer < m->first_layer)
		rd_fail(&r, "last layer before first layer");
	return rd_end(&r, why);
}

int tierd_proto_decode_trace(const void *payload, size_t len, struct tierd_msg_trace *m, const char **why)
{
	struct rd r;

	m->op = 0;
	m->path = "";
	rd_init(&r, payload, len);
	if (rd_u32(&r, &m->op) && m->op != TIERD_TRACE_START && m->op != TIERD_TRACE_STOP)
		rd_fail(&r, "unknown trace operation");
	rd_zero_u32(&r);
	rd_str(&r, &m->path, TIERD_PROTO_MAX_NAME, m->op == TIERD_TRACE_STOP);
	if (!r.why && (m->op == TIERD_TRACE_STOP) != !*m->path)
		rd_fail(&r, "a trace start names a file, a stop none");
	return rd_end(&r, why);
}

int tierd_proto_decode_progress(const void *payload, size_t len, struct tierd_msg_progress *m,
				const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u64(&r, &m->done);
	rd_u64(&r, &m->total);
	if (!r.why && m->done > m->total)
		rd_fail(&r, "progress past the total");
	return rd_end(&r, why);
}

int tierd_proto_decode_metrics(const void *payload, size_t len, struct tierd_msg_metrics *m,
			       const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u32(&r, &m->format);
	rd_zero_u32(&r);
	return rd_end(&r, why);
}

int tierd_proto_decode_metrics_data(const void *payload, size_t len, struct tierd_msg_metrics_data *m,
				    const char **why)
{
	struct rd r;

	rd_init(&r, payload, len);
	rd_u64(&r, &m->total);
	rd_u64(&r, &m->offset);
	if (r.why)
		return rd_end(&r, why);
	m->length = (uint32_t)(len - r.pos);
	m->data = (const char *)r.p + r.pos;
	if (m->total > TIERD_PROTO_MAX_METRICS)
		rd_fail(&r, "metrics larger than the protocol allows");
	else if (m->offset > m->total || m->length > m->total - m->offset)
		rd_fail(&r, "metrics chunk past the total");
	else if (memchr(m->data, 0, m->length))
		rd_fail(&r, "metrics text holds a NUL byte");
	else if (!m->length && m->offset != m->total)
		rd_fail(&r, "empty metrics chunk before the end");
	r.pos = len;
	return rd_end(&r, why);
}

int tierd_proto_validate(const void *buf, size_t len, const char **why)
{
	struct tierd_msg_hdr h;
	const uint8_t *p = (const uint8_t *)buf + sizeof(h);
	size_t n;
	int r = tierd_proto_decode_hdr(buf, len, &h, why);

	if (r)
		return r;
	n = h.length;
	switch ((enum tierd_msg_type)h.type) {
	case TIERD_MSG_HELLO: {
		struct tierd_msg_hello m;
		return tierd_proto_decode_hello(p, n, &m, why);
	}
	case TIERD_MSG_WELCOME: {
		struct tierd_msg_welcome *m = malloc(sizeof(*m));

		if (!m)
			return -ENOMEM;
		r = tierd_proto_decode_welcome(p, n, m, why);
		free(m);
		return r;
	}
	case TIERD_MSG_ERROR: {
		struct tierd_msg_error m;
		return tierd_proto_decode_error(p, n, &m, why);
	}
	case TIERD_MSG_OK: {
		uint64_t v;
		return tierd_proto_decode_u64(p, n, &v, why);
	}
	case TIERD_MSG_PREFETCH:
	case TIERD_MSG_ACQUIRE:
	case TIERD_MSG_RELEASE:
	case TIERD_MSG_EVICT:
	case TIERD_MSG_PIN:
	case TIERD_MSG_UNPIN: {
		const struct tierd_key *k;
		uint32_t c;
		return tierd_proto_decode_keys(p, n, &k, &c, why);
	}
	case TIERD_MSG_ACQUIRED: {
		struct tierd_msg_acquired *a;

		r = tierd_proto_decode_acquired(p, n, &a, why);
		free(a);
		return r;
	}
	case TIERD_MSG_ROUTING_HINT: {
		struct tierd_msg_hint m;
		return tierd_proto_decode_hint(p, n, &m, why);
	}
	case TIERD_MSG_TOKEN_REPORT: {
		struct tierd_msg_tokens m;
		return tierd_proto_decode_tokens(p, n, &m, why);
	}
	case TIERD_MSG_STATS:
		if (n) {
			*why = "STATS carries no payload";
			return -EBADMSG;
		}
		return 0;
	case TIERD_MSG_STATS_REPLY: {
		struct tierd_msg_stats m;
		return tierd_proto_decode_stats(p, n, &m, why);
	}
	case TIERD_MSG_WARM: {
		struct tierd_msg_warm m;
		return tierd_proto_decode_warm(p, n, &m, why);
	}
	case TIERD_MSG_PROGRESS: {
		struct tierd_msg_progress m;
		return tierd_proto_decode_progress(p, n, &m, why);
	}
	case TIERD_MSG_METRICS: {
		struct tierd_msg_metrics m;
		return tierd_proto_decode_metrics(p, n, &m, why);
	}
	case TIERD_MSG_METRICS_DATA: {
		struct tierd_msg_metrics_data m;
		return tierd_proto_decode_metrics_data(p, n, &m, why);
	}
	case TIERD_MSG_TRACE: {
		struct tierd_msg_trace m;
		return tierd_proto_decode_trace(p, n, &m, why);
	}
	}
	*why = "unknown message type";
	return -EBADMSG;
}

/* ---- writing ---- */

void tierd_proto_begin(struct tierd_proto_buf *b, void *data, size_t cap, uint16_t type,
		       uint16_t flags, uint64_t request_id)
{
	struct tierd_msg_hdr h = {
		.magic = TIERD_PROTO_MAGIC, .major = TIERD_PROTO_MAJOR, .minor = TIERD_PROTO_MINOR,
		.type = type, .flags = flags, .request_id = request_id,
	};

	b->data = data;
	b->cap = cap < TIERD_PROTO_MAX_MSG ? cap : TIERD_PROTO_MAX_MSG;
	b->len = 0;
	b->overflow = 0;
	tierd_proto_put_bytes(b, &h, sizeof(h));
}

long tierd_proto_end(struct tierd_proto_buf *b)
{
	uint32_t length;

	if (b->overflow)
		return -EMSGSIZE;
	length = (uint32_t)(b->len - sizeof(struct tierd_msg_hdr));
	memcpy(b->data + offsetof(struct tierd_msg_hdr, length), &length, sizeof(length));
	return (long)b->len;
}

void tierd_proto_put_bytes(struct tierd_proto_buf *b, const void *p, size_t n)
{
	if (b->overflow || b->cap - b->len < n) {
		b->overflow = 1;
		return;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void tierd_proto_put_u32(struct tierd_proto_buf *b, uint32_t v)
{
	tierd_proto_put_bytes(b, &v, sizeof(v));
}

void tierd_proto_put_u64(struct tierd_proto_buf *b, uint64_t v)
{
	tierd_proto_put_bytes(b, &v, sizeof(v));
}

void tierd_proto_put_str(struct tierd_proto_buf *b, const char *s)
{
	static const uint8_t zeros[4];
	size_t n = strlen(s);

	tierd_proto_put_u32(b, (uint32_t)n);
	tierd_proto_put_bytes(b, s, n);
	tierd_proto_put_bytes(b, zeros, 4 - n % 4);
}

long tierd_proto_encode_hello(void *buf, size_t cap, uint64_t id, uint32_t pid, const char *name)
{
	return tierd_proto_encode_hello_node(buf, cap, id, pid, name, TIERD_NODE_UNSAID);
}

long tierd_proto_encode_hello_node(void *buf, size_t cap, uint64_t id, uint32_t pid, const char *name,
				   int32_t numa_node)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_HELLO, 0, id);
	tierd_proto_put_u32(&b, pid);
	tierd_proto_put_str(&b, name);
	/* Only when said: a daemon before it refuses a longer HELLO. */
	if (numa_node >= 0)
		tierd_proto_put_u32(&b, (uint32_t)numa_node);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_keys(void *buf, size_t cap, uint16_t type, uint16_t flags, uint64_t id,
			     const struct tierd_key *keys, uint32_t count)
{
	struct tierd_proto_buf b;

	if (count == 0 || count > TIERD_PROTO_MAX_BATCH)
		return -EINVAL;
	tierd_proto_begin(&b, buf, cap, type, flags, id);
	tierd_proto_put_u32(&b, count);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_bytes(&b, keys, (size_t)count * sizeof(*keys));
	return tierd_proto_end(&b);
}

long tierd_proto_encode_error(void *buf, size_t cap, uint64_t id, int err, const char *reason)
{
	struct tierd_proto_buf b;
	char r[TIERD_PROTO_MAX_REASON + 1];
	size_t n = 0;

	/* Reasons quote what a peer sent: keep them printable and bounded. */
	for (const char *s = reason; *s && n < TIERD_PROTO_MAX_REASON; s++, n++)
		r[n] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	r[n] = '\0';
	tierd_proto_begin(&b, buf, cap, TIERD_MSG_ERROR, 0, id);
	tierd_proto_put_u32(&b, (uint32_t)(err < 0 && err >= -4095 ? err : -EIO));
	tierd_proto_put_str(&b, r);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_u64(void *buf, size_t cap, uint16_t type, uint64_t id, uint64_t v)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, type, 0, id);
	tierd_proto_put_u64(&b, v);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_hint(void *buf, size_t cap, uint16_t flags, uint64_t id, uint32_t model,
			     uint32_t layer, const struct tierd_proto_hint *hints, uint32_t count)
{
	struct tierd_proto_buf b;

	if (count == 0 || count > TIERD_PROTO_MAX_BATCH)
		return -EINVAL;
	tierd_proto_begin(&b, buf, cap, TIERD_MSG_ROUTING_HINT, flags, id);
	tierd_proto_put_u32(&b, model);
	tierd_proto_put_u32(&b, layer);
	tierd_proto_put_u32(&b, count);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_bytes(&b, hints, (size_t)count * sizeof(*hints));
	return tierd_proto_end(&b);
}

long tierd_proto_encode_tokens(void *buf, size_t cap, uint16_t flags, uint64_t id, uint32_t model,
			       uint64_t tokens)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_TOKEN_REPORT, flags, id);
	tierd_proto_put_u32(&b, model);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_u64(&b, tokens);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_warm(void *buf, size_t cap, uint64_t id, const struct tierd_msg_warm *w)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_WARM, 0, id);
	tierd_proto_put_u32(&b, w->model);
	tierd_proto_put_u32(&b, w->first_layer);
	tierd_proto_put_u32(&b, w->last_layer);
	tierd_proto_put_u32(&b, 0);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_trace(void *buf, size_t cap, uint64_t id, uint32_t op, const char *path)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_TRACE, 0, id);
	tierd_proto_put_u32(&b, op);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_str(&b, path ? path : "");
	return tierd_proto_end(&b);
}

long tierd_proto_encode_progress(void *buf, size_t cap, uint64_t id, uint64_t done, uint64_t total)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_PROGRESS, 0, id);
	tierd_proto_put_u64(&b, done);
	tierd_proto_put_u64(&b, total);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_stats(void *buf, size_t cap, uint64_t id, const uint64_t *values, uint32_t count)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_STATS_REPLY, 0, id);
	tierd_proto_put_u32(&b, count);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_bytes(&b, values, (size_t)count * sizeof(*values));
	return tierd_proto_end(&b);
}

long tierd_proto_encode_metrics(void *buf, size_t cap, uint64_t id, uint32_t format)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_METRICS, 0, id);
	tierd_proto_put_u32(&b, format);
	tierd_proto_put_u32(&b, 0);
	return tierd_proto_end(&b);
}

long tierd_proto_encode_metrics_data(void *buf, size_t cap, uint64_t id, const char *text, uint64_t total,
				     uint64_t offset, size_t *n)
{
	struct tierd_proto_buf b;
	size_t room;

	tierd_proto_begin(&b, buf, cap, TIERD_MSG_METRICS_DATA, 0, id);
	tierd_proto_put_u64(&b, total);
	tierd_proto_put_u64(&b, offset);
	room = b.cap > b.len ? b.cap - b.len : 0;
	*n = offset < total ? (size_t)(total - offset) : 0;
	if (*n > room)
		*n = room;
	tierd_proto_put_bytes(&b, text + offset, *n);
	return tierd_proto_end(&b);
}

void tierd_proto_put_welcome(struct tierd_proto_buf *b, const struct tierd_msg_welcome *w)
{
	tierd_proto_put_u64(b, w->instance);
	tierd_proto_put_u32(b, w->npools);
	tierd_proto_put_u32(b, w->nmodels);
	for (uint32_t i = 0; i < w->npools && i < TIERD_PROTO_MAX_POOLS; i++)
		tierd_proto_put_u64(b, w->pool_size[i]);
	for (uint32_t i = 0; i < w->nmodels && i < TIERD_PROTO_MAX_MODELS; i++) {
		const struct tierd_proto_model *m = &w->models[i];

		tierd_proto_put_str(b, m->name);
		tierd_proto_put_u32(b, m->flags);
		tierd_proto_put_u32(b, m->nlayers);
		tierd_proto_put_u32(b, m->experts_per_layer);
		tierd_proto_put_u32(b, m->top_k);
		tierd_proto_put_u64(b, m->nexperts);
		tierd_proto_put_u64(b, m->slot_bytes);
	}
	if (w->fast) {
		tierd_proto_put_u32(b, w->fast);
		tierd_proto_put_u32(b, w->fast_max_pins);
		tierd_proto_put_u64(b, w->fast_table_size);
		tierd_proto_put_u64(b, w->fast_area_size);
	}
}
