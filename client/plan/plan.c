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
#include "plan-int.h"

static bool layer_is_moe(const struct plan_model *m, unsigned i)
{
	return m->experts && i >= m->first_dense && (i + m->moe_phase) % m->moe_step == 0;
}

unsigned plan_eff_top_k(const struct plan_model *m, const struct plan_params *p)
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
double plan_kv_copies(const struct plan_model *m, double tp)
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
int plan_pair_check(const struct plan_model *m, const struct plan_params *p, char *err, size_t errlen)
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
	if (!(pl->ddr_pool >= 0) || pl->ddr_pool > 1)
		return plan_fail(err, errlen, -EINVAL, "placement: DDR pool of %g of the routed experts, "
				 "not in [0, 1]", pl->ddr_pool);
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
	ret = plan_pair_check(m, p, err, errlen);
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
	s.k = plan_eff_top_k(m, p);
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

	if (pl->ddr_pool > 0) {		/* a cache: NVMe holds what HBM does not */
		r->ddr_need_bytes = sz.routed_bytes * pl->ddr_pool;
		r->ssd_need_bytes = sz.routed_bytes * (1 - pl->frac[PLAN_TIER_HBM]);
	} else {
		r->ddr_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_DDR];
		r->ssd_need_bytes = sz.routed_bytes * pl->frac[PLAN_TIER_SSD];
	}
	/*
	 * Every data-parallel group holds the resident weights; the KV cache is
	 * copied across a group where heads share it (MLA) or are fewer than its
	 * GPUs.  Fetched experts need HBM buffers for two layers: the one
	 * computing, the one arriving.
	 */
	r->hbm_need_bytes = sz.resident_bytes * s.dp + sz.routed_bytes * pl->frac[PLAN_TIER_HBM] +
			    sz.kv_bytes_per_token * p->context * b * plan_kv_copies(m, s.tp) +
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

	plan_ep_layout(m->experts, (unsigned)s.gpus, &holders, &per_gpu, &big);
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
