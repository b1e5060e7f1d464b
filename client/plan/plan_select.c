/* SPDX-License-Identifier: MIT */
/* plan_select: feasible (batch, placement) pairs, best first (see plan.h). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan-int.h"

static double objective_of(const struct plan_candidate *c, enum plan_objective o)
{
	switch (o) {
	case PLAN_OBJ_ENERGY:
		return c->r.energy_per_token_j;
	case PLAN_OBJ_LATENCY:
		return c->r.latency_per_token_s;
	case PLAN_OBJ_POOL:
		return c->r.ddr_need_bytes;
	}
	return 0;
}

/* The curve's hit rate at pool size x (linear between its points, from 0 at
 * an empty pool; its last beyond); NaN where it could not run. */
static double curve_hit(const struct plan_hit_curve *c, double x)
{
	double x0 = 0, y0 = 0;

	if (x <= 0)
		return 0;
	for (size_t i = 0; i < c->n; i++) {
		if (x <= c->pool[i] + 1e-12) {
			if (x >= c->pool[i] - 1e-12)
				return c->hit[i];
			return y0 + (c->hit[i] - y0) * (x - x0) / (c->pool[i] - x0);
		}
		x0 = c->pool[i];
		y0 = c->hit[i];
	}
	return c->n ? c->hit[c->n - 1] : NAN;
}

static int cand_cmp(const struct plan_candidate *a, const struct plan_candidate *b,
		    enum plan_objective o)
{
	double x = objective_of(a, o), y = objective_of(b, o);
	/* Ties: the other objective, then the larger batch (more throughput). */
	double x2 = objective_of(a, o == PLAN_OBJ_ENERGY ? PLAN_OBJ_LATENCY : PLAN_OBJ_ENERGY);
	double y2 = objective_of(b, o == PLAN_OBJ_ENERGY ? PLAN_OBJ_LATENCY : PLAN_OBJ_ENERGY);

	if (x != y)
		return x < y ? -1 : 1;
	if (x2 != y2)
		return x2 < y2 ? -1 : 1;
	return a->batch > b->batch ? -1 : a->batch < b->batch;
}

/* Insertion sort: candidate lists are a few hundred entries. */
static void cand_sort(struct plan_candidate *c, size_t n, enum plan_objective o)
{
	for (size_t i = 1; i < n; i++) {
		struct plan_candidate t = c[i];
		size_t j = i;

		while (j > 0 && cand_cmp(&t, &c[j - 1], o) < 0) {
			c[j] = c[j - 1];
			j--;
		}
		c[j] = t;
	}
}

int plan_select(const struct plan_model *m, const struct plan_params *p,
		const struct plan_select_req *req, struct plan_candidate **out, size_t *n,
		char *err, size_t errlen)
{
	struct plan_candidate *cand = NULL, closest = { 0 };
	size_t ncand = 0, cap, fits = 0, nc;
	double closest_score = INFINITY, min_hbm = INFINITY;
	unsigned steps = req->ddr_steps ? req->ddr_steps : 10;
	struct plan_sizes sz;
	int ret;

	*out = NULL;
	*n = 0;
	ret = plan_pair_check(m, p, err, errlen);
	if (ret < 0)
		return ret;
	if (!req->nbatches)
		return plan_fail(err, errlen, -EINVAL, "select: no batch sizes");
	if (!(req->hbm_bytes >= 0) || !(req->ddr_bytes >= 0) || !(req->max_latency_s >= 0) ||
	    !(req->max_energy_j >= 0))
		return plan_fail(err, errlen, -EINVAL, "select: capacities and ceilings must not be negative");
	plan_sizes_get(m, p, &sz);

	if (req->curves && !req->ncurves)
		return plan_fail(err, errlen, -EINVAL, "select: hit-rate curves given, but no policy");
	nc = req->curves ? req->ncurves : 1;
	cap = req->nbatches * (steps + 2) * nc;
	cand = calloc(cap, sizeof(*cand));
	if (!cand)
		return -ENOMEM;
	for (size_t bi = 0; bi < req->nbatches; bi++) {
		/* As plan_eval: resident weights in every data-parallel group, KV copies. */
		double tp = plan_tp(&p->hw), dp = (double)p->hw.nodes * p->hw.gpus_per_node / tp;
		double kv = sz.kv_bytes_per_token * p->context * req->batches[bi] * plan_kv_copies(m, tp);
		double hbm_free = req->hbm_bytes - sz.resident_bytes * dp - kv;
		/* HBM buffers for the fetched experts of two layers (see plan_eval). */
		double distinct = plan_distinct_experts(m->experts, plan_eff_top_k(m, p), req->batches[bi]);
		const struct plan_routing *rt = req->routing ? &req->routing[bi] : NULL;
		double buf, h, rest, dmax, ep_max;

		if (!req->batches[bi]) {
			ret = plan_fail(err, errlen, -EINVAL, "select: batch size must be positive");
			goto out;
		}
		if (rt) {
			ret = plan_routing_stats(rt, m->experts, p->hw.nodes * p->hw.gpus_per_node,
						 &distinct, &ep_max, err, errlen);
			if (ret < 0)
				goto out;
		}
		buf = 2 * sz.expert_bytes * distinct;
		min_hbm = fmin(min_hbm, sz.resident_bytes * dp + kv + fmin(buf, sz.routed_bytes));
		/*
		 * A fraction h in HBM needs h routed + (1 - h) buf: all of them if they
		 * fit, else as many as leave room for the buffers.
		 */
		if (hbm_free >= sz.routed_bytes)
			h = 1;
		else if (hbm_free < buf || sz.routed_bytes <= buf)
			continue;
		else
			h = (hbm_free - buf) / (sz.routed_bytes - buf);
		rest = 1 - h;
		dmax = sz.routed_bytes > 0 ? fmin(rest, req->ddr_bytes / sz.routed_bytes) : 0;
		/* DDR cache sizes 0, 1/steps, ... of the routed bytes, and the largest that
		 * fits; with curves, each size under each policy. */
		for (size_t sj = 0; sj < (steps + 2) * nc; sj++) {
			struct plan_candidate c = { .batch = req->batches[bi] };
			unsigned s = (unsigned)(sj / nc);
			size_t j = sj % nc;
			double d, score;

			if (s <= steps) {
				d = (double)s / steps;
				if (d > dmax + 1e-12)
					continue;
			} else {
				d = dmax;
				if (fabs(dmax * steps - round(dmax * steps)) < 1e-9)
					continue;	/* already tried */
			}
			c.place.frac[PLAN_TIER_HBM] = h;
			if (req->curves) {
				const struct plan_hit_curve *cv = &req->curves[bi * req->ncurves + j];
				double hit = rest > 0 ? curve_hit(cv, d / rest) : 0;

				/* Without a pool the policy does not matter: listed once. */
				if ((d <= 0 && j) || isnan(hit))
					continue;
				c.policy = cv->policy;
				c.place.frac[PLAN_TIER_DDR] = rest * hit;
				c.place.frac[PLAN_TIER_SSD] = fmax(0, rest * (1 - hit));
				c.place.ddr_pool = d;
			} else {
				c.place.frac[PLAN_TIER_DDR] = d;
				c.place.frac[PLAN_TIER_SSD] = fmax(0, 1 - h - d);
			}
			ret = plan_eval_routed(m, p, &c.place, c.batch, rt, &c.r, err, errlen);
			if (ret < 0)
				goto out;
			fits++;
			/* Distance to the ceilings, for the error message when none is met. */
			score = fmax(req->max_latency_s > 0 ? c.r.latency_per_token_s / req->max_latency_s : 0,
				     req->max_energy_j > 0 ? c.r.energy_per_token_j / req->max_energy_j : 0);
			if (score < closest_score) {
				closest_score = score;
				closest = c;
			}
			if (req->max_latency_s > 0 && c.r.latency_per_token_s > req->max_latency_s)
				continue;
			if (req->max_energy_j > 0 && c.r.energy_per_token_j > req->max_energy_j)
				continue;
			cand[ncand++] = c;
		}
	}
	if (!fits) {
		ret = plan_fail(err, errlen, -ENOSPC,
			   "HBM of %.1f GiB cannot hold %s's resident weights and KV cache: "
			   "needs at least %.1f GiB (batch %u, context %u)",
			   req->hbm_bytes / (1 << 30), m->name, min_hbm / (1 << 30),
			   req->batches[0], p->context);
		goto out;
	}
	if (!ncand) {
		ret = plan_fail(err, errlen, -ERANGE,
			   "no placement meets the ceilings (latency %g ms, energy %g J/token); "
			   "closest: batch %u, experts %.0f%% HBM %.0f%% DDR %.0f%% SSD at %.4g ms "
			   "and %.4g J/token",
			   req->max_latency_s * 1e3, req->max_energy_j, closest.batch,
			   closest.place.frac[PLAN_TIER_HBM] * 100, closest.place.frac[PLAN_TIER_DDR] * 100,
			   closest.place.frac[PLAN_TIER_SSD] * 100, closest.r.latency_per_token_s * 1e3,
			   closest.r.energy_per_token_j);
		goto out;
	}
	cand_sort(cand, ncand, req->objective);
	*out = cand;
	*n = ncand;
	cand = NULL;
	ret = 0;
out:
	free(cand);
	return ret;
}
