/* SPDX-License-Identifier: MIT */
/*
 * The per-token energy and latency model behind `tierctl plan`.  Pure functions:
 * no I/O, no globals, so every figure can be checked by hand in a unit test.
 *
 * One decode step of a batch of B requests, each with `context` tokens in its KV
 * cache, is walked layer by layer on the GPU that sets the pace (tensor
 * parallelism inside a node, data parallelism across nodes, expert parallelism
 * over every GPU): bytes read from each tier, FLOPs, on-chip cache traffic,
 * all-reduce and all-to-all time, and the wait for the next layer's offloaded
 * experts (prefetched one layer ahead) where their transfer outlasts the layer.
 * Energies are per token (the step's joules divided by B), background power
 * counted for every device.  Method and defaults follow the SSD-offloading
 * energy paper (Kyung, Yun, Ahn, IEEE CAL 2025) and its modeling tool; see
 * tierctl-plan(8).
 */
#ifndef TIERD_PLAN_H
#define TIERD_PLAN_H

#include <stddef.h>

/* Where routed experts live.  Dense, shared and attention weights stay in HBM. */
enum plan_tier {
	PLAN_TIER_HBM,
	PLAN_TIER_DDR,
	PLAN_TIER_SSD,
};
#define PLAN_NTIERS 3

enum plan_attn {
	PLAN_ATTN_GQA,	/* grouped-query (MHA when kv_heads == heads) */
	PLAN_ATTN_MLA,	/* multi-head latent attention, DeepSeek-V2/V3 */
};

/* Per-token energy components. */
enum plan_part {
	PLAN_PART_ATTN,		/* attention weights + KV cache reads (HBM) */
	PLAN_PART_DENSE,	/* dense FFN, shared experts, routers, LM head (HBM) */
	PLAN_PART_EXPERT_HBM,	/* routed experts resident in HBM, read */
	PLAN_PART_EXPERT_DDR,	/* routed experts read from DDR */
	PLAN_PART_EXPERT_SSD,	/* routed experts read from Flash */
	PLAN_PART_FETCH,	/* HBM write + HBM read of fetched experts */
	PLAN_PART_COMPUTE,	/* FLOPs */
	PLAN_PART_CACHE,	/* on-chip L1/L2 traffic of the tiled matmuls */
	PLAN_PART_STATIC,	/* idle power x step time */
};
#define PLAN_NPARTS 9

/* Where the step's time goes, on the critical path (the busiest GPU). */
enum plan_time {
	PLAN_TIME_FC,		/* projections, dense FFN, shared experts, router, LM head */
	PLAN_TIME_ATTN,		/* KV cache reads and attention scores */
	PLAN_TIME_EXPERTS,	/* routed experts on the GPU with the most activated */
	PLAN_TIME_ALLREDUCE,	/* tensor-parallel all-reduce inside a node (NVLink) */
	PLAN_TIME_ALLTOALL,	/* expert-parallel dispatch and combine (NVLink, InfiniBand) */
	PLAN_TIME_OFFLOAD,	/* waiting for the next layer's experts, and their HBM writes */
};
#define PLAN_NTIMES 6

struct plan_model {
	char name[64];
	unsigned layers;
	unsigned hidden;
	unsigned vocab;			/* LM head rows; 0: no head */
	double bytes_per_param;		/* 2 for BF16 */

	enum plan_attn attn;
	unsigned heads;
	unsigned kv_heads;		/* GQA */
	unsigned head_dim;		/* GQA */
	unsigned q_lora;		/* MLA; 0: plain query projection */
	unsigned kv_lora;		/* MLA */
	unsigned rope_dim;		/* MLA */
	unsigned nope_dim;		/* MLA */
	unsigned v_dim;			/* MLA */

	unsigned dense_ffn;		/* intermediate size of dense FFN layers */
	unsigned experts;		/* routed experts per MoE layer; 0: dense model */
	unsigned top_k;
	unsigned expert_ffn;
	unsigned shared_experts;
	unsigned shared_ffn;		/* intermediate size of one shared expert */
	/* Layer i (from 0) is MoE iff i >= first_dense and (i + moe_phase) % moe_step == 0. */
	unsigned first_dense;
	unsigned moe_step;
	unsigned moe_phase;
};

/*
 * The system.  Weights other than routed experts are split by tensor
 * parallelism over `tp` GPUs of a node and replicated over the nodes (data
 * parallelism: each node serves batch / nodes requests); routed experts are
 * spread over every GPU (expert parallelism).
 */
struct plan_hw {
	char name[64];
	unsigned nodes;
	unsigned gpus_per_node;
	unsigned tp;			/* tensor-parallel degree inside a node; 0: gpus_per_node */
	double gpu_tflops;		/* dense BF16, per GPU */
	double hbm_gbps;		/* per GPU */
	double hbm_gib;			/* per GPU */
	double link_gbps;		/* offload link into each GPU, per direction */
	double ddr_gbps;		/* DDR read per node feeding the links; 0: as fast as the links */
	double ssd_gbps;		/* Flash read per node; 0: as fast as the links */
	double ddr_gib;			/* installed per node (default capacity for select) */
	double nvlink_gbps;		/* GPU-to-GPU NVLink per GPU and direction (all-reduce, all-to-all) */
	double nvlink_lat_us;		/* per transfer (ring hop) */
	double ib_gbps;			/* InfiniBand per GPU (one port each) and direction */
	double ib_lat_us;
	double act_bytes;		/* bytes per activation element on the wire (BF16: 2) */
};

struct plan_energy {
	double pj_hbm;			/* pJ/b, HBM read (and write of fetched weights) */
	double pj_ddr;			/* pJ/b, DDR read incl. I/O */
	double pj_flash;		/* pJ/b, Flash read incl. I/O */
	double flash_scale;		/* what-if factor on pj_flash */
	double pj_l1;			/* pJ/b */
	double pj_l2;			/* pJ/b */
	double pj_flop;			/* pJ per FLOP (2 per MAC) */
	double gpu_idle_w;		/* per GPU, includes its HBM */
	double ddr_static_w;		/* W per ddr_static_gb of installed DDR */
	double ddr_static_gb;
	double ddr_gb_per_gpu;		/* DDR installed per GPU, charged static power in every placement */
	double ssd_idle_w;		/* per node, when experts live on SSD */
	unsigned tile;			/* output tile edge of the matmuls (cache model) */
};

struct plan_params {
	struct plan_hw hw;
	struct plan_energy en;
	unsigned context;		/* tokens in each request's KV cache */
	unsigned mla_kv_reads;		/* MLA: reads of the latent cache per step (2: scores, then values) */
	unsigned top_k;			/* 0: the model's */
	double bytes_per_param;		/* 0: the model's */
};

/* Fraction of the routed experts on each tier; sums to 1. */
struct plan_place {
	double frac[PLAN_NTIERS];
};

struct plan_result {
	unsigned batch;
	double energy_j[PLAN_NPARTS];	/* per token */
	double energy_per_token_j;
	double latency_per_token_s;	/* the step time: each request gets one token per step */
	double tokens_per_s;
	double bytes_read[PLAN_NTIERS];	/* per step; HBM includes re-reads of fetched experts */
	double hbm_write_bytes;		/* per step, fetched experts */
	double flops;			/* per step */
	double cache_bytes;		/* per step, on-chip traffic */
	double distinct_experts;	/* expected, per MoE layer */
	double time_s[PLAN_NTIMES];	/* per step; sums to latency_per_token_s */
	/* Expert parallelism, per MoE layer: activated experts on the busiest GPU
	 * (expected maximum over GPUs), on the average GPU, and the paper's
	 * imbalance ratio (busiest over all of a GPU's experts activated). */
	double ep_max_experts;
	double ep_mean_experts;
	double ep_max_over_all;
	double comm_bytes_per_gpu;	/* per step, sent by one GPU (all-reduce, dispatch, combine) */
	/* Layers whose time is set by compute, HBM, or the offload transfer. */
	unsigned bound_compute, bound_hbm, bound_offload;
	/* Capacity the placement needs, whole system. */
	double hbm_need_bytes;		/* resident weights, HBM experts, KV cache */
	double ddr_need_bytes;
	double ssd_need_bytes;
};

/* Static sizes of a model, whole system, bytes. */
struct plan_sizes {
	double params;
	double resident_bytes;		/* everything but routed experts */
	double routed_bytes;		/* all routed experts of all MoE layers */
	double expert_bytes;		/* one routed expert of one layer */
	double kv_bytes_per_token;	/* one context token, all layers */
	unsigned moe_layers;
};

/* The tensor-parallel degree in effect: tp, or every GPU of a node when 0. */
unsigned plan_tp(const struct plan_hw *hw);

/* Paper defaults: DGX H100 with NVLink 5 offload links, energies of the reference. */
void plan_params_default(struct plan_params *p);
/* "pj_flash" = "51.2" etc.; -ENOENT for an unknown key, -EINVAL/-ERANGE with err. */
int plan_set(struct plan_params *p, const char *key, const char *value, char *err, size_t errlen);
/* The section ("hardware", "energy", "model") of a key plan_set knows, or NULL. */
const char *plan_key_section(const char *key);
/* The i-th key plan_set knows; NULL past the last. */
const char *plan_key_name(size_t i);

int plan_model_check(const struct plan_model *m, char *err, size_t errlen);
int plan_params_check(const struct plan_params *p, char *err, size_t errlen);
int plan_sizes_get(const struct plan_model *m, const struct plan_params *p, struct plan_sizes *s);

/* E * (1 - (1 - k/E)^B): expected distinct experts B uniform tokens activate. */
double plan_distinct_experts(unsigned experts, unsigned top_k, double batch);

/*
 * Expected number of activated experts on the busiest of `gpus` GPUs that hold
 * `experts` experts evenly, when B tokens route uniformly (top-k of E each):
 * each expert is active with probability p = 1 - (1 - k/E)^B, a GPU's count is
 * Binomial(E/gpus, p), and E[max] = sum_j (1 - F(j - 1)^gpus), the GPUs taken
 * as independent (checked against a Monte-Carlo in tests/test-plan.c).
 */
double plan_ep_max_uniform(unsigned experts, unsigned top_k, double batch, unsigned gpus);

/*
 * Measured routing instead of the uniform formula: freq[d] is how often
 * (any non-negative weights; normalised here) one layer of one batch activated
 * d distinct experts, d = 0 .. n - 1.  Given d, the activated experts are taken
 * as a random d-subset, so a GPU's count is hypergeometric.
 */
struct plan_routing {
	const double *freq;
	size_t n;			/* at most experts + 1 */
};

/* Mean distinct experts and expected busiest-GPU count of a measured distribution. */
int plan_routing_stats(const struct plan_routing *rt, unsigned experts, unsigned gpus,
		       double *mean_distinct, double *ep_max, char *err, size_t errlen);

/* One decode step.  -EINVAL (with err) when an input is out of range. */
int plan_eval(const struct plan_model *m, const struct plan_params *p,
	      const struct plan_place *place, unsigned batch, struct plan_result *r,
	      char *err, size_t errlen);
/* The same with a measured distribution of distinct experts for this batch size
 * (NULL: uniform routing, as plan_eval). */
int plan_eval_routed(const struct plan_model *m, const struct plan_params *p,
		     const struct plan_place *place, unsigned batch,
		     const struct plan_routing *routing, struct plan_result *r,
		     char *err, size_t errlen);

/* The three placements of the paper. */
void plan_place_all(enum plan_tier t, struct plan_place *place);
const char *plan_tier_name(enum plan_tier t);
const char *plan_part_name(enum plan_part part);
const char *plan_time_name(enum plan_time t);
/* Sum of the weight components (attention KV excluded): the part batching amortises. */
double plan_result_weight_j(const struct plan_result *r);

enum plan_objective {
	PLAN_OBJ_ENERGY,
	PLAN_OBJ_LATENCY,
};

struct plan_select_req {
	double hbm_bytes;		/* capacity, whole system */
	double ddr_bytes;
	double max_latency_s;		/* 0: no ceiling */
	double max_energy_j;		/* per token; 0: no ceiling */
	enum plan_objective objective;
	const unsigned *batches;
	size_t nbatches;
	unsigned ddr_steps;		/* DDR cache sizes tried: k/ddr_steps of the routed bytes */
};

struct plan_candidate {
	unsigned batch;
	struct plan_place place;
	struct plan_result r;
};

/*
 * Lists the feasible (batch, placement) pairs, best first by the objective, in
 * *out (free() it).  Routed experts fill the HBM left after resident weights and
 * KV cache (HBM is never the worse tier), then DDR caches a fraction of the rest
 * (hit rate = that fraction under uniform routing), the remainder stays on SSD.
 * -ENOSPC when nothing fits, -ERANGE when nothing meets the ceilings; err says
 * which constraint and what the closest candidate achieves.
 */
int plan_select(const struct plan_model *m, const struct plan_params *p,
		const struct plan_select_req *req, struct plan_candidate **out, size_t *n,
		char *err, size_t errlen);

/* Parses "1,2,4" or "1-1024" (powers of two) into at most max values. */
int plan_parse_batches(const char *s, unsigned *out, size_t max, size_t *n);

/* Writes the message into err (when there is room) and returns r: the error
 * path of the plan, plan_hw and plan_model functions. */
int plan_fail(char *err, size_t errlen, int r, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
