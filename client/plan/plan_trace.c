/* SPDX-License-Identifier: MIT */
/* Routing measured in a trace, by batch size (see plan_trace.h). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan-int.h"
#include "plan_trace.h"
#include "replay.h"
#include "trace.h"

/* One sequence: its events as recorded (batch-1 replay), and its decode rows
 * as bit sets, row-major: rows x nlayers x words. */
struct ptseq {
	uint32_t client;
	uint64_t seq;
	struct trace_event *ev;
	size_t nev, cap;
	unsigned nrows;
	uint64_t *mask;
};

struct plan_trace {
	struct plan_trace_shape shape;
	char format[32];
	char model[128];
	struct ptseq *seqs;
	unsigned words;			/* 64-bit words per layer set */
};

const struct plan_trace_shape *plan_trace_shape(const struct plan_trace *t)
{
	return &t->shape;
}

void plan_trace_free(struct plan_trace *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->shape.nseqs; i++) {
		free(t->seqs[i].ev);
		free(t->seqs[i].mask);
	}
	free(t->seqs);
	free(t);
}

static struct ptseq *seq_of(struct plan_trace *t, const struct trace_event *ev)
{
	struct ptseq *ns;

	for (unsigned i = 0; i < t->shape.nseqs; i++)
		if (t->seqs[i].client == ev->client && t->seqs[i].seq == ev->seq)
			return &t->seqs[i];
	ns = realloc(t->seqs, (t->shape.nseqs + 1) * sizeof(*ns));
	if (!ns)
		return NULL;
	t->seqs = ns;
	ns = &t->seqs[t->shape.nseqs++];
	memset(ns, 0, sizeof(*ns));
	ns->client = ev->client;
	ns->seq = ev->seq;
	return ns;
}

static int seq_push(struct ptseq *s, const struct trace_event *ev)
{
	if (s->nev == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 256;
		struct trace_event *ne = realloc(s->ev, nc * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		s->ev = ne;
		s->cap = nc;
	}
	s->ev[s->nev++] = *ev;
	return 0;
}

/* Decode rows from the acquires: a new row where the token index changes
 * (one row may come in several acquires of a layer: their union). */
static int seq_rows(struct plan_trace *t, struct ptseq *s)
{
	uint64_t per_row64 = (uint64_t)t->shape.nlayers * t->words;
	size_t per_row = (size_t)per_row64, row = 0;
	uint32_t last = 0;
	bool any = false;

	for (size_t i = 0; i < s->nev; i++)
		if (s->ev[i].kind == TRACE_ACQUIRE && (!any || s->ev[i].token != last)) {
			s->nrows++;
			last = s->ev[i].token;
			any = true;
		}
	if (!s->nrows)
		return 0;
	/* The reader bounds layers and experts; checked again all the same. */
	if (!per_row64 || per_row64 > SIZE_MAX / sizeof(*s->mask) / s->nrows)
		return -EOVERFLOW;
	s->mask = calloc((size_t)s->nrows * per_row, sizeof(*s->mask));
	if (!s->mask)
		return -ENOMEM;
	any = false;
	for (size_t i = 0; i < s->nev; i++) {
		const struct trace_event *ev = &s->ev[i];
		uint64_t *m;

		if (ev->kind != TRACE_ACQUIRE)
			continue;
		if (any && ev->token != last)
			row++;
		last = ev->token;
		any = true;
		m = s->mask + row * per_row + (size_t)ev->layer * t->words;
		for (uint32_t j = 0; j < ev->nexperts; j++)
			m[ev->experts[j] / 64] |= 1ull << (ev->experts[j] % 64);
	}
	return 0;
}

int plan_trace_load(struct plan_trace **out, const char *path, char *err, size_t errlen)
{
	struct plan_trace *t = calloc(1, sizeof(*t));
	struct trace_reader *rd = NULL;
	const struct trace_info *info;
	struct trace_event ev;
	unsigned nseen = 0;
	int ret;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	ret = trace_open(&rd, path, err, errlen);
	if (ret < 0)
		goto out;
	info = trace_info(rd);
	snprintf(t->format, sizeof(t->format), "%s", info->format ? info->format : "");
	snprintf(t->model, sizeof(t->model), "%s",
		 info->nmodels && info->models[0] ? info->models[0] : "");
	t->shape.format = t->format;
	t->shape.model = t->model;
	t->shape.nlayers = info->nlayers;
	t->shape.nexperts = info->nexperts;
	t->shape.top_k = info->top_k;
	while ((ret = trace_next(rd, &ev, err, errlen)) > 0) {
		struct ptseq *s;

		if (ev.model != 0)
			continue;	/* the planner models one model: the trace's first */
		/* Recordings need not say the shape: the keys seen give it. */
		if (ev.layer >= t->shape.nlayers && !info->nlayers)
			t->shape.nlayers = ev.layer + 1;
		for (uint32_t i = 0; i < ev.nexperts; i++)
			if (ev.experts[i] >= t->shape.nexperts && !info->nexperts)
				t->shape.nexperts = ev.experts[i] + 1;
		if (ev.layer >= t->shape.nlayers) {
			ret = plan_fail(err, errlen, -EINVAL, "%s: token %u: layer %u, but the trace has %u",
					path, ev.token, ev.layer, t->shape.nlayers);
			goto out;
		}
		for (uint32_t i = 0; i < ev.nexperts; i++)
			if (ev.experts[i] >= t->shape.nexperts) {
				ret = plan_fail(err, errlen, -EINVAL, "%s: token %u layer %u: expert %u, "
						"but the trace has %u", path, ev.token, ev.layer,
						ev.experts[i], t->shape.nexperts);
				goto out;
			}
		s = seq_of(t, &ev);
		if (!s || seq_push(s, &ev) < 0) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (ret < 0)
		goto out;
	t->words = (uint32_t)(((uint64_t)t->shape.nexperts + 63) / 64);
	for (unsigned i = 0; i < t->shape.nseqs; i++) {
		ret = seq_rows(t, &t->seqs[i]);
		if (ret < 0)
			goto out;
	}
	/* Sequences with hints and no decode rows have nothing to batch: dropped. */
	for (unsigned i = 0; i < t->shape.nseqs; i++) {
		struct ptseq *s = &t->seqs[i];

		if (!s->nrows) {
			free(s->ev);
			continue;
		}
		t->seqs[nseen++] = *s;
		t->shape.nrows += s->nrows;
		if (!t->shape.min_rows || s->nrows < t->shape.min_rows)
			t->shape.min_rows = s->nrows;
	}
	t->shape.nseqs = nseen;
	if (!nseen || !t->shape.nexperts) {
		ret = plan_fail(err, errlen, -EINVAL, "%s: no decode rows (acquires) to measure routing from",
				path);
		goto out;
	}
	*out = t;
	t = NULL;
	ret = 0;
out:
	trace_close(rd);
	plan_trace_free(t);
	return ret;
}

/* Which sequence and row stream j reads at step `step` of rotation r. */
static void stream_row(const struct plan_trace *t, unsigned batch, unsigned r, unsigned j,
		       unsigned step, unsigned *seq, unsigned *row, bool *repeats)
{
	unsigned nseq = t->shape.nseqs, s = (j + r) % nseq, q = j / nseq;
	/* Streams j' < batch with (j' + r) % nseq == s. */
	unsigned first = (s + nseq - r % nseq) % nseq;
	unsigned n = first < batch ? (batch - 1 - first) / nseq + 1 : 1;
	unsigned rows = t->seqs[s].nrows;

	*seq = s;
	*row = (unsigned)(((unsigned long long)q * rows / n + step) % rows);
	if (n > rows)
		*repeats = true;
}

/* Steps in a rotation: every row of the longest sequence once. */
static unsigned steps_of(const struct plan_trace *t)
{
	unsigned steps = 0;

	for (unsigned i = 0; i < t->shape.nseqs; i++)
		if (t->seqs[i].nrows > steps)
			steps = t->seqs[i].nrows;
	return steps;
}

static const uint64_t *row_mask(const struct plan_trace *t, unsigned seq, unsigned row, unsigned layer)
{
	return t->seqs[seq].mask + ((size_t)row * t->shape.nlayers + layer) * t->words;
}

/* The union of a batch's experts at one step and layer, into u (words). */
static void batch_union(const struct plan_trace *t, unsigned batch, unsigned r, unsigned step,
			unsigned layer, uint64_t *u, bool *repeats)
{
	memset(u, 0, t->words * sizeof(*u));
	for (unsigned j = 0; j < batch; j++) {
		unsigned s, row;
		const uint64_t *m;

		stream_row(t, batch, r, j, step, &s, &row, repeats);
		m = row_mask(t, s, row, layer);
		for (unsigned w = 0; w < t->words; w++)
			u[w] |= m[w];
	}
}

static unsigned popcount_set(const uint64_t *u, unsigned words)
{
	unsigned d = 0;

	for (unsigned w = 0; w < words; w++)
		d += (unsigned)__builtin_popcountll(u[w]);
	return d;
}

/* Activated experts on the busiest GPU, experts laid out in order. */
static unsigned busiest(const uint64_t *u, unsigned experts, unsigned gpus, unsigned *count)
{
	unsigned holders, per_gpu, big, most = 0;

	plan_ep_layout(experts, gpus, &holders, &per_gpu, &big);
	memset(count, 0, holders * sizeof(*count));
	for (unsigned x = 0; x < experts; x++) {
		unsigned g;

		if (!(u[x / 64] >> (x % 64) & 1))
			continue;
		g = x < big * per_gpu ? x / per_gpu : big + (x - big * per_gpu) / (per_gpu - 1);
		if (++count[g] > most)
			most = count[g];
	}
	return most;
}

int plan_trace_distinct(const struct plan_trace *t, unsigned batch, unsigned gpus, double *freq,
			size_t n, struct plan_trace_batch *info, char *err, size_t errlen)
{
	unsigned steps = steps_of(t), *count;
	uint64_t *u, *seen;
	bool repeats = false;
	unsigned long samples = 0;
	double most = 0;

	if (!batch || !gpus)
		return plan_fail(err, errlen, -EINVAL, "trace: batch size and GPUs must be positive");
	if (n <= t->shape.nexperts)
		return plan_fail(err, errlen, -EINVAL, "trace: %zu bins for %u experts", n,
				 t->shape.nexperts);
	u = calloc(t->words, sizeof(*u));
	seen = calloc(t->shape.nlayers, sizeof(*seen));
	count = calloc(gpus, sizeof(*count));
	if (!u || !seen || !count) {
		free(u);
		free(seen);
		free(count);
		return -ENOMEM;
	}
	/* Layers no sequence acquired at (dense layers in a recording) are not MoE layers. */
	for (unsigned s = 0; s < t->shape.nseqs; s++)
		for (unsigned row = 0; row < t->seqs[s].nrows; row++)
			for (unsigned l = 0; l < t->shape.nlayers; l++)
				seen[l] |= popcount_set(row_mask(t, s, row, l), t->words) > 0;
	memset(freq, 0, n * sizeof(*freq));
	for (unsigned r = 0; r < t->shape.nseqs; r++)
		for (unsigned step = 0; step < steps; step++)
			for (unsigned l = 0; l < t->shape.nlayers; l++) {
				if (!seen[l])
					continue;
				batch_union(t, batch, r, step, l, u, &repeats);
				freq[popcount_set(u, t->words)] += 1;
				most += busiest(u, t->shape.nexperts, gpus, count);
				samples++;
			}
	free(u);
	free(seen);
	free(count);
	if (info) {
		info->batch = batch;
		info->samples = samples;
		info->repeats = repeats;
		info->ep_max = samples ? most / (double)samples : 0;
	}
	return 0;
}

/* The events of one rotation's batched stream: each step's layers in order,
 * one acquire of the union each. */
static int batch_events(const struct plan_trace *t, unsigned batch, unsigned r,
			struct trace_event **out, size_t *nev, unsigned *largest)
{
	unsigned steps = steps_of(t);
	struct trace_event *ev = calloc((size_t)steps * t->shape.nlayers, sizeof(*ev));
	uint64_t *u = calloc(t->words, sizeof(*u));
	bool repeats = false;
	size_t n = 0;

	if (!ev || !u) {
		free(ev);
		free(u);
		return -ENOMEM;
	}
	for (unsigned step = 0; step < steps; step++)
		for (unsigned l = 0; l < t->shape.nlayers; l++) {
			struct trace_event *e = &ev[n];

			batch_union(t, batch, r, step, l, u, &repeats);
			e->kind = TRACE_ACQUIRE;
			e->token = step;
			e->layer = l;
			for (unsigned x = 0; x < t->shape.nexperts && e->nexperts < TRACE_MAX_EXPERTS; x++)
				if (u[x / 64] >> (x % 64) & 1)
					e->experts[e->nexperts++] = x;
			if (!e->nexperts)
				continue;
			if (e->nexperts > *largest)
				*largest = e->nexperts;
			n++;
		}
	free(u);
	*out = ev;
	*nev = n;
	return 0;
}

int plan_trace_hit_curve(const struct plan_trace *t, unsigned batch, const char *policy,
			 const double *cap_frac, size_t n, double *hit, char *err, size_t errlen)
{
	uint64_t keys = (uint64_t)t->shape.nlayers * t->shape.nexperts;
	struct replay_result *sum = calloc(n, sizeof(*sum));
	struct trace_event **evs = calloc(t->shape.nseqs, sizeof(*evs));
	size_t *nevs = calloc(t->shape.nseqs, sizeof(*nevs));
	unsigned largest = 0;
	int ret = 0;

	if (!sum || !evs || !nevs) {
		ret = -ENOMEM;
		goto out;
	}
	if (!batch) {
		ret = plan_fail(err, errlen, -EINVAL, "trace: batch size must be positive");
		goto out;
	}
	for (unsigned r = 0; r < t->shape.nseqs; r++) {
		if (batch > 1) {
			ret = batch_events(t, batch, r, &evs[r], &nevs[r], &largest);
			if (ret < 0)
				goto out;
			continue;
		}
		for (size_t i = 0; i < t->seqs[r].nev; i++)
			if (t->seqs[r].ev[i].kind == TRACE_ACQUIRE && t->seqs[r].ev[i].nexperts > largest)
				largest = t->seqs[r].ev[i].nexperts;
	}
	for (size_t i = 0; i < n; i++) {
		struct replay_conf c = {
			.policy = policy,
			.capacity = (uint64_t)llround(fmin(fmax(cap_frac[i], 0), 1) * (double)keys),
			.nlayers = t->shape.nlayers,
			.nexperts = t->shape.nexperts,
			.expert_bytes = 1,
		};

		hit[i] = NAN;
		if (c.capacity < largest)
			continue;
		for (unsigned r = 0; r < t->shape.nseqs; r++) {
			struct replay_result one;
			const struct trace_event *ev = batch > 1 ? evs[r] : t->seqs[r].ev;
			size_t nev = batch > 1 ? nevs[r] : t->seqs[r].nev;

			ret = replay_run(&c, ev, nev, &one, err, errlen);
			if (ret < 0)
				goto out;
			replay_result_add(&sum[i], &one);
		}
		hit[i] = sum[i].accesses ? (double)sum[i].hits / (double)sum[i].accesses : 0;
	}
	ret = 0;
out:
	for (unsigned r = 0; evs && r < t->shape.nseqs; r++)
		free(evs[r]);
	free(evs);
	free(nevs);
	free(sum);
	return ret;
}
