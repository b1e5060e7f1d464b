/* SPDX-License-Identifier: MIT */
/* What tests/test-plan.c and tests/test-plan-input.c share: a hand-sized model and checks. */
#ifndef TIERD_PLAN_TEST_UTIL_H
#define TIERD_PLAN_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "plan.h"
/* Equal up to rounding of a few floating-point operations. */
static inline void assert_close(double got, double want)
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
static inline void tiny(struct plan_model *m, struct plan_params *p)
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

static inline void eval_ok(const struct plan_model *m, const struct plan_params *p, enum plan_tier t,
		    unsigned batch, struct plan_result *r)
{
	struct plan_place pl;
	char err[256];

	plan_place_all(t, &pl);
	if (plan_eval(m, p, &pl, batch, r, err, sizeof(err)) < 0)
		fail_msg("plan_eval: %s", err);
}


#endif
