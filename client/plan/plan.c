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
	p->en.ssd_idle_w = 0;
	p->en.tile = 128;
	p->context = 1024;
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
	{ "ssd_idle_w", "energy", KEY_DOUBLE, EN(ssd_idle_w), 0, 1e6, false },
	{ "tile", "energy", KEY_UINT, EN(tile), 1, 1 << 20, false },
	{ "context", "model", KEY_UINT, PP(context), 0, 1 << 30, false },
	{ "top_k", "model", KEY_UINT, PP(top_k), 0, 1 << 20, false },
	{ "bytes_per_param", "model", KEY_DOUBLE, PP(bytes_per_param), 0, 64, false },
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

/* Work of one layer (or of the LM head) for one step. */
struct stage {
	double hbm_read;	/* bytes */
	double off[PLAN_NTIERS];	/* routed bytes by home tier */
	double flops;
	double cache;		/* on-chip bytes */
	double attn_bytes, dense_bytes;
};

static void stage_layer(const struct plan_model *m, const struct plan_params *p,
			const struct plan_place *pl, unsigned i, double b, double distinct,
			unsigned k, struct stage *st)
{
	double bpp = eff_bpp(m, p), h = m->hidden;
	unsigned tile = p->en.tile;
	struct linear l[6];
	size_t nl = attn_linears(m, l);
	double ctx = p->context, kv = kv_elems(m) * bpp * ctx * b;

	memset(st, 0, sizeof(*st));
	st->attn_bytes = attn_params(m) * bpp + kv;
	for (size_t j = 0; j < nl; j++) {
		st->flops += 2 * b * l[j].in * l[j].out;
		st->cache += gemm_traffic(b, l[j].in, l[j].out, bpp, tile);
	}
	st->flops += b * ctx * attn_ctx_flops(m);
	st->cache += kv;	/* the KV cache crosses L2 and L1 once */
	if (layer_is_moe(m, i)) {
		double eb = ffn_params(h, m->expert_ffn) * bpp;
		double used = distinct * eb;
		double rows = distinct > 0 ? b * k / distinct : 0;	/* tokens per activated expert */

		st->dense_bytes = (h * m->experts + m->shared_experts * ffn_params(h, m->shared_ffn)) * bpp;
		st->flops += 2 * b * h * m->experts;
		st->cache += gemm_traffic(b, h, m->experts, bpp, tile);
		for (unsigned s = 0; s < m->shared_experts; s++) {
			st->flops += 2 * b * ffn_params(h, m->shared_ffn);
			st->cache += 2 * gemm_traffic(b, h, m->shared_ffn, bpp, tile) +
				     gemm_traffic(b, m->shared_ffn, h, bpp, tile);
		}
		st->flops += 2 * b * k * ffn_params(h, m->expert_ffn);
		st->cache += distinct * (2 * gemm_traffic(rows, h, m->expert_ffn, bpp, tile) +
					 gemm_traffic(rows, m->expert_ffn, h, bpp, tile));
		for (int t = 0; t < PLAN_NTIERS; t++)
			st->off[t] = used * pl->frac[t];
		/* Fetched experts are read from HBM like resident ones. */
		st->hbm_read = st->attn_bytes + st->dense_bytes + used;
	} else {
		st->dense_bytes = ffn_params(h, m->dense_ffn) * bpp;
		st->flops += 2 * b * ffn_params(h, m->dense_ffn);
		st->cache += 2 * gemm_traffic(b, h, m->dense_ffn, bpp, tile) +
			     gemm_traffic(b, m->dense_ffn, h, bpp, tile);
		st->hbm_read = st->attn_bytes + st->dense_bytes;
	}
}

static void stage_head(const struct plan_model *m, const struct plan_params *p, double b,
		       struct stage *st)
{
	double bpp = eff_bpp(m, p);

	memset(st, 0, sizeof(*st));
	st->dense_bytes = (double)m->vocab * m->hidden * bpp;
	st->hbm_read = st->dense_bytes;
	st->flops = 2 * b * m->vocab * m->hidden;
	st->cache = gemm_traffic(b, m->hidden, m->vocab, bpp, p->en.tile);
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
	const struct plan_hw *hw = &p->hw;
	const struct plan_energy *en = &p->en;
	double gpus, flops_s, hbm_bs, link_bs, ddr_bs, ssd_bs, b = batch;
	double e_step[PLAN_NPARTS] = { 0 };
	double distinct, static_w, step = 0;
	struct plan_sizes sz;
	struct stage cur, next;
	unsigned k, nstages;
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

	gpus = (double)hw->nodes * hw->gpus_per_node;
	flops_s = gpus * hw->gpu_tflops * 1e12;
	hbm_bs = gpus * hw->hbm_gbps * GB;
	link_bs = gpus * hw->link_gbps * GB;
	ddr_bs = hw->ddr_gbps > 0 ? hw->nodes * hw->ddr_gbps * GB : link_bs;
	ssd_bs = hw->ssd_gbps > 0 ? hw->nodes * hw->ssd_gbps * GB : link_bs;
	k = eff_top_k(m, p);
	distinct = plan_distinct_experts(m->experts, k, b);
	plan_sizes_get(m, p, &sz);

	/*
	 * Stage i's time overlaps the transfer of stage i+1's offloaded experts
	 * (prefetch one layer ahead); the step repeats, so the first layer's
	 * experts arrive during the previous step's last stage (the LM head).
	 */
	nstages = m->layers + 1;
	stage_layer(m, p, pl, 0, b, distinct, k, &next);
	for (unsigned i = 0; i < nstages; i++) {
		double t_compute, t_hbm, t_off, t;
		unsigned ni = (i + 1) % nstages;

		cur = next;
		if (ni < m->layers)
			stage_layer(m, p, pl, ni, b, distinct, k, &next);
		else
			stage_head(m, p, b, &next);

		t_compute = cur.flops / flops_s;
		/* The fetched bytes are written into HBM: they take HBM time from compute. */
		t_hbm = (cur.hbm_read + offload_bytes(&next)) / hbm_bs;
		t_off = fmax(offload_bytes(&next) / link_bs,
			     fmax(next.off[PLAN_TIER_DDR] / ddr_bs, next.off[PLAN_TIER_SSD] / ssd_bs));
		t = fmax(t_compute, fmax(t_hbm, t_off));
		step += t;
		if (t == t_off && t_off > 0)
			r->bound_offload++;
		else if (t == t_hbm)
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
	}

	r->ddr_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_DDR];
	r->ssd_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_SSD];
	/* Fetched experts need HBM buffers for two layers: the one computing, the one arriving. */
	r->hbm_need_bytes = sz.resident_bytes + sz.routed_bytes * pl->frac[PLAN_TIER_HBM] +
			    sz.kv_bytes_per_token * p->context * b +
			    2 * distinct * sz.expert_bytes * (1 - pl->frac[PLAN_TIER_HBM]);
	static_w = gpus * en->gpu_idle_w +
		   en->ddr_static_w * r->ddr_need_bytes / (en->ddr_static_gb * GB) +
		   (pl->frac[PLAN_TIER_SSD] > 0 ? hw->nodes * en->ssd_idle_w : 0);
	e_step[PLAN_PART_STATIC] = static_w * step;

	r->batch = batch;
	r->distinct_experts = distinct;
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
		double kv = sz.kv_bytes_per_token * p->context * req->batches[bi];
		double hbm_free = req->hbm_bytes - sz.resident_bytes - kv;
		/* HBM buffers for the fetched experts of two layers (see plan_eval). */
		double buf = 2 * sz.expert_bytes *
			     plan_distinct_experts(m->experts, eff_top_k(m, p), req->batches[bi]);
		double h, rest, dmax;

		if (!req->batches[bi]) {
			ret = plan_fail(err, errlen, -EINVAL, "select: batch size must be positive");
			goto out;
		}
		min_hbm = fmin(min_hbm, sz.resident_bytes + kv + fmin(buf, sz.routed_bytes));
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
