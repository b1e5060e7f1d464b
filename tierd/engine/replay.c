/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "predict.h"
#include "replay.h"

/* Warm sequences' ids: their client index added (a replayed sequence's
 * ids are small). */
#define REPLAY_WARM_SEQ (1ull << 62)

/* A key's acquire steps, for a policy told the future (conf->told). */
struct future {
	uint64_t *steps;		/* ascending */
	uint32_t nsteps, next;		/* next: the first step not yet served */
};

struct lab {
	const struct replay_conf *conf;
	struct cache *cache;
	struct replay_result *r;
	uint64_t next_slot;
	uint64_t outstanding;		/* prefetched, not yet used */
	struct future *fut;		/* per layer x expert, when told */
	uint64_t step;			/* acquire steps served */
};

static struct future *future_of(struct lab *lab, const struct tierd_key *k)
{
	return &lab->fut[(size_t)k->layer * lab->conf->nexperts + k->expert];
}

static uint64_t future_next(const struct future *f)
{
	return f->next < f->nsteps ? f->steps[f->next] : UINT64_MAX;
}

/* Not needed within the horizon: the policy may choose among these. */
static bool not_told_needed(const struct cache_entry *e, void *arg)
{
	struct lab *lab = arg;
	uint64_t nu = future_next(future_of(lab, &e->key));

	return nu == UINT64_MAX || nu - lab->step > lab->conf->told;
}

struct furthest {
	struct lab *lab;
	struct cache_entry *v;
	uint64_t vnext;
};

static void furthest_fn(struct cache_entry *e, void *arg)
{
	struct furthest *f = arg;
	uint64_t nu;

	if (e->pins || e->state != CACHE_RESIDENT)
		return;
	nu = future_next(future_of(f->lab, &e->key));
	if (!f->v || nu > f->vnext) {
		f->v = e;
		f->vnext = nu;
	}
}

/*
 * The victim: the policy's; told the future, the policy's among the keys not
 * needed within the horizon, else the one needed furthest ahead.
 */
static int lab_victim(struct lab *lab, struct cache_entry **v)
{
	struct furthest f = { .lab = lab };

	if (!lab->conf->told)
		return cache_victim(lab->cache, NULL, NULL, v);
	if (cache_victim(lab->cache, not_told_needed, lab, v) == 0)
		return 0;
	cache_foreach(lab->cache, furthest_fn, &f);
	if (!f.v)
		return -ENOSPC;
	*v = f.v;
	return 0;
}

/* Every key's acquire steps, for a lab told the future. */
static int future_build(struct lab *lab, const struct trace_event *ev, size_t n)
{
	size_t nkeys = (size_t)lab->conf->nlayers * lab->conf->nexperts;
	uint64_t step = 0;

	lab->fut = calloc(nkeys ? nkeys : 1, sizeof(*lab->fut));
	if (!lab->fut)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].kind != TRACE_ACQUIRE)
			continue;
		for (uint32_t j = 0; j < ev[i].nexperts; j++) {
			struct future *f;
			uint64_t *ns;

			if (ev[i].layer >= lab->conf->nlayers || ev[i].experts[j] >= lab->conf->nexperts)
				continue;	/* refused when acquired */
			f = &lab->fut[(size_t)ev[i].layer * lab->conf->nexperts + ev[i].experts[j]];
			if (f->nsteps && f->steps[f->nsteps - 1] == step)
				continue;
			ns = realloc(f->steps, (f->nsteps + 1) * sizeof(*ns));
			if (!ns)
				return -ENOMEM;
			f->steps = ns;
			f->steps[f->nsteps++] = step;
		}
		step++;
	}
	return 0;
}

static void future_free(struct lab *lab)
{
	size_t nkeys = (size_t)lab->conf->nlayers * lab->conf->nexperts;

	for (size_t i = 0; lab->fut && i < nkeys; i++)
		free(lab->fut[i].steps);
	free(lab->fut);
}

void replay_result_add(struct replay_result *sum, const struct replay_result *r)
{
	sum->accesses += r->accesses;
	sum->tokens += r->tokens;
	sum->demand_misses += r->demand_misses;
	sum->hits += r->hits;
	sum->prefetch_issued += r->prefetch_issued;
	sum->prefetch_used += r->prefetch_used;
	sum->prefetch_wasted += r->prefetch_wasted;
	sum->fetched_experts += r->fetched_experts;
	sum->fetched_bytes += r->fetched_bytes;
	sum->loop_ns += r->loop_ns;
}

static void lab_evict(struct lab *lab, struct cache_entry *v)
{
	if (v->flags & CACHE_F_PREFETCHED) {
		lab->r->prefetch_wasted++;
		lab->outstanding--;
	}
	cache_remove(lab->cache, v);
}

/* A new resident entry, evicting the policy's victim when the budget is full. */
static int lab_fetch(struct lab *lab, const struct tierd_key *k, struct cache_entry **out)
{
	struct cache_entry *e;
	int r;

	if (cache_count(lab->cache) >= lab->conf->capacity) {
		struct cache_entry *v;

		r = lab_victim(lab, &v);
		if (r < 0)
			return r;
		lab_evict(lab, v);
	}
	r = cache_add(lab->cache, k, lab->next_slot++, &e);
	if (r < 0)
		return r;
	cache_set_resident(lab->cache, e);
	lab->r->fetched_experts++;
	lab->r->fetched_bytes += lab->conf->expert_bytes;
	*out = e;
	return 0;
}

/* The daemon's prefetch after an acquire (the layer still pinned). */
static int lab_prefetch(struct lab *lab, uint32_t model)
{
	struct predict_guess g[64];
	size_t n = prefetch_plan(&lab->conf->pf, lab->cache, model, lab->outstanding, 0,
				 lab->conf->expert_bytes, g, 64);

	for (size_t i = 0; i < n; i++) {
		struct tierd_key k = { model, g[i].layer, g[i].expert };
		struct cache_entry *e, *v;
		int r;

		if (cache_count(lab->cache) >= lab->conf->capacity) {
			/* Guesses come most likely first: once one may not
			 * displace the victim, the rest may not either. */
			if (cache_victim(lab->cache, NULL, NULL, &v) < 0 ||
			    !prefetch_may_displace(lab->cache, model, &g[i], v))
				break;
			lab_evict(lab, v);
		}
		r = cache_add(lab->cache, &k, lab->next_slot++, &e);
		if (r < 0)
			return r;
		cache_set_resident(lab->cache, e);
		e->flags |= CACHE_F_PREFETCHED;
		lab->outstanding++;
		lab->r->prefetch_issued++;
		lab->r->fetched_experts++;
		lab->r->fetched_bytes += lab->conf->expert_bytes;
	}
	return 0;
}

static int lab_acquire(struct lab *lab, const struct trace_event *ev, char *err, size_t errlen)
{
	struct cache_entry *held[TRACE_MAX_EXPERTS];
	uint32_t nheld = 0;
	int r = 0;

	if (ev->nexperts > lab->conf->capacity) {
		snprintf(err, errlen, "token %u layer %u: %u experts do not fit %llu slots", ev->token,
			 ev->layer, ev->nexperts, (unsigned long long)lab->conf->capacity);
		return -EINVAL;
	}
	lab->r->accesses += ev->nexperts;
	if (ev->layer == 0)
		lab->r->tokens++;
	/* The layer's resident experts are pinned first, so that its misses
	 * never evict them; then each is served in the router's order (the
	 * order a policy sees them in). */
	for (uint32_t i = 0; i < ev->nexperts; i++) {
		struct tierd_key k = { ev->model, ev->layer, ev->experts[i] };
		struct cache_entry *e = cache_lookup(lab->cache, &k);

		if (!e || e->pins)
			continue;	/* a miss (or an expert named twice) */
		cache_pin(lab->cache, e);
		held[nheld++] = e;
	}
	for (uint32_t i = 0; i < ev->nexperts; i++) {
		struct tierd_key k = { ev->model, ev->layer, ev->experts[i] };
		struct cache_entry *e = cache_lookup(lab->cache, &k);
		bool twice = false;

		for (uint32_t j = 0; j < i && !twice; j++)
			twice = ev->experts[j] == ev->experts[i];
		if (twice)
			continue;
		if (e) {
			lab->r->hits++;
			if (e->flags & CACHE_F_PREFETCHED) {
				e->flags &= ~CACHE_F_PREFETCHED;
				lab->r->prefetch_used++;
				lab->outstanding--;
			}
			cache_touch(lab->cache, e);
			continue;
		}
		r = lab_fetch(lab, &k, &e);
		if (r < 0) {
			snprintf(err, errlen, "token %u layer %u expert %u: no slot (%s)", ev->token,
				 ev->layer, ev->experts[i], strerror(-r));
			goto cleanup;
		}
		lab->r->demand_misses++;
		cache_pin(lab->cache, e);
		held[nheld++] = e;
	}
	/* The daemon learns from the acquire, then fetches ahead. */
	r = cache_observe(lab->cache, ev->model, ev->seq, ev->layer, ev->experts, ev->nexperts, false);
	if (r < 0) {
		snprintf(err, errlen, "token %u layer %u: outside the model's %u layers of %u experts",
			 ev->token, ev->layer, lab->conf->nlayers, lab->conf->nexperts);
		goto cleanup;
	}
	if (lab->conf->prefetch)
		r = lab_prefetch(lab, ev->model);
cleanup:
	for (uint32_t i = 0; i < nheld; i++)
		cache_unpin(lab->cache, held[i]);
	return r;
}

int replay_run(const struct replay_conf *c, const struct trace_event *ev, size_t n,
	       struct replay_result *r, char *err, size_t errlen)
{
	struct lab lab = { .conf = c, .r = r };
	struct timespec t0, t1;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = cache_create(&lab.cache, c->policy);
	if (ret < 0) {
		snprintf(err, errlen, "policy \"%s\": unknown (known: %s)", c->policy,
			 cache_policy_names());
		return ret;
	}
	ret = predict_model(cache_predictor(lab.cache), 0, c->nlayers, c->nexperts);
	if (ret < 0) {
		snprintf(err, errlen, "model of %u layers, %u experts: %s", c->nlayers, c->nexperts,
			 strerror(-ret));
		goto cleanup;
	}
	/* Warm sequences keep ids of their own, and are forgotten after. */
	for (size_t i = 0; i < c->nwarm; i++) {
		const struct trace_event *w = &c->warm[i];

		ret = cache_observe(lab.cache, 0, REPLAY_WARM_SEQ + w->client, w->layer, w->experts,
				    w->nexperts, w->kind == TRACE_HINT);
		if (ret < 0) {
			snprintf(err, errlen, "warm event %zu (layer %u): outside the model's shape", i,
				 w->layer);
			goto cleanup;
		}
	}
	for (size_t i = 0; i < c->nwarm; i++)
		if (!i || c->warm[i].client != c->warm[i - 1].client)
			predict_forget(cache_predictor(lab.cache), REPLAY_WARM_SEQ + c->warm[i].client);
	if (c->told) {
		ret = future_build(&lab, ev, n);
		if (ret < 0) {
			snprintf(err, errlen, "the future of %zu events: %s", n, strerror(-ret));
			goto cleanup;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < n; i++) {
		if (ev[i].model != 0) {
			snprintf(err, errlen, "event %zu: model %u (the lab replays model 0)", i,
				 ev[i].model);
			ret = -EINVAL;
			goto cleanup;
		}
		switch (ev[i].kind) {
		case TRACE_HINT:
			ret = cache_observe(lab.cache, 0, ev[i].seq, ev[i].layer, ev[i].experts,
					    ev[i].nexperts, true);
			if (ret < 0)
				snprintf(err, errlen, "hint token %u layer %u: outside the model's shape",
					 ev[i].token, ev[i].layer);
			break;
		case TRACE_ACQUIRE:
			ret = lab_acquire(&lab, &ev[i], err, errlen);
			if (ret < 0 || !lab.fut)
				break;
			for (uint32_t j = 0; j < ev[i].nexperts; j++) {
				struct tierd_key k = { 0, ev[i].layer, ev[i].experts[j] };
				struct future *f = future_of(&lab, &k);

				while (f->next < f->nsteps && f->steps[f->next] <= lab.step)
					f->next++;
			}
			lab.step++;
			break;
		}
		if (ret < 0)
			goto cleanup;
	}
	/* Prefetched and never used by the end: wasted too. */
	r->prefetch_wasted += lab.outstanding;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	r->loop_ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
cleanup:
	future_free(&lab);
	cache_destroy(lab.cache);
	return ret;
}

/* MIN: next uses by acquire step, evict the resident key used furthest ahead. */
struct min_key {
	uint32_t layer, expert;
	uint64_t *steps;		/* acquire steps that use it, ascending */
	size_t nsteps, next;		/* next: index of the first step not yet passed */
	size_t rpos;			/* its place among the resident, when resident */
	bool resident;
};

static int min_key_of(struct min_key **keys, size_t *nkeys, size_t *cap, uint32_t layer,
		      uint32_t expert, size_t *out)
{
	for (size_t i = 0; i < *nkeys; i++)
		if ((*keys)[i].layer == layer && (*keys)[i].expert == expert) {
			*out = i;
			return 0;
		}
	if (*nkeys == *cap) {
		size_t nc = *cap ? *cap * 2 : 256;
		struct min_key *nk = realloc(*keys, nc * sizeof(*nk));

		if (!nk)
			return -ENOMEM;
		*keys = nk;
		*cap = nc;
	}
	(*keys)[*nkeys] = (struct min_key){ .layer = layer, .expert = expert };
	*out = (*nkeys)++;
	return 0;
}

/*
 * Is c a better victim than v (vnext its next use)?  Within the horizon the
 * key used furthest ahead; beyond it (not used within horizon steps, or
 * never again) every key is equally unknown: the least used so far, then the
 * least recently used, goes first, and such a key goes before any the
 * horizon shows to be needed.
 */
static bool foresight_worse(const struct min_key *c, uint64_t cnext, const struct min_key *v,
			    uint64_t vnext, uint64_t step, uint64_t horizon)
{
	bool cbeyond, vbeyond;

	if (horizon == UINT64_MAX)
		return cnext > vnext;	/* MIN */
	cbeyond = cnext - step > horizon;
	vbeyond = vnext - step > horizon;
	if (cbeyond != vbeyond)
		return cbeyond;
	if (!cbeyond)
		return cnext > vnext;
	if (c->next != v->next)
		return c->next < v->next;
	return (c->next ? c->steps[c->next - 1] : 0) < (v->next ? v->steps[v->next - 1] : 0);
}

int replay_min(const struct trace_event *ev, size_t n, uint64_t capacity, uint64_t *misses,
	       char *err, size_t errlen)
{
	return replay_foresight(ev, n, capacity, UINT64_MAX, misses, err, errlen);
}

int replay_foresight(const struct trace_event *ev, size_t n, uint64_t capacity, uint64_t horizon,
		     uint64_t *misses, char *err, size_t errlen)
{
	struct min_key *keys = NULL;
	size_t nkeys = 0, cap = 0, *idx = NULL, nidx = 0, *rs = NULL;
	uint64_t step = 0, resident = 0;
	int r = 0;

	*misses = 0;
	/* Pass 1: every key's acquire steps.  The key of each access, in order. */
	for (size_t i = 0; i < n; i++)
		if (ev[i].kind == TRACE_ACQUIRE)
			nidx += ev[i].nexperts;
	idx = calloc(nidx ? nidx : 1, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	nidx = 0;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].kind != TRACE_ACQUIRE)
			continue;
		if (ev[i].nexperts > capacity) {
			snprintf(err, errlen, "token %u layer %u: %u experts do not fit %llu slots",
				 ev[i].token, ev[i].layer, ev[i].nexperts, (unsigned long long)capacity);
			r = -EINVAL;
			goto cleanup;
		}
		for (uint32_t j = 0; j < ev[i].nexperts; j++) {
			struct min_key *k;
			size_t ki;

			r = min_key_of(&keys, &nkeys, &cap, ev[i].layer, ev[i].experts[j], &ki);
			if (r < 0)
				goto cleanup;
			k = &keys[ki];
			if (!k->nsteps || k->steps[k->nsteps - 1] != step) {
				uint64_t *ns = realloc(k->steps, (k->nsteps + 1) * sizeof(*ns));

				if (!ns) {
					r = -ENOMEM;
					goto cleanup;
				}
				k->steps = ns;
				k->steps[k->nsteps++] = step;
			}
			idx[nidx++] = ki;
		}
		step++;
	}
	/* Pass 2: serve each step; its keys are pinned while it is served.
	 * rs: the resident keys (a victim is looked for among them only). */
	rs = calloc(nkeys ? nkeys : 1, sizeof(*rs));
	if (!rs) {
		r = -ENOMEM;
		goto cleanup;
	}
	nidx = 0;
	step = 0;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].kind != TRACE_ACQUIRE)
			continue;
		for (uint32_t j = 0; j < ev[i].nexperts; j++) {
			struct min_key *k = &keys[idx[nidx + j]];
			struct min_key *v = NULL;
			uint64_t vnext = 0;

			if (k->resident)
				continue;
			(*misses)++;
			if (resident >= capacity) {
				for (size_t x = 0; x < resident; x++) {
					struct min_key *c = &keys[rs[x]];
					uint64_t nu;

					nu = c->next < c->nsteps ? c->steps[c->next] : UINT64_MAX;
					if (nu == step)
						continue;	/* used by this step: pinned */
					if (!v || foresight_worse(c, nu, v, vnext, step, horizon)) {
						v = c;
						vnext = nu;
					}
				}
				if (!v) {
					/* Unreachable: capacity holds a whole step. */
					r = -ENOSPC;
					goto cleanup;
				}
				v->resident = false;
				rs[v->rpos] = rs[--resident];
				keys[rs[v->rpos]].rpos = v->rpos;
			}
			k->resident = true;
			k->rpos = resident;
			rs[resident++] = idx[nidx + j];
		}
		/* The step is served: its keys' next use moves on. */
		for (uint32_t j = 0; j < ev[i].nexperts; j++) {
			struct min_key *k = &keys[idx[nidx + j]];

			while (k->next < k->nsteps && k->steps[k->next] <= step)
				k->next++;
		}
		nidx += ev[i].nexperts;
		step++;
	}
cleanup:
	for (size_t i = 0; i < nkeys; i++)
		free(keys[i].steps);
	free(keys);
	free(idx);
	free(rs);
	return r;
}

/* splitmix64: small, fast, and the same sequence everywhere for a seed. */
static uint64_t rnd(uint64_t *st)
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rnd01(uint64_t *st)
{
	return (double)(rnd(st) >> 11) / 9007199254740992.0;
}

static uint32_t rnd_below(uint64_t *st, uint32_t n)
{
	return (uint32_t)(rnd(st) % n);
}

static void shuffle(uint64_t *st, uint32_t *v, uint32_t n)
{
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = rnd_below(st, i), t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

int replay_synthetic(const struct replay_synth *s, struct trace_event **out, size_t *n)
{
	uint32_t L = s->nlayers, E = s->nexperts, K = s->top_k;
	size_t rows = (size_t)s->sequences * (s->prompt + s->tokens) * L, ne = 0;
	uint32_t *xmap = NULL, *perm = NULL, *prev = NULL, *cur = NULL;
	double *cdf = NULL;
	struct trace_event *ev = NULL;
	uint64_t st = s->seed;
	int r = 0;

	*out = NULL;
	*n = 0;
	if (!L || !E || !K || K > E || K > TRACE_MAX_EXPERTS || !s->sequences || !s->tokens)
		return -EINVAL;
	ev = calloc(rows, sizeof(*ev));
	xmap = calloc((size_t)L * E * 2, sizeof(*xmap));
	perm = calloc((size_t)L * E, sizeof(*perm));
	prev = calloc((size_t)L * K, sizeof(*prev));
	cur = calloc((size_t)L * K, sizeof(*cur));
	cdf = calloc(E, sizeof(*cdf));
	if (!ev || !xmap || !perm || !prev || !cur || !cdf) {
		r = -ENOMEM;
		goto cleanup;
	}
	/* The model: which experts a choice at layer L-1 leads to at L. */
	for (size_t i = 0; i < (size_t)L * E * 2; i++)
		xmap[i] = rnd_below(&st, E);
	for (uint32_t i = 0; i < E; i++)
		cdf[i] = (i ? cdf[i - 1] : 0) + 1.0 / pow(i + 1, s->zipf);
	for (uint32_t q = 0; q < s->sequences; q++) {
		/* The sequence: its own popularity order at each layer. */
		for (uint32_t l = 0; l < L; l++) {
			for (uint32_t i = 0; i < E; i++)
				perm[(size_t)l * E + i] = i;
			shuffle(&st, &perm[(size_t)l * E], E);
		}
		for (uint32_t t = 0; t < s->prompt + s->tokens; t++)
			for (uint32_t l = 0; l < L; l++) {
				struct trace_event *e = &ev[ne++];
				uint32_t *ch = &cur[(size_t)l * K];

				e->client = q;
				e->token = t < s->prompt ? t : t - s->prompt;
				e->kind = t < s->prompt ? TRACE_HINT : TRACE_ACQUIRE;
				e->layer = l;
				/* This layer's last set becomes the previous token's. */
				memcpy(&prev[(size_t)l * K], ch, K * sizeof(*ch));
				for (uint32_t k = 0, tries = 0; k < K; tries++) {
					double u = rnd01(&st);
					uint32_t c;
					bool dup = false;

					if (tries > 64 * K)
						c = rnd_below(&st, E);
					else if (u < s->reuse && t)
						c = prev[(size_t)l * K + rnd_below(&st, K)];
					else if (u < s->reuse + s->follow && l)
						c = xmap[((size_t)l * E + cur[(size_t)(l - 1) * K + rnd_below(&st, K)]) * 2 +
							 rnd_below(&st, 2)];
					else {
						double x = rnd01(&st) * cdf[E - 1];
						uint32_t lo = 0, hi = E - 1;

						while (lo < hi) {
							uint32_t mid = (lo + hi) / 2;

							if (cdf[mid] < x)
								lo = mid + 1;
							else
								hi = mid;
						}
						c = perm[(size_t)l * E + lo];
					}
					for (uint32_t j = 0; j < k && !dup; j++)
						dup = ch[j] == c;
					if (!dup)
						ch[k++] = c;
				}
				e->nexperts = K;
				memcpy(e->experts, ch, K * sizeof(*ch));
			}
	}
	*out = ev;
	*n = ne;
	ev = NULL;
cleanup:
	free(ev);
	free(xmap);
	free(perm);
	free(prev);
	free(cur);
	free(cdf);
	return r;
}
