/* SPDX-License-Identifier: MIT */
/*
 * The engine's parts share these: the models, fetches in flight, slots kept
 * for pins of a stale model, and the engine itself.  engine.c is the facade
 * (acquire, prefetch, release), engine-slots.c finds slots (eviction),
 * engine-checkpoint.c notices checkpoint changes and reloads models.
 * Not installed, not for the service: it uses engine.h.
 */
#ifndef TIERD_ENGINE_INT_H
#define TIERD_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include "cache.h"
#include "conf.h"
#include "engine.h"
#include "topo.h"
#include "prefetch.h"

struct ckwatch;
struct residency;

/* What a file was when the model opened it; present false: it did not exist. */
struct engine_file_id {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

/* The side files a catalog is built from besides its shards (index, config). */
#define ENGINE_NSIDE	2

/* What one expert reads: aligned file ranges and where they land in its slot. */
struct engine_model {
	char *name;
	struct catalog *cat;
	bool owned;
	int cls;			/* slab class */
	uint64_t class_bytes;		/* its slot size: a reload must fit it */
	int *fmap;			/* catalog file index -> fetch file index */
	/* Identity of the files as opened, and the names under which the
	 * directory watch reports them (the shard, and the file a symlink
	 * points to, in the same directory). */
	struct engine_file_id *ids;
	char **names, **targets;
	struct engine_file_id side[ENGINE_NSIDE];
	bool stale;
	char *reason;			/* while stale */
	uint64_t changes, reloads;
	/* Catalogs replaced by reloads: the service may still hold pointers
	 * into them (acquires being answered, warms), so they live as long as
	 * the engine. */
	struct catalog **retired;
	unsigned nretired;
	struct engine_placement pl;
};

struct engine_waiter {
	engine_done_fn fn;
	void *arg;
};

LIST_HEAD(engine_inflight_list, engine_inflight);

/* An expert being fetched: who waits for it.  ce is NULL once the model went
 * stale: the entry is gone, the slot waits for the reads to end. */
struct engine_inflight {
	struct engine *e;
	struct cache_entry *ce;
	struct tierd_key key;
	uint64_t slot;
	uint32_t pool;
	struct fetch_job *job;
	struct engine_waiter *w;
	unsigned nw, capw;
	uint32_t owner;
	uint64_t start_ns;
	LIST_ENTRY(engine_inflight) link;	/* on engine.detached, or cancelled until told */
};

/*
 * A slot that held an expert pinned when its model went stale: out of the
 * cache, so never handed out again, but kept for the holders of the pins.
 * Pins are counted per key, not per holder, so a release of a key takes a pin
 * of its oldest slot first and the slots of a key are freed together once no
 * pin at all is left on it (cached entry included): a holder's slot is
 * never freed under it, at the price of keeping old slots longer.
 */
struct engine_zombie {
	struct tierd_key key;
	uint64_t slot;
	uint32_t pool;
	uint64_t bytes;
	uint32_t pins;
	int cls;
};

/* One pool per NUMA node in use, with its own slot allocator: a model's
 * slab class has the same index in every pool's slab. */
struct engine_pool {
	struct pool *pool;
	struct slab *slab;
	struct engine_pool_stats st;
};

struct engine {
	struct engine_pool pools[CONF_MAX_POOL_NODES];
	unsigned npools;
	engine_owner_pool_fn owner_pool;	/* NULL: every owner is on pool 0 */
	struct topo topo;		/* the pools' */
	void *owner_pool_arg;
	struct fetch *fetch;
	struct cache *cache;
	struct engine_model *models;
	unsigned nmodels;
	struct engine_stats st;
	unsigned max_evict_prefetch;	/* [pool] max_evict_per_alloc */
	engine_fetch_fn observer;
	void *observer_arg;
	struct engine_zombie *zombies;	/* oldest first */
	size_t nzombies, capzombies;
	struct engine_inflight_list detached;	/* fetches of stale models, still reading */
	struct ckwatch *watch;
	struct residency *res;		/* the no-system-call path; NULL: off */
	/* The daemon's own prefetch ([cache] prefetch): its settings, and the
	 * keys it fetched that no acquire has confirmed or refuted yet. */
	bool ahead_on;
	struct prefetch_conf ahead_conf;
	struct tierd_key *ahead;
	size_t nahead, capahead;
};

static inline const struct engine_model *engine_model_get(const struct engine *e, uint32_t model)
{
	return model < e->nmodels ? &e->models[model] : NULL;
}

static inline struct slab *engine_slab(const struct engine *e, uint32_t pool)
{
	return e->pools[pool].slab;
}

/* An expert of bytes became resident in pool (sign 1) or left it (-1). */
static inline void engine_account(struct engine *e, uint32_t pool, uint64_t bytes, int sign)
{
	struct engine_pool_stats *ps = &e->pools[pool].st;

	if (sign > 0) {
		e->st.bytes_resident += bytes;
		ps->bytes_resident += bytes;
		ps->experts_resident++;
	} else {
		e->st.bytes_resident -= bytes;
		ps->bytes_resident -= bytes;
		ps->experts_resident--;
	}
}

/* engine.c: a prefetch for owner (ENGINE_OWNER_NONE: the daemon's own)
 * into the pool of client near (its NUMA node's); that pool's index. */
int engine_prefetch_near(struct engine *e, const struct tierd_key *key, uint32_t owner, uint32_t near,
			 bool *started);
int engine_pool_near(const struct engine *e, uint32_t near);

/* engine-slots.c */
/* The catalog index of (layer, expert), or -ENOENT. */
int engine_expert_index(const struct catalog *cat, uint32_t layer, uint32_t expert);
/* engine.c: CLOCK_MONOTONIC in ns (when an expert became resident, its age at eviction). */
uint64_t engine_now_ns(void);
/* Frees a resident, unpinned entry's slot and drops it from the cache. */
void engine_evict_entry(struct engine *e, struct cache_entry *ce);
/* A slot for the model in pool, evicting at most max_evict experts. */
int engine_slot_get(struct engine *e, uint32_t model, uint32_t pool, unsigned max_evict, uint64_t *off);
void engine_slot_info(const struct engine *e, const struct cache_entry *ce, struct engine_slot_info *info);
/* Clients' pins through the residency table (residency.h); all no-ops
 * while it is off.  A resident entry leaves the cache only after
 * engine_fast_claim() succeeded, or unpublished as a zombie. */
bool engine_fast_pinned(const struct engine *e, const struct cache_entry *ce);
bool engine_fast_key_pinned(const struct engine *e, const struct tierd_key *k);
bool engine_fast_claim(struct engine *e, const struct cache_entry *ce);
void engine_fast_publish(struct engine *e, const struct cache_entry *ce);
void engine_fast_unpublish(struct engine *e, const struct tierd_key *k);

/* engine-prefetch.c */
/* A prefetched entry reached by an acquire, or leaving unused. */
void engine_prefetch_used(struct engine *e, struct cache_entry *ce);
void engine_prefetch_gone(struct engine *e, struct cache_entry *ce, uint64_t bytes);
/* Tells the predictor a model's shape (from its catalog). */
int engine_predict_model(struct engine *e, uint32_t model);
void engine_ahead_free(struct engine *e);

/* engine-checkpoint.c */
int engine_check_expert(const char *name, const struct catalog *cat, const struct catalog_expert *x,
			char *err, size_t errlen);
int engine_model_record(struct engine *e, struct engine_model *m);
int engine_model_size_mismatch(const struct engine_model *m, const struct catalog *cat);
const char *engine_expert_files_changed(const struct engine *e, const struct engine_model *m,
					const struct catalog_expert *x, uint32_t *file);
void engine_model_go_stale(struct engine *e, uint32_t mi, const char *file, const char *what);

#endif
