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
	/*
	 * Not a policy: the policy told the future this many acquire steps
	 * ahead (a step is one layer's acquire: tokens x layers; 0: none).  On
	 * a miss it chooses among the keys not needed within the horizon, else
	 * the key needed furthest ahead goes: what exact knowledge of the next
	 * tokens would add to the policy's own ranking.  Demand evictions only.
	 */
	uint64_t told;
	/*
	 * Learnt before the replay (the predictor only, nothing cached): what
	 * the model's earlier sequences did, as a daemon that served them has
	 * learnt it; each warm sequence is forgotten before the replay starts.
	 */
	const struct trace_event *warm;
	size_t nwarm;
};

struct replay_result {
	uint64_t accesses;		/* expert acquires counted */
	uint64_t tokens;		/* decode tokens (acquire rows at layer 0) */
	uint64_t demand_misses, hits;
	uint64_t prefetch_issued, prefetch_used, prefetch_wasted;
	uint64_t fetched_experts, fetched_bytes;
	uint64_t loop_ns;		/* wall time of the acquires and hints (not warm-up) */
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

/*
 * A demand pager told the future only horizon acquire steps ahead (a step
 * is one layer's acquire: horizon = tokens x layers): it evicts the key whose
 * next use within the horizon is furthest, and a key not used within it
 * before any that is, least used so far then least recently used first.
 * Not a policy either: it bounds what knowing the next tokens' routing is
 * worth (UINT64_MAX: MIN itself).
 */
int replay_foresight(const struct trace_event *ev, size_t n, uint64_t capacity, uint64_t horizon,
		     uint64_t *misses, char *err, size_t errlen);

/*
 * A synthetic routing workload with the statistics of a real router, for
 * shapes no recorded trace has (256 experts, top-8) and as a check that
 * settings were not fitted to the recorded prompts.  Per sequence and layer,
 * experts have a Zipf popularity (exponent zipf) over a random order of
 * their own; each of a token's k choices is, with probability reuse, one of
 * the previous token's at that layer, with probability follow, one that a
 * choice of the layer before maps to (a fixed random map per layer, two
 * targets per expert), else drawn by popularity.  The defaults (24 layers,
 * 32 experts, top-8, reuse 0.1, follow 0.2, zipf 1.0) give consecutive
 * tokens sharing about 44% of a layer's experts and a layer's 8 most used
 * experts about half of its uses, between the shared trace's two prompts
 * (47% and 36%, 46% and 55%).
 */
struct replay_synth {
	uint32_t nlayers, nexperts, top_k;
	uint32_t prompt, tokens;	/* prefill rows (hints), decode rows (acquires) */
	uint32_t sequences;
	double reuse, follow, zipf;
	uint64_t seed;
};

#define REPLAY_SYNTH_DEFAULT \
	{ .nlayers = 24, .nexperts = 32, .top_k = 8, .prompt = 39, .tokens = 64, .sequences = 2, \
	  .reuse = 0.1, .follow = 0.2, .zipf = 1.0, .seed = 1 }

/* The events of every sequence (client = sequence index), in order.
 * -EINVAL for a shape that cannot be drawn (top_k > experts, zeros). */
int replay_synthetic(const struct replay_synth *s, struct trace_event **out, size_t *n);

void replay_result_add(struct replay_result *sum, const struct replay_result *r);

#endif
