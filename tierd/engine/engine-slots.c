/* SPDX-License-Identifier: MIT */
/*
 * Slots for the engine: the expert index of a key, eviction (a model's own
 * experts first, then whole spans of another model's), and where a slot is.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine-int.h"
#include "slab.h"

/* The catalog's experts are sorted by (layer, expert). */
int engine_expert_index(const struct catalog *cat, uint32_t layer, uint32_t expert)
{
	uint32_t lo = 0, hi = cat->nexperts;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct catalog_expert *x = &cat->experts[mid];

		if (x->layer == layer && x->expert == expert)
			return (int)mid;
		if (x->layer < layer || (x->layer == layer && x->expert < expert))
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

void engine_evict_entry(struct engine *e, struct cache_entry *ce)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = engine_expert_index(m->cat, ce->key.layer, ce->key.expert);

	slab_free(e->slab, m->cls, ce->slot);
	if (xi >= 0)
		e->st.bytes_resident -= m->cat->experts[xi].bytes;
	engine_prefetch_gone(e, ce, xi >= 0 ? m->cat->experts[xi].bytes : 0);
	cache_remove(e->cache, ce);
	e->st.evictions++;
}

static bool same_model(const struct cache_entry *ce, void *arg)
{
	return ce->key.model == *(const uint32_t *)arg;
}

/*
 * Another model's span: its slots can only serve this model once the whole
 * span is free, so it is emptied whole or not touched.  Spans found holding a
 * pinned or fetching slot are remembered for the rest of the search.
 */
#define ENGINE_MAX_BLOCKED	64

struct span_search {
	struct engine *e;
	uint32_t model;			/* the model that needs a slot */
	uint64_t blocked[ENGINE_MAX_BLOCKED];	/* span starts */
	unsigned nblocked;
	/* The span being counted. */
	uint32_t span_model;
	uint64_t start, end;
	uint32_t evictable;
};

static bool other_unblocked(const struct cache_entry *ce, void *arg)
{
	const struct span_search *ss = arg;
	uint64_t start, end;
	uint32_t used;

	if (ce->key.model == ss->model)
		return false;
	if (slab_span_of(ss->e->slab, ce->slot, &start, &end, &used))
		return false;
	for (unsigned i = 0; i < ss->nblocked; i++)
		if (ss->blocked[i] == start)
			return false;
	return true;
}

static void count_evictable(struct cache_entry *ce, void *arg)
{
	struct span_search *ss = arg;

	if (ce->key.model == ss->span_model && ce->slot >= ss->start && ce->slot < ss->end &&
	    ce->state == CACHE_RESIDENT && !ce->pins)
		ss->evictable++;
}

struct span_evict {
	struct engine *e;
	uint32_t model;
	uint64_t start, end;
	struct cache_entry *v[64];
	unsigned n;
};

static void collect_span(struct cache_entry *ce, void *arg)
{
	struct span_evict *se = arg;

	if (se->n < 64 && ce->key.model == se->model && ce->slot >= se->start && ce->slot < se->end &&
	    ce->state == CACHE_RESIDENT && !ce->pins)
		se->v[se->n++] = ce;
}

/*
 * Frees the least valuable span of another model whose every slot is
 * evictable.  Returns the experts evicted, 0 when no span can be freed.
 */
static unsigned evict_other_span(struct engine *e, uint32_t model, unsigned max_evict)
{
	struct span_search ss = { .e = e, .model = model };
	struct cache_entry *v;

	while (!cache_victim(e->cache, other_unblocked, &ss, &v)) {
		uint32_t used;
		unsigned n = 0;

		if (slab_span_of(e->slab, v->slot, &ss.start, &ss.end, &used))
			return 0;
		ss.span_model = v->key.model;
		ss.evictable = 0;
		cache_foreach(e->cache, count_evictable, &ss);
		if (ss.evictable == used && used <= max_evict) {
			/* Collected in rounds of 64: evicting changes the walk. */
			while (n < used) {
				struct span_evict se = { e, ss.span_model, ss.start, ss.end, { 0 }, 0 };

				cache_foreach(e->cache, collect_span, &se);
				if (!se.n)
					break;
				for (unsigned i = 0; i < se.n; i++)
					engine_evict_entry(e, se.v[i]);
				n += se.n;
			}
			return n;
		}
		if (ss.nblocked == ENGINE_MAX_BLOCKED)
			return 0;
		ss.blocked[ss.nblocked++] = ss.start;
	}
	return 0;
}

/*
 * A slot for the model: evicts the model's own least valuable expert when it
 * is over quota or the pool is full, then anyone's when the pool is full.
 * At most max_evict experts: a client's prefetch (engine_prefetch_started)
 * may evict max_evict_prefetch, so that a guess cannot empty the pool of what
 * clients are using; an acquire (warm included) evicts what it needs.
 */
int engine_slot_get(struct engine *e, uint32_t model, unsigned max_evict, uint64_t *off)
{
	const struct engine_model *m = &e->models[model];
	unsigned evicted = 0;

	for (;;) {
		struct cache_entry *v;
		unsigned n;
		int r = slab_alloc(e->slab, m->cls, off);

		if (r != -ENOSPC && r != -EDQUOT)
			return r;
		if (evicted >= max_evict)
			return r;
		/* The model's own expert: its slot serves at once. */
		if (!cache_victim(e->cache, same_model, &model, &v)) {
			engine_evict_entry(e, v);
			evicted++;
			continue;
		}
		if (r == -EDQUOT)
			return r;
		/* Another model's: only a whole span it can give back helps, so
		 * nothing is evicted for an allocation that would fail anyway. */
		n = evict_other_span(e, model, max_evict - evicted);
		if (!n)
			return r;
		evicted += n;
	}
}

void engine_slot_info(const struct engine *e, const struct cache_entry *ce, struct engine_slot_info *info)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = engine_expert_index(m->cat, ce->key.layer, ce->key.expert);

	info->pool = 0;
	info->offset = ce->slot;
	info->expert = xi >= 0 ? &m->cat->experts[xi] : NULL;
}
