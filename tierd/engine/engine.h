/* SPDX-License-Identifier: MIT */
/*
 * The engine: pool + fetch + cache behind one API, which the service and
 * tierctl's direct commands (bench, demo) use.  It runs on the caller's event
 * loop: engine_fd() is an fd (the io_uring completion eventfd) to poll for
 * reading, and engine_process() handles what is ready.
 *
 * Experts are addressed by (model index, layer, expert).  A completed acquire
 * holds one pin on the slot until engine_release(); a pinned slot is never
 * evicted.
 *
 * Checkpoint files changed on disk: the engine keeps the identity of each
 * model's files as it opened them (device, inode, size, mtime, ctime) and
 * of its side files (index, config.json).  A change found by inotify
 * (engine_watch_start), by the check of a fetch's files when it completes, or
 * by engine_check_files() makes the model stale: its unpinned experts leave
 * the pool, its fetches in flight end in -ESTALE and are not served, acquires
 * and prefetches of it are refused with -ESTALE, and pinned experts stay
 * readable for the holders of the pins (old bytes, all of one version) but are
 * never handed out again.  engine_model_reload() serves it again from the new
 * files.  Nothing is ever served that mixes bytes read before and after a
 * change.
 */
#ifndef TIERD_ENGINE_H
#define TIERD_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog.h"
#include "tierd-types.h"
#include "conf.h"

struct engine;

enum engine_prio {
	ENGINE_DEMAND,		/* a client waits: goes ahead of prefetches */
	ENGINE_PREFETCH,
};

/* A resident expert: where its bytes are in the pool. */
struct engine_slot_info {
	uint32_t pool;			/* index of the pool region (NUMA node in use) */
	uint64_t offset;		/* of the slot in that region */
	const struct catalog_expert *expert;	/* tensor layout; slot_offset is relative to offset */
};

/* err is 0 or a negative errno; info is valid only when err == 0. */
typedef void (*engine_done_fn)(void *arg, int err, const struct engine_slot_info *info);

/* Fetch latency histogram: log2 slots of ns, slot i counts fetches that
 * took 2^i <= ns < 2^(i+1) (slot 0 also holds 0 and 1). */
#define ENGINE_LAT_SLOTS	48
#define ENGINE_EVICT_AGE_BUCKETS	5
extern const double engine_evict_age_le[ENGINE_EVICT_AGE_BUCKETS];

struct engine_stats {
	/* hits/misses count acquires; fetches are reads of an expert started. */
	uint64_t hits, misses, evictions, fetches, fetch_errors, cancelled;
	/* Acquires refused up front because no slot could be freed (every
	 * resident expert pinned, a quota): not counted in misses, so that
	 * hits + misses + refused = acquires. */
	uint64_t refused;
	uint64_t submit_errors;		/* io_uring_submit refusals (retried or failed) */
	uint64_t bytes_read;		/* bytes tierd read from files (aligned, as issued) */
	uint64_t bytes_resident;
	uint64_t pins;			/* pins held now */
	/* Completed fetches, first request (acquire or prefetch) to resident. */
	uint64_t fetch_ns_hist[ENGINE_LAT_SLOTS];
	uint64_t fetch_ns_sum;
	/* Evictions by how long the expert had been resident (upper bounds in
	 * engine_evict_age_le, the last slot above them all): experts evicted
	 * moments after their fetch mean the pool thrashes. */
	uint64_t evict_age_hist[ENGINE_EVICT_AGE_BUCKETS + 1];
	uint64_t evict_age_ns_sum;
};

/*
 * Who a fetch is for: an id the caller chooses (the service: its client id).
 * ENGINE_OWNER_NONE when nobody in particular asked (operator warm, tests).
 * A fetch belongs to its first requester; one started by an anonymous
 * prefetch goes to the first demand requester that joins it.
 */
#define ENGINE_OWNER_NONE	0u

/* Told of every fetch that ends: bytes read from the files (as issued),
 * its owner, and err (0 or a negative errno). */
typedef void (*engine_fetch_fn)(void *arg, const struct tierd_key *key, uint32_t owner, int err,
				uint64_t bytes);

/* How often the daemon should call engine_check_files(): the fallback for
 * changes inotify does not see (network file systems, overlay lower layers,
 * the inotify watch limit). */
#define ENGINE_CHECK_FILES_MS	5000

/* Opens the pool and fetch ring and every [model] of conf. */
int engine_create(struct engine **out, const struct tierd_conf *conf, char *err, size_t errlen);
void engine_destroy(struct engine *e);

int engine_fd(const struct engine *e);
/* Reaps completions and submits queued work; callbacks run from here. */
int engine_process(struct engine *e);
/* Blocks until no fetch is in flight (bench, tests, drain on SIGTERM). */
int engine_drain(struct engine *e);

int engine_model_count(const struct engine *e);
/* -ENOENT if unknown. */
int engine_model_index(const struct engine *e, const char *name);
const struct catalog *engine_model_catalog(const struct engine *e, uint32_t model);
const char *engine_model_name(const struct engine *e, uint32_t model);

/*
 * Adds a model from a catalog whose slots are laid out already
 * (catalog_layout_slots(cat, 4096)).  With owned, the engine frees the catalog.
 * Returns the model index, or a negative errno with a message in err (a
 * layout that would read outside a slot or overlap itself is refused).
 */
int engine_add_model(struct engine *e, const char *name, struct catalog *cat, bool owned,
		     uint64_t quota, char *err, size_t errlen);

/*
 * Makes the expert resident and pins it, then calls fn (possibly before
 * returning, on a hit).  Concurrent acquires of one expert share one fetch;
 * a demand acquire of an expert being prefetched moves it ahead.
 * Returns 0 when queued or done, negative errno when refused up front
 * (-ENOENT unknown expert, -ENOSPC nothing evictable, -EDQUOT over quota).
 * The pin is taken at once; if the fetch fails, fn gets the errno and the pin
 * is gone with the entry (no release then).  engine_release() of an expert
 * still being fetched returns -EBUSY: release after fn has run.  -ESTALE:
 * the model's checkpoint changed on disk (engine_model_stale_reason).
 */
int engine_acquire(struct engine *e, const struct tierd_key *key, enum engine_prio prio,
		   engine_done_fn fn, void *arg);
/* The same, naming who asks (see ENGINE_OWNER_NONE). */
int engine_acquire_for(struct engine *e, const struct tierd_key *key, enum engine_prio prio,
		       uint32_t owner, engine_done_fn fn, void *arg);
/* Fetches without pinning; no callback.  Cheap when already resident. */
int engine_prefetch(struct engine *e, const struct tierd_key *key);
int engine_prefetch_for(struct engine *e, const struct tierd_key *key, uint32_t owner);
/* The same; *started says whether it started a fetch (the engine observer
 * hears of its end), as opposed to finding the expert resident or on its way.
 * A prefetch evicts at most [pool] max_evict_per_alloc experts for its slot. */
int engine_prefetch_started(struct engine *e, const struct tierd_key *key, uint32_t owner,
			    bool *started);
/* One observer of fetch completions (energy accounting); fn NULL: none. */
void engine_set_fetch_observer(struct engine *e, engine_fetch_fn fn, void *arg);
/* Drops a prefetch that is no longer wanted, if it has not started and no
 * acquire waits for it: -EBUSY otherwise, -EALREADY if resident. */
int engine_cancel_prefetch(struct engine *e, const struct tierd_key *key);
int engine_release(struct engine *e, const struct tierd_key *key);
/* Operator actions.  -EBUSY when pinned or being fetched. */
int engine_evict(struct engine *e, const struct tierd_key *key);
/* Evicts every key of a batch (distinct keys) or none: -ENOENT, -EBUSY
 * (pinned, fetching, or pinned through the residency table meanwhile),
 * with *busy the index of the key that stopped it. */
int engine_evict_batch(struct engine *e, const struct tierd_key *keys, uint32_t n, uint32_t *busy);
/* What engine_evict() would return, without evicting. */
int engine_evict_check(const struct engine *e, const struct tierd_key *key);

/*
 * Placement, per model: how acquires were served and how prefetches (a
 * client's and the daemon's own) fared.  A prefetched expert is used when
 * an acquire finds it (resident or arriving), wasted when it leaves the pool
 * unused; cancelled ones never were read.
 */
struct engine_placement {
	uint64_t hits, misses;		/* acquires (as engine_stats counts them) */
	uint64_t prefetch_issued;	/* fetches started by a prefetch */
	uint64_t prefetch_ahead;	/* of which the daemon's own ([cache] prefetch) */
	uint64_t prefetch_used, prefetch_wasted, prefetch_cancelled;
	uint64_t prefetch_wasted_bytes;
};

int engine_model_placement(const struct engine *e, uint32_t model, struct engine_placement *pl);

/*
 * What a client (seq: its connection) acquired, as one batch: tells the
 * cache's predictor, per (model, layer) run of keys, then, with [cache]
 * prefetch, cancels the daemon's prefetches of those layers the acquire
 * shows to be wrong (if not yet read) and fetches the likely experts of the
 * coming layers within the prefetch budget, into the pool of the client's
 * NUMA node.  Call after the acquires
 * themselves, so that they go first.
 */
void engine_observe(struct engine *e, uint64_t seq, const struct tierd_key *keys, uint32_t n);
/* A routing hint: the client says it will need these experts of a layer. */
void engine_observe_hint(struct engine *e, uint64_t seq, uint32_t model, uint32_t layer,
			 const uint32_t *experts, uint32_t n);
/* The client went away: its sequence context goes. */
void engine_forget(struct engine *e, uint64_t seq);

/* A model's checkpoint state (metrics, tierctl). */
struct engine_model_status {
	bool stale;			/* not served until reloaded */
	uint64_t changes;		/* times a change of its files stopped it */
	uint64_t reloads;		/* times a reload served it again */
};

int engine_model_status(const struct engine *e, uint32_t model, struct engine_model_status *st);
/* While stale: what changed and when, for error messages; NULL otherwise. */
const char *engine_model_stale_reason(const struct engine *e, uint32_t model);

/*
 * Watches every model's directory and files with inotify.  Returns the fd to
 * poll for reading (then call engine_watch_process), or a negative errno:
 * the engine then learns of changes only from engine_check_files and from
 * the check at the end of each fetch.  Watches that cannot be added (the
 * watch limit) are logged; the rest stay.
 */
int engine_watch_start(struct engine *e);
int engine_watch_process(struct engine *e);
/* Compares every served model's files with what it opened; a difference
 * makes that model stale.  Returns how many models went stale. */
int engine_check_files(struct engine *e);
/* Makes a model stale as if its file had changed ("what" says how). */
int engine_model_set_stale(struct engine *e, uint32_t model, const char *file, const char *what);
/*
 * Serves a stale model again: opens its files anew, rebuilds its catalog
 * (with the presets of conf; NULL: built-ins) and records their identity.
 * The new checkpoint must hold the same experts (layer, expert, tensor
 * names, dtypes, shapes) in the same shard files, in slots no larger than
 * before; tensors may have moved.  Otherwise, or if a file changes again
 * meanwhile, the model stays stale and err says why (a restart serves the
 * new checkpoint whatever its shape).  -EALREADY when it is not stale.
 */
int engine_model_reload(struct engine *e, uint32_t model, const struct tierd_conf *conf,
			char *err, size_t errlen);

struct topo;

/* The same on a given topology (topo.h; NULL: this machine's): tests give a
 * synthetic one, whose pools are labelled with their node but not bound. */
int engine_create_topo(struct engine **out, const struct tierd_conf *conf, const struct topo *topo,
		       char *err, size_t errlen);

/*
 * Pools: one per NUMA node in use ([pool] nodes), each with its own slots.
 * An expert has one copy, in the pool of the node of the owner whose
 * request fetched it (the first to ask); an owner on another node is served
 * that copy (counted as remote).  When the owner's pool is full of pinned
 * experts, free room in another pool serves (remote) before -ENOSPC.  The
 * service tells the engine an owner's pool through fn (returns a pool
 * index; anything else: pool 0).
 */
typedef int (*engine_owner_pool_fn)(void *arg, uint32_t owner);
void engine_set_owner_pool(struct engine *e, engine_owner_pool_fn fn, void *arg);
/* The pool on node, or -ENOENT. */
int engine_pool_of_node(const struct engine *e, int node);
int engine_pool_node(const struct engine *e, uint32_t pool);
/* The topology the pools were made on (synthetic in tests). */
const struct topo *engine_topology(const struct engine *e);

/* Per pool (NUMA node).  Requests are counted on the pool of the owner who
 * asked: local when served from that pool, remote from another's. */
struct engine_pool_stats {
	uint64_t bytes_resident;
	uint64_t experts_resident;
	uint64_t fetches;		/* reads started into this pool */
	uint64_t evictions;
	uint64_t served_local;		/* acquires answered from this pool */
	uint64_t served_remote;		/* acquires answered from another node's pool */
};

int engine_get_pool_stats(const struct engine *e, uint32_t pool, struct engine_pool_stats *st);
/*
 * The no-system-call hit path (residency.h, tierd-fastpath.h): the residency
 * table of the models added so far, with what is resident now published.
 * Models added later get no entries.  -EALREADY if on.
 */
struct residency;
int engine_fast_enable(struct engine *e, char *err, size_t errlen);
/* NULL while off. */
struct residency *engine_residency(const struct engine *e);
/* A client acquired the expert uses times through the table: hits, and a
 * touch for the policy if it is still resident. */
void engine_fast_uses(struct engine *e, const struct tierd_key *key, uint32_t uses);
/* Frees the old slots of stale models that only clients' pin areas held. */
void engine_fast_settle(struct engine *e);

/* Pool regions, to hand to clients read-only. */
int engine_pool_count(const struct engine *e);
int engine_pool_fd(const struct engine *e, uint32_t pool);
uint64_t engine_pool_size(const struct engine *e, uint32_t pool);
/* Whether the pool is in hugetlb pages (a benchmark gives its reference the same). */
bool engine_pool_hugetlb(const struct engine *e, uint32_t pool);
/* For tests and the demo: where the pool is mapped in this process. */
const void *engine_pool_base(const struct engine *e, uint32_t pool);

void engine_get_stats(const struct engine *e, struct engine_stats *st);

struct fetch_stats;
/* The fetch ring's own counters (requests, short reads, retries). */
int engine_fetch_stats(const struct engine *e, struct fetch_stats *st);
/* The descriptor of a model's checkpoint file (benchmarks drop its cache). */
int engine_file_fd(const struct engine *e, uint32_t model, uint32_t file);

#endif
