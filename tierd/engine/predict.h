/* SPDX-License-Identifier: MIT */
/*
 * Predictor: which experts a sequence will use next, learned online from
 * what clients acquire and hint.  It ranks eviction (the activation-aware
 * and predictive cache policies) and drives the daemon's own prefetch; the
 * replay lab (tierctl replay) runs the same code.
 *
 * Per model it keeps, as counts: how often each (layer, expert) is used per
 * token; cross-layer transitions (expert a at layer L, then b at L+1 in the
 * same token); cross-token transitions (a at layer L for token t, then b at L
 * for token t+1).  Per sequence it keeps the sequence's own activation counts
 * (prompt hints and decode so far) and the last set seen at each layer.
 *
 * It also keeps each sequence's last 64 tokens of sets, for the copy
 * estimate: decoding repeats itself, so the earlier tokens whose latest
 * layers best match the sequence's say what comes next.
 *
 * From these come the estimates of "expert e is used the next time layer L
 * runs" (global frequency, sequence frequency, cross-token, cross-layer,
 * recency-weighted, copy); they are mixed with weights learned online from
 * each estimate's own squared error, so that no weight is a constant chosen
 * for some trace.
 *
 * Tokens are told apart by layer order: an observation at a layer at or
 * below the last one seen for the sequence starts a new token (a hint and
 * an acquire of the same layer belong to one token).
 */
#ifndef TIERD_PREDICT_H
#define TIERD_PREDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct predict;

/* Estimates mixed, for reports. */
enum predict_est {
	PREDICT_GLOBAL,
	PREDICT_SEQUENCE,
	PREDICT_XTOKEN,
	PREDICT_XLAYER,
	/* The sequence's uses weighted by recency, half-lives 1, 2, 4, 8 tokens. */
	PREDICT_RECENT1,
	PREDICT_RECENT2,
	PREDICT_RECENT4,
	PREDICT_RECENT8,
	/* Copy: decoding repeats itself.  The earlier tokens whose last few
	 * layers' sets best match the sequence's latest ones, and what followed
	 * them (see predict.c). */
	PREDICT_COPY,
	PREDICT_NEST,
};

#define PREDICT_NRECENT		4

/* Which estimates a query may use: the activation-aware policy uses the
 * sequence's own counts only, the predictive policy all of them. */
#define PREDICT_ALL		((1u << PREDICT_NEST) - 1)
/* With PREDICT_ALL: the stacked estimate (logistic weights on the
 * estimates' logits, learned online) instead of their average weighted by
 * inverse squared error.  Sharper, so the prefetch choice thresholds it;
 * eviction ranks by the average (chosen on one shared prompt, checked on the
 * other and on synthetic workloads: README). */
#define PREDICT_STACKED		(1u << 16)
#define PREDICT_ACTIVATION	((1u << PREDICT_GLOBAL) | (1u << PREDICT_SEQUENCE))

/* max_seqs: sequence contexts kept (least recently active dropped). */
int predict_create(struct predict **out, unsigned max_seqs);
void predict_destroy(struct predict *p);

/* Declares a model's shape; observations outside it are ignored.
 * -EINVAL for a zero dimension, -ENOMEM.  Redeclaring the same shape keeps
 * what was learned; another shape starts afresh. */
int predict_model(struct predict *p, uint32_t model, uint32_t nlayers, uint32_t nexperts);

/*
 * A sequence used (hint false: an acquire) or says it will use (hint true)
 * these experts at one layer.  Learns, then moves the sequence's position to
 * this layer.  -ERANGE when the model is undeclared or the key outside it.
 */
int predict_observe(struct predict *p, uint32_t model, uint64_t seq, uint32_t layer,
		    const uint32_t *experts, uint32_t n, bool hint);
/* Drops a sequence's context (its client went away). */
void predict_forget(struct predict *p, uint64_t seq);

/*
 * Probability that the model's most recently active sequence uses the expert
 * the next time the layer runs, from the estimates in mask.  0 for an
 * unknown model or key, or before anything was seen.
 */
double predict_prob(struct predict *p, uint32_t model, uint32_t layer, uint32_t expert, unsigned mask);

/*
 * Expected layer steps until the key is used: for each sequence of the model
 * still decoding (it acquired within the last two turns of the model's
 * sequences, or acted last), the steps until its layer next runs plus a full
 * pass of layers for each expected miss ((1 - p) / p passes), and of these
 * the soonest: with several clients (or a batch) decoding side by side a key
 * is needed as soon as any of them needs it.  Larger: evict first.  Unknown
 * models and keys: a large value.
 */
double predict_next_use(struct predict *p, uint32_t model, uint32_t layer, uint32_t expert,
			unsigned mask);

/* The layer the model's most recently active sequence will run next, and
 * how many layers the model has; -ENOENT when nothing was seen. */
int predict_next_layer(struct predict *p, uint32_t model, uint32_t *layer, uint32_t *nlayers);

struct predict_guess {
	uint32_t layer, expert;
	double p;
};

/*
 * Prefetch candidates: for the next depth layers the model's most recently
 * active sequence will run, the experts with probability at least min_p, at
 * most the layer's usual number of experts each (learned), most likely first.
 * Returns how many were written (at most max).
 */
size_t predict_guess(struct predict *p, uint32_t model, unsigned depth, double min_p,
		     struct predict_guess *out, size_t max);

/* Mixing weights learned so far (sum 1), for reports and tests. */
void predict_weights(struct predict *p, uint32_t model, double w[PREDICT_NEST]);

#endif
