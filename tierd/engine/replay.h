/* SPDX-License-Identifier: MIT */
/*
 * The replay lab: a sequence's routing (trace events) through the daemon's
 * own cache (cache.c, its policies and predictor) and the daemon's prefetch
 * choice (prefetch.c), under one global budget of slots over every
 * (layer, expert) key, as in a real pool.  tierctl replay prints what it
 * measures; the tests check it.
 *
 * Rules, as a client behaves: hints (prefill) reach the predictor before
 * decoding starts and are never counted; each acquire event is one layer's
 * experts acquired together: its hits are pinned first, then its misses
 * fetched (evicting unpinned entries), the layer's experts stay pinned while
 * it is served, then are released.  With prefetch, the daemon's prefetch
 * runs after each acquire (while the layer is pinned) and its fetches are
 * resident before the next acquire (the lab has no clock: arrival is not
 * modelled, only what was chosen).
 *
 * Belady's MIN, the offline optimum of a demand pager under the same rules,
 * is computed here as the reference (it needs the future, so it is not a
 * policy).
 */
#ifndef TIERD_REPLAY_H
#define TIERD_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prefetch.h"
#include "trace.h"

struct replay_conf {
	const char *policy;		/* a cache policy name */
	bool prefetch;
	struct prefetch_conf pf;	/* when prefetch */
	uint64_t capacity;		/* slots, >= the largest layer set */
	uint32_t nlayers, nexperts;	/* the model's shape (predictor) */
	uint64_t expert_bytes;		/* for fetched_bytes */
};

struct replay_result {
	uint64_t accesses;		/* expert acquires counted */
	uint64_t tokens;		/* decode tokens (acquire rows at layer 0) */
	uint64_t demand_misses, hits;
	uint64_t prefetch_issued, prefetch_used, prefetch_wasted;
	uint64_t fetched_experts, fetched_bytes;
};

/*
 * Replays one sequence's events (of model 0, in recorded order) from a cold
 * cache.  -EINVAL with err for an unknown policy, a capacity below a layer's
 * set, or an event outside the shape; -ENOMEM.
 */
int replay_run(const struct replay_conf *c, const struct trace_event *ev, size_t n,
	       struct replay_result *r, char *err, size_t errlen);

/* Belady's MIN misses for the acquires among ev, under capacity. */
int replay_min(const struct trace_event *ev, size_t n, uint64_t capacity, uint64_t *misses,
	       char *err, size_t errlen);

void replay_result_add(struct replay_result *sum, const struct replay_result *r);

#endif
