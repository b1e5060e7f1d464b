/* SPDX-License-Identifier: MIT */
/*
 * The engine's placement: what acquires and hints teach the predictor, the
 * daemon's own prefetch of the coming layers (prefetch.h chooses, this file
 * fetches and cancels), and the per-model counts operators read.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine-int.h"
#include "predict.h"
#include "slab.h"

int engine_predict_model(struct engine *e, uint32_t model)
{
	const struct catalog *cat = e->models[model].cat;
	uint32_t nl = 0, ne = 0;

	/* Its tables take 8 x layers x experts^2 bytes (31 MiB for 60 layers
	 * of 256): only when something reads them. */
	if (!e->ahead_on && !cache_predicts(e->cache))
		return 0;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		if (cat->experts[i].layer + 1 > nl)
			nl = cat->experts[i].layer + 1;
		if (cat->experts[i].expert + 1 > ne)
			ne = cat->experts[i].expert + 1;
	}
	if (!nl || !ne)
		return 0;	/* nothing to predict */
	return predict_model(cache_predictor(e->cache), model, nl, ne);
}

void engine_ahead_free(struct engine *e)
{
	free(e->ahead);
	e->ahead = NULL;
	e->nahead = e->capahead = 0;
}

int engine_model_placement(const struct engine *e, uint32_t model, struct engine_placement *pl)
{
	if (model >= e->nmodels)
		return -ENOENT;
	*pl = e->models[model].pl;
	return 0;
}

void engine_prefetch_used(struct engine *e, struct cache_entry *ce)
{
	if (!(ce->flags & CACHE_F_PREFETCHED))
		return;
	ce->flags &= ~CACHE_F_PREFETCHED;
	e->models[ce->key.model].pl.prefetch_used++;
}

void engine_prefetch_gone(struct engine *e, struct cache_entry *ce, uint64_t bytes)
{
	if (!(ce->flags & CACHE_F_PREFETCHED))
		return;
	e->models[ce->key.model].pl.prefetch_wasted++;
	e->models[ce->key.model].pl.prefetch_wasted_bytes += bytes;
}

static uint64_t expert_bytes(const struct engine *e, const struct tierd_key *k)
{
	const struct catalog *cat = e->models[k->model].cat;
	int xi = engine_expert_index(cat, k->layer, k->expert);

	return xi >= 0 ? cat->experts[xi].bytes : 0;
}

/* Oldest first: the order they were issued in. */
static void ahead_drop(struct engine *e, size_t i)
{
	memmove(&e->ahead[i], &e->ahead[i + 1], (e->nahead - i - 1) * sizeof(*e->ahead));
	e->nahead--;
}

/*
 * Keys no acquire will settle: gone from the pool (evicted, model stale),
 * or used already.  And when the budget is full, the oldest are no longer
 * waited for (a client that stopped, or skips layers, must not stop the
 * prefetch for everyone): they stay cached, counted wasted if evicted
 * unused.
 */
static void ahead_prune(struct engine *e)
{
	for (size_t i = 0; i < e->nahead;) {
		struct cache_entry *ce = cache_lookup(e->cache, &e->ahead[i]);

		if (!ce || !(ce->flags & CACHE_F_PREFETCHED))
			ahead_drop(e, i);
		else
			i++;
	}
	while (e->ahead_conf.max_slots && e->nahead && e->nahead >= e->ahead_conf.max_slots)
		ahead_drop(e, 0);
}

/*
 * The daemon's prefetches of (model, layer) that this acquire settles: the
 * ones it names were right (used, counted at the acquire); the others were
 * wrong and are cancelled when not yet read (their slots freed), or left as
 * ordinary cached experts (wasted if they leave unused).
 */
static void ahead_settle(struct engine *e, uint32_t model, uint32_t layer, const struct tierd_key *keys,
			 uint32_t n)
{
	for (size_t i = 0; i < e->nahead;) {
		struct tierd_key *a = &e->ahead[i];
		bool named = false;

		if (a->model != model || a->layer != layer) {
			i++;
			continue;
		}
		for (uint32_t j = 0; j < n && !named; j++)
			named = keys[j].expert == a->expert;
		if (!named && !engine_cancel_prefetch(e, a))
			e->models[model].pl.prefetch_cancelled++;
		ahead_drop(e, i);
	}
}

/* What a slot of the model in that pool could displace (engine_slot_get
 * evicts in the pool it allocates from). */
struct model_pool {
	uint32_t model;
	uint32_t pool;
};

static bool same_model(const struct cache_entry *ce, void *arg)
{
	const struct model_pool *mp = arg;

	return ce->key.model == mp->model && ce->pool == mp->pool;
}

/* Whether a slot of the model is free now in the pool (no eviction needed). */
static bool room(struct engine *e, uint32_t model, uint32_t pool)
{
	const struct engine_model *m = &e->models[model];
	struct slab *sl = engine_slab(e, pool);
	uint64_t off;

	if (slab_alloc(sl, m->cls, &off))
		return false;
	slab_free(sl, m->cls, off);
	return true;
}

/* The coming layers' likely experts, fetched into the pool of the client
 * whose acquire this follows (near: its NUMA node's). */
static void ahead_fetch(struct engine *e, uint32_t model, uint32_t near)
{
	uint32_t pool = (uint32_t)engine_pool_near(e, near);
	struct model_pool mp = { model, pool };
	struct predict_guess g[64];
	uint64_t inflight = 0, xb = 0;
	size_t n;

	ahead_prune(e);
	for (size_t i = 0; i < e->nahead; i++) {
		struct cache_entry *ce = cache_lookup(e->cache, &e->ahead[i]);

		if (ce && ce->state == CACHE_FETCHING)
			inflight += expert_bytes(e, &e->ahead[i]);
	}
	{
		uint32_t layer, nl;
		struct tierd_key k = { model, 0, 0 };

		if (predict_next_layer(cache_predictor(e->cache), model, &layer, &nl))
			return;
		k.layer = layer;
		xb = expert_bytes(e, &k);
	}
	n = prefetch_plan(&e->ahead_conf, e->cache, model, e->nahead, inflight, xb, g, 64);
	for (size_t i = 0; i < n; i++) {
		struct tierd_key k = { model, g[i].layer, g[i].expert };
		struct cache_entry *v;
		bool started = false;

		/* A guess displaces only what is expected later than itself;
		 * pinned and fetching experts are never offered as victims. */
		if (!room(e, model, pool) &&
		    (cache_victim(e->cache, same_model, &mp, &v) < 0 ||
		     !prefetch_may_displace(e->cache, model, &g[i], v)))
			break;
		if (e->nahead == e->capahead) {
			size_t nc = e->capahead ? e->capahead * 2 : 16;
			struct tierd_key *na = realloc(e->ahead, nc * sizeof(*na));

			if (!na)
				return;
			e->ahead = na;
			e->capahead = nc;
		}
		if (engine_prefetch_near(e, &k, ENGINE_OWNER_NONE, near, &started) < 0 || !started)
			break;
		e->ahead[e->nahead++] = k;
		e->models[model].pl.prefetch_ahead++;
	}
}

void engine_observe(struct engine *e, uint64_t seq, const struct tierd_key *keys, uint32_t n)
{
	uint32_t experts[256];
	uint32_t i = 0, models_done = 0;
	uint32_t models[8];

	/* Learning costs a few microseconds a layer (tens with 256-expert
	 * banks): only when a policy or the prefetch reads what is learnt. */
	if (!e->ahead_on && !cache_predicts(e->cache))
		return;
	while (i < n) {
		uint32_t j = i, k = 0;

		/* A run of one (model, layer): what the predictor learns from. */
		while (j < n && keys[j].model == keys[i].model && keys[j].layer == keys[i].layer) {
			if (k < 256)
				experts[k++] = keys[j].expert;
			j++;
		}
		if (keys[i].model < e->nmodels && !e->models[keys[i].model].stale) {
			(void)cache_observe(e->cache, keys[i].model, seq, keys[i].layer, experts, k, false);
			if (e->ahead_on) {
				bool seen = false;

				ahead_settle(e, keys[i].model, keys[i].layer, &keys[i], j - i);
				for (uint32_t m = 0; m < models_done && !seen; m++)
					seen = models[m] == keys[i].model;
				if (!seen && models_done < 8)
					models[models_done++] = keys[i].model;
			}
		}
		i = j;
	}
	/* After the whole batch: the coming layers of each model it named. */
	for (uint32_t m = 0; m < models_done; m++)
		ahead_fetch(e, models[m], (uint32_t)seq);	/* seq: the client's id */
}

void engine_observe_hint(struct engine *e, uint64_t seq, uint32_t model, uint32_t layer,
			 const uint32_t *experts, uint32_t n)
{
	if ((e->ahead_on || cache_predicts(e->cache)) && model < e->nmodels && !e->models[model].stale)
		(void)cache_observe(e->cache, model, seq, layer, experts, n, true);
}

void engine_forget(struct engine *e, uint64_t seq)
{
	predict_forget(cache_predictor(e->cache), seq);
}
