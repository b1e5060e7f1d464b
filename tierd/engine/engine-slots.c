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
#include "residency.h"
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

/*
 * The no-system-call path (residency.h): whether a client's pin area names
 * the expert, and the claim that must succeed before its slot is freed.
 */
bool engine_fast_pinned(const struct engine *e, const struct cache_entry *ce)
{
	int idx = e->res ? residency_index(e->res, &ce->key) : -ENOENT;

	return idx >= 0 && residency_pinned(e->res, (uint32_t)idx, ce->key.model);
}

bool engine_fast_claim(struct engine *e, const struct cache_entry *ce)
{
	int idx = e->res ? residency_index(e->res, &ce->key) : -ENOENT;

	return idx < 0 || residency_claim(e->res, (uint32_t)idx, ce->key.model);
}

void engine_fast_publish(struct engine *e, const struct cache_entry *ce)
{
	int idx = e->res ? residency_index(e->res, &ce->key) : -ENOENT;

	if (idx >= 0)
		residency_publish(e->res, (uint32_t)idx, ce->pool, ce->slot,
				  (uint32_t)e->models[ce->key.model].reloads);
}

void engine_fast_unpublish(struct engine *e, const struct tierd_key *k)
{
	int idx = e->res ? residency_index(e->res, k) : -ENOENT;

	if (idx >= 0)
		residency_unpublish(e->res, (uint32_t)idx);
}

/* Callers claimed the entry (engine_fast_claim) if clients could pin it. */
void engine_evict_entry(struct engine *e, struct cache_entry *ce)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = engine_expert_index(m->cat, ce->key.layer, ce->key.expert);
	uint64_t age = engine_now_ns() - ce->resident_ns;
	unsigned b = 0;

	while (b < ENGINE_EVICT_AGE_BUCKETS && (double)age > engine_evict_age_le[b] * 1e9)
		b++;
	e->st.evict_age_hist[b]++;
	e->st.evict_age_ns_sum += age;
	engine_fast_unpublish(e, &ce->key);
	slab_free(engine_slab(e, ce->pool), m->cls, ce->slot);
	if (xi >= 0)
		engine_account(e, ce->pool, m->cat->experts[xi].bytes, -1);
	e->pools[ce->pool].st.evictions++;
	engine_prefetch_gone(e, ce, xi >= 0 ? m->cat->experts[xi].bytes : 0);
	cache_remove(e->cache, ce);
	e->st.evictions++;
}

/* A slot of one pool is only freed by evicting from that pool. */
struct same_model_arg {
	const struct engine *e;
	uint32_t model;
	uint32_t pool;
};

/* A fast pin is checked here too so that the policy offers another victim;
 * the claim before the eviction is what makes it safe. */
static bool same_model(const struct cache_entry *ce, void *arg)
{
	const struct same_model_arg *sm = arg;

	return ce->key.model == sm->model && ce->pool == sm->pool && !engine_fast_pinned(sm->e, ce);
}

/*
 * Another model's span: its slots can only serve this model once the whole
 * span is free, so it is emptied whole or not touched.  Spans found holding a
 * pinned or fetching slot are remembered for the rest of the search.
 */
#define ENGINE_MAX_BLOCKED	64
/* Claims lost to clients' pins in one search for a slot. */
#define ENGINE_MAX_LOST_CLAIMS	64

struct span_search {
	struct engine *e;
	uint32_t model;			/* the model that needs a slot */
	uint32_t pool;			/* in this pool */
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

	if (ce->key.model == ss->model || ce->pool != ss->pool)
		return false;
	if (slab_span_of(engine_slab(ss->e, ss->pool), ce->slot, &start, &end, &used))
		return false;
	for (unsigned i = 0; i < ss->nblocked; i++)
		if (ss->blocked[i] == start)
			return false;
	return !engine_fast_pinned(ss->e, ce);
}

static void count_evictable(struct cache_entry *ce, void *arg)
{
	struct span_search *ss = arg;

	if (ce->key.model == ss->span_model && ce->pool == ss->pool && ce->slot >= ss->start &&
	    ce->slot < ss->end && ce->state == CACHE_RESIDENT && !ce->pins && !engine_fast_pinned(ss->e, ce))
		ss->evictable++;
}

struct span_evict {
	struct engine *e;
	uint32_t model;
	uint32_t pool;
	uint64_t start, end;
	struct cache_entry *v[64];
	unsigned n;
};

static void collect_span(struct cache_entry *ce, void *arg)
{
	struct span_evict *se = arg;

	if (se->n < 64 && ce->key.model == se->model && ce->pool == se->pool && ce->slot >= se->start &&
	    ce->slot < se->end && ce->state == CACHE_RESIDENT && !ce->pins && !engine_fast_pinned(se->e, ce))
		se->v[se->n++] = ce;
}

/*
 * Frees the least valuable span of another model whose every slot is
 * evictable.  Returns the experts evicted, 0 when no span can be freed.
 */
static unsigned evict_other_span(struct engine *e, uint32_t model, uint32_t pool, unsigned max_evict)
{
	struct span_search ss = { .e = e, .model = model, .pool = pool };
	struct cache_entry *v;

	while (!cache_victim(e->cache, other_unblocked, &ss, &v)) {
		uint32_t used;
		unsigned n = 0;

		if (slab_span_of(engine_slab(e, pool), v->slot, &ss.start, &ss.end, &used))
			return 0;
		ss.span_model = v->key.model;
		ss.evictable = 0;
		cache_foreach(e->cache, count_evictable, &ss);
		if (ss.evictable == used && used <= max_evict) {
			/* Collected in rounds of 64: evicting changes the walk. */
			while (n < used) {
				struct span_evict se = { e, ss.span_model, pool, ss.start, ss.end, { 0 }, 0 };
				unsigned round = 0;

				cache_foreach(e->cache, collect_span, &se);
				for (unsigned i = 0; i < se.n; i++) {
					/* A client pinned it since it was counted: the
					 * span stays partly used. */
					if (!engine_fast_claim(e, se.v[i]))
						continue;
					engine_evict_entry(e, se.v[i]);
					round++;
				}
				if (!round)
					break;
				n += round;
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
int engine_slot_get(struct engine *e, uint32_t model, uint32_t pool, unsigned max_evict, uint64_t *off)
{
	const struct engine_model *m = &e->models[model];
	struct same_model_arg sm = { e, model, pool };
	unsigned evicted = 0, lost_claims = 0;

	for (;;) {
		struct cache_entry *v;
		unsigned n;
		int r = slab_alloc(engine_slab(e, pool), m->cls, off);

		if (r != -ENOSPC && r != -EDQUOT)
			return r;
		if (evicted >= max_evict)
			return r;
		/* The model's own expert: its slot serves at once. */
		if (!cache_victim(e->cache, same_model, &sm, &v)) {
			/* Pinned by a client between the policy's look and the
			 * claim: the next look skips it while the pin lasts.
			 * Bounded, against a client that pins and unpins in a
			 * loop to keep the daemon here. */
			if (!engine_fast_claim(e, v)) {
				if (++lost_claims > ENGINE_MAX_LOST_CLAIMS)
					return r;
				continue;
			}
			engine_evict_entry(e, v);
			evicted++;
			continue;
		}
		if (r == -EDQUOT)
			return r;
		/* Another model's: only a whole span it can give back helps, so
		 * nothing is evicted for an allocation that would fail anyway. */
		n = evict_other_span(e, model, pool, max_evict - evicted);
		if (!n)
			return r;
		evicted += n;
	}
}

void engine_slot_info(const struct engine *e, const struct cache_entry *ce, struct engine_slot_info *info)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = engine_expert_index(m->cat, ce->key.layer, ce->key.expert);

	info->pool = ce->pool;
	info->offset = ce->slot;
	info->expert = xi >= 0 ? &m->cat->experts[xi] : NULL;
}

bool engine_fast_key_pinned(const struct engine *e, const struct tierd_key *k)
{
	int idx = e->res ? residency_index(e->res, k) : -ENOENT;

	return idx >= 0 && residency_pinned(e->res, (uint32_t)idx, k->model);
}

static void publish_resident(struct cache_entry *ce, void *arg)
{
	if (ce->state == CACHE_RESIDENT)
		engine_fast_publish(arg, ce);
}

int engine_fast_enable(struct engine *e, char *err, size_t errlen)
{
	struct residency_model *rm;
	int r;

	if (e->res)
		return -EALREADY;
	rm = calloc(e->nmodels + 1, sizeof(*rm));
	if (!rm)
		return -ENOMEM;
	for (unsigned i = 0; i < e->nmodels; i++) {
		rm[i].nlayers = e->models[i].cat->nlayers;
		rm[i].experts_per_layer = e->models[i].cat->experts_per_layer;
	}
	r = residency_create(&e->res, rm, e->nmodels, err, errlen);
	free(rm);
	if (r)
		return r;
	cache_foreach(e->cache, publish_resident, e);
	/* Acquires through the table reach the daemon only as use counts, not
	 * in order: what learns from their order needs them all. */
	if (e->ahead_on || cache_predicts(e->cache))
		residency_set_socket_only(e->res, RESIDENCY_SOCKET_LEARNING, true);
	return 0;
}

struct residency *engine_residency(const struct engine *e)
{
	return e->res;
}

void engine_fast_uses(struct engine *e, const struct tierd_key *key, uint32_t uses)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce = cache_lookup(e->cache, &ck);

	e->st.hits += uses;
	if (key->model < e->nmodels)
		e->models[key->model].pl.hits += uses;
	if (ce && ce->state == CACHE_RESIDENT) {
		engine_prefetch_used(e, ce);
		cache_touch(e->cache, ce);
	}
}

void engine_fast_settle(struct engine *e)
{
	size_t j = 0;

	if (!e->res)
		return;
	for (size_t i = 0; i < e->nzombies; i++) {
		struct engine_zombie *z = &e->zombies[i];

		/* As engine_release() settles a key: pins are counted per key,
		 * so no slot of it goes while any pin on it is left. */
		if (!z->pins && !engine_fast_key_pinned(e, &z->key)) {
			struct tierd_key ck = z->key;
			struct cache_entry *ce = cache_lookup(e->cache, &ck);
			uint64_t pins = ce ? ce->pins : 0;

			for (size_t k = 0; k < e->nzombies; k++)
				if (!memcmp(&e->zombies[k].key, &z->key, sizeof(z->key)))
					pins += e->zombies[k].pins;
			if (!pins) {
				slab_free(engine_slab(e, z->pool), z->cls, z->slot);
				engine_account(e, z->pool, z->bytes, -1);
				continue;
			}
		}
		e->zombies[j++] = *z;
	}
	e->nzombies = j;
}
