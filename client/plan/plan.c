/* SPDX-License-Identifier: MIT */
/* The per-token energy and latency model of `tierctl plan` (see plan.h). */
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

#define GB 1e9
#define PJ 1e-12
#define LN2 0.69314718055994530942

int plan_fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

unsigned plan_tp(const struct plan_hw *hw)
{
	return hw->tp ? hw->tp : hw->gpus_per_node;
}

void plan_params_default(struct plan_params *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->hw.name, sizeof(p->hw.name), "dgx-h100-nvl5");
	p->hw.nodes = 1;
	p->hw.gpus_per_node = 8;
	p->hw.gpu_tflops = 989;		/* H100 SXM dense BF16 */
	p->hw.hbm_gbps = 3352;
	p->hw.hbm_gib = 80;
	p->hw.link_gbps = 900;		/* NVLink 5.0 per direction */
	p->hw.ddr_gbps = 0;		/* the paper: CPU memory keeps up with the links */
	p->hw.ssd_gbps = 0;		/* likewise the SSDs */
	p->hw.ddr_gib = 2048;		/* DGX H100: 2 TB of system memory */
	/*
	 * Interconnect of the paper's modeling tool (the Duplex simulator's H100
	 * system): NVLink 4.0 between GPUs, 450 GB/s and 0.8 us per transfer, even
	 * when the offload links are NVLink 5.0; one ConnectX-7 InfiniBand port
	 * per GPU (8 per node), 50 GB/s and 130 ns.
	 */
	p->hw.tp = 0;
	p->hw.nvlink_gbps = 450;
	p->hw.nvlink_lat_us = 0.8;
	p->hw.ib_gbps = 50;
	p->hw.ib_lat_us = 0.13;
	p->hw.act_bytes = 2;		/* BF16 activations, as the paper */
	p->en.pj_hbm = 4.2;
	p->en.pj_ddr = 9.2;
	p->en.pj_flash = 102.4;
	p->en.flash_scale = 1;
	p->en.pj_l1 = 0.16;
	p->en.pj_l2 = 0.3;
	p->en.pj_flop = 0.16;
	p->en.gpu_idle_w = 70;
	p->en.ddr_static_w = 57;
	p->en.ddr_static_gb = 256;
	p->en.ddr_gb_per_gpu = 256;	/* the paper: each GPU has its own 256 GB of DDR5 */
	p->en.ssd_idle_w = 0;
	p->en.tile = 128;
	p->context = 1024;
	/* The paper's tool runs MLA unfused (use_flash_mla off): the latent is read
	 * once as keys for the scores and once as values. */
	p->mla_kv_reads = 2;
}

enum key_type { KEY_DOUBLE, KEY_UINT };

struct plan_key {
	const char *name;
	const char *section;
	enum key_type type;
	size_t off;
	double min;		/* inclusive */
	double max;
	bool min_exclusive;
};

#define HW(f) offsetof(struct plan_params, hw.f)
#define EN(f) offsetof(struct plan_params, en.f)
#define PP(f) offsetof(struct plan_params, f)

static const struct plan_key keys[] = {
	{ "nodes", "hardware", KEY_UINT, HW(nodes), 1, 100000, false },
	{ "gpus_per_node", "hardware", KEY_UINT, HW(gpus_per_node), 1, 1024, false },
	{ "gpu_tflops", "hardware", KEY_DOUBLE, HW(gpu_tflops), 0, 1e6, true },
	{ "hbm_gbps", "hardware", KEY_DOUBLE, HW(hbm_gbps), 0, 1e6, true },
	{ "hbm_gib", "hardware", KEY_DOUBLE, HW(hbm_gib), 0, 1e6, true },
	{ "link_gbps", "hardware", KEY_DOUBLE, HW(link_gbps), 0, 1e6, true },
	{ "ddr_gbps", "hardware", KEY_DOUBLE, HW(ddr_gbps), 0, 1e6, false },
	{ "ssd_gbps", "hardware", KEY_DOUBLE, HW(ssd_gbps), 0, 1e6, false },
	{ "ddr_gib", "hardware", KEY_DOUBLE, HW(ddr_gib), 0, 1e9, false },
	{ "tp", "hardware", KEY_UINT, HW(tp), 0, 1024, false },
	{ "nvlink_gbps", "hardware", KEY_DOUBLE, HW(nvlink_gbps), 0, 1e6, true },
	{ "nvlink_lat_us", "hardware", KEY_DOUBLE, HW(nvlink_lat_us), 0, 1e6, false },
	{ "ib_gbps", "hardware", KEY_DOUBLE, HW(ib_gbps), 0, 1e6, true },
	{ "ib_lat_us", "hardware", KEY_DOUBLE, HW(ib_lat_us), 0, 1e6, false },
	{ "act_bytes", "hardware", KEY_DOUBLE, HW(act_bytes), 0, 64, true },
	{ "pj_hbm", "energy", KEY_DOUBLE, EN(pj_hbm), 0, 1e6, false },
	{ "pj_ddr", "energy", KEY_DOUBLE, EN(pj_ddr), 0, 1e6, false },
	{ "pj_flash", "energy", KEY_DOUBLE, EN(pj_flash), 0, 1e6, false },
	{ "flash_scale", "energy", KEY_DOUBLE, EN(flash_scale), 0, 1e3, false },
	{ "pj_l1", "energy", KEY_DOUBLE, EN(pj_l1), 0, 1e6, false },
	{ "pj_l2", "energy", KEY_DOUBLE, EN(pj_l2), 0, 1e6, false },
	{ "pj_flop", "energy", KEY_DOUBLE, EN(pj_flop), 0, 1e6, false },
	{ "gpu_idle_w", "energy", KEY_DOUBLE, EN(gpu_idle_w), 0, 1e6, false },
	{ "ddr_static_w", "energy", KEY_DOUBLE, EN(ddr_static_w), 0, 1e6, false },
	{ "ddr_static_gb", "energy", KEY_DOUBLE, EN(ddr_static_gb), 0, 1e9, true },
	{ "ddr_gb_per_gpu", "energy", KEY_DOUBLE, EN(ddr_gb_per_gpu), 0, 1e9, false },
	{ "ssd_idle_w", "energy", KEY_DOUBLE, EN(ssd_idle_w), 0, 1e6, false },
	{ "tile", "energy", KEY_UINT, EN(tile), 1, 1 << 20, false },
	{ "context", "model", KEY_UINT, PP(context), 0, 1 << 30, false },
	{ "top_k", "model", KEY_UINT, PP(top_k), 0, 1 << 20, false },
	{ "bytes_per_param", "model", KEY_DOUBLE, PP(bytes_per_param), 0, 64, false },
	{ "mla_kv_reads", "model", KEY_UINT, PP(mla_kv_reads), 1, 16, false },
};

const char *plan_key_name(size_t i)
{
	return i < sizeof(keys) / sizeof(keys[0]) ? keys[i].name : NULL;
}

static const struct plan_key *key_find(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

const char *plan_key_section(const char *key)
{
	const struct plan_key *k = key_find(key);

	return k ? k->section : NULL;
}

int plan_set(struct plan_params *p, const char *key, const char *value, char *err, size_t errlen)
{
	const struct plan_key *k = key_find(key);
	char *end;
	double v;

	if (!k)
		return plan_fail(err, errlen, -ENOENT, "%s: unknown key", key);
	errno = 0;
	v = strtod(value, &end);
	if (end == value || *end || errno == ERANGE || !isfinite(v))
		return plan_fail(err, errlen, -EINVAL, "%s: expected a number, got \"%s\"", key, value);
	if (v < k->min || (k->min_exclusive && v <= k->min) || v > k->max)
		return plan_fail(err, errlen, -ERANGE, "%s: %s out of range (%s%g .. %g)", key, value,
			    k->min_exclusive ? "above " : "", k->min, k->max);
	switch (k->type) {
	case KEY_UINT:
		if (v != floor(v))
			return plan_fail(err, errlen, -EINVAL, "%s: expected an integer, got \"%s\"",
				    key, value);
		*(unsigned *)((char *)p + k->off) = (unsigned)v;
		break;
	case KEY_DOUBLE:
		*(double *)((char *)p + k->off) = v;
		break;
	}
	return 0;
}

int plan_model_check(const struct plan_model *m, char *err, size_t errlen)
{
	const char *n = m->name[0] ? m->name : "model";

	if (!m->layers)
		return plan_fail(err, errlen, -EINVAL, "%s: needs at least one layer", n);
	if (!m->hidden)
		return plan_fail(err, errlen, -EINVAL, "%s: hidden size must be positive", n);
	if (!(m->bytes_per_param > 0) || m->bytes_per_param > 64)
		return plan_fail(err, errlen, -EINVAL, "%s: bytes per parameter must be in (0, 64]", n);
	if (!m->heads)
		return plan_fail(err, errlen, -EINVAL, "%s: attention heads must be positive", n);
	switch (m->attn) {
	case PLAN_ATTN_GQA:
		if (!m->kv_heads || !m->head_dim)
			return plan_fail(err, errlen, -EINVAL, "%s: GQA needs kv heads and head dim", n);
		if (m->heads % m->kv_heads)
			return plan_fail(err, errlen, -EINVAL,
				    "%s: %u attention heads are not a multiple of %u kv heads",
				    n, m->heads, m->kv_heads);
		break;
	case PLAN_ATTN_MLA:
		if (!m->kv_lora || !m->v_dim || !(m->rope_dim + m->nope_dim))
			return plan_fail(err, errlen, -EINVAL,
				    "%s: MLA needs kv_lora_rank, v_head_dim and qk head dims", n);
		break;
	}
	if (m->experts) {
		if (!m->top_k || m->top_k > m->experts)
			return plan_fail(err, errlen, -EINVAL, "%s: top-k %u must be in 1..%u experts",
				    n, m->top_k, m->experts);
		if (!m->expert_ffn)
			return plan_fail(err, errlen, -EINVAL, "%s: expert intermediate size must be positive", n);
		if (!m->moe_step)
			return plan_fail(err, errlen, -EINVAL, "%s: MoE layer step must be positive", n);
		if (m->shared_experts && !m->shared_ffn)
			return plan_fail(err, errlen, -EINVAL, "%s: shared experts need an intermediate size", n);
	}
	/* Layers that are not MoE run the dense FFN. */
	if ((!m->experts || m->first_dense || m->moe_step > 1) && !m->dense_ffn)
		return plan_fail(err, errlen, -EINVAL, "%s: dense layers need an intermediate size", n);
	return 0;
}

int plan_params_check(const struct plan_params *p, char *err, size_t errlen)
{
	const struct plan_hw *h = &p->hw;
	const struct plan_energy *e = &p->en;

	if (!h->nodes || !h->gpus_per_node)
		return plan_fail(err, errlen, -EINVAL, "hardware: needs at least one node and one GPU");
	if (!(h->gpu_tflops > 0) || !(h->hbm_gbps > 0) || !(h->link_gbps > 0) || !(h->hbm_gib > 0))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: gpu_tflops, hbm_gbps, hbm_gib and link_gbps must be positive");
	if (!(h->ddr_gbps >= 0) || !(h->ssd_gbps >= 0) || !(h->ddr_gib >= 0))
		return plan_fail(err, errlen, -EINVAL, "hardware: ddr_gbps, ssd_gbps and ddr_gib must not be negative");
	if (!(e->pj_hbm >= 0) || !(e->pj_ddr >= 0) || !(e->pj_flash >= 0) || !(e->flash_scale >= 0) ||
	    !(e->pj_l1 >= 0) || !(e->pj_l2 >= 0) || !(e->pj_flop >= 0) || !(e->gpu_idle_w >= 0) ||
	    !(e->ddr_static_w >= 0) || !(e->ssd_idle_w >= 0))
		return plan_fail(err, errlen, -EINVAL, "energy: constants must not be negative");
	if (!(e->ddr_static_gb > 0) || !e->tile)
		return plan_fail(err, errlen, -EINVAL, "energy: ddr_static_gb and tile must be positive");
	if (!(p->bytes_per_param >= 0))
		return plan_fail(err, errlen, -EINVAL, "bytes_per_param must not be negative");
	if (h->tp && (h->tp > h->gpus_per_node || h->gpus_per_node % h->tp))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: tp %u must divide the %u GPUs of a node (tensor parallelism stays "
			    "inside a node)", h->tp, h->gpus_per_node);
	if (!(h->nvlink_gbps > 0) || !(h->ib_gbps > 0) || !(h->act_bytes > 0) ||
	    !(h->nvlink_lat_us >= 0) || !(h->ib_lat_us >= 0))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: nvlink_gbps, ib_gbps and act_bytes must be positive, latencies not negative");
	if (!(e->ddr_gb_per_gpu >= 0))
		return plan_fail(err, errlen, -EINVAL, "energy: ddr_gb_per_gpu must not be negative");
	if (!p->mla_kv_reads)
		return plan_fail(err, errlen, -EINVAL, "mla_kv_reads must be at least 1");
	return 0;
}

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
static void ep_layout(unsigned experts, unsigned gpus, unsigned *holders, unsigned *per_gpu,
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

	ep_layout(experts, gpus, &holders, &m, &big);
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

	ep_layout(experts, gpus, &holders, &m, &big);
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
	*mean_distinct = mean;
	*ep_max = emax_sum;
	return 0;
}

static bool layer_is_moe(const struct plan_model *m, unsigned i)
{
	return m->experts && i >= m->first_dense && (i + m->moe_phase) % m->moe_step == 0;
}

static unsigned eff_top_k(const struct plan_model *m, const struct plan_params *p)
{
	unsigned k = p->top_k ? p->top_k : m->top_k;

	return k > m->experts ? m->experts : k;
}

static double eff_bpp(const struct plan_model *m, const struct plan_params *p)
{
	return p->bytes_per_param > 0 ? p->bytes_per_param : m->bytes_per_param;
}

/* The linear maps of one attention block, as (in, out) pairs. */
struct linear {
	double in, out;
};

static size_t attn_linears(const struct plan_model *m, struct linear *l)
{
	double h = m->hidden, nh = m->heads;
	size_t n = 0;

	switch (m->attn) {
	case PLAN_ATTN_GQA:
		l[n++] = (struct linear){ h, nh * m->head_dim };
		l[n++] = (struct linear){ h, (double)m->kv_heads * m->head_dim };
		l[n++] = (struct linear){ h, (double)m->kv_heads * m->head_dim };
		l[n++] = (struct linear){ nh * m->head_dim, h };
		break;
	case PLAN_ATTN_MLA:
		if (m->q_lora) {
			l[n++] = (struct linear){ h, m->q_lora };
			l[n++] = (struct linear){ m->q_lora, nh * (m->nope_dim + m->rope_dim) };
		} else {
			l[n++] = (struct linear){ h, nh * (m->nope_dim + m->rope_dim) };
		}
		l[n++] = (struct linear){ h, (double)m->kv_lora + m->rope_dim };
		l[n++] = (struct linear){ m->kv_lora, nh * (m->nope_dim + m->v_dim) };
		l[n++] = (struct linear){ nh * m->v_dim, h };
		break;
	}
	return n;
}

static double attn_params(const struct plan_model *m)
{
	struct linear l[6];
	size_t n = attn_linears(m, l);
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += l[i].in * l[i].out;
	return s;
}

/* KV cache elements per context token per layer (MLA caches the compressed latent). */
static double kv_elems(const struct plan_model *m)
{
	switch (m->attn) {
	case PLAN_ATTN_GQA:
		return 2.0 * m->kv_heads * m->head_dim;
	case PLAN_ATTN_MLA:
		return (double)m->kv_lora + m->rope_dim;
	}
	return 0;
}

/* FLOPs per query token per context token: scores and weighted sum. */
static double attn_ctx_flops(const struct plan_model *m)
{
	switch (m->attn) {
	case PLAN_ATTN_GQA:
		return 4.0 * m->heads * m->head_dim;
	case PLAN_ATTN_MLA:
		/* Absorbed form: scores over latent + rope, sum over the latent. */
		return 2.0 * m->heads * ((double)m->kv_lora + m->rope_dim) + 2.0 * m->heads * m->kv_lora;
	}
	return 0;
}

static double ffn_params(double hidden, double inter)
{
	return 3 * hidden * inter;	/* gate, up, down */
}

int plan_sizes_get(const struct plan_model *m, const struct plan_params *p, struct plan_sizes *s)
{
	double bpp = eff_bpp(m, p);
	double per_expert = ffn_params(m->hidden, m->expert_ffn);
	double routed = 0, resident = 0;

	memset(s, 0, sizeof(*s));
	resident += (double)m->vocab * m->hidden * 2;	/* embedding and LM head */
	for (unsigned i = 0; i < m->layers; i++) {
		resident += attn_params(m);
		if (layer_is_moe(m, i)) {
			s->moe_layers++;
			routed += per_expert * m->experts;
			resident += (double)m->hidden * m->experts;
			resident += m->shared_experts * ffn_params(m->hidden, m->shared_ffn);
		} else {
			resident += ffn_params(m->hidden, m->dense_ffn);
		}
	}
	s->params = resident + routed;
	s->resident_bytes = resident * bpp;
	s->routed_bytes = routed * bpp;
	s->expert_bytes = per_expert * bpp;
	s->kv_bytes_per_token = kv_elems(m) * m->layers * bpp;
	return 0;
}

/*
 * On-chip traffic of an M x K by K x N matmul tiled in T x T output tiles: each
 * output tile streams a K-deep panel of activations and of weights from L2
 * through L1/shared memory, so weights are re-read once per T rows of tokens
 * and activations once per T output columns; the output is written once.
 */
static double gemm_traffic(double m_rows, double k, double n, double bpp, unsigned tile)
{
	if (m_rows <= 0)
		return 0;
	return bpp * (ceil(m_rows / tile) * k * n + ceil(n / tile) * m_rows * k + m_rows * n);
}

/* The layout of the system for one step: parallelism degrees and rates. */
struct sys {
	double gpus;		/* all of them */
	double per_node;
	double tp;		/* tensor-parallel degree (inside a node) */
	double dp;		/* data-parallel groups: gpus / tp */
	double groups;		/* groups with at least one request: min(batch, dp) */
	double bn;		/* requests of the busiest group: ceil(batch / dp) */
	double b;		/* the batch */
	double act;		/* bytes per activation element */
	double flops_s, hbm_bs, link_bs;	/* per GPU */
	double ddr_bs, ssd_bs;	/* per node */
	unsigned k;
	double distinct;	/* expected distinct experts per MoE layer, whole batch */
	double ep_max;		/* expected activated experts on the busiest GPU */
};

/*
 * Work of one layer (or of the LM head) for one step.  The first group of
 * fields is one GPU on the critical path: the step waits for the slowest GPU
 * at every all-reduce and all-to-all, so the GPU with the most activated
 * experts sets the pace.  The second is the whole system, for energy.
 */
struct stage {
	double t_op[PLAN_NTIMES];	/* seconds per operation class, each op max(FLOPs, HBM) */
	double gpu_hbm;			/* bytes the busiest GPU reads */
	double gpu_flops;
	double gpu_fetch;		/* this layer's offloaded expert bytes into the busiest GPU */
	double node_off[PLAN_NTIERS];	/* this layer's routed bytes per node, by home tier */
	double comm_bytes;		/* sent by one GPU */

	double hbm_read;		/* bytes */
	double off[PLAN_NTIERS];	/* routed bytes by home tier */
	double flops;
	double cache;			/* on-chip bytes */
	double attn_bytes, dense_bytes;
};

/* One kernel on one GPU: as long as the larger of its compute and its HBM traffic. */
static void op(const struct sys *s, struct stage *st, enum plan_time cls, double flops, double bytes)
{
	st->t_op[cls] += fmax(flops / s->flops_s, bytes / s->hbm_bs);
	st->gpu_hbm += bytes;
	st->gpu_flops += flops;
}

/*
 * Ring all-reduce of the activations of a data-parallel group over its tp
 * GPUs (NVLink): 2 (tp - 1) steps, each moving 1/tp of the message; as the
 * paper's tool (Duplex, AllReduce).
 */
static void allreduce(const struct plan_model *m, const struct plan_params *p, const struct sys *s,
		      struct stage *st)
{
	double msg = s->bn * m->hidden * p->hw.act_bytes, hops = 2 * (s->tp - 1);

	if (s->tp <= 1 || msg <= 0)
		return;
	st->t_op[PLAN_TIME_ALLREDUCE] += hops * (p->hw.nvlink_lat_us * 1e-6 +
						 msg / s->tp / (p->hw.nvlink_gbps * GB));
	st->comm_bytes += hops * msg / s->tp;
}

/*
 * Expert-parallel dispatch (tokens to the GPUs holding their experts) and
 * combine (results back), each an all-to-all.  After the tensor-parallel
 * all-reduce every GPU of a group holds the group's tokens, so tokens for
 * experts inside the group need no transfer; each GPU sends 1/tp of the rest,
 * over NVLink to other groups of its node and over InfiniBand to other nodes
 * (both at once; the slower sets the time).
 */
static void alltoall(const struct plan_model *m, const struct plan_params *p, const struct sys *s,
		     struct stage *st)
{
	double out = s->gpus - s->tp, intra, inter, t;
	double bytes = s->bn * s->k * m->hidden * p->hw.act_bytes / s->tp;

	if (out <= 0 || s->bn <= 0)
		return;
	intra = bytes * (s->per_node - s->tp) / s->gpus;
	inter = bytes * (s->gpus - s->per_node) / s->gpus;
	t = fmax(intra / (p->hw.nvlink_gbps * GB), inter / (p->hw.ib_gbps * GB)) +
	    (inter > 0 ? p->hw.ib_lat_us : p->hw.nvlink_lat_us) * 1e-6;
	st->t_op[PLAN_TIME_ALLTOALL] += 2 * t;	/* dispatch and combine */
	st->comm_bytes += 2 * (intra + inter);
}

/* KV cache bytes one GPU reads per request per layer, and how many GPUs hold a copy. */
static double kv_gpu_bytes(const struct plan_model *m, const struct plan_params *p, double tp)
{
	double bpp = eff_bpp(m, p), ctx = p->context;

	switch (m->attn) {
	case PLAN_ATTN_GQA:
		/* KV heads split over the group; fewer heads than GPUs are replicated. */
		return ctx * 2.0 * m->head_dim * fmax((double)m->kv_heads / tp, 1) * bpp;
	case PLAN_ATTN_MLA:
		/* Every head reads the one latent: each GPU of the group reads all of it. */
		return ctx * kv_elems(m) * bpp * p->mla_kv_reads;
	}
	return 0;
}

/* Copies of the KV cache across a tensor-parallel group (capacity). */
static double kv_copies(const struct plan_model *m, double tp)
{
	switch (m->attn) {
	case PLAN_ATTN_GQA:
		return fmax(tp / m->kv_heads, 1);
	case PLAN_ATTN_MLA:
		return tp;
	}
	return 1;
}

/*
 * A weight split over the tp GPUs of each group (by output columns, or by
 * input rows for the second matrix of a pair), read by every group.
 */
static void split_linear(const struct plan_params *p, const struct sys *s, struct stage *st,
			 enum plan_time cls, double in, double out, bool by_rows, double bpp,
			 double *sys_bytes)
{
	/* Activations in and out cross HBM too: at large batch a visible share. */
	double act = s->bn * (by_rows ? in / s->tp + out : in + out / s->tp) * s->act;

	op(s, st, cls, 2 * s->bn * in * out / s->tp, in * out / s->tp * bpp + act);
	st->flops += 2 * s->b * in * out;
	*sys_bytes += act * s->groups * s->tp;
	st->cache += s->groups * s->tp * (by_rows ? gemm_traffic(s->bn, in / s->tp, out, bpp, p->en.tile) :
				gemm_traffic(s->bn, in, out / s->tp, bpp, p->en.tile));
	*sys_bytes += in * out * bpp * s->groups;
}

/* Gate and up split by columns, down by rows: one all-reduce at the end. */
static void split_ffn(const struct plan_params *p, const struct sys *s, struct stage *st,
		      double h, double f, double bpp, double *sys_bytes)
{
	split_linear(p, s, st, PLAN_TIME_FC, h, f, false, bpp, sys_bytes);
	split_linear(p, s, st, PLAN_TIME_FC, h, f, false, bpp, sys_bytes);
	split_linear(p, s, st, PLAN_TIME_FC, f, h, true, bpp, sys_bytes);
}

static void stage_layer(const struct plan_model *m, const struct plan_params *p,
			const struct plan_place *pl, const struct sys *s, unsigned i, double b,
			struct stage *st)
{
	double bpp = eff_bpp(m, p), h = m->hidden, k = s->k;
	struct linear l[6];
	size_t nl = attn_linears(m, l);
	double kv = kv_gpu_bytes(m, p, s->tp);

	memset(st, 0, sizeof(*st));
	for (size_t j = 0; j < nl; j++)
		split_linear(p, s, st, PLAN_TIME_FC, l[j].in, l[j].out, j + 1 == nl, bpp,
			     &st->attn_bytes);
	allreduce(m, p, s, st);		/* after the output projection */
	op(s, st, PLAN_TIME_ATTN, s->bn * p->context * attn_ctx_flops(m) / s->tp, kv * s->bn);
	st->flops += b * p->context * attn_ctx_flops(m);
	st->attn_bytes += kv * b * s->tp;
	st->cache += kv * b * s->tp;	/* the KV cache crosses L2 and L1 once per read */
	if (layer_is_moe(m, i)) {
		double eb = ffn_params(h, m->expert_ffn) * bpp;
		double used = s->distinct * eb;
		double rows = s->distinct > 0 ? b * k / s->distinct : 0;	/* tokens per activated expert */

		split_linear(p, s, st, PLAN_TIME_FC, h, m->experts, false, bpp, &st->dense_bytes);
		for (unsigned x = 0; x < m->shared_experts; x++) {
			split_ffn(p, s, st, h, m->shared_ffn, bpp, &st->dense_bytes);
			allreduce(m, p, s, st);
		}
		alltoall(m, p, s, st);
		/* The busiest GPU computes its experts on their tokens. */
		op(s, st, PLAN_TIME_EXPERTS, 2 * rows * ffn_params(h, m->expert_ffn) * s->ep_max,
		   s->ep_max * eb);
		st->gpu_fetch = s->ep_max * eb * (1 - pl->frac[PLAN_TIER_HBM]);
		allreduce(m, p, s, st);		/* sums the group's expert outputs */
		st->flops += 2 * b * k * ffn_params(h, m->expert_ffn);
		st->cache += s->distinct * (2 * gemm_traffic(rows, h, m->expert_ffn, bpp, p->en.tile) +
					    gemm_traffic(rows, m->expert_ffn, h, bpp, p->en.tile));
		for (int t = 0; t < PLAN_NTIERS; t++) {
			st->off[t] = used * pl->frac[t];
			st->node_off[t] = st->off[t] * s->per_node / s->gpus;
		}
		/* Fetched experts are read from HBM like resident ones. */
		st->hbm_read = st->attn_bytes + st->dense_bytes + used;
	} else {
		split_ffn(p, s, st, h, m->dense_ffn, bpp, &st->dense_bytes);
		allreduce(m, p, s, st);
		st->hbm_read = st->attn_bytes + st->dense_bytes;
	}
}

static void stage_head(const struct plan_model *m, const struct plan_params *p, const struct sys *s,
		       struct stage *st)
{
	memset(st, 0, sizeof(*st));
	if (m->vocab)
		split_linear(p, s, st, PLAN_TIME_FC, m->hidden, m->vocab, false, eff_bpp(m, p),
			     &st->dense_bytes);
	st->hbm_read = st->dense_bytes;
}

static double offload_bytes(const struct stage *st)
{
	return st->off[PLAN_TIER_DDR] + st->off[PLAN_TIER_SSD];
}

/* The model, the parameters, and what only makes sense for the two together. */
static int pair_check(const struct plan_model *m, const struct plan_params *p, char *err, size_t errlen)
{
	int r;

	r = plan_model_check(m, err, errlen);
	if (r < 0)
		return r;
	r = plan_params_check(p, err, errlen);
	if (r < 0)
		return r;
	if (p->top_k && !m->experts)
		return plan_fail(err, errlen, -EINVAL, "top-k %u: %s is a dense model", p->top_k, m->name);
	if (p->top_k > m->experts)
		return plan_fail(err, errlen, -EINVAL, "top-k %u exceeds the %u routed experts of %s",
			    p->top_k, m->experts, m->name);
	return 0;
}

static int place_check(const struct plan_place *pl, char *err, size_t errlen)
{
	double sum = 0;

	for (int t = 0; t < PLAN_NTIERS; t++) {
		if (!(pl->frac[t] >= 0) || pl->frac[t] > 1)
			return plan_fail(err, errlen, -EINVAL, "placement: fraction on %s must be in [0, 1]",
				    plan_tier_name(t));
		sum += pl->frac[t];
	}
	if (fabs(sum - 1) > 1e-9)
		return plan_fail(err, errlen, -EINVAL, "placement: fractions sum to %g, not 1", sum);
	return 0;
}

int plan_eval(const struct plan_model *m, const struct plan_params *p,
	      const struct plan_place *pl, unsigned batch, struct plan_result *r,
	      char *err, size_t errlen)
{
	return plan_eval_routed(m, p, pl, batch, NULL, r, err, errlen);
}

int plan_eval_routed(const struct plan_model *m, const struct plan_params *p,
		     const struct plan_place *pl, unsigned batch,
		     const struct plan_routing *routing, struct plan_result *r,
		     char *err, size_t errlen)
{
	const struct plan_hw *hw = &p->hw;
	const struct plan_energy *en = &p->en;
	double b = batch, e_step[PLAN_NPARTS] = { 0 };
	double static_w, ddr_installed, step = 0;
	struct plan_sizes sz;
	struct stage cur, next;
	struct sys s;
	unsigned nstages, holders, per_gpu, big;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = pair_check(m, p, err, errlen);
	if (ret < 0)
		return ret;
	ret = place_check(pl, err, errlen);
	if (ret < 0)
		return ret;
	if (!batch)
		return plan_fail(err, errlen, -EINVAL, "batch size must be positive");

	memset(&s, 0, sizeof(s));
	s.per_node = hw->gpus_per_node;
	s.gpus = (double)hw->nodes * hw->gpus_per_node;
	s.tp = plan_tp(hw);
	s.dp = s.gpus / s.tp;
	s.groups = fmin(b, s.dp);
	s.bn = ceil(b / s.dp);
	s.b = b;
	s.act = hw->act_bytes;
	s.flops_s = hw->gpu_tflops * 1e12;
	s.hbm_bs = hw->hbm_gbps * GB;
	s.link_bs = hw->link_gbps * GB;
	/* The node's DDR or SSD read rate caps its GPUs' links together; 0: the links set the pace. */
	s.ddr_bs = hw->ddr_gbps > 0 ? hw->ddr_gbps * GB : INFINITY;
	s.ssd_bs = hw->ssd_gbps > 0 ? hw->ssd_gbps * GB : INFINITY;
	s.k = eff_top_k(m, p);
	if (routing) {
		ret = plan_routing_stats(routing, m->experts, (unsigned)s.gpus, &s.distinct, &s.ep_max,
					 err, errlen);
		if (ret < 0)
			return ret;
	} else {
		s.distinct = plan_distinct_experts(m->experts, s.k, b);
		s.ep_max = plan_ep_max_uniform(m->experts, s.k, b, (unsigned)s.gpus);
	}
	plan_sizes_get(m, p, &sz);

	/*
	 * Stage i's work overlaps the transfer of stage i+1's offloaded experts
	 * (prefetch one layer ahead); the step repeats, so the first layer's
	 * experts arrive during the previous step's last stage (the LM head).
	 * Where the transfer is longer, the stage waits for it: the MoE time is
	 * the transfer less what the rest of the layer hides.
	 */
	nstages = m->layers + 1;
	stage_layer(m, p, pl, &s, 0, b, &next);
	for (unsigned i = 0; i < nstages; i++) {
		double ops = 0, t_hbm, t_off, busy, work, t;
		unsigned ni = (i + 1) % nstages;

		cur = next;
		if (ni < m->layers)
			stage_layer(m, p, pl, &s, ni, b, &next);
		else
			stage_head(m, p, &s, &next);

		ops = cur.t_op[PLAN_TIME_FC] + cur.t_op[PLAN_TIME_ATTN] + cur.t_op[PLAN_TIME_EXPERTS];
		/* The fetched bytes are written into HBM: they take HBM time from the kernels. */
		t_hbm = (cur.gpu_hbm + next.gpu_fetch) / s.hbm_bs;
		/* Rounding aside (the same bytes summed per kernel or at once), only the
		 * fetched bytes' writes make HBM longer than the kernels. */
		busy = t_hbm > ops * (1 + 1e-9) ? t_hbm : ops;
		work = busy + cur.t_op[PLAN_TIME_ALLREDUCE] + cur.t_op[PLAN_TIME_ALLTOALL];
		t_off = fmax(next.gpu_fetch / s.link_bs,
			     fmax(next.node_off[PLAN_TIER_DDR] / s.ddr_bs,
				  next.node_off[PLAN_TIER_SSD] / s.ssd_bs));
		t = fmax(work, t_off);
		step += t;
		for (int c = 0; c < PLAN_NTIMES; c++)
			r->time_s[c] += cur.t_op[c];
		r->time_s[PLAN_TIME_OFFLOAD] += (busy - ops) + (t - work);
		if (t_off > work)
			r->bound_offload++;
		else if (cur.gpu_hbm / s.hbm_bs >= cur.gpu_flops / s.flops_s)
			r->bound_hbm++;
		else
			r->bound_compute++;

		e_step[PLAN_PART_ATTN] += cur.attn_bytes * 8 * en->pj_hbm * PJ;
		e_step[PLAN_PART_DENSE] += cur.dense_bytes * 8 * en->pj_hbm * PJ;
		e_step[PLAN_PART_EXPERT_HBM] += cur.off[PLAN_TIER_HBM] * 8 * en->pj_hbm * PJ;
		e_step[PLAN_PART_EXPERT_DDR] += cur.off[PLAN_TIER_DDR] * 8 * en->pj_ddr * PJ;
		e_step[PLAN_PART_EXPERT_SSD] += cur.off[PLAN_TIER_SSD] * 8 * en->pj_flash *
						en->flash_scale * PJ;
		e_step[PLAN_PART_FETCH] += offload_bytes(&cur) * 8 * 2 * en->pj_hbm * PJ;
		e_step[PLAN_PART_COMPUTE] += cur.flops * en->pj_flop * PJ;
		e_step[PLAN_PART_CACHE] += cur.cache * 8 * (en->pj_l1 + en->pj_l2) * PJ;

		r->bytes_read[PLAN_TIER_HBM] += cur.hbm_read;
		r->bytes_read[PLAN_TIER_DDR] += cur.off[PLAN_TIER_DDR];
		r->bytes_read[PLAN_TIER_SSD] += cur.off[PLAN_TIER_SSD];
		r->hbm_write_bytes += offload_bytes(&cur);
		r->flops += cur.flops;
		r->cache_bytes += cur.cache;
		r->comm_bytes_per_gpu += cur.comm_bytes;
	}

	r->ddr_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_DDR];
	r->ssd_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_SSD];
	/*
	 * Every data-parallel group holds the resident weights; the KV cache is
	 * copied across a group where heads share it (MLA) or are fewer than its
	 * GPUs.  Fetched experts need HBM buffers for two layers: the one
	 * computing, the one arriving.
	 */
	r->hbm_need_bytes = sz.resident_bytes * s.dp + sz.routed_bytes * pl->frac[PLAN_TIER_HBM] +
			    sz.kv_bytes_per_token * p->context * b * kv_copies(m, s.tp) +
			    2 * s.distinct * sz.expert_bytes * (1 - pl->frac[PLAN_TIER_HBM]);
	/*
	 * Background power of every device for the whole step, as the paper: GPU
	 * idle (HBM included) and the DDR installed beside each GPU, in every
	 * placement (a pool larger than that is charged for its size).
	 */
	ddr_installed = s.gpus * en->ddr_gb_per_gpu * GB;
	static_w = s.gpus * en->gpu_idle_w +
		   en->ddr_static_w * fmax(ddr_installed, r->ddr_need_bytes) / (en->ddr_static_gb * GB) +
		   (pl->frac[PLAN_TIER_SSD] > 0 ? hw->nodes * en->ssd_idle_w : 0);
	e_step[PLAN_PART_STATIC] = static_w * step;

	ep_layout(m->experts, (unsigned)s.gpus, &holders, &per_gpu, &big);
	r->batch = batch;
	r->distinct_experts = s.distinct;
	r->ep_max_experts = s.ep_max;
	r->ep_mean_experts = holders ? s.distinct / holders : 0;
	r->ep_max_over_all = per_gpu ? s.ep_max / per_gpu : 0;
	r->latency_per_token_s = step;
	r->tokens_per_s = b / step;
	for (int i = 0; i < PLAN_NPARTS; i++) {
		r->energy_j[i] = e_step[i] / b;
		r->energy_per_token_j += r->energy_j[i];
	}
	return 0;
}

void plan_place_all(enum plan_tier t, struct plan_place *place)
{
	memset(place, 0, sizeof(*place));
	place->frac[t] = 1;
}

const char *plan_tier_name(enum plan_tier t)
{
	switch (t) {
	case PLAN_TIER_HBM:
		return "hbm";
	case PLAN_TIER_DDR:
		return "ddr";
	case PLAN_TIER_SSD:
		return "ssd";
	}
	return "?";
}

const char *plan_part_name(enum plan_part part)
{
	switch (part) {
	case PLAN_PART_ATTN:
		return "attention_kv";
	case PLAN_PART_DENSE:
		return "dense_shared";
	case PLAN_PART_EXPERT_HBM:
		return "experts_hbm";
	case PLAN_PART_EXPERT_DDR:
		return "experts_ddr";
	case PLAN_PART_EXPERT_SSD:
		return "experts_ssd";
	case PLAN_PART_FETCH:
		return "fetch_path";
	case PLAN_PART_COMPUTE:
		return "compute";
	case PLAN_PART_CACHE:
		return "onchip_cache";
	case PLAN_PART_STATIC:
		return "static";
	}
	return "?";
}

const char *plan_time_name(enum plan_time t)
{
	switch (t) {
	case PLAN_TIME_FC:
		return "fc";
	case PLAN_TIME_ATTN:
		return "attention";
	case PLAN_TIME_EXPERTS:
		return "experts";
	case PLAN_TIME_ALLREDUCE:
		return "allreduce";
	case PLAN_TIME_ALLTOALL:
		return "alltoall";
	case PLAN_TIME_OFFLOAD:
		return "offload_wait";
	}
	return "?";
}

double plan_result_weight_j(const struct plan_result *r)
{
	return r->energy_j[PLAN_PART_DENSE] + r->energy_j[PLAN_PART_EXPERT_HBM] +
	       r->energy_j[PLAN_PART_EXPERT_DDR] + r->energy_j[PLAN_PART_EXPERT_SSD] +
	       r->energy_j[PLAN_PART_FETCH];
}

static double objective_of(const struct plan_candidate *c, enum plan_objective o)
{
	switch (o) {
	case PLAN_OBJ_ENERGY:
		return c->r.energy_per_token_j;
	case PLAN_OBJ_LATENCY:
		return c->r.latency_per_token_s;
	}
	return 0;
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
	size_t ncand = 0, cap, fits = 0;
	double closest_score = INFINITY, min_hbm = INFINITY;
	unsigned steps = req->ddr_steps ? req->ddr_steps : 10;
	struct plan_sizes sz;
	int ret;

	*out = NULL;
	*n = 0;
	ret = pair_check(m, p, err, errlen);
	if (ret < 0)
		return ret;
	if (!req->nbatches)
		return plan_fail(err, errlen, -EINVAL, "select: no batch sizes");
	if (!(req->hbm_bytes >= 0) || !(req->ddr_bytes >= 0) || !(req->max_latency_s >= 0) ||
	    !(req->max_energy_j >= 0))
		return plan_fail(err, errlen, -EINVAL, "select: capacities and ceilings must not be negative");
	plan_sizes_get(m, p, &sz);

	cap = req->nbatches * (steps + 2);
	cand = calloc(cap, sizeof(*cand));
	if (!cand)
		return -ENOMEM;
	for (size_t bi = 0; bi < req->nbatches; bi++) {
		/* As plan_eval: resident weights in every data-parallel group, KV copies. */
		double tp = plan_tp(&p->hw), dp = (double)p->hw.nodes * p->hw.gpus_per_node / tp;
		double kv = sz.kv_bytes_per_token * p->context * req->batches[bi] * kv_copies(m, tp);
		double hbm_free = req->hbm_bytes - sz.resident_bytes * dp - kv;
		/* HBM buffers for the fetched experts of two layers (see plan_eval). */
		double buf = 2 * sz.expert_bytes *
			     plan_distinct_experts(m->experts, eff_top_k(m, p), req->batches[bi]);
		double h, rest, dmax;

		if (!req->batches[bi]) {
			ret = plan_fail(err, errlen, -EINVAL, "select: batch size must be positive");
			goto out;
		}
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
		/* DDR cache sizes 0, 1/steps, ... of the routed bytes, and the largest that fits. */
		for (unsigned s = 0; s <= steps + 1; s++) {
			struct plan_candidate c = { .batch = req->batches[bi] };
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
			c.place.frac[PLAN_TIER_DDR] = d;
			c.place.frac[PLAN_TIER_SSD] = fmax(0, 1 - h - d);
			ret = plan_eval(m, p, &c.place, c.batch, &c.r, err, errlen);
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

int plan_parse_batches(const char *s, unsigned *out, size_t max, size_t *n)
{
	const char *q = s;
	char *end;

	*n = 0;
	if (!*s)
		return -EINVAL;
	while (*q) {
		unsigned long a, b;

		if (*q < '0' || *q > '9')
			return -EINVAL;
		errno = 0;
		a = strtoul(q, &end, 10);
		if (errno || !a || a > 1u << 24)
			return -ERANGE;
		b = a;
		q = end;
		if (*q == '-') {
			q++;
			if (*q < '0' || *q > '9')
				return -EINVAL;
			b = strtoul(q, &end, 10);
			if (errno || b < a || b > 1u << 24)
				return -ERANGE;
			q = end;
		}
		/* A range doubles from its start: 1-1024 is 1,2,4,...,1024. */
		for (unsigned long v = a; v <= b; v *= 2) {
			if (*n >= max)
				return -E2BIG;
			out[(*n)++] = (unsigned)v;
		}
		if (*q == ',')
			q++;
		else if (*q)
			return -EINVAL;
		if (*q == '\0' && q[-1] == ',')
			return -EINVAL;
	}
	return 0;
}
