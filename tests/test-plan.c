/* SPDX-License-Identifier: MIT */
/* Unit tests of the plan model (client/plan/plan.c), model configs and hardware files. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "plan.h"
#include "plan_hw.h"
#include "plan_model.h"

#define PJ 1e-12

/* Equal up to rounding of a few floating-point operations. */
static void assert_close(double got, double want)
{
	double tol = 1e-12 * fmax(fabs(want), 1e-30);

	if (fabs(got - want) > tol)
		fail_msg("got %.17g, want %.17g", got, want);
}

/*
 * One layer, one expert (so the batch always activates it), no LM head, and
 * hardware with round numbers: 2000 FLOP/s, HBM 1000 B/s, link 100 B/s.
 * Bytes by hand:
 *   attention q, k, v, o: 4 x (4 x 4) params = 64 params = 128 B
 *   KV cache: 2 (k, v) x 1 head x 4 dims x 2 B = 16 B per token, x 10 tokens = 160 B
 *   router: 4 x 1 params = 8 B
 *   expert: 3 x 4 x 8 params = 96 params = 192 B
 *   activations (2 B) in and out of each projection: q, k, v, o 4 x (4 + 4) x 2 =
 *   64 B per token; router (4 + 1) x 2 = 10 B per token
 */
static void tiny(struct plan_model *m, struct plan_params *p)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "tiny");
	m->layers = 1;
	m->hidden = 4;
	m->vocab = 0;
	m->bytes_per_param = 2;
	m->attn = PLAN_ATTN_GQA;
	m->heads = 1;
	m->kv_heads = 1;
	m->head_dim = 4;
	m->experts = 1;
	m->top_k = 1;
	m->expert_ffn = 8;
	m->moe_step = 1;

	plan_params_default(p);
	p->hw.nodes = 1;
	p->hw.gpus_per_node = 1;
	p->hw.gpu_tflops = 2e-9;
	p->hw.hbm_gbps = 1e-6;
	p->hw.link_gbps = 1e-7;
	p->hw.ddr_gbps = 0;
	p->hw.ssd_gbps = 0;
	p->en.pj_hbm = 1;
	p->en.pj_ddr = 2;
	p->en.pj_flash = 10;
	p->en.flash_scale = 1;
	p->en.pj_l1 = 0;
	p->en.pj_l2 = 0;
	p->en.pj_flop = 1;
	p->en.gpu_idle_w = 1;
	p->en.ddr_static_w = 0;
	p->en.ssd_idle_w = 0;
	p->context = 10;
}

static void eval_ok(const struct plan_model *m, const struct plan_params *p, enum plan_tier t,
		    unsigned batch, struct plan_result *r)
{
	struct plan_place pl;
	char err[256];

	plan_place_all(t, &pl);
	if (plan_eval(m, p, &pl, batch, r, err, sizeof(err)) < 0)
		fail_msg("plan_eval: %s", err);
}

static void test_hand_hbm(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;

	tiny(&m, &p);
	eval_ok(&m, &p, PLAN_TIER_HBM, 1, &r);
	/* HBM reads 128 + 64 + 160 + 8 + 10 + 192 = 562 B at 1000 B/s: 0.562 s; every
	 * kernel is HBM-bound (compute: 488 FLOP = 2*64 + 4*1*4*10 + 2*4 + 2*96 at
	 * 2000 FLOP/s = 0.244 s).  One GPU: no all-reduce, no all-to-all. */
	assert_close(r.flops, 488);
	assert_close(r.bytes_read[PLAN_TIER_HBM], 562);
	assert_close(r.latency_per_token_s, 0.562);
	assert_close(r.time_s[PLAN_TIME_FC], 0.128 + 0.064 + 0.018);
	assert_close(r.time_s[PLAN_TIME_ATTN], 0.160);
	assert_close(r.time_s[PLAN_TIME_EXPERTS], 0.192);
	assert_close(r.time_s[PLAN_TIME_ALLREDUCE] + r.time_s[PLAN_TIME_ALLTOALL], 0);
	assert_close(r.time_s[PLAN_TIME_OFFLOAD], 0);
	assert_int_equal(r.bound_hbm, 2);	/* the empty head stage counts as HBM-bound */
	assert_close(r.distinct_experts, 1);
	assert_close(r.energy_j[PLAN_PART_ATTN], 352 * 8 * PJ);
	assert_close(r.energy_j[PLAN_PART_DENSE], 18 * 8 * PJ);
	assert_close(r.energy_j[PLAN_PART_EXPERT_HBM], 192 * 8 * PJ);
	assert_close(r.energy_j[PLAN_PART_EXPERT_SSD], 0);
	assert_close(r.energy_j[PLAN_PART_FETCH], 0);
	assert_close(r.energy_j[PLAN_PART_COMPUTE], 488 * PJ);
	assert_close(r.energy_j[PLAN_PART_CACHE], 0);
	assert_close(r.energy_j[PLAN_PART_STATIC], 0.562);
	assert_close(r.energy_per_token_j, 0.562 + (2816 + 144 + 1536 + 488) * PJ);

	/* Batch 2: the KV cache and activations double, weights are read once; per
	 * token, halved.  128 + 128 + 320 + 8 + 20 + 192 B. */
	eval_ok(&m, &p, PLAN_TIER_HBM, 2, &r);
	assert_close(r.latency_per_token_s, 0.796);
	assert_close(r.flops, 976);
	assert_close(r.energy_j[PLAN_PART_ATTN], 576 * 8 * PJ / 2);
	assert_close(r.energy_j[PLAN_PART_EXPERT_HBM], 192 * 8 * PJ / 2);
	assert_close(r.energy_j[PLAN_PART_STATIC], 0.796 / 2);
	assert_close(r.tokens_per_s, 2 / 0.796);
}

static void test_hand_ssd_ddr(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;

	tiny(&m, &p);
	/* SSD: the layer takes 0.562 s; the head stage overlaps the prefetch of the
	 * next step's expert, 192 B over a 100 B/s link = 1.92 s, all of it waited for. */
	eval_ok(&m, &p, PLAN_TIER_SSD, 1, &r);
	assert_close(r.latency_per_token_s, 0.562 + 1.92);
	assert_close(r.time_s[PLAN_TIME_OFFLOAD], 1.92);
	assert_int_equal(r.bound_offload, 1);
	assert_close(r.bytes_read[PLAN_TIER_SSD], 192);
	assert_close(r.hbm_write_bytes, 192);
	assert_close(r.energy_j[PLAN_PART_EXPERT_HBM], 0);
	assert_close(r.energy_j[PLAN_PART_EXPERT_SSD], 192 * 8 * 10 * PJ);
	assert_close(r.energy_j[PLAN_PART_FETCH], 192 * 8 * 2 * PJ);
	assert_close(r.energy_j[PLAN_PART_STATIC], 2.482);
	/* Flash at a tenth of the energy. */
	p.en.flash_scale = 0.1;
	eval_ok(&m, &p, PLAN_TIER_SSD, 1, &r);
	assert_close(r.energy_j[PLAN_PART_EXPERT_SSD], 192 * 8 * 1 * PJ);

	/* DDR slower than the link (50 B/s), and 1 W of DDR static power per 192 B
	 * held (none installed beside the GPU, so the pool's size is charged). */
	tiny(&m, &p);
	p.hw.ddr_gbps = 5e-8;
	p.en.ddr_static_w = 1;
	p.en.ddr_static_gb = 192e-9;
	p.en.ddr_gb_per_gpu = 0;
	eval_ok(&m, &p, PLAN_TIER_DDR, 1, &r);
	assert_close(r.latency_per_token_s, 0.562 + 3.84);
	assert_close(r.ddr_need_bytes, 192);
	assert_close(r.energy_j[PLAN_PART_EXPERT_DDR], 192 * 8 * 2 * PJ);
	assert_close(r.energy_j[PLAN_PART_FETCH], 192 * 8 * 2 * PJ);
	assert_close(r.energy_j[PLAN_PART_STATIC], 2 * 4.402);
	/* 192 B installed beside the GPU: charged in every placement, HBM too. */
	p.en.ddr_gb_per_gpu = 192e-9;
	eval_ok(&m, &p, PLAN_TIER_HBM, 1, &r);
	assert_close(r.energy_j[PLAN_PART_STATIC], 2 * 0.562);
}

static void test_hand_cache(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;

	tiny(&m, &p);
	p.en.tile = 2;
	p.en.pj_l1 = 1;
	/*
	 * Tiles of 2: an M x K by K x N product moves 2 B x (ceil(M/2) K N +
	 * ceil(N/2) M K + M N).  With M = 1: q, k, v, o (4x4) 56 B each; router
	 * (4x1) 18 B; gate and up (4x8) 112 B each, down (8x4) 104 B; plus the
	 * 160 B KV cache.  730 B in all.
	 */
	eval_ok(&m, &p, PLAN_TIER_HBM, 1, &r);
	assert_close(r.cache_bytes, 730);
	assert_close(r.energy_j[PLAN_PART_CACHE], 730 * 8 * PJ);
}

/* splitmix64: a small seeded generator, so the test is the same on every run. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
	/* Rejection keeps it exactly uniform. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

	do
		x = rng_next(s);
	while (x >= limit);
	return (unsigned)(x % n);
}

/*
 * Each token picks top_k distinct experts uniformly at random (as a router with
 * uniform scores would), independently of the other tokens; the mean number of
 * distinct experts over N trials is compared with E (1 - (1 - k/E)^B).  The
 * tolerance is 5 standard errors of that mean (estimated from the same trials):
 * a correct formula fails with probability below 1e-6; the fixed seed makes
 * the outcome reproducible.  The small absolute term covers the case where every
 * trial activates every expert (zero variance) while the formula is a hair below E.
 */
static void mc_check(unsigned experts, unsigned k, unsigned batch, unsigned trials, uint64_t seed)
{
	unsigned char used[512], chosen[512];
	double sum = 0, sum2 = 0, mean, var, se, want;

	assert_true(experts <= sizeof(used));
	for (unsigned t = 0; t < trials; t++) {
		unsigned distinct = 0;

		memset(used, 0, experts);
		for (unsigned b = 0; b < batch; b++) {
			memset(chosen, 0, experts);
			for (unsigned j = 0; j < k; j++) {
				unsigned e;

				do
					e = rng_below(&seed, experts);
				while (chosen[e]);
				chosen[e] = 1;
				if (!used[e]) {
					used[e] = 1;
					distinct++;
				}
			}
		}
		sum += distinct;
		sum2 += (double)distinct * distinct;
	}
	mean = sum / trials;
	var = fmax(0, (sum2 - sum * mean) / (trials - 1));
	se = sqrt(var / trials);
	want = plan_distinct_experts(experts, k, batch);
	if (fabs(mean - want) > 5 * se + 1e-3)
		fail_msg("E=%u k=%u B=%u: Monte-Carlo mean %.5f vs formula %.5f (5 se = %.5f)",
			 experts, k, batch, mean, want, 5 * se);
}

static void test_distinct_monte_carlo(void **state)
{
	static const unsigned mixtral_b[] = { 1, 2, 3, 5, 8, 16 };
	static const unsigned deepseek_b[] = { 1, 4, 16, 64, 256 };
	static const unsigned olmoe_b[] = { 2, 7, 32 };

	for (size_t i = 0; i < sizeof(mixtral_b) / sizeof(mixtral_b[0]); i++)
		mc_check(8, 2, mixtral_b[i], 20000, 1 + i);
	for (size_t i = 0; i < sizeof(deepseek_b) / sizeof(deepseek_b[0]); i++)
		mc_check(256, 8, deepseek_b[i], 3000, 100 + i);
	for (size_t i = 0; i < sizeof(olmoe_b) / sizeof(olmoe_b[0]); i++)
		mc_check(64, 8, olmoe_b[i], 5000, 200 + i);
	/* Edges: B = 1 activates exactly k; k = E activates all. */
	assert_close(plan_distinct_experts(256, 8, 1), 8);
	assert_close(plan_distinct_experts(8, 8, 3), 8);
	assert_close(plan_distinct_experts(0, 0, 3), 0);
	/* Never more than E, never more than B k. */
	for (unsigned b = 1; b <= 4096; b *= 2) {
		double d = plan_distinct_experts(128, 1, b);

		assert_true(d <= 128 && d <= b + 1e-9);
	}
}

static void test_monotonic_batch(void **state)
{
	for (const char *const *name = plan_model_builtin_names(); *name; name++) {
		struct plan_model m;
		struct plan_params p;
		unsigned nodes, gpus;

		plan_params_default(&p);
		assert_int_equal(plan_model_builtin(*name, &m, &nodes, &gpus, NULL, 0), 0);
		p.hw.nodes = nodes;
		p.hw.gpus_per_node = gpus;
		for (int t = 0; t < PLAN_NTIERS; t++) {
			double prev = INFINITY, prev_expert = INFINITY;

			for (unsigned b = 1; b <= 1024; b += (b < 64 ? 1 : 7)) {
				struct plan_result r;
				double w, ex;

				eval_ok(&m, &p, t, b, &r);
				w = plan_result_weight_j(&r);
				ex = r.energy_j[PLAN_PART_EXPERT_HBM + t];
				if (w > prev * (1 + 1e-12))
					fail_msg("%s %s: weight J/token rose from %g to %g at batch %u",
						 *name, plan_tier_name(t), prev, w, b);
				if (ex > prev_expert * (1 + 1e-12))
					fail_msg("%s %s: expert J/token rose at batch %u", *name,
						 plan_tier_name(t), b);
				prev = w;
				prev_expert = ex;
			}
		}
	}
}

static void test_monotonic_flash(void **state)
{
	static const unsigned batches[] = { 1, 16, 256, 1024 };

	for (const char *const *name = plan_model_builtin_names(); *name; name++) {
		struct plan_model m;
		struct plan_params p;

		plan_params_default(&p);
		assert_int_equal(plan_model_builtin(*name, &m, &p.hw.nodes, &p.hw.gpus_per_node, NULL, 0), 0);
		for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++) {
			double prev = INFINITY, prev_flash = INFINITY;

			for (int s = 10; s >= 1; s--) {
				struct plan_result r;

				p.en.flash_scale = s / 10.0;
				eval_ok(&m, &p, PLAN_TIER_SSD, batches[i], &r);
				assert_true(r.energy_per_token_j <= prev);
				assert_true(r.energy_j[PLAN_PART_EXPERT_SSD] <= prev_flash);
				/* Strictly lower whenever experts are read from Flash at all. */
				if (m.experts && s < 10)
					assert_true(r.energy_per_token_j < prev);
				prev = r.energy_per_token_j;
				prev_flash = r.energy_j[PLAN_PART_EXPERT_SSD];
			}
		}
	}
}

static void test_paper_shape(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result h1, s1, hb, sb;
	struct plan_sizes sz;

	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &m, &p.hw.nodes, &p.hw.gpus_per_node, NULL, 0), 0);
	assert_int_equal(p.hw.gpus_per_node, 4);
	plan_sizes_get(&m, &p, &sz);
	/* The reference: 352,321,536 bytes per expert; 47 B parameters. */
	assert_close(sz.expert_bytes, 352321536);
	assert_true(sz.params > 46e9 && sz.params < 48e9);
	eval_ok(&m, &p, PLAN_TIER_HBM, 1, &h1);
	eval_ok(&m, &p, PLAN_TIER_SSD, 1, &s1);
	eval_ok(&m, &p, PLAN_TIER_HBM, 1024, &hb);
	eval_ok(&m, &p, PLAN_TIER_SSD, 1024, &sb);
	/* SSD costs many times HBM per token at batch 1, and the gap narrows with batch. */
	assert_true(s1.energy_per_token_j > 5 * h1.energy_per_token_j);
	assert_true(sb.energy_per_token_j / hb.energy_per_token_j <
		    s1.energy_per_token_j / h1.energy_per_token_j);
	/* Fewer activated experts: top-1 reads fewer bytes than top-2. */
	p.top_k = 1;
	eval_ok(&m, &p, PLAN_TIER_SSD, 1, &hb);
	assert_true(hb.energy_per_token_j < s1.energy_per_token_j);

	assert_int_equal(plan_model_builtin("deepseek-r1", &m, NULL, NULL, NULL, 0), 0);
	plan_sizes_get(&m, &p, &sz);
	assert_close(sz.expert_bytes, 88080384);
	assert_int_equal(sz.moe_layers, 58);
	assert_int_equal(plan_model_builtin("llama4-maverick", &m, NULL, NULL, NULL, 0), 0);
	plan_sizes_get(&m, &p, &sz);
	assert_close(sz.expert_bytes, 251658240);
	assert_int_equal(sz.moe_layers, 24);
}

/* Expert e of E on GPU g, laid out as plan.c does: `big` GPUs hold m, the rest m - 1. */
static unsigned gpu_of(unsigned e, unsigned experts, unsigned gpus)
{
	unsigned holders = experts < gpus ? experts : gpus;
	unsigned m = (experts + holders - 1) / holders, big = experts - (m - 1) * holders;

	return e < big * m ? e / m : big + (e - big * m) / (m - 1);
}

static unsigned busiest(const unsigned char *used, unsigned experts, unsigned gpus)
{
	unsigned count[1024] = { 0 }, max = 0;

	for (unsigned e = 0; e < experts; e++)
		if (used[e] && ++count[gpu_of(e, experts, gpus)] > max)
			max = count[gpu_of(e, experts, gpus)];
	return max;
}

/*
 * The expected activated experts on the busiest GPU under uniform routing
 * (what a layer of an expert-parallel system waits for) against a seeded
 * Monte-Carlo of the same routing and layout; tolerance as mc_check.
 */
static void ep_mc_check(unsigned experts, unsigned k, unsigned batch, unsigned gpus,
			unsigned trials, uint64_t seed)
{
	unsigned char used[512], chosen[512];
	double sum = 0, sum2 = 0, mean, se, want;

	assert_true(experts <= sizeof(used));
	for (unsigned t = 0; t < trials; t++) {
		unsigned mx;

		memset(used, 0, experts);
		for (unsigned b = 0; b < batch; b++) {
			memset(chosen, 0, experts);
			for (unsigned j = 0; j < k; j++) {
				unsigned e;

				do
					e = rng_below(&seed, experts);
				while (chosen[e]);
				chosen[e] = used[e] = 1;
			}
		}
		mx = busiest(used, experts, gpus);
		sum += mx;
		sum2 += (double)mx * mx;
	}
	mean = sum / trials;
	se = sqrt(fmax(0, (sum2 - sum * mean) / (trials - 1)) / trials);
	want = plan_ep_max_uniform(experts, k, batch, gpus);
	if (fabs(mean - want) > 5 * se + 1e-3)
		fail_msg("E=%u k=%u B=%u GPUs=%u: Monte-Carlo busiest GPU %.5f vs model %.5f (5 se = %.5f)",
			 experts, k, batch, gpus, mean, want, 5 * se);
}

static void test_ep_max_monte_carlo(void **state)
{
	static const unsigned mixtral_b[] = { 1, 2, 3, 8 };
	static const unsigned r1_b[] = { 1, 4, 16, 64 };
	static const unsigned llama4_b[] = { 1, 2, 3, 4, 32 };

	for (size_t i = 0; i < sizeof(mixtral_b) / sizeof(mixtral_b[0]); i++)
		ep_mc_check(8, 2, mixtral_b[i], 4, 20000, 300 + i);
	for (size_t i = 0; i < sizeof(r1_b) / sizeof(r1_b[0]); i++)
		ep_mc_check(256, 8, r1_b[i], 32, 3000, 400 + i);
	for (size_t i = 0; i < sizeof(llama4_b) / sizeof(llama4_b[0]); i++)
		ep_mc_check(128, 1, llama4_b[i], 8, 5000, 500 + i);
	/* Uneven layouts: 10 experts on 4 GPUs (3, 3, 2, 2); fewer experts than GPUs. */
	ep_mc_check(10, 2, 3, 4, 20000, 600);
	ep_mc_check(6, 2, 2, 8, 20000, 601);
	/* By hand: Mixtral, one token: its 2 experts share a GPU with probability 1/7. */
	assert_true(fabs(plan_ep_max_uniform(8, 2, 1, 4) - 8.0 / 7) < 1e-9);
	/* Every expert active: all of a GPU's; one GPU: the distinct count itself. */
	assert_true(fabs(plan_ep_max_uniform(256, 8, 4096, 32) - 8) < 1e-9);
	assert_true(fabs(plan_ep_max_uniform(64, 8, 7, 1) - plan_distinct_experts(64, 8, 7)) < 1e-9);
	assert_true(plan_ep_max_uniform(0, 0, 4, 8) == 0);
}

/* A seeded sample from freq[0 .. n-1] (weights), then a random d-subset: the busiest GPU's mean. */
static double hist_mc(const double *freq, size_t n, unsigned experts, unsigned gpus, unsigned trials,
		      uint64_t seed, double *se)
{
	unsigned char used[512];
	double total = 0, sum = 0, sum2 = 0, mean;

	for (size_t d = 0; d < n; d++)
		total += freq[d];
	for (unsigned t = 0; t < trials; t++) {
		double u = (double)(rng_next(&seed) >> 11) / 9007199254740992.0 * total, acc = 0;
		size_t d = 0;
		unsigned mx;

		while (d + 1 < n && (acc += freq[d]) <= u)
			d++;
		memset(used, 0, experts);
		for (unsigned got = 0; got < d;) {
			unsigned e = rng_below(&seed, experts);

			if (!used[e]) {
				used[e] = 1;
				got++;
			}
		}
		mx = busiest(used, experts, gpus);
		sum += mx;
		sum2 += (double)mx * mx;
	}
	mean = sum / trials;
	*se = sqrt(fmax(0, (sum2 - sum * mean) / (trials - 1)) / trials);
	return mean;
}

/*
 * The entry point for measured routing (a trace's histogram of distinct
 * experts per batch and layer): exact cases by hand, a synthetic skewed
 * distribution against a Monte-Carlo, the uniform case reproduced from its
 * own distribution, plan_eval_routed, and malformed input.
 */
static void test_routing_histogram(void **state)
{
	static const double two[] = { 0, 0, 1 };
	double freq[257], mean, emax, se, mc;
	struct plan_routing rt = { .freq = two, .n = 3 };
	struct plan_model m;
	struct plan_params p;
	struct plan_place pl;
	struct plan_result uni, skew;
	char err[256];

	/* Two experts of Mixtral's 8 on 4 GPUs share one with probability 1/7. */
	assert_int_equal(plan_routing_stats(&rt, 8, 4, &mean, &emax, err, sizeof(err)), 0);
	assert_close(mean, 2);
	assert_true(fabs(emax - 8.0 / 7) < 1e-12);
	/* All active: every GPU has all of its 8. */
	memset(freq, 0, sizeof(freq));
	freq[256] = 3;
	rt = (struct plan_routing){ .freq = freq, .n = 257 };
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), 0);
	assert_close(mean, 256);
	assert_true(fabs(emax - 8) < 1e-9);

	/* Skewed: most batches activate few experts (hot experts), a tail many. */
	for (size_t d = 0; d <= 256; d++)
		freq[d] = d >= 8 ? exp(-(double)(d - 8) / 20) : 0;
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), 0);
	mc = hist_mc(freq, 257, 256, 32, 4000, 700, &se);
	if (fabs(mc - emax) > 5 * se + 1e-3)
		fail_msg("skewed histogram: Monte-Carlo %.5f vs model %.5f (5 se %.5f)", mc, emax, 5 * se);

	/* The uniform distribution of distinct counts, measured by simulation,
	 * gives back the uniform formula's figures. */
	{
		uint64_t seed = 800;
		unsigned char used[256], chosen[256];

		memset(freq, 0, sizeof(freq));
		for (unsigned t = 0; t < 20000; t++) {
			unsigned distinct = 0;

			memset(used, 0, sizeof(used));
			for (unsigned b = 0; b < 16; b++) {
				memset(chosen, 0, sizeof(chosen));
				for (unsigned j = 0; j < 8; j++) {
					unsigned e;

					do
						e = rng_below(&seed, 256);
					while (chosen[e]);
					chosen[e] = 1;
					distinct += !used[e];
					used[e] = 1;
				}
			}
			freq[distinct]++;
		}
		assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), 0);
		assert_true(fabs(mean - plan_distinct_experts(256, 8, 16)) < 0.05);
		assert_true(fabs(emax - plan_ep_max_uniform(256, 8, 16, 32)) < 0.02);
	}

	/* plan_eval_routed: DeepSeek-R1 at batch 64 whose batches activate only 16
	 * distinct experts per layer read 16 experts' bytes, not ~222. */
	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("deepseek-r1", &m, &p.hw.nodes, &p.hw.gpus_per_node, NULL, 0), 0);
	plan_place_all(PLAN_TIER_SSD, &pl);
	memset(freq, 0, sizeof(freq));
	freq[16] = 1;
	assert_int_equal(plan_eval_routed(&m, &p, &pl, 64, &rt, &skew, err, sizeof(err)), 0);
	assert_int_equal(plan_eval_routed(&m, &p, &pl, 64, NULL, &uni, err, sizeof(err)), 0);
	assert_close(skew.distinct_experts, 16);
	assert_close(skew.bytes_read[PLAN_TIER_SSD], 16.0 * 88080384 * 58);
	assert_true(uni.distinct_experts > 200);
	assert_true(skew.ep_max_experts < uni.ep_max_experts);
	assert_true(skew.latency_per_token_s < uni.latency_per_token_s);
	assert_true(skew.energy_per_token_j < uni.energy_per_token_j / 5);

	/* Malformed: too many experts, negative or non-finite weights, all zero, empty. */
	rt.n = 258;
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "257 distinct experts"));
	rt.n = 257;
	freq[3] = -1;
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "3 distinct"));
	freq[3] = NAN;
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), -EINVAL);
	memset(freq, 0, sizeof(freq));
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), -EINVAL);
	rt.n = 0;
	assert_int_equal(plan_routing_stats(&rt, 256, 32, &mean, &emax, err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_eval_routed(&m, &p, &pl, 64, &rt, &skew, err, sizeof(err)), -EINVAL);
}

static void paper_eval(const char *model, const char *hw, unsigned batch, enum plan_tier t,
		       double flash_scale, double ddr_gb_per_gpu, struct plan_result *r)
{
	struct plan_model m;
	struct plan_params p;
	unsigned nodes, gpus;

	plan_params_default(&p);
	assert_int_equal(plan_model_builtin(model, &m, &nodes, &gpus, NULL, 0), 0);
	assert_int_equal(plan_hw_builtin(hw, &p.hw, NULL, 0), 0);
	p.hw.nodes = nodes;
	p.hw.gpus_per_node = gpus;
	p.en.flash_scale = flash_scale;
	p.en.ddr_gb_per_gpu = ddr_gb_per_gpu;
	eval_ok(&m, &p, t, batch, r);
}

static void assert_within(const char *what, double got, double want, double rel)
{
	if (!(fabs(got - want) <= rel * want))
		fail_msg("%s: %.4g, the paper's %.4g (+-%.0f%%)", what, got, want, rel * 100);
}

static double ssd_hbm(const char *model, const char *hw, unsigned batch)
{
	struct plan_result h, s;

	paper_eval(model, hw, batch, PLAN_TIER_HBM, 1, 256, &h);
	paper_eval(model, hw, batch, PLAN_TIER_SSD, 1, 256, &s);
	return s.energy_per_token_j / h.energy_per_token_j;
}

static double penalty(const char *model, const char *hw, unsigned batch)
{
	struct plan_result h, s;

	paper_eval(model, hw, batch, PLAN_TIER_HBM, 1, 256, &h);
	paper_eval(model, hw, batch, PLAN_TIER_SSD, 1, 256, &s);
	return s.latency_per_token_s / h.latency_per_token_s;
}

/*
 * The published figures of the SSD-offloading paper this model must land
 * near (+-25 %: the model is not fitted to them), and the direction of every
 * trend it reports.
 */
static void test_paper_figures(void **state)
{
	static const char *const models[] = { "mixtral-8x7b", "deepseek-r1" };
	struct plan_result h, d, s, l3, l4;
	double ssd_access;

	/* DeepSeek-R1, batch 1024, 4 nodes x 8 GPUs, NVLink 5 offload links. */
	paper_eval("deepseek-r1", "dgx-h100-nvl5", 1024, PLAN_TIER_HBM, 1, 256, &h);
	paper_eval("deepseek-r1", "dgx-h100-nvl5", 1024, PLAN_TIER_DDR, 1, 256, &d);
	paper_eval("deepseek-r1", "dgx-h100-nvl5", 1024, PLAN_TIER_SSD, 1, 256, &s);
	assert_within("R1 b1024 SSD/HBM", s.energy_per_token_j / h.energy_per_token_j, 4.9, 0.25);
	assert_within("R1 b1024 SSD/DDR", s.energy_per_token_j / d.energy_per_token_j, 3.1, 0.25);
	/* SSD access: the Flash read and the HBM write of what it delivers. */
	ssd_access = (s.energy_j[PLAN_PART_EXPERT_SSD] + s.energy_j[PLAN_PART_FETCH] / 2) /
		     s.energy_per_token_j;
	assert_within("R1 b1024 SSD access share", ssd_access, 0.80, 0.25);
	assert_within("R1 b1024 routed experts' share of the HBM baseline",
		      h.energy_j[PLAN_PART_EXPERT_HBM] / h.energy_per_token_j, 0.15, 0.25);
	/* Latency penalties as low as 1.25x (R1) and 1.32x (Mixtral) with NVLink 5. */
	assert_within("R1 b1024 NVLink 5 penalty", penalty("deepseek-r1", "dgx-h100-nvl5", 1024), 1.25, 0.25);
	assert_within("Mixtral b1024 NVLink 5 penalty", penalty("mixtral-8x7b", "dgx-h100-nvl5", 1024),
		      1.32, 0.25);
	/* The compute of a layer hides the next layer's load at batch 1024 with NVLink 5. */
	assert_true(s.bound_offload <= 1);

	for (size_t i = 0; i < 2; i++) {
		double prev = INFINITY;

		/* SSD/HBM falls with batch once the batch activates every expert. */
		for (unsigned b = 64; b <= 1024; b *= 2) {
			double x = ssd_hbm(models[i], "dgx-h100-nvl5", b);

			if (!(x < prev))
				fail_msg("%s: SSD/HBM %.3f at batch %u, not below %.3f at half", models[i],
					 x, b, prev);
			prev = x;
		}
		/* The latency penalty falls with link speed, at every batch. */
		for (unsigned b = 1; b <= 1024; b *= 4)
			if (!(penalty(models[i], "dgx-h100-nvl5", b) < penalty(models[i], "dgx-h100-nvl4", b)))
				fail_msg("%s batch %u: NVLink 5 penalty not below NVLink 4's", models[i], b);
	}
	assert_true(ssd_hbm("mixtral-8x7b", "dgx-h100-nvl5", 1024) <
		    ssd_hbm("mixtral-8x7b", "dgx-h100-nvl5", 1));

	/*
	 * The what-if (Figure 6): one node of 8 GPUs, no CPU memory.  Llama 4
	 * Maverick on SSD costs more per token than Llama 3.3 70B in HBM at
	 * today's Flash energy; with a tenth of it, less at batch 1 and 2 only.
	 */
	for (unsigned b = 1; b <= 4; b++) {
		paper_eval("llama3.3-70b", "dgx-h100-nvl5", b, PLAN_TIER_HBM, 1, 0, &l3);
		paper_eval("llama4-maverick", "dgx-h100-nvl5", b, PLAN_TIER_SSD, 1, 0, &l4);
		if (!(l4.energy_per_token_j > l3.energy_per_token_j))
			fail_msg("batch %u: Llama 4 on SSD %.3f J below Llama 3.3 in HBM %.3f J at Flash x1",
				 b, l4.energy_per_token_j, l3.energy_per_token_j);
		paper_eval("llama4-maverick", "dgx-h100-nvl5", b, PLAN_TIER_SSD, 0.1, 0, &l4);
		if ((l4.energy_per_token_j < l3.energy_per_token_j) != (b < 3))
			fail_msg("batch %u: Llama 4 on SSD at Flash x0.1 %.3f J vs Llama 3.3 %.3f J", b,
				 l4.energy_per_token_j, l3.energy_per_token_j);
	}
}

/*
 * Communication by hand: two nodes of two GPUs, tp 2, 4 experts top-1 (one on
 * each GPU), batch 4 (2 requests per node), hidden 4, BF16 activations.
 */
static void test_comm_hand(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;
	double msg = 2 * 4 * 2.0;	/* 2 tokens x 4 x 2 B */
	double ar, a2a;

	tiny(&m, &p);
	m.experts = 4;
	p.hw.nodes = 2;
	p.hw.gpus_per_node = 2;
	p.hw.nvlink_gbps = 1e-6;	/* 1000 B/s */
	p.hw.nvlink_lat_us = 1e6;	/* 1 s per hop */
	p.hw.ib_gbps = 1e-7;		/* 100 B/s */
	p.hw.ib_lat_us = 2e6;		/* 2 s */
	eval_ok(&m, &p, PLAN_TIER_HBM, 4, &r);
	/* Ring all-reduce over 2 GPUs: 2 hops of 1 s + (msg / 2) / 1000 B/s; after
	 * the output projection and after the experts. */
	ar = 2 * (1 + msg / 2 / 1000);
	assert_close(r.time_s[PLAN_TIME_ALLREDUCE], 2 * ar);
	/* Dispatch and combine: 2 tokens x top-1 x half the experts on the other
	 * node, 4 x 2 B each, sent half by each GPU of the group, over InfiniBand. */
	a2a = 2 * (2.0 * 1 * 0.5 * 4 * 2 / 2 / 100 + 2);
	assert_close(r.time_s[PLAN_TIME_ALLTOALL], a2a);
	assert_close(r.comm_bytes_per_gpu, 2 * 2 * msg / 2 + 2 * (2.0 * 0.5 * 4 * 2 / 2));
	/* tp 1 on the same system: no all-reduce, the other 3 GPUs' experts reached
	 * over NVLink (1 of 4) and InfiniBand (2 of 4); the slower sets the time. */
	p.hw.tp = 1;
	eval_ok(&m, &p, PLAN_TIER_HBM, 4, &r);
	assert_close(r.time_s[PLAN_TIME_ALLREDUCE], 0);
	assert_close(r.time_s[PLAN_TIME_ALLTOALL], 2 * (fmax(1.0 * 0.25 * 8 / 1000, 1.0 * 0.5 * 8 / 100) + 2));
	/* tp must divide a node. */
	p.hw.tp = 3;
	{
		struct plan_place pl;
		char err[256];

		plan_place_all(PLAN_TIER_HBM, &pl);
		assert_int_equal(plan_eval(&m, &p, &pl, 4, &r, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "tp 3"));
	}
}

static const char mixtral_json[] =
	"{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 4096,"
	" \"intermediate_size\": 14336, \"model_type\": \"mixtral\", \"num_attention_heads\": 32,"
	" \"num_experts_per_tok\": 2, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
	" \"num_local_experts\": 8, \"rope_theta\": 1e6, \"torch_dtype\": \"bfloat16\","
	" \"vocab_size\": 32000}";

static const char deepseek_json[] =
	"{\"model_type\": \"deepseek_v3\", \"hidden_size\": 7168, \"intermediate_size\": 18432,"
	" \"moe_intermediate_size\": 2048, \"n_routed_experts\": 256, \"n_shared_experts\": 1,"
	" \"num_experts_per_tok\": 8, \"first_k_dense_replace\": 3, \"moe_layer_freq\": 1,"
	" \"num_hidden_layers\": 61, \"num_attention_heads\": 128, \"num_key_value_heads\": 128,"
	" \"kv_lora_rank\": 512, \"q_lora_rank\": 1536, \"qk_rope_head_dim\": 64,"
	" \"qk_nope_head_dim\": 128, \"v_head_dim\": 128, \"vocab_size\": 129280,"
	" \"torch_dtype\": \"bfloat16\", \"quantization_config\": {\"quant_method\": \"fp8\"}}";

static const char llama4_json[] =
	"{\"model_type\": \"llama4\", \"text_config\": {\"model_type\": \"llama4_text\","
	" \"hidden_size\": 5120, \"intermediate_size\": 8192, \"intermediate_size_mlp\": 16384,"
	" \"num_local_experts\": 128, \"num_experts_per_tok\": 1, \"interleave_moe_layer_step\": 2,"
	" \"num_hidden_layers\": 48, \"num_attention_heads\": 40, \"num_key_value_heads\": 8,"
	" \"head_dim\": 128, \"vocab_size\": 202048, \"torch_dtype\": \"bfloat16\"},"
	" \"vision_config\": {\"hidden_size\": 1408}}";

static void assert_same_shape(const struct plan_model *a, const struct plan_model *b)
{
	struct plan_params p;
	struct plan_sizes x, y;

	plan_params_default(&p);
	plan_sizes_get(a, &p, &x);
	plan_sizes_get(b, &p, &y);
	assert_close(x.params, y.params);
	assert_close(x.routed_bytes, y.routed_bytes);
	assert_close(x.kv_bytes_per_token, y.kv_bytes_per_token);
	assert_int_equal(x.moe_layers, y.moe_layers);
	assert_int_equal(a->top_k, b->top_k);
	assert_int_equal(a->attn, b->attn);
}

static void test_config_json(void **state)
{
	struct plan_model m, b;
	char err[256];

	assert_int_equal(plan_model_from_json(mixtral_json, "mixtral/config.json", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.head_dim, 128);	/* 4096 / 32, no head_dim key */

	assert_int_equal(plan_model_from_json(deepseek_json, "ds", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("deepseek-r1", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.attn, PLAN_ATTN_MLA);
	assert_int_equal(m.shared_experts, 1);

	assert_int_equal(plan_model_from_json(llama4_json, "l4", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("llama4-maverick", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.shared_experts, 1);

	/* OLMoE: intermediate_size is the expert size; no shared experts. */
	assert_int_equal(plan_model_from_json(
		"{\"model_type\":\"olmoe\",\"hidden_size\":2048,\"intermediate_size\":1024,"
		"\"num_experts\":64,\"num_experts_per_tok\":8,\"num_hidden_layers\":16,"
		"\"num_attention_heads\":16,\"num_key_value_heads\":16,\"vocab_size\":50304}",
		"olmoe", &m, err, sizeof(err)), 0);
	assert_int_equal(m.experts, 64);
	assert_int_equal(m.expert_ffn, 1024);
	assert_int_equal(m.shared_experts, 0);

	/* Qwen2-MoE: one shared expert of its own size, q_lora null is "none". */
	assert_int_equal(plan_model_from_json(
		"{\"model_type\":\"qwen2_moe\",\"hidden_size\":2048,\"intermediate_size\":5632,"
		"\"moe_intermediate_size\":1408,\"shared_expert_intermediate_size\":5632,"
		"\"num_experts\":60,\"num_experts_per_tok\":4,\"decoder_sparse_step\":1,"
		"\"mlp_only_layers\":[],\"num_hidden_layers\":24,\"num_attention_heads\":16,"
		"\"num_key_value_heads\":16,\"vocab_size\":151936,\"torch_dtype\":\"bfloat16\"}",
		"qwen", &m, err, sizeof(err)), 0);
	assert_int_equal(m.shared_experts, 1);
	assert_int_equal(m.shared_ffn, 5632);
	assert_int_equal(m.expert_ffn, 1408);

	/* A dense Llama. */
	assert_int_equal(plan_model_from_json(
		"{\"hidden_size\":8192,\"intermediate_size\":28672,\"num_hidden_layers\":80,"
		"\"num_attention_heads\":64,\"num_key_value_heads\":8,\"vocab_size\":128256}",
		"llama", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("llama3.3-70b", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
}

struct bad_case {
	const char *json;
	const char *needle;	/* the error must say this */
};

static void test_config_json_bad(void **state)
{
	static const struct bad_case cases[] = {
		{ "{\"hidden_size\": 4096,,}", "malformed JSON" },
		{ "{\"hidden_size\": 40", "malformed JSON" },
		{ "", "malformed JSON" },
		{ "[1, 2]", "top level must be a JSON object" },
		{ "{\"hidden_size\":\"4096\",\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"hidden_size\" must be an integer" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":-3,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"num_hidden_layers\" must not be negative" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2.5,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"num_hidden_layers\" must be an integer" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"intermediate_size\":8}", "missing required key \"vocab_size\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10}", "missing required key \"intermediate_size\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"num_local_experts\":8}",
		  "missing required key \"num_experts_per_tok\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"num_local_experts\":8,"
		  "\"num_experts_per_tok\":9}", "exceeds" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":3,"
		  "\"num_key_value_heads\":2,\"head_dim\":8,\"vocab_size\":10,\"intermediate_size\":8}",
		  "not a multiple" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"torch_dtype\":\"float7\"}",
		  "not a known type" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":99999999999}", "too large" },
		{ "{\"hidden_size\":0,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "must be positive" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"kv_lora_rank\":16}",
		  "missing required key \"qk_rope_head_dim\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct plan_model m;
		char err[256] = "";
		int r = plan_model_from_json(cases[i].json, "config.json", &m, err, sizeof(err));

		if (r != -EINVAL || !strstr(err, cases[i].needle))
			fail_msg("case %zu: r=%d err=\"%s\", wanted \"%s\"", i, r, err, cases[i].needle);
		assert_non_null(strstr(err, "config.json"));
	}
}

static void test_bad_inputs(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;
	struct plan_place pl;
	char err[256];

	assert_int_equal(plan_model_builtin("gpt-7", &m, NULL, NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "unknown model \"gpt-7\""));
	assert_int_equal(plan_model_from_file("/nonexistent/config.json", &m, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/config.json"));

	plan_params_default(&p);
	assert_int_equal(plan_set(&p, "hbm_gbps", "-1", err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "hbm_gbps"));
	assert_int_equal(plan_set(&p, "hbm_gib", "0", err, sizeof(err)), -ERANGE);
	assert_int_equal(plan_set(&p, "pj_flash", "lots", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "pj_flash", "nan", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "nodes", "1.5", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "warp_drive", "1", err, sizeof(err)), -ENOENT);
	assert_int_equal(plan_set(&p, "pj_flash", "51.2", err, sizeof(err)), 0);
	assert_close(p.en.pj_flash, 51.2);

	/* Negative or impossible values that reach the model directly. */
	tiny(&m, &p);
	plan_place_all(PLAN_TIER_HBM, &pl);
	p.en.pj_hbm = -1;
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "negative"));
	tiny(&m, &p);
	assert_int_equal(plan_eval(&m, &p, &pl, 0, &r, err, sizeof(err)), -EINVAL);
	p.top_k = 2;
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "top-k 2 exceeds"));
	tiny(&m, &p);
	pl.frac[PLAN_TIER_DDR] = 0.5;	/* sums to 1.5 */
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "sum"));
	m.layers = 0;
	plan_place_all(PLAN_TIER_HBM, &pl);
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
}

static void test_select(void **state)
{
	static const unsigned batches[] = { 1, 16, 256 };
	struct plan_model m;
	struct plan_params p;
	struct plan_select_req req = { .batches = batches, .nbatches = 3 };
	struct plan_candidate *c = NULL;
	size_t n;
	char err[512];
	const double gib = 1024.0 * 1024 * 1024;

	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &m, &p.hw.nodes, &p.hw.gpus_per_node, NULL, 0), 0);

	/* 48 GiB of HBM: part of the experts fit, the rest in DDR and on SSD. */
	req.hbm_bytes = 48 * gib;
	req.ddr_bytes = 24 * gib;
	req.objective = PLAN_OBJ_ENERGY;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	assert_true(n > 3);
	for (size_t i = 0; i < n; i++) {
		double sum = c[i].place.frac[0] + c[i].place.frac[1] + c[i].place.frac[2];

		assert_true(fabs(sum - 1) < 1e-9);
		assert_true(c[i].r.hbm_need_bytes <= req.hbm_bytes * (1 + 1e-9));
		assert_true(c[i].r.ddr_need_bytes <= req.ddr_bytes * (1 + 1e-9));
		/* Part of the experts in HBM: exactly as many as leave room for the fetch buffers. */
		if (c[i].place.frac[PLAN_TIER_HBM] > 0 && c[i].place.frac[PLAN_TIER_HBM] < 1)
			assert_true(fabs(c[i].r.hbm_need_bytes - req.hbm_bytes) < 1e-9 * req.hbm_bytes);
		if (i)
			assert_true(c[i - 1].r.energy_per_token_j <= c[i].r.energy_per_token_j);
	}
	free(c);

	/* Latency objective: sorted by latency; a ceiling drops the slow ones. */
	req.objective = PLAN_OBJ_LATENCY;
	req.max_latency_s = 0.030;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	for (size_t i = 0; i < n; i++) {
		assert_true(c[i].r.latency_per_token_s <= 0.030);
		if (i)
			assert_true(c[i - 1].r.latency_per_token_s <= c[i].r.latency_per_token_s);
	}
	free(c);

	/* Impossible: HBM too small for the resident weights. */
	req.hbm_bytes = 1 * gib;
	req.max_latency_s = 0;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "cannot hold"));
	assert_null(c);
	/* Impossible: a ceiling no placement meets. */
	req.hbm_bytes = 320 * gib;
	req.max_latency_s = 1e-6;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "no placement meets"));
	req.max_latency_s = 0;
	req.max_energy_j = 1e-9;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ERANGE);
	req.max_energy_j = -1;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -EINVAL);
}

static void test_batches(void **state)
{
	unsigned b[64];
	size_t n;

	assert_int_equal(plan_parse_batches("1-1024", b, 64, &n), 0);
	assert_int_equal(n, 11);
	assert_int_equal(b[10], 1024);
	assert_int_equal(plan_parse_batches("3,5,1-4", b, 64, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(b[4], 4);
	assert_true(plan_parse_batches("0", b, 64, &n) < 0);
	assert_true(plan_parse_batches("a", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1,,2", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1,", b, 64, &n) < 0);
	assert_true(plan_parse_batches("4-2", b, 64, &n) < 0);
	assert_true(plan_parse_batches("-3", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1-1024", b, 4, &n) < 0);
}

static void test_hardware_file(void **state)
{
	struct plan_params p;
	char path[] = "/tmp/test-plan-hw-XXXXXX";
	char err[512];
	struct plan_hw hw;
	FILE *f;
	int fd;

	assert_int_equal(plan_hw_builtin("dgx-h100-nvl4", &hw, err, sizeof(err)), 0);
	assert_close(hw.link_gbps, 450);
	assert_int_equal(plan_hw_builtin("dgx-h100", &hw, err, sizeof(err)), 0);
	assert_close(hw.link_gbps, 900);
	assert_int_equal(plan_hw_builtin("cray-1", &hw, err, sizeof(err)), -ENOENT);

	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("; a PCIe box\n[hardware]\nname = pcie-box\nnodes = 1\ngpus_per_node = 2\n"
	      "link_gbps = 48\nssd_gbps = 1.5\n[energy]\npj_flash = 80\n[model]\ncontext = 2048\n", f);
	fclose(f);
	plan_params_default(&p);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), 0);
	assert_string_equal(p.hw.name, "pcie-box");
	assert_int_equal(p.hw.gpus_per_node, 2);
	assert_close(p.hw.link_gbps, 48);
	assert_close(p.hw.ssd_gbps, 1.5);
	assert_close(p.en.pj_flash, 80);
	assert_int_equal(p.context, 2048);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[hardware]\nnodes = 1\nhbm_gbps = -5\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, ":3: [hardware] hbm_gbps"));

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[energy]\nlink_gbps = 5\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "belongs in [hardware]"));

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[hardware]\nthis is not ini\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":2:"));
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hand_hbm),
		cmocka_unit_test(test_hand_ssd_ddr),
		cmocka_unit_test(test_hand_cache),
		cmocka_unit_test(test_distinct_monte_carlo),
		cmocka_unit_test(test_monotonic_batch),
		cmocka_unit_test(test_monotonic_flash),
		cmocka_unit_test(test_paper_shape),
		cmocka_unit_test(test_ep_max_monte_carlo),
		cmocka_unit_test(test_routing_histogram),
		cmocka_unit_test(test_paper_figures),
		cmocka_unit_test(test_comm_hand),
		cmocka_unit_test(test_config_json),
		cmocka_unit_test(test_config_json_bad),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_select),
		cmocka_unit_test(test_batches),
		cmocka_unit_test(test_hardware_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
