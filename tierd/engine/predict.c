/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "predict.h"

/*
 * The copy estimate (PREDICT_COPY): tokens of history kept per sequence, the
 * cells (a layer's set) compared to match an earlier token to the latest
 * ones, the earlier tokens followed and the sharpness of the match weight
 * exp(SHARP * (similarity - 1)).  Not fitted to a trace: 8 cells is a third
 * of a 24-layer token, 4 matches, and a weight that halves at similarity
 * 0.91; the mixture learns how far to trust the estimate, per model.
 */
#define PREDICT_COPY_TOKENS	64
#define PREDICT_COPY_CELLS	8
#define PREDICT_COPY_MATCHES	4
#define PREDICT_COPY_SHARP	8.0

/* What one sequence did so far. */
struct pseq {
	uint32_t model;
	uint64_t seq;
	uint64_t stamp;			/* last activity, for replacement */
	uint64_t tok;			/* token counter, from 1 */
	int64_t lastlayer;		/* -1: nothing seen */
	bool lasthint;
	uint32_t *cnt;			/* [layer][expert] uses in this sequence */
	uint32_t *ntok;			/* [layer] tokens that ran it */
	uint64_t *set;			/* [layer][words] the last set seen */
	uint64_t *settok;		/* [layer] its token (0: none) */
	float *ew;			/* [PREDICT_NRECENT][layer][expert] recency-weighted use */
	uint64_t ver;			/* bumps on every observation of this sequence */
	uint64_t mstamp;		/* the model's acquire clock at its last observation */
	/*
	 * Its mixed probabilities per layer, for ranking, and when they were
	 * computed (ver).  A layer's estimates move when the sequence runs it or
	 * the layer before (its counts, its last set, the cross-layer source);
	 * the model's counts and the mixing weights move a little on every
	 * observation, so a vector is also recomputed after a pass of layers.
	 * Without this every acquire would recompute every layer (O(layers x
	 * experts) per acquire, most of it unchanged).
	 */
	uint64_t *lver;			/* [layer] ver when it last ran the layer */
	/* The copy estimate: the sets of the last PREDICT_COPY_TOKENS tokens,
	 * a cell per token (modulo that) and layer. */
	uint64_t *grid;			/* [token % R][layer][words] */
	uint64_t *gridtok;		/* [token % R][layer] the cell's token (0: none) */
	/* The best matches as of the latest observation: a layer's estimate
	 * is made from them when asked (most layers are not, each time). */
	uint64_t cmtok[PREDICT_COPY_MATCHES];
	double cmw[PREDICT_COPY_MATCHES];
	unsigned ncm;
	uint64_t cmbase;		/* the token they were matched against */
	double *pp;			/* [2][layer][expert]: (1 - p) / p passes, in steps */
	uint64_t *ppver;		/* [2][layer], 0: never */
	unsigned *ppmask;		/* [2][layer] */
};

struct pmodel {
	uint32_t nl, ne, words;
	float *g, *gtok;		/* [layer][expert], [layer] */
	float *xl, *xln;		/* [layer][a][b]: a at L, b at L+1; [layer][a] */
	float *xt, *xtn;		/* [layer][a][b]: a at t, b at t+1; [layer][a] */
	double sse[PREDICT_NEST], nsc[PREDICT_NEST];
	/* Stacking of every estimate: logistic weights on their logits and a
	 * bias, learned online by gradient steps on the log loss. */
	double lw[PREDICT_NEST + 1];
	double *est;			/* [PREDICT_NEST][expert] */
	float *lg;			/* their logits */
	bool av[PREDICT_NEST];		/* which are available */
	/* What est holds: (layer, token, sequence) as of observation ver. */
	uint32_t est_layer;
	uint64_t est_tok, est_ver;
	const struct pseq *est_seq;
	double setsum, setn;		/* mean experts per layer */
	struct pseq *active;
	uint64_t ver;			/* bumps on every observation */
	/* Mixed probabilities per layer, valid for (ver, mask, context). */
	double *pc;
	uint64_t *pcver;
	unsigned *pcmask;
	/* Its sequences still decoding, as of actver (rank by all of them). */
	struct pseq **act;
	unsigned nact;
	uint64_t actver;
	double *tmp;			/* one estimate's vector */
	unsigned nctx;			/* its sequence contexts */
	uint64_t clock;			/* its acquires */
};

struct predict {
	struct pmodel *models;
	uint32_t nmodels;
	struct pseq **seqs;
	unsigned nseqs, maxseqs;
	uint64_t clock;
};

/* The stacking's learning rate: a step per layer observed, gradient
 * averaged over the layer's experts. */
#ifndef PREDICT_RATE
#define PREDICT_RATE	0.1
#endif

int predict_create(struct predict **out, unsigned max_seqs)
{
	struct predict *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->maxseqs = max_seqs ? max_seqs : 1;
	p->seqs = calloc(p->maxseqs, sizeof(*p->seqs));
	if (!p->seqs) {
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

static void seq_free(struct pseq *s)
{
	if (!s)
		return;
	free(s->cnt);
	free(s->ntok);
	free(s->set);
	free(s->settok);
	free(s->ew);
	free(s->lver);
	free(s->grid);
	free(s->gridtok);
	free(s->pp);
	free(s->ppver);
	free(s->ppmask);
	free(s);
}

static void model_clear(struct pmodel *m)
{
	free(m->g);
	free(m->gtok);
	free(m->xl);
	free(m->xln);
	free(m->xt);
	free(m->xtn);
	free(m->pc);
	free(m->pcver);
	free(m->pcmask);
	free(m->act);
	free(m->tmp);
	free(m->est);
	free(m->lg);
	memset(m, 0, sizeof(*m));
}

void predict_destroy(struct predict *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nseqs; i++)
		seq_free(p->seqs[i]);
	for (uint32_t i = 0; i < p->nmodels; i++)
		model_clear(&p->models[i]);
	free(p->seqs);
	free(p->models);
	free(p);
}

/* Drops the contexts of a model whose shape changed (their arrays are sized by it). */
static void drop_model_seqs(struct predict *p, uint32_t model)
{
	if (model < p->nmodels)
		p->models[model].nctx = 0;
	for (unsigned i = 0; i < p->nseqs;)
		if (p->seqs[i]->model == model) {
			seq_free(p->seqs[i]);
			p->seqs[i] = p->seqs[--p->nseqs];
		} else {
			i++;
		}
}

int predict_model(struct predict *p, uint32_t model, uint32_t nlayers, uint32_t nexperts)
{
	struct pmodel *m;
	size_t lx, lxx;

	if (!nlayers || !nexperts || nexperts > 65536 || nlayers > 65536)
		return -EINVAL;
	if (model >= p->nmodels) {
		struct pmodel *nm = realloc(p->models, (model + 1) * sizeof(*nm));

		if (!nm)
			return -ENOMEM;
		memset(nm + p->nmodels, 0, (model + 1 - p->nmodels) * sizeof(*nm));
		p->models = nm;
		p->nmodels = model + 1;
	}
	m = &p->models[model];
	if (m->nl == nlayers && m->ne == nexperts)
		return 0;
	drop_model_seqs(p, model);
	model_clear(m);
	lx = (size_t)nlayers * nexperts;
	lxx = lx * nexperts;
	m->g = calloc(lx, sizeof(float));
	m->gtok = calloc(nlayers, sizeof(float));
	m->xl = calloc(lxx, sizeof(float));
	m->xln = calloc(lx, sizeof(float));
	m->xt = calloc(lxx, sizeof(float));
	m->xtn = calloc(lx, sizeof(float));
	m->pc = calloc(lx, sizeof(double));
	m->pcver = calloc(nlayers, sizeof(uint64_t));
	m->pcmask = calloc(nlayers, sizeof(unsigned));
	m->act = calloc(p->maxseqs, sizeof(*m->act));
	m->tmp = calloc(nexperts, sizeof(double));
	m->est = calloc((size_t)PREDICT_NEST * nexperts, sizeof(double));
	m->lg = calloc((size_t)PREDICT_NEST * nexperts, sizeof(float));
	if (!m->g || !m->gtok || !m->xl || !m->xln || !m->xt || !m->xtn || !m->pc || !m->pcver ||
	    !m->pcmask || !m->act || !m->tmp || !m->est || !m->lg) {
		model_clear(m);
		return -ENOMEM;
	}
	m->nl = nlayers;
	m->ne = nexperts;
	m->words = (nexperts + 63) / 64;
	m->ver = 1;
	/* Start as an average of the estimates' logits. */
	for (int k = 0; k < PREDICT_NEST; k++)
		m->lw[k] = 1.0 / PREDICT_NEST;
	return 0;
}

static struct pmodel *model_get(struct predict *p, uint32_t model)
{
	return model < p->nmodels && p->models[model].nl ? &p->models[model] : NULL;
}

static struct pseq *seq_get(struct predict *p, struct pmodel *m, uint32_t model, uint64_t seq)
{
	struct pseq *s;
	unsigned slot;

	for (unsigned i = 0; i < p->nseqs; i++)
		if (p->seqs[i]->model == model && p->seqs[i]->seq == seq)
			return p->seqs[i];
	if (p->nseqs < p->maxseqs) {
		slot = p->nseqs++;
	} else {
		/* The least recently active context goes. */
		slot = 0;
		for (unsigned i = 1; i < p->nseqs; i++)
			if (p->seqs[i]->stamp < p->seqs[slot]->stamp)
				slot = i;
		if (p->models[p->seqs[slot]->model].active == p->seqs[slot])
			p->models[p->seqs[slot]->model].active = NULL;
		p->models[p->seqs[slot]->model].nctx--;
		p->models[p->seqs[slot]->model].ver++;
		seq_free(p->seqs[slot]);
	}
	p->seqs[slot] = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto fail;
	s->model = model;
	s->seq = seq;
	s->lastlayer = -1;
	s->cnt = calloc((size_t)m->nl * m->ne, sizeof(uint32_t));
	s->ntok = calloc(m->nl, sizeof(uint32_t));
	s->set = calloc((size_t)m->nl * m->words, sizeof(uint64_t));
	s->settok = calloc(m->nl, sizeof(uint64_t));
	s->ew = calloc((size_t)PREDICT_NRECENT * m->nl * m->ne, sizeof(float));
	s->lver = calloc(m->nl, sizeof(uint64_t));
	s->grid = calloc((size_t)PREDICT_COPY_TOKENS * m->nl * m->words, sizeof(uint64_t));
	s->gridtok = calloc((size_t)PREDICT_COPY_TOKENS * m->nl, sizeof(uint64_t));
	s->pp = calloc((size_t)2 * m->nl * m->ne, sizeof(double));
	s->ppver = calloc((size_t)2 * m->nl, sizeof(uint64_t));
	s->ppmask = calloc((size_t)2 * m->nl, sizeof(unsigned));
	if (!s->cnt || !s->ntok || !s->set || !s->settok || !s->ew || !s->lver || !s->pp ||
	    !s->ppver || !s->ppmask || !s->grid || !s->gridtok)
		goto fail;
	s->ver = 1;
	p->seqs[slot] = s;
	m->nctx++;
	return s;
fail:
	seq_free(s);
	p->seqs[slot] = p->seqs[--p->nseqs];
	return NULL;
}

static bool bit(const uint64_t *w, uint32_t i)
{
	return w[i / 64] >> (i % 64) & 1;
}

static uint64_t *cell(const struct pmodel *m, const struct pseq *s, uint64_t tok, uint32_t L)
{
	return &s->grid[((size_t)(tok % PREDICT_COPY_TOKENS) * m->nl + L) * m->words];
}

/* The cell of token tok, layer L, when it is kept and holds that token's set. */
static const uint64_t *cell_at(const struct pmodel *m, const struct pseq *s, uint64_t tok, uint32_t L)
{
	if (!tok || s->gridtok[(size_t)(tok % PREDICT_COPY_TOKENS) * m->nl + L] != tok)
		return NULL;
	return cell(m, s, tok, L);
}

/*
 * The copy estimate of layer L's run in token nt: what each of the best
 * matches had there (its cell as many tokens on from the match as nt is from
 * the token matched), weighted by match, with the sequence's own frequency as
 * one pseudo-match.  false without a match that has it.
 */
static bool copy_estimate(const struct pmodel *m, const struct pseq *s, uint32_t L, uint64_t nt,
			  double *v)
{
	uint64_t tx;
	double wsum = 1;
	bool any = false;

	/* Token nt is as far from the matched token as each match's token
	 * is from its successor to read (a hint and an acquire of one layer
	 * are one token: nt says which). */
	if (!s || !s->ncm || nt < s->cmbase || nt - s->cmbase > 1)
		return false;
	tx = nt - s->cmbase;
	for (uint32_t e = 0; e < m->ne; e++)
		v[e] = s->ntok[L] ? (double)s->cnt[(size_t)L * m->ne + e] / s->ntok[L] : 0;
	for (unsigned j = 0; j < s->ncm; j++) {
		const uint64_t *c = cell_at(m, s, s->cmtok[j] + tx, L);

		if (!c)
			continue;
		for (uint32_t e = 0; e < m->ne; e++)
			if (bit(c, e))
				v[e] += s->cmw[j];
		wsum += s->cmw[j];
		any = true;
	}
	if (!any)
		return false;
	for (uint32_t e = 0; e < m->ne; e++)
		v[e] /= wsum;
	return true;
}

/*
 * One estimate of P(expert used when layer L runs in token nt) for every
 * expert, into v.  false when it has nothing to say.
 */
static bool estimate(const struct pmodel *m, const struct pseq *s, uint32_t L, uint64_t nt,
		     enum predict_est k, double *v)
{
	uint32_t ne = m->ne;
	const uint64_t *set;
	unsigned na = 0;

	switch (k) {
	case PREDICT_GLOBAL:
		if (!m->gtok[L])
			return false;
		for (uint32_t e = 0; e < ne; e++)
			v[e] = m->g[(size_t)L * ne + e] / m->gtok[L];
		return true;
	case PREDICT_SEQUENCE:
		if (!s || !s->ntok[L])
			return false;
		/* The global frequency as one pseudo-token: a sequence that ran a
		 * layer once does not make its choice certain. */
		for (uint32_t e = 0; e < ne; e++) {
			double prior = m->gtok[L] ? m->g[(size_t)L * ne + e] / m->gtok[L] : 0;

			v[e] = (s->cnt[(size_t)L * ne + e] + prior) / (s->ntok[L] + 1.0);
		}
		return true;
	case PREDICT_XTOKEN:
		if (!s || !s->settok[L] || s->settok[L] >= nt)
			return false;
		set = &s->set[(size_t)L * m->words];
		memset(v, 0, ne * sizeof(*v));
		for (uint32_t a = 0; a < ne; a++) {
			float n = m->xtn[(size_t)L * ne + a];
			const float *row = &m->xt[((size_t)L * ne + a) * ne];

			if (!bit(set, a) || !n)
				continue;
			for (uint32_t b = 0; b < ne; b++)
				v[b] += row[b] * (1.0f / n);
			na++;
		}
		break;
	case PREDICT_XLAYER:
		if (!s || !L || s->settok[L - 1] != nt)
			return false;
		set = &s->set[(size_t)(L - 1) * m->words];
		memset(v, 0, ne * sizeof(*v));
		for (uint32_t a = 0; a < ne; a++) {
			float n = m->xln[(size_t)(L - 1) * ne + a];
			const float *row = &m->xl[((size_t)(L - 1) * ne + a) * ne];

			if (!bit(set, a) || !n)
				continue;
			for (uint32_t b = 0; b < ne; b++)
				v[b] += row[b] * (1.0f / n);
			na++;
		}
		break;
	case PREDICT_RECENT1:
	case PREDICT_RECENT2:
	case PREDICT_RECENT4:
	case PREDICT_RECENT8:
		if (!s || !s->ntok[L])
			return false;
		{
			const float *w = &s->ew[(((size_t)(k - PREDICT_RECENT1)) * m->nl + L) * ne];

			for (uint32_t e = 0; e < ne; e++)
				v[e] = w[e];
		}
		return true;
	case PREDICT_COPY:
		return copy_estimate(m, s, L, nt, v);
	case PREDICT_NEST:
		return false;
	}
	if (!na)
		return false;
	for (uint32_t e = 0; e < ne; e++)
		v[e] /= na;
	return true;
}

/* Mean squared error per expert so far; an estimate never scored counts as
 * a coin toss's (0.25), so that it earns its weight. */
static double mse(const struct pmodel *m, enum predict_est k)
{
	return m->nsc[k] ? m->sse[k] / (m->nsc[k] * m->ne) : 0.25;
}

/* The token in which layer L next runs for s. */
static uint64_t next_token(const struct pseq *s, uint32_t L)
{
	if (s->lastlayer < 0)
		return 1;
	return (int64_t)L > s->lastlayer ? s->tok : s->tok + 1;
}

/* In float: this runs for every expert of a layer at each acquire. */
static float logit(double p)
{
	float f = (float)p;

	if (f < 1e-3f)
		f = 1e-3f;
	if (f > 1 - 1e-3f)
		f = 1 - 1e-3f;
	return logf(f / (1 - f));
}

/* Every estimate of layer L into m->est, m->lg and m->av; how many. */
static int estimates(struct pmodel *m, const struct pseq *s, uint32_t L, uint64_t nt)
{
	int avail = 0;

	/* The prefetch choice after one layer computed the next one's; its
	 * observation scores the same estimates: nothing learnt in between. */
	if (m->est_ver == m->ver && m->est_layer == L && m->est_tok == nt && m->est_seq == s) {
		for (int k = 0; k < PREDICT_NEST; k++)
			avail += m->av[k];
		return avail;
	}
	m->est_ver = m->ver;
	m->est_layer = L;
	m->est_tok = nt;
	m->est_seq = s;
	for (int k = 0; k < PREDICT_NEST; k++) {
		double *v = &m->est[(size_t)k * m->ne];
		float *lg = &m->lg[(size_t)k * m->ne];

		m->av[k] = estimate(m, s, L, nt, k, v);
		if (!m->av[k])
			continue;
		avail++;
		for (uint32_t e = 0; e < m->ne; e++)
			lg[e] = logit(v[e]);
	}
	return avail;
}

/* The stacked probability of expert e from m->lg. */
static double stack(const struct pmodel *m, uint32_t e)
{
	float z = (float)m->lw[PREDICT_NEST];

	for (int k = 0; k < PREDICT_NEST; k++)
		if (m->av[k])
			z += (float)m->lw[k] * m->lg[(size_t)k * m->ne + e];
	return 1 / (1 + expf(-z));
}

/* Mixed probabilities of layer L into out[ne]; false when nothing is known.
 * PREDICT_STACKED: the stacked estimate; otherwise the estimates in mask,
 * average weighted by the inverse of each one's squared error. */
static bool mix(struct pmodel *m, const struct pseq *s, uint32_t L, uint64_t nt, unsigned mask,
		double *out)
{
	double wsum = 0;

	if (mask == (PREDICT_ALL | PREDICT_STACKED)) {
		if (!estimates(m, s, L, nt))
			return false;
		for (uint32_t e = 0; e < m->ne; e++)
			out[e] = stack(m, e);
		return true;
	}

	memset(out, 0, m->ne * sizeof(*out));
	for (int k = 0; k < PREDICT_NEST; k++) {
		double w;

		if (!(mask & (1u << k)) || !estimate(m, s, L, nt, k, m->tmp))
			continue;
		w = 1.0 / (mse(m, k) + 1e-6);
		for (uint32_t e = 0; e < m->ne; e++)
			out[e] += w * m->tmp[e];
		wsum += w;
	}
	if (!wsum)
		return false;
	for (uint32_t e = 0; e < m->ne; e++)
		out[e] /= wsum;
	return true;
}

static void set_bits(uint64_t *w, uint32_t words, const uint32_t *x, uint32_t n)
{
	memset(w, 0, words * sizeof(*w));
	for (uint32_t i = 0; i < n; i++)
		w[x[i] / 64] |= 1ull << (x[i] % 64);
}

static unsigned popcount_and(const uint64_t *a, const uint64_t *b, uint32_t words)
{
	unsigned n = 0;

	for (uint32_t w = 0; w < words; w++)
		n += (unsigned)__builtin_popcountll(b ? a[w] & b[w] : a[w]);
	return n;
}

/*
 * The copy estimate after s ran layer L of its token: each earlier token t' is
 * compared on the last PREDICT_COPY_CELLS cells (this token's layers L, L-1,
 * ..., then the token before's, against t''s the same way back): the mean
 * share of the sequence's set found in t''s.  The best PREDICT_COPY_MATCHES
 * are kept for copy_estimate.
 */
static void copy_update(const struct pmodel *m, struct pseq *s, uint32_t L)
{
	struct { uint64_t tok; double w; } best[PREDICT_COPY_MATCHES];
	unsigned nbest = 0;
	uint64_t tok = s->tok;

	for (uint64_t k = 1; k < PREDICT_COPY_TOKENS && k < tok; k++) {
		double sim = 0, w;
		unsigned ncells = 0;

		if (!cell_at(m, s, tok - k, L))
			continue;
		for (unsigned i = 0; i < PREDICT_COPY_CELLS; i++) {
			uint64_t back = (i > L) ? (i - L - 1) / m->nl + 1 : 0;
			uint32_t l = (uint32_t)((L + (uint64_t)m->nl * back - i) % m->nl);
			const uint64_t *a, *b;
			unsigned na;

			if (back >= tok - k)
				break;
			a = cell_at(m, s, tok - back, l);
			if (!a || !(na = popcount_and(a, NULL, m->words)))
				continue;
			b = cell_at(m, s, tok - k - back, l);
			sim += b ? (double)popcount_and(a, b, m->words) / na : 0;
			ncells++;
		}
		if (!ncells)
			continue;
		w = exp(PREDICT_COPY_SHARP * (sim / ncells - 1));
		/* Keep the best few, the weakest replaced. */
		if (nbest < PREDICT_COPY_MATCHES) {
			best[nbest].tok = tok - k;
			best[nbest++].w = w;
		} else {
			unsigned lo = 0;

			for (unsigned j = 1; j < nbest; j++)
				if (best[j].w < best[lo].w)
					lo = j;
			if (w > best[lo].w) {
				best[lo].tok = tok - k;
				best[lo].w = w;
			}
		}
	}
	for (unsigned j = 0; j < nbest; j++) {
		s->cmtok[j] = best[j].tok;
		s->cmw[j] = best[j].w;
	}
	s->ncm = nbest;
	s->cmbase = tok;
}

int predict_observe(struct predict *p, uint32_t model, uint64_t seq, uint32_t layer,
		    const uint32_t *experts, uint32_t n, bool hint)
{
	struct pmodel *m = model_get(p, model);
	uint64_t cur[1024];		/* 65536 experts: the most a model declares */
	struct pseq *s;
	uint32_t ne, L = layer;
	uint64_t *set;

	if (!m || layer >= m->nl)
		return -ERANGE;
	ne = m->ne;
	for (uint32_t i = 0; i < n; i++)
		if (experts[i] >= ne)
			return -ERANGE;
	s = seq_get(p, m, model, seq);
	if (!s)
		return -ENOMEM;
	s->stamp = ++p->clock;
	/* The model's clock counts acquires: a prompt's hints do not age the
	 * sequences decoding; hinting marks the sequence as about to. */
	s->mstamp = hint ? m->clock : ++m->clock;
	if (s->lastlayer < 0) {
		s->tok = 1;
		m->ver++;	/* a new context, perhaps where a freed one was */
	}
	else if ((int64_t)L < s->lastlayer || ((int64_t)L == s->lastlayer && hint == s->lasthint))
		s->tok++;
	set_bits(cur, m->words, experts, n);

	/* Score each estimate on what it would have said, and step the
	 * stacking weights down the log loss's gradient. */
	if (estimates(m, s, L, s->tok)) {
		double g[PREDICT_NEST + 1] = { 0 };

		for (uint32_t e = 0; e < ne; e++) {
			double y = bit(cur, e) ? 1.0 : 0.0, d = stack(m, e) - y;

			for (int k = 0; k < PREDICT_NEST; k++)
				if (m->av[k])
					g[k] += d * m->lg[(size_t)k * ne + e];
			g[PREDICT_NEST] += d;
		}
		for (int k = 0; k <= PREDICT_NEST; k++)
			m->lw[k] -= PREDICT_RATE * g[k] / ne;
		for (int k = 0; k < PREDICT_NEST; k++) {
			double e2 = 0;

			if (!m->av[k])
				continue;
			for (uint32_t e = 0; e < ne; e++) {
				double d = m->est[(size_t)k * ne + e] - (bit(cur, e) ? 1.0 : 0.0);

				e2 += d * d;
			}
			m->sse[k] += e2;
			m->nsc[k] += 1;
		}
	}

	/* Learn. */
	for (uint32_t i = 0; i < n; i++) {
		m->g[(size_t)L * ne + experts[i]] += 1;
		s->cnt[(size_t)L * ne + experts[i]]++;
	}
	m->gtok[L] += 1;
	/* Recency-weighted uses, half-lives of 1, 2, 4 and 8 tokens; the first
	 * token of a layer sets them outright (no history to weigh against). */
	for (int h = 0; h < PREDICT_NRECENT; h++) {
		float *w = &s->ew[((size_t)h * m->nl + L) * ne];
		double keep = s->ntok[L] ? exp2(-1.0 / (double)(1u << h)) : 0;

		for (uint32_t e = 0; e < ne; e++)
			w[e] = (float)(w[e] * keep + (bit(cur, e) ? 1 - keep : 0));
	}
	s->ntok[L]++;
	set = &s->set[(size_t)L * m->words];
	if (s->settok[L] && s->settok[L] < s->tok)
		for (uint32_t a = 0; a < ne; a++) {
			if (!bit(set, a))
				continue;
			m->xtn[(size_t)L * ne + a] += 1;
			for (uint32_t i = 0; i < n; i++)
				m->xt[((size_t)L * ne + a) * ne + experts[i]] += 1;
		}
	if (L && s->settok[L - 1] == s->tok)
		for (uint32_t a = 0; a < ne; a++) {
			if (!bit(&s->set[(size_t)(L - 1) * m->words], a))
				continue;
			m->xln[(size_t)(L - 1) * ne + a] += 1;
			for (uint32_t i = 0; i < n; i++)
				m->xl[((size_t)(L - 1) * ne + a) * ne + experts[i]] += 1;
		}
	memcpy(set, cur, m->words * sizeof(*set));
	s->settok[L] = s->tok;
	memcpy(cell(m, s, s->tok, L), cur, m->words * sizeof(*cur));
	s->gridtok[(size_t)(s->tok % PREDICT_COPY_TOKENS) * m->nl + L] = s->tok;
	m->setsum += n;
	m->setn += 1;
	s->lastlayer = L;
	s->lasthint = hint;
	copy_update(m, s, L);
	s->ver++;
	s->lver[L] = s->ver;
	m->active = s;
	m->ver++;
	return 0;
}

void predict_forget(struct predict *p, uint64_t seq)
{
	for (unsigned i = 0; i < p->nseqs;)
		if (p->seqs[i]->seq == seq) {
			struct pmodel *m = model_get(p, p->seqs[i]->model);

			if (m && m->active == p->seqs[i])
				m->active = NULL;
			if (m) {
				m->ver++;
				m->nctx--;
			}
			seq_free(p->seqs[i]);
			p->seqs[i] = p->seqs[--p->nseqs];
		} else {
			i++;
		}
}

/* The layer's mixed vector, computed once per observation and mask. */
static const double *layer_probs(struct pmodel *m, uint32_t L, unsigned mask)
{
	double *v = &m->pc[(size_t)L * m->ne];

	if (m->pcver[L] == m->ver && m->pcmask[L] == mask)
		return v;
	if (!mix(m, m->active, L, m->active ? next_token(m->active, L) : 1, mask, v))
		memset(v, 0, m->ne * sizeof(*v));
	m->pcver[L] = m->ver;
	m->pcmask[L] = mask;
	return v;
}

double predict_prob(struct predict *p, uint32_t model, uint32_t layer, uint32_t expert, unsigned mask)
{
	struct pmodel *m = model_get(p, model);

	if (!m || layer >= m->nl || expert >= m->ne)
		return 0;
	return layer_probs(m, layer, mask)[expert];
}

/* Steps from the sequence's position until layer L runs (1: next). */
static uint32_t distance(const struct pmodel *m, const struct pseq *s, uint32_t L)
{
	if (!s || s->lastlayer < 0)
		return L + 1;
	return (int64_t)L > s->lastlayer ? (uint32_t)(L - s->lastlayer)
					 : (uint32_t)(L + m->nl - s->lastlayer);
}

/* One sequence's expected extra steps for layer L's experts, a full pass of
 * layers per expected miss ((1 - p) / p passes), for ranking (see pseq.pp). */
static const double *seq_extra(struct pmodel *m, struct pseq *s, uint32_t L, unsigned mask)
{
	/* Eviction asks with the policy's mask, the prefetch's displacement
	 * check with the stacked one: a slot each, so they do not evict each
	 * other's vectors. */
	size_t k = (mask & PREDICT_STACKED ? m->nl : 0) + L;
	double *v = &s->pp[k * m->ne];
	uint64_t at = s->ppver[k];

	if (at && s->ppmask[k] == mask && at >= s->lver[L] && at >= s->lver[L ? L - 1 : m->nl - 1] &&
	    s->ver - at < m->nl)
		return v;
	if (!mix(m, s, L, next_token(s, L), mask, v))
		memset(v, 0, m->ne * sizeof(*v));
	for (uint32_t e = 0; e < m->ne; e++) {
		double pr = v[e] < 1e-9 ? 1e-9 : v[e];

		v[e] = m->nl * (1 - pr) / pr;
	}
	s->ppver[k] = s->ver;
	s->ppmask[k] = mask;
	return v;
}

/*
 * A sequence still decoding: it acquired (or hinted) within two tokens' worth
 * of the model's acquires, counted for the sequences found decoding last
 * time (taking turns; idle connections do not widen it).  One that stopped
 * without its client leaving no longer ranks what is kept.
 */
static bool seq_active(const struct pmodel *m, const struct pseq *s, unsigned ndecoding)
{
	return m->clock - s->mstamp <= 2ull * m->nl * (ndecoding ? ndecoding : 1);
}

/* The model's sequences still decoding, listed once per observation. */
static void active_list(struct predict *p, uint32_t model, struct pmodel *m)
{
	unsigned before = m->nact;

	if (m->actver == m->ver)
		return;
	m->nact = 0;
	for (unsigned i = 0; i < p->nseqs; i++) {
		struct pseq *s = p->seqs[i];

		if (s->model == model && s->lastlayer >= 0 &&
		    (s == m->active || seq_active(m, s, before)))
			m->act[m->nact++] = s;
	}
	m->actver = m->ver;
}

double predict_next_use(struct predict *p, uint32_t model, uint32_t layer, uint32_t expert,
			unsigned mask)
{
	struct pmodel *m = model_get(p, model);
	double best = 0;
	double pr;

	if (!m || layer >= m->nl || expert >= m->ne)
		return 1e18;
	/* Several sequences decode side by side (clients, a batch): a key is
	 * needed as soon as any of them needs it. */
	active_list(p, model, m);
	for (unsigned i = 0; i < m->nact; i++) {
		struct pseq *s = m->act[i];
		double nu = distance(m, s, layer) + seq_extra(m, s, layer, mask)[expert];

		if (!i || nu < best)
			best = nu;
	}
	if (m->nact)
		return best;
	/* Nothing seen yet: the model's counts, from its first layer. */
	pr = layer_probs(m, layer, mask)[expert];
	if (pr < 1e-9)
		pr = 1e-9;
	return distance(m, NULL, layer) + m->nl * (1 - pr) / pr;
}

int predict_next_layer(struct predict *p, uint32_t model, uint32_t *layer, uint32_t *nlayers)
{
	struct pmodel *m = model_get(p, model);

	if (!m || !m->active || m->active->lastlayer < 0)
		return -ENOENT;
	*layer = (uint32_t)((m->active->lastlayer + 1) % m->nl);
	*nlayers = m->nl;
	return 0;
}

size_t predict_guess(struct predict *p, uint32_t model, unsigned depth, double min_p,
		     struct predict_guess *out, size_t max)
{
	struct pmodel *m = model_get(p, model);
	size_t n = 0;
	uint32_t usual;

	if (!m || !m->active || m->active->lastlayer < 0 || !m->setn)
		return 0;
	usual = (uint32_t)ceil(m->setsum / m->setn);
	/* Layers never seen (dense layers between MoE ones, sparse layer
	 * numbers) are stepped over: depth counts layers that route. */
	for (uint32_t d = 1, done = 0; d <= m->nl && done < depth; d++) {
		uint32_t L = (uint32_t)((m->active->lastlayer + d) % m->nl);
		const double *v;
		size_t first = n;

		if (!m->gtok[L])
			continue;
		done++;
		v = layer_probs(m, L, PREDICT_ALL | PREDICT_STACKED);

		/* Selection of the usual number of the most likely, in order. */
		for (uint32_t k = 0; k < usual && n < max; k++) {
			int64_t best = -1;

			for (uint32_t e = 0; e < m->ne; e++) {
				bool taken = false;

				if (v[e] < min_p || (best >= 0 && v[e] <= v[best]))
					continue;
				for (size_t i = first; i < n && !taken; i++)
					taken = out[i].expert == e;
				if (!taken)
					best = e;
			}
			if (best < 0)
				break;
			out[n++] = (struct predict_guess){ L, (uint32_t)best, v[best] };
		}
	}
	return n;
}

void predict_weights(struct predict *p, uint32_t model, double w[PREDICT_NEST])
{
	struct pmodel *m = model_get(p, model);
	double sum = 0;

	for (int k = 0; k < PREDICT_NEST; k++) {
		w[k] = m ? 1.0 / (mse(m, k) + 1e-6) : 1;
		sum += w[k];
	}
	for (int k = 0; k < PREDICT_NEST; k++)
		w[k] /= sum;
}
