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
#include <sys/types.h>
#include <time.h>

#include "cache.h"
#include "engine.h"
#include "prefetch.h"

struct ckwatch;

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

/* An expert being fetched: who waits for it.  ce is NULL once the model went
 * stale: the entry is gone, the slot waits for the reads to end. */
struct engine_inflight {
	struct engine *e;
	struct cache_entry *ce;
	struct tierd_key key;
	uint64_t slot;
	struct fetch_job *job;
	struct engine_waiter *w;
	unsigned nw, capw;
	uint32_t owner;
	uint64_t start_ns;
	struct engine_inflight *next;	/* on engine.detached, or cancelled until told */
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
	uint64_t bytes;
	uint32_t pins;
	int cls;
};

struct engine {
	struct pool *pool;
	struct slab *slab;
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
	struct engine_inflight *detached;	/* fetches of stale models, still reading */
	struct ckwatch *watch;
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

/* engine-slots.c */
/* The catalog index of (layer, expert), or -ENOENT. */
int engine_expert_index(const struct catalog *cat, uint32_t layer, uint32_t expert);
/* Frees a resident, unpinned entry's slot and drops it from the cache. */
void engine_evict_entry(struct engine *e, struct cache_entry *ce);
/* A slot for the model, evicting at most max_evict experts. */
int engine_slot_get(struct engine *e, uint32_t model, unsigned max_evict, uint64_t *off);
void engine_slot_info(const struct engine *e, const struct cache_entry *ce, struct engine_slot_info *info);

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
