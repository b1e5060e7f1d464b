/* SPDX-License-Identifier: MIT */
/*
 * Routing measured in a trace, for the planner: tierd's recordings or the
 * shared JSON layout, read through the daemon's trace reader (trace.h).
 * `plan --trace` takes the distribution of distinct experts per (batch,
 * layer) from it instead of the uniform formula; `plan select --trace` takes
 * a DDR cache's hit rate by size from it, replayed through the daemon's own
 * cache and policies (replay.h).
 *
 * Batches.  A trace holds a few sequences (the shared one: 2 prompts of 64
 * decode tokens); a batch of B requests is formed from them as B streams
 * decoding side by side, one row per step.  Stream j follows sequence
 * (j + r) mod S, and the q-th stream on a sequence of T rows starts at row
 * q T / n (n streams on it) and wraps around: the rows of one sequence at
 * different positions stand for independent requests.  Every rotation r of
 * the S sequences is counted, so each sequence weighs the same at batch 1.
 * Bias: rows of one sequence share a prompt and topic, so they agree on
 * experts more than rows of different requests would; the measured batch
 * activates fewer distinct experts than a batch of strangers, more so as B
 * grows past S.  Past S T requests rows repeat within a batch (said in
 * plan_trace_batch.repeats).
 */
#ifndef TIERD_PLAN_TRACE_H
#define TIERD_PLAN_TRACE_H

#include <stdbool.h>
#include <stddef.h>

struct plan_trace;

/* What was read: decode rows (acquires) of model 0 only. */
struct plan_trace_shape {
	const char *format;		/* the reader's: "routing-json", "tierd-trace-v1" */
	const char *model;		/* the trace's name for it ("" when none) */
	unsigned nseqs;
	unsigned nrows;			/* decode rows, all sequences */
	unsigned min_rows;		/* of the shortest sequence */
	unsigned nlayers;		/* layers with acquires */
	unsigned nexperts;		/* per layer: the trace's, or the largest id + 1 */
	unsigned top_k;			/* the trace's; 0 when it does not say */
};

/* Reads the whole trace.  -EINVAL with the reader's message for a malformed
 * trace, or when it holds no decode rows. */
int plan_trace_load(struct plan_trace **out, const char *path, char *err, size_t errlen);
void plan_trace_free(struct plan_trace *t);
const struct plan_trace_shape *plan_trace_shape(const struct plan_trace *t);

struct plan_trace_batch {
	unsigned batch;
	unsigned long samples;		/* (rotation, step, layer) triples counted */
	bool repeats;			/* a sequence has more streams than rows */
	/* Mean over samples of the activated experts on the busiest GPU, the
	 * experts laid out in order over the GPUs (plan.h: the first GPUs hold
	 * one more where they do not divide evenly), as expert parallelism does. */
	double ep_max;
};

/*
 * freq[d], d = 0 .. n - 1 (n > nexperts): how many (step, layer) of batches
 * of `batch` streams activated d distinct experts, pooled over layers and
 * rotations (for struct plan_routing), and in info the busiest of `gpus`.
 */
int plan_trace_distinct(const struct plan_trace *t, unsigned batch, unsigned gpus, double *freq,
			size_t n, struct plan_trace_batch *info, char *err, size_t errlen);

/*
 * Hit rate of a DDR cache of cap_frac[i] (0..1) of every (layer, expert) key,
 * for batches of `batch` streams, replayed from a cold cache through tierd's
 * cache with `policy` (no prefetch), summed over rotations: hits over expert
 * acquires, where one acquire is one distinct expert of one layer of one
 * step.  At batch 1 each sequence is replayed as recorded, prompt hints
 * included; above, a step's layer acquires the union of its streams'
 * experts, without hints.  hit[i] is NaN where the cache cannot hold a
 * layer's whole set (the daemon pins it while it is served).
 */
int plan_trace_hit_curve(const struct plan_trace *t, unsigned batch, const char *policy,
			 const double *cap_frac, size_t n, double *hit, char *err, size_t errlen);

#endif
