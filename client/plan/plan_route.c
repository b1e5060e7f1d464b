/* SPDX-License-Identifier: MIT */
/* Expert-parallel routing statistics: distinct experts and the busiest GPU (see plan.h). */
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

double plan_distinct_experts(unsigned experts, unsigned top_k, double batch)
{
	double e = experts;

	if (!experts || batch <= 0)
		return 0;
	if (top_k >= experts)
		return e;
	/* log1p/expm1 keep precision when k/E is tiny or B is large. */
	return -e * expm1(batch * log1p(-(double)top_k / e));
}

/*
 * The GPUs that hold routed experts and how many each holds: E spread over
 * every GPU as evenly as they go; with fewer experts than GPUs, one each on E
 * of them.  `big` GPUs hold per_gpu experts, the others per_gpu - 1.
 */
void plan_ep_layout(unsigned experts, unsigned gpus, unsigned *holders, unsigned *per_gpu,
		    unsigned *big)
{
	*holders = experts < gpus ? experts : gpus;
	*per_gpu = *holders ? (experts + *holders - 1) / *holders : 0;
	*big = *holders ? experts - (*per_gpu - 1) * *holders : 0;
}

static double lchoose(double n, double k)
{
	return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1);
}

/* Experts beyond which the exact counts below would underflow; the planner's
 * models have at most a few hundred. */
#define EP_EXACT_MAX 1000

/*
 * E[busiest GPU's activated experts | d activated] for d = 0 .. E, into
 * emax[0 .. E].  The activated set is a uniformly random d-subset (uniform
 * routing makes every expert alike, and a measured histogram of distinct
 * counts carries no identities), so P(max <= j | d) = [x^d] prod_g
 * (sum_{i <= j} C(m_g, i) x^i) / C(E, d): subsets with at most j on every GPU
 * over all subsets.  Each factor is scaled by 2^-m_g so no coefficient
 * exceeds 1.  E[max | d] = sum_{j < m} (1 - P(max <= j | d)).
 */
static int ep_max_given_distinct(unsigned experts, unsigned gpus, double *emax)
{
	unsigned holders, m, big;
	double *poly = NULL, *tmp = NULL, *fac = NULL;
	int ret = 0;

	plan_ep_layout(experts, gpus, &holders, &m, &big);
	memset(emax, 0, (experts + 1) * sizeof(*emax));
	if (!holders)
		return 0;
	if (experts > EP_EXACT_MAX)
		return -ERANGE;
	poly = calloc(experts + 1, sizeof(*poly));
	tmp = calloc(experts + 1, sizeof(*tmp));
	fac = calloc(m + 1, sizeof(*fac));
	if (!poly || !tmp || !fac) {
		ret = -ENOMEM;
		goto out;
	}
	for (unsigned j = 0; j < m; j++) {
		unsigned deg = 0;

		memset(poly, 0, (experts + 1) * sizeof(*poly));
		poly[0] = 1;
		for (unsigned g = 0; g < holders; g++) {
			unsigned mg = g < big ? m : m - 1, top = j < mg ? j : mg;

			for (unsigned i = 0; i <= top; i++)
				fac[i] = exp(lchoose(mg, i) - mg * LN2);
			memset(tmp, 0, (deg + top + 1) * sizeof(*tmp));
			for (unsigned a = 0; a <= deg; a++)
				for (unsigned i = 0; i <= top; i++)
					tmp[a + i] += poly[a] * fac[i];
			deg += top;
			memcpy(poly, tmp, (deg + 1) * sizeof(*poly));
		}
		for (unsigned d = 0; d <= experts; d++) {
			double all = exp(lchoose(experts, d) - experts * LN2);
			double le = d <= deg ? fmin(poly[d] / all, 1) : 0;

			emax[d] += 1 - le;
		}
	}
out:
	free(poly);
	free(tmp);
	free(fac);
	return ret;
}

/*
 * P(D = d), d = 0 .. E, for B tokens each routed to k distinct experts chosen
 * uniformly: a chain over tokens, where a token adds i new experts to c
 * already activated with probability C(E - c, i) C(c, k - i) / C(E, k).
 */
static int distinct_distribution(unsigned experts, unsigned k, unsigned batch, double *pd)
{
	double *next = calloc(experts + 1, sizeof(*next));
	double *trans = calloc((size_t)(experts + 1) * (k + 1), sizeof(*trans));

	if (!next || !trans) {
		free(next);
		free(trans);
		return -ENOMEM;
	}
	for (unsigned c = 0; c <= experts; c++)
		for (unsigned i = 0; i <= k; i++)
			if (i <= experts - c && k - i <= c)
				trans[(size_t)c * (k + 1) + i] = exp(lchoose(experts - c, i) +
								     lchoose(c, k - i) -
								     lchoose(experts, k));
	memset(pd, 0, (experts + 1) * sizeof(*pd));
	pd[0] = 1;
	/* Once every expert is activated for sure, more tokens change nothing. */
	for (unsigned b = 0; b < batch && pd[experts] < 1 - 1e-15; b++) {
		memset(next, 0, (experts + 1) * sizeof(*next));
		for (unsigned c = 0; c <= experts; c++) {
			if (pd[c] == 0)
				continue;
			for (unsigned i = 0; i <= k && c + i <= experts; i++)
				next[c + i] += pd[c] * trans[(size_t)c * (k + 1) + i];
		}
		memcpy(pd, next, (experts + 1) * sizeof(*pd));
	}
	free(next);
	free(trans);
	return 0;
}

/* The independence approximation, for more experts than the exact count handles. */
static double ep_max_binomial(unsigned experts, unsigned gpus, double p)
{
	unsigned holders, m, big;
	double e = 0, acc = 0, pmf;

	plan_ep_layout(experts, gpus, &holders, &m, &big);
	if (p >= 1)
		return m;
	pmf = exp(m * log1p(-p));
	for (unsigned j = 0; j < m; j++) {
		acc += pmf;
		e += -expm1(holders * log(fmax(fmin(acc, 1), 1e-300)));
		pmf *= (double)(m - j) / (j + 1) * p / (1 - p);
	}
	return e;
}

double plan_ep_max_uniform(unsigned experts, unsigned top_k, double batch, unsigned gpus)
{
	unsigned k = top_k < experts ? top_k : experts;
	double *pd = NULL, *emax = NULL, e = 0;

	if (!experts || !gpus || !k || batch <= 0)
		return 0;
	pd = calloc(experts + 1, sizeof(*pd));
	emax = calloc(experts + 1, sizeof(*emax));
	if (!pd || !emax || distinct_distribution(experts, k, (unsigned)fmin(ceil(batch), UINT_MAX), pd) < 0 ||
	    ep_max_given_distinct(experts, gpus, emax) < 0) {
		e = ep_max_binomial(experts, gpus, plan_distinct_experts(experts, k, batch) / experts);
		goto out;
	}
	for (unsigned d = 0; d <= experts; d++)
		e += pd[d] * emax[d];
out:
	free(pd);
	free(emax);
	return e;
}

int plan_routing_stats(const struct plan_routing *rt, unsigned experts, unsigned gpus,
		       double *mean_distinct, double *ep_max, char *err, size_t errlen)
{
	double total = 0, mean = 0, emax_sum = 0, *emax;
	int r;

	if (!rt || !rt->freq || !rt->n)
		return plan_fail(err, errlen, -EINVAL, "routing: empty distribution");
	if (!experts || !gpus)
		return plan_fail(err, errlen, -EINVAL, "routing: a dense model has no experts to route");
	if (rt->n > (size_t)experts + 1)
		return plan_fail(err, errlen, -EINVAL,
			    "routing: %zu distinct experts measured, but a layer has only %u",
			    rt->n - 1, experts);
	for (size_t d = 0; d < rt->n; d++) {
		if (!(rt->freq[d] >= 0) || !isfinite(rt->freq[d]))
			return plan_fail(err, errlen, -EINVAL,
				    "routing: frequency of %zu distinct experts is %g, not a finite "
				    "non-negative number", d, rt->freq[d]);
		total += rt->freq[d];
	}
	if (!(total > 0))
		return plan_fail(err, errlen, -EINVAL, "routing: all frequencies are zero");
	emax = calloc(experts + 1, sizeof(*emax));
	if (!emax)
		return -ENOMEM;
	r = ep_max_given_distinct(experts, gpus, emax);
	if (r < 0) {
		free(emax);
		return plan_fail(err, errlen, r, "routing: %u experts: more than the %d the exact "
				 "count handles", experts, EP_EXACT_MAX);
	}
	for (size_t d = 0; d < rt->n; d++) {
		mean += rt->freq[d] / total * d;
		emax_sum += rt->freq[d] / total * emax[d];
	}
	free(emax);
	if (rt->ep_max > 0) {
		unsigned holders, per_gpu, big;

		plan_ep_layout(experts, gpus, &holders, &per_gpu, &big);
		if (!isfinite(rt->ep_max) || rt->ep_max > per_gpu || rt->ep_max > mean + 1e-9)
			return plan_fail(err, errlen, -EINVAL, "routing: busiest GPU with %g experts, "
					 "more than a GPU holds (%u) or the layer activates (%g)",
					 rt->ep_max, per_gpu, mean);
		emax_sum = rt->ep_max;
	}
	*mean_distinct = mean;
	*ep_max = emax_sum;
	return 0;
}
