/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol between tierd and its clients, shared by the daemon
 * (tierd/service/server.c), libtierd-client and the fuzzer.
 *
 * Transport: one AF_UNIX SOCK_SEQPACKET connection per client; one message
 * per packet, so a message is never split or merged.  Both ends are on one
 * host: integers are in host byte order.
 *
 * Every message starts with struct tierd_msg_hdr.  The header and the ERROR
 * payload are frozen for every protocol version, so that a peer of another
 * major version can always be told why it is refused.  Minor versions only
 * append: fields at the end of STATS_REPLY, message types, flags.
 *
 * Conversation:
 *   client HELLO -> daemon WELCOME (+ pool fds by SCM_RIGHTS, read-only;
 *                   to a 1.3 client that may map the pool, then the residency
 *                   table's fd, read-only, and its own pin area's, read-write:
 *                   tierd-fastpath.h)
 *                   or ERROR and close (other major version, refused)
 *   then requests, each answered by the daemon with a message carrying the
 *   same request_id: OK, ACQUIRED, STATS_REPLY, PROGRESS (several, WARM only),
 *   METRICS_DATA (one or more chunks, METRICS only) or ERROR.  Requests with TIERD_PROTO_F_NOREPLY get an answer only on error.
 *
 * Experts are addressed by (model index, layer, expert); the model index is
 * the position of the model in WELCOME.
 */
#ifndef TIERD_PROTO_H
#define TIERD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "tierd-types.h"

#define TIERD_PROTO_MAGIC	0x44524954u	/* "TIRD" in memory on little-endian */
#define TIERD_PROTO_MAJOR	1
/* 1.1: METRICS, METRICS_DATA; 1.2: METRICS as JSON; 1.3: WELCOME's fast path, TRACE */
#define TIERD_PROTO_MINOR	3

/* Largest packet either side sends or accepts (fits the default socket buffer). */
#define TIERD_PROTO_MAX_MSG	(128u * 1024u)
#define TIERD_PROTO_MAX_BATCH	1024u	/* keys per PREFETCH/ACQUIRE/RELEASE/... */
#define TIERD_PROTO_MAX_NAME	1023u	/* model and tensor names, bytes without NUL */
#define TIERD_PROTO_MAX_MODELS	256u
#define TIERD_PROTO_MAX_POOLS	16u
#define TIERD_PROTO_MAX_FDS	(TIERD_PROTO_MAX_POOLS + 2u)	/* in one WELCOME: pools, table, pin area */
#define TIERD_PROTO_MAX_TENSORS	64u	/* per expert */
#define TIERD_PROTO_MAX_DIMS	8u
#define TIERD_PROTO_MAX_STATS	256u
#define TIERD_PROTO_MAX_REASON	511u	/* ERROR reason, bytes without NUL */
#define TIERD_PROTO_MAX_METRICS	(64u << 20)	/* bytes of one METRICS answer in all */

/* Flags of struct tierd_msg_hdr. */
#define TIERD_PROTO_F_NOREPLY	0x0001u	/* answer only if the request fails */
#define TIERD_PROTO_F_ALL	TIERD_PROTO_F_NOREPLY

enum tierd_msg_type {
	TIERD_MSG_HELLO = 1,		/* c->d: struct tierd_msg_hello */
	TIERD_MSG_WELCOME = 2,		/* d->c: struct tierd_msg_welcome */
	TIERD_MSG_ERROR = 3,		/* d->c: struct tierd_msg_error */
	TIERD_MSG_OK = 4,		/* d->c: u64 value (count of keys done, ...) */
	TIERD_MSG_PREFETCH = 5,		/* c->d: keys; fetch without pinning */
	TIERD_MSG_ACQUIRE = 6,		/* c->d: keys; answered when all resident */
	TIERD_MSG_ACQUIRED = 7,		/* d->c: struct tierd_msg_acquired */
	TIERD_MSG_RELEASE = 8,		/* c->d: keys; one pin each */
	TIERD_MSG_ROUTING_HINT = 9,	/* c->d: struct tierd_msg_hint */
	TIERD_MSG_TOKEN_REPORT = 10,	/* c->d: struct tierd_msg_tokens */
	TIERD_MSG_STATS = 11,		/* c->d: empty */
	TIERD_MSG_STATS_REPLY = 12,	/* d->c: struct tierd_msg_stats */
	TIERD_MSG_EVICT = 13,		/* c->d, operator: keys */
	TIERD_MSG_PIN = 14,		/* c->d, operator: keys; pins owned by the daemon */
	TIERD_MSG_UNPIN = 15,		/* c->d, operator: keys */
	TIERD_MSG_WARM = 16,		/* c->d, operator: struct tierd_msg_warm */
	TIERD_MSG_PROGRESS = 17,	/* d->c: struct tierd_msg_progress */
	TIERD_MSG_METRICS = 18,		/* c->d: struct tierd_msg_metrics (1.1) */
	TIERD_MSG_METRICS_DATA = 19,	/* d->c: struct tierd_msg_metrics_data (1.1) */
	TIERD_MSG_TRACE = 20,		/* c->d, operator: struct tierd_msg_trace (1.3) */
	TIERD_MSG_TYPE_MAX = TIERD_MSG_TRACE,
};

struct tierd_msg_hdr {
	uint32_t magic;
	uint16_t major;
	uint16_t minor;
	uint16_t type;			/* enum tierd_msg_type */
	uint16_t flags;			/* TIERD_PROTO_F_* */
	uint32_t length;		/* payload bytes after the header */
	uint64_t request_id;		/* chosen by the client, echoed by the daemon */
};

/* Decoded messages.  Strings point into the message buffer (NUL-terminated
 * on the wire) or into the decoder's allocation; see each decoder. */
struct tierd_msg_hello {
	uint32_t pid;			/* informational */
	const char *name;		/* client's name for logs, may be "" */
	/* Appended, optional: the NUMA node the client works on (its GPU's);
	 * TIERD_NODE_UNSAID when absent: the daemon uses its CPUs' node. */
	int32_t numa_node;
};

#define TIERD_NODE_UNSAID	(-1)
#define TIERD_NODE_MAX		4095

#define TIERD_MODEL_F_ALLOWED	0x1u	/* this client may acquire from the model */

struct tierd_proto_model {
	const char *name;
	uint32_t flags;			/* TIERD_MODEL_F_* */
	uint32_t nlayers;
	uint32_t experts_per_layer;
	uint32_t top_k;
	uint64_t nexperts;
	uint64_t slot_bytes;		/* bytes of the largest expert in a pool slot */
};

struct tierd_msg_welcome {
	uint64_t instance;		/* changes at every daemon start: a restart is detectable */
	uint32_t npools;		/* fds attached, in order; 0 if the client may not map the pool */
	uint64_t pool_size[TIERD_PROTO_MAX_POOLS];
	uint32_t nmodels;
	struct tierd_proto_model models[TIERD_PROTO_MAX_MODELS];
	/* 1.3, sent to 1.3 clients only: the no-system-call path. */
	uint32_t fast;			/* TIERD_WELCOME_F_FAST: two more fds */
	uint32_t fast_max_pins;		/* experts this connection may hold; 0: no bound said */
	uint64_t fast_table_size;
	uint64_t fast_area_size;
};

#define TIERD_WELCOME_F_FAST	0x1u

struct tierd_msg_error {
	int32_t err;			/* negative errno */
	const char *reason;
};

struct tierd_proto_tensor {
	const char *name;
	uint32_t pool;
	uint32_t dtype;			/* enum tierd_dtype of catalog.h */
	uint64_t offset;		/* of the tensor's first byte in the pool */
	uint64_t length;
	uint32_t ndim;
	uint64_t shape[TIERD_PROTO_MAX_DIMS];
};

struct tierd_proto_expert {
	struct tierd_key key;
	uint32_t ntensors;
	struct tierd_proto_tensor *tensors;
};

/* One allocation (free() it): experts, tensors and names. */
struct tierd_msg_acquired {
	uint32_t count;
	struct tierd_proto_expert experts[];
};

struct tierd_proto_hint {
	uint32_t expert;
	float weight;
};

struct tierd_msg_hint {
	uint32_t model;
	uint32_t layer;
	uint32_t count;
	const struct tierd_proto_hint *hints;	/* into the buffer (4-byte aligned) */
};

struct tierd_msg_tokens {
	uint32_t model;
	uint64_t tokens;
};

/* STATS_REPLY: counters by index; a newer daemon may send more. */
enum tierd_stat {
	TIERD_STAT_UPTIME_MS,
	TIERD_STAT_PID,
	TIERD_STAT_CLIENTS,
	TIERD_STAT_MODELS,
	TIERD_STAT_POOLS,
	TIERD_STAT_POOL_BYTES,
	TIERD_STAT_BYTES_RESIDENT,
	TIERD_STAT_PINS,
	TIERD_STAT_OPERATOR_PINS,
	TIERD_STAT_HITS,
	TIERD_STAT_MISSES,
	TIERD_STAT_EVICTIONS,
	TIERD_STAT_FETCHES,
	TIERD_STAT_FETCH_ERRORS,
	TIERD_STAT_CANCELLED,
	TIERD_STAT_BYTES_READ,
	TIERD_STAT_REQUESTS,
	TIERD_STAT_ACQUIRES,
	TIERD_STAT_PREFETCHES,
	TIERD_STAT_RELEASES,
	TIERD_STAT_HINTS,
	TIERD_STAT_TOKENS,
	TIERD_STAT_PROTOCOL_ERRORS,
	TIERD_STAT_CLIENTS_DROPPED,
	TIERD_STAT_REFUSED,
	TIERD_STAT_RELOADS,
	TIERD_STAT_ACQUIRES_NOSPACE,	/* 1.1: experts of acquires refused, no slot (not misses) */
	TIERD_STAT_TRACE_EVENTS,	/* 1.3: events recorded into traces */
	TIERD_STAT_TRACE_DROPPED,	/* 1.3: events a trace lost (writer behind, size limit) */
	TIERD_STAT_TRACE_ACTIVE,	/* 1.3: 1 while a trace is recorded */
	TIERD_STAT_COUNT,
};

struct tierd_msg_stats {
	uint32_t count;			/* values the daemon sent (may exceed TIERD_STAT_COUNT) */
	uint64_t value[TIERD_STAT_COUNT];	/* missing ones are 0 */
};

struct tierd_msg_warm {
	uint32_t model;
	uint32_t first_layer;
	uint32_t last_layer;		/* inclusive; UINT32_MAX: up to the last layer */
};

struct tierd_msg_progress {
	uint64_t done;
	uint64_t total;
};

/* METRICS formats. */
enum tierd_metrics_format {
	TIERD_METRICS_PROMETHEUS = 0,	/* text exposition format 0.0.4 */
	/* 1.2: the same samples as JSON, {"families": [{"name", "type", "help",
	 * "samples": [{"name", "labels": {...}, "value"}]}]}: what tierctl
	 * reads, so that no client parses the text back. */
	TIERD_METRICS_JSON = 1,
};

/* METRICS: u32 format, u32 0.  A daemon answers a format it does not know
 * with ERROR -EOPNOTSUPP (a newer client may ask for more). */
struct tierd_msg_metrics {
	uint32_t format;
};

/*
 * METRICS_DATA: u64 total, u64 offset, then the bytes [offset, offset + n)
 * of the answer, n being what is left of the packet.  The daemon sends the
 * chunks in order; the one that reaches total is the last.  The text holds
 * no NUL byte; total is at most TIERD_PROTO_MAX_METRICS.
 */
struct tierd_msg_metrics_data {
	uint64_t total;
	uint64_t offset;
	uint32_t length;
	const char *data;		/* into the buffer, not NUL-terminated */
};

/* TRACE operations. */
enum tierd_trace_op {
	TIERD_TRACE_START = 1,		/* record into path (absolute; created, never replaced) */
	TIERD_TRACE_STOP = 2,		/* path empty; OK carries the events recorded */
};

/* TRACE: u32 op, u32 0, str path.  Answered with OK (start: 0; stop: events
 * recorded) or ERROR; operators only, like PIN. */
struct tierd_msg_trace {
	uint32_t op;			/* enum tierd_trace_op */
	const char *path;		/* into the buffer */
};

/* Snake-case name of a counter ("bytes_read"), NULL past the known ones. */
const char *tierd_proto_stat_name(unsigned i);
const char *tierd_proto_type_name(unsigned type);

/*
 * Decoders: validate everything (sizes, counts, reserved fields, NULs in
 * strings, ranges) before the caller uses a byte.  Each returns 0, or -EBADMSG
 * (-EPROTO for a version mismatch) with a static reason in *why.
 */
int tierd_proto_decode_hdr(const void *buf, size_t len, struct tierd_msg_hdr *hdr, const char **why);
int tierd_proto_decode_hello(const void *payload, size_t len, struct tierd_msg_hello *m, const char **why);
int tierd_proto_decode_welcome(const void *payload, size_t len, struct tierd_msg_welcome *m,
			       const char **why);
int tierd_proto_decode_error(const void *payload, size_t len, struct tierd_msg_error *m, const char **why);
int tierd_proto_decode_u64(const void *payload, size_t len, uint64_t *v, const char **why);
/* PREFETCH, ACQUIRE, RELEASE, EVICT, PIN, UNPIN.  *keys points into payload,
 * which must be 4-byte aligned. */
int tierd_proto_decode_keys(const void *payload, size_t len, const struct tierd_key **keys,
			    uint32_t *count, const char **why);
/* *out is malloc'd (free it); -ENOMEM possible. */
int tierd_proto_decode_acquired(const void *payload, size_t len, struct tierd_msg_acquired **out,
				const char **why);
int tierd_proto_decode_hint(const void *payload, size_t len, struct tierd_msg_hint *m, const char **why);
int tierd_proto_decode_tokens(const void *payload, size_t len, struct tierd_msg_tokens *m, const char **why);
int tierd_proto_decode_stats(const void *payload, size_t len, struct tierd_msg_stats *m, const char **why);
int tierd_proto_decode_warm(const void *payload, size_t len, struct tierd_msg_warm *m, const char **why);
int tierd_proto_decode_progress(const void *payload, size_t len, struct tierd_msg_progress *m,
				const char **why);
int tierd_proto_decode_metrics(const void *payload, size_t len, struct tierd_msg_metrics *m,
			       const char **why);
int tierd_proto_decode_metrics_data(const void *payload, size_t len, struct tierd_msg_metrics_data *m,
				    const char **why);
int tierd_proto_decode_trace(const void *payload, size_t len, struct tierd_msg_trace *m, const char **why);
/* Dispatches on hdr->type to the decoder above and discards the result (fuzzer,
 * tests): 0 if the whole message is valid. */
int tierd_proto_validate(const void *buf, size_t len, const char **why);

/*
 * Encoder: a message under construction in a caller buffer of
 * TIERD_PROTO_MAX_MSG bytes.  Writes past the end set an overflow flag that
 * tierd_proto_end() reports as -EMSGSIZE, so callers check once.
 */
struct tierd_proto_buf {
	uint8_t *data;
	size_t cap;
	size_t len;
	int overflow;
};

void tierd_proto_begin(struct tierd_proto_buf *b, void *data, size_t cap, uint16_t type,
		       uint16_t flags, uint64_t request_id);
/* Fills in the length; returns the packet size or -EMSGSIZE. */
long tierd_proto_end(struct tierd_proto_buf *b);
void tierd_proto_put_u32(struct tierd_proto_buf *b, uint32_t v);
void tierd_proto_put_u64(struct tierd_proto_buf *b, uint64_t v);
void tierd_proto_put_bytes(struct tierd_proto_buf *b, const void *p, size_t n);
/* u32 length, bytes, NUL, zero padding to 4 bytes. */
void tierd_proto_put_str(struct tierd_proto_buf *b, const char *s);

/* Whole messages. */
long tierd_proto_encode_hello(void *buf, size_t cap, uint64_t id, uint32_t pid, const char *name);
/* With the client's NUMA node (TIERD_NODE_UNSAID: none, as above). */
long tierd_proto_encode_hello_node(void *buf, size_t cap, uint64_t id, uint32_t pid, const char *name,
				   int32_t numa_node);
long tierd_proto_encode_keys(void *buf, size_t cap, uint16_t type, uint16_t flags, uint64_t id,
			     const struct tierd_key *keys, uint32_t count);
long tierd_proto_encode_error(void *buf, size_t cap, uint64_t id, int err, const char *reason);
long tierd_proto_encode_u64(void *buf, size_t cap, uint16_t type, uint64_t id, uint64_t v);
long tierd_proto_encode_hint(void *buf, size_t cap, uint16_t flags, uint64_t id, uint32_t model,
			     uint32_t layer, const struct tierd_proto_hint *hints, uint32_t count);
long tierd_proto_encode_tokens(void *buf, size_t cap, uint16_t flags, uint64_t id, uint32_t model,
			       uint64_t tokens);
long tierd_proto_encode_warm(void *buf, size_t cap, uint64_t id, const struct tierd_msg_warm *w);
long tierd_proto_encode_progress(void *buf, size_t cap, uint64_t id, uint64_t done, uint64_t total);
long tierd_proto_encode_stats(void *buf, size_t cap, uint64_t id, const uint64_t *values, uint32_t count);
long tierd_proto_encode_trace(void *buf, size_t cap, uint64_t id, uint32_t op, const char *path);
long tierd_proto_encode_metrics(void *buf, size_t cap, uint64_t id, uint32_t format);
/* One chunk: as many bytes of text from offset as fit; *n says how many. */
long tierd_proto_encode_metrics_data(void *buf, size_t cap, uint64_t id, const char *text, uint64_t total,
				     uint64_t offset, size_t *n);
/* WELCOME and ACQUIRED are built with begin/put/end; their layouts:
 *
 * WELCOME: u64 instance, u32 npools, u32 nmodels, u64 pool_size[npools],
 *   per model: str name, u32 flags, u32 nlayers, u32 experts_per_layer,
 *   u32 top_k, u64 nexperts, u64 slot_bytes; 1.3 (to 1.3 clients): then
 *   u32 fast, u32 max_pins (0: none said), u64 fast_table_size, u64 fast_area_size.
 * ACQUIRED: u32 count, u32 0, per expert: u32 model, u32 layer, u32 expert,
 *   u32 ntensors, per tensor: u32 pool, u32 dtype, u64 offset, u64 length,
 *   u32 ndim, u64 shape[ndim], str name.
 * str: u32 length (without NUL), bytes, NUL, zeros to a multiple of 4.
 */
void tierd_proto_put_welcome(struct tierd_proto_buf *b, const struct tierd_msg_welcome *w);

#endif
