/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stddef.h>

#include "cache.h"
#include "predict.h"
#include "prefetch.h"

/* Candidates considered per call: a few layers of the largest banks' top-k. */
#define PREFETCH_MAX_GUESS	256

size_t prefetch_plan(const struct prefetch_conf *pc, struct cache *c, uint32_t model,
		     uint64_t outstanding, uint64_t inflight_bytes, uint64_t expert_bytes,
		     struct predict_guess *out, size_t max)
{
	struct predict_guess g[PREFETCH_MAX_GUESS];
	size_t ng, n = 0;

	ng = predict_guess(cache_predictor(c), model, pc->depth ? pc->depth : 1, pc->min_prob, g,
			   PREFETCH_MAX_GUESS);
	for (size_t i = 0; i < ng && n < max; i++) {
		struct tierd_key k = { model, g[i].layer, g[i].expert };

		if (cache_lookup(c, &k))
			continue;
		if (pc->max_slots && outstanding + n >= pc->max_slots)
			break;
		if (pc->max_bytes && inflight_bytes + (n + 1) * expert_bytes > pc->max_bytes)
			break;
		out[n++] = g[i];
	}
	return n;
}

bool prefetch_may_displace(struct cache *c, uint32_t model, const struct predict_guess *g,
			   const struct cache_entry *victim)
{
	struct predict *p = cache_predictor(c);
	double vn = predict_next_use(p, victim->key.model, victim->key.layer, victim->key.expert,
				     PREDICT_ALL);
	double gn = predict_next_use(p, model, g->layer, g->expert, PREDICT_ALL);

	return vn > gn;
}
