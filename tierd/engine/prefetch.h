/* SPDX-License-Identifier: MIT */
/*
 * The daemon's own prefetch choice: after a client acquires a layer, which
 * experts of the coming layers to fetch ahead of its next acquire, and which
 * resident expert each may displace.  The engine (engine_prefetch_ahead) and
 * the replay lab both run it, so the lab measures what the daemon does.
 *
 * Candidates come from the predictor (predict_guess).  A candidate is taken
 * only while the budget allows (slots held by prefetches not yet used, bytes
 * in flight), and displaces a resident expert only when that one's expected
 * next use is later than the candidate's: a guess never pushes out something
 * more likely to be needed sooner, and never anything pinned (the cache
 * never offers pinned entries as victims).
 */
#ifndef TIERD_PREFETCH_H
#define TIERD_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

struct cache;
struct cache_entry;
struct predict_guess;

struct prefetch_conf {
	unsigned depth;			/* layers ahead (>= 1) */
	double min_prob;		/* candidates at least this likely */
	unsigned max_slots;		/* prefetched, not yet used, at once (0: no limit) */
	uint64_t max_bytes;		/* in flight (0: no limit) */
};

/* [cache] prefetch_* defaults: one setting for every trace and model. */
#define PREFETCH_DEFAULT_DEPTH		1
#define PREFETCH_DEFAULT_MIN_PROB	0.2
#define PREFETCH_DEFAULT_MAX_SLOTS	0

/*
 * The candidates to fetch now for the model, most likely first, into out
 * (at most max): already resident or fetching ones are left out.
 * outstanding: prefetched slots not yet used; inflight_bytes: bytes of
 * prefetches being read; expert_bytes: one expert's size.
 */
size_t prefetch_plan(const struct prefetch_conf *pc, struct cache *c, uint32_t model,
		     uint64_t outstanding, uint64_t inflight_bytes, uint64_t expert_bytes,
		     struct predict_guess *out, size_t max);

/*
 * Whether a candidate may displace the victim the policy offers: true when
 * the victim's expected next use is later than the candidate's.
 */
bool prefetch_may_displace(struct cache *c, uint32_t model, const struct predict_guess *g,
			   const struct cache_entry *victim);

#endif
