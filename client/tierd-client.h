/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: the C API of tierd for inference processes.
 *
 * A client connects to tierd's Unix socket, learns the models it may use and
 * maps the daemon's DDR pool (read-only, one contiguous region per pool).
 * It then asks for experts by (model, layer, expert), in batches: prefetch
 * (asynchronous, no pin) and acquire (answered when every expert of the batch
 * is resident; each expert stays pinned, so its bytes cannot change, until
 * the acquisition is released).  An acquired expert comes back as host
 * pointers to its tensors inside the mapped pool.
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * errno on failure; the daemon's reason for the last failure is kept by
 * tierd_client_last_error().  Handles are opaque.  Every function may be
 * called from several threads of one process at once (a mutex guards the
 * client; one thread at a time reads the socket).
 *
 * GPU clients: register each pool once, read-only, and copy at pinned speed:
 *
 *     uint64_t size;
 *     const void *base = tierd_client_pool_base(c, 0, &size);
 *     cudaHostRegister((void *)base, size, cudaHostRegisterReadOnly);
 *
 * cudaHostRegisterReadOnly (0x08) is required: the mapping is PROT_READ and
 * registering it with flags 0 fails with "invalid value".  After a
 * reconnection (see tierd_client_set_reconnect_cb) the pools are new
 * mappings: register them again.
 *
 * Daemon restarts: when the connection breaks, pending requests fail with
 * -ECONNRESET and every acquisition becomes invalid (its status says so);
 * the next call reconnects, re-acquires what was held (by model name) and
 * updates those acquisitions' tensor pointers, or marks them lost
 * (-ENOLINK).  Nothing is ever silently wrong: check
 * tierd_acquisition_status() or use the reconnect callback before touching
 * tensors again after an error.  Pointers taken before the restart (a
 * tensor's data, an expert's tensor array) stay readable until the
 * acquisition is released: the old daemon's pool stays mapped until every
 * acquisition made through it is released, so a copy in flight does not
 * fault.  Their bytes are the old pool's, no longer pinned by any daemon.
 *
 * Timeouts: calls that wait for the daemon take a timeout in milliseconds
 * (-1: no limit) and fail with -ETIMEDOUT when it passes.  The calls
 * without a timeout argument (prefetch, evict, unpin, stats, metrics) wait
 * TIERD_CLIENT_DEFAULT_TIMEOUT_MS; their _timeout variants take one.  A send
 * that finds the socket full (the daemon stopped reading) waits as long as
 * the call's timeout, or TIERD_CLIENT_DEFAULT_TIMEOUT_MS for calls that get
 * no answer (release, routing_hint, report_tokens, acquire_async), then
 * drops the connection (-ETIMEDOUT; the next call reconnects).  Connecting
 * and re-acquiring after a reconnection wait at most 5 s.
 */
#ifndef TIERD_CLIENT_H
#define TIERD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tierd-types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TIERD_CLIENT_DEFAULT_SOCKET	"/run/tierd/tierd.sock"
#define TIERD_CLIENT_MAX_DIMS		TIERD_MAX_DIMS
/* How long the calls without a timeout argument wait for the daemon. */
#define TIERD_CLIENT_DEFAULT_TIMEOUT_MS	10000

struct tierd_client;
struct tierd_acquisition;

/* struct tierd_key (model, layer, expert): tierd-types.h. */

/* Tensor element types: enum tierd_dtype, tierd_dtype_name(), tierd_dtype_size()
 * (tierd-types.h). */

struct tierd_tensor {
	const char *name;		/* the tensor's name in the checkpoint */
	const void *data;		/* host pointer into the mapped pool, read-only */
	uint64_t length;		/* bytes */
	uint32_t dtype;			/* enum tierd_dtype */
	uint32_t ndim;
	uint64_t shape[TIERD_CLIENT_MAX_DIMS];	/* of this expert's part */
	uint32_t pool;			/* which pool, and where in it */
	uint64_t offset;
};

struct tierd_expert {
	struct tierd_key key;
	uint32_t ntensors;
	const struct tierd_tensor *tensors;
};

struct tierd_model_info {
	const char *name;		/* valid until the client is closed or reconnects */
	int allowed;			/* this process may acquire from it */
	uint32_t nlayers;
	uint32_t experts_per_layer;
	uint32_t top_k;			/* 0 if the checkpoint does not say */
	uint64_t nexperts;
	uint64_t slot_bytes;
};

/* ---- connection ---- */

/*
 * Connects and maps the pools.  path NULL: $TIERD_SOCKET, else
 * TIERD_CLIENT_DEFAULT_SOCKET.  name is shown in the daemon's logs (may be
 * NULL).  -EPROTONOSUPPORT if the daemon speaks another major version of the
 * protocol; -ENOENT / -ECONNREFUSED if no daemon listens.
 */
int tierd_client_connect(struct tierd_client **out, const char *path, const char *name);
/*
 * The same, saying which NUMA node the client works on (its GPU's), so that
 * the daemon serves it from the pool on that node: numa_node >= 0, or
 * TIERD_CLIENT_NODE_DEFAULT: $TIERD_NUMA_NODE, else the node of the PCI
 * device $TIERD_PCI_DEVICE names, else none said (the daemon takes the node
 * of the CPUs the process may run on), or TIERD_CLIENT_NODE_NONE.
 * tierd_client_connect() is TIERD_CLIENT_NODE_DEFAULT.
 */
#define TIERD_CLIENT_NODE_DEFAULT	(-2)
#define TIERD_CLIENT_NODE_NONE		(-1)
int tierd_client_connect_node(struct tierd_client **out, const char *path, const char *name,
			      int numa_node);
/*
 * The NUMA node of a PCI device ("0000:3b:00.0", as cudaDeviceGetPCIBusId
 * writes it) from /sys/bus/pci/devices/ADDR/numa_node; -ENODATA when the
 * machine does not say, -ENOENT no such device, -EINVAL not an address.
 */
int tierd_client_numa_node_of_pci(const char *pci_addr);
/* Releases every acquisition, unmaps, closes; NULL is a no-op. */
void tierd_client_close(struct tierd_client *c);
/* Reconnects now if the connection is broken (calls do it by themselves). */
int tierd_client_reconnect(struct tierd_client *c);
/* Copies the daemon's (or the library's) reason for the last failure. */
void tierd_client_last_error(struct tierd_client *c, char *buf, size_t len);

/* Called (from the thread that reconnected, without the client lock) after
 * a reconnection: how many acquisitions were re-established and how many lost. */
typedef void (*tierd_reconnect_fn)(struct tierd_client *c, unsigned reestablished, unsigned lost,
				   void *arg);
void tierd_client_set_reconnect_cb(struct tierd_client *c, tierd_reconnect_fn fn, void *arg);

/*
 * Acquires of resident experts go without a system call by default: the
 * library reads the daemon's residency table and pins the expert in a pin
 * area of its own, both mapped at connection (protocol 1.3); anything else
 * (a miss, an expert being evicted, the first acquire of an expert, whose
 * tensor layout the library learns then, an older daemon) goes through the
 * socket.  Either way the acquisition is the same and release gives it back.
 * TIERD_CLIENT_F_SOCKET, or TIERD_NO_FASTPATH=1 in the environment at
 * connect, sends every acquire through the socket.  tierd_client_acquire_async
 * always uses the socket.
 */
#define TIERD_CLIENT_F_SOCKET		0x1u
#define TIERD_CLIENT_F_ALL		TIERD_CLIENT_F_SOCKET
void tierd_client_set_flags(struct tierd_client *c, unsigned flags);
unsigned tierd_client_flags(struct tierd_client *c);

/* ---- models and pools ---- */

int tierd_client_model_count(struct tierd_client *c);
/* Index of a model by name, or -ENOENT. */
int tierd_client_model_find(struct tierd_client *c, const char *name);
int tierd_client_model_info(struct tierd_client *c, unsigned model, struct tierd_model_info *out);
/* 0 if this process may not map the pool (see tierd.conf(5), allow_uid). */
int tierd_client_pool_count(struct tierd_client *c);
/* Base and size of a pool's read-only mapping, or NULL. */
const void *tierd_client_pool_base(struct tierd_client *c, unsigned pool, uint64_t *size);

/* ---- experts ---- */

/* Asks the daemon to load experts ahead of need; returns when queued.
 * Waits TIERD_CLIENT_DEFAULT_TIMEOUT_MS, the _timeout variant timeout_ms. */
int tierd_client_prefetch(struct tierd_client *c, const struct tierd_key *keys, size_t n);
int tierd_client_prefetch_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n,
				  int timeout_ms);

/*
 * Blocking acquire: returns when every expert is resident and pinned, or
 * when timeout_ms (-1: no limit) passes (-ETIMEDOUT; the pins the daemon then
 * grants are released by the library).  All or nothing: on failure no pin is
 * held.  -EDQUOT: over the daemon's per-client quotas; -EACCES: not allowed.
 */
int tierd_client_acquire(struct tierd_client *c, const struct tierd_key *keys, size_t n,
			 int timeout_ms, struct tierd_acquisition **out);

/* Non-blocking acquire: fn runs later with the result (a NULL acquisition
 * and a negative err on failure) from tierd_client_process(), or from a
 * blocking call of another thread that reads the answer.  It runs without
 * the client lock held. */
typedef void (*tierd_acquire_fn)(struct tierd_client *c, int err, struct tierd_acquisition *a,
				 void *arg);
int tierd_client_acquire_async(struct tierd_client *c, const struct tierd_key *keys, size_t n,
			       tierd_acquire_fn fn, void *arg);
/* An fd to poll for POLLIN; when readable, call tierd_client_process().
 * Changes after a reconnection: fetch it again after errors. */
int tierd_client_fd(struct tierd_client *c);
/* Reads what the daemon sent (waiting up to timeout_ms, 0: not at all) and
 * runs completion callbacks.  Returns how many requests completed. */
int tierd_client_process(struct tierd_client *c, int timeout_ms);

/* Unpins and frees the acquisition (also a lost one). */
int tierd_client_release(struct tierd_client *c, struct tierd_acquisition *a);
size_t tierd_acquisition_count(const struct tierd_acquisition *a);
const struct tierd_expert *tierd_acquisition_expert(const struct tierd_acquisition *a, size_t i);
/* 0: valid; -ENOTCONN: connection broken, not re-established yet;
 * -ENOLINK: lost at a reconnection (the daemon could not pin it again). */
int tierd_acquisition_status(struct tierd_client *c, const struct tierd_acquisition *a);

/* ---- statistics ---- */

/* What the router chose for one layer, with its weights in [0, 1]. */
int tierd_client_routing_hint(struct tierd_client *c, uint32_t model, uint32_t layer,
			      const uint32_t *experts, const float *weights, size_t n);
/* Tokens generated since the last report (for per-token energy); at most
 * 2^32 in one report, a larger one is refused (ERANGE, see last_error). */
int tierd_client_report_tokens(struct tierd_client *c, uint32_t model, uint64_t tokens);
/* Fills up to n counters in tierd_client_stat_name() order; returns how many. */
int tierd_client_stats(struct tierd_client *c, uint64_t *values, size_t n);
int tierd_client_stats_timeout(struct tierd_client *c, uint64_t *values, size_t n, int timeout_ms);
/* "bytes_read", ...; NULL past the last counter this library knows. */
const char *tierd_client_stat_name(unsigned i);
/*
 * The daemon's metrics, sampled now, in the Prometheus text exposition
 * format (what its HTTP endpoint serves): bytes by tier and source, energy
 * by tier, model and client, power states, cache counters, fetch latency.
 * *text is malloc'd and NUL-terminated (free() it); *len (may be NULL) its
 * length.  -ENOTSUP if the daemon runs without telemetry; a daemon older
 * than protocol 1.1 closes the connection (-ECONNRESET).
 */
int tierd_client_metrics(struct tierd_client *c, char **text, size_t *len);
int tierd_client_metrics_timeout(struct tierd_client *c, char **text, size_t *len, int timeout_ms);
/*
 * The same sample in another format: TIERD_CLIENT_METRICS_TEXT (the text)
 * or TIERD_CLIENT_METRICS_JSON ({"families": [{"name", "type", "help", "samples":
 * [{"name", "labels": {...}, "value"}]}]}, for programs that would otherwise
 * parse the text).  A daemon older than protocol 1.2 answers JSON with
 * -EOPNOTSUPP.  timeout_ms < 0 waits as long as it takes.
 */
#define TIERD_CLIENT_METRICS_TEXT	0u
#define TIERD_CLIENT_METRICS_JSON	1u
int tierd_client_metrics_as(struct tierd_client *c, unsigned format, char **text, size_t *len,
			    int timeout_ms);

/* ---- operator commands (root or the daemon's user) ---- */

/* evict and unpin wait TIERD_CLIENT_DEFAULT_TIMEOUT_MS, their _timeout
 * variants timeout_ms. */
int tierd_client_evict(struct tierd_client *c, const struct tierd_key *keys, size_t n);
int tierd_client_evict_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n, int timeout_ms);
/* Pins owned by the daemon, which outlive this connection. */
int tierd_client_pin(struct tierd_client *c, const struct tierd_key *keys, size_t n, int timeout_ms);
int tierd_client_unpin(struct tierd_client *c, const struct tierd_key *keys, size_t n);
int tierd_client_unpin_timeout(struct tierd_client *c, const struct tierd_key *keys, size_t n, int timeout_ms);
typedef void (*tierd_progress_fn)(uint64_t done, uint64_t total, void *arg);
/* Loads layers first..last (UINT32_MAX: to the end) of a model into the pool;
 * progress (may be NULL) is called as experts arrive, without the client
 * lock held (it may call this library), last with done == total. */
int tierd_client_warm(struct tierd_client *c, uint32_t model, uint32_t first_layer,
		      uint32_t last_layer, tierd_progress_fn progress, void *arg, int timeout_ms);

/* tierd_dtype_name() and tierd_dtype_size(): tierd-types.h. */

#ifdef __cplusplus
}
#endif

#endif
