/* SPDX-License-Identifier: MIT */
/*
 * Inside the planner: what plan.c (the step model), plan_params.c (defaults,
 * keys, checks), plan_route.c (routing statistics) and plan_select.c share.
 * Not part of plan.h's API.
 */
#ifndef TIERD_PLAN_INT_H
#define TIERD_PLAN_INT_H

#include <stddef.h>

#include "plan.h"

#define GB 1e9
#define PJ 1e-12
#define LN2 0.69314718055994530942

/* The GPUs holding routed experts (E over every GPU, evenly; fewer experts
 * than GPUs: one each): `big` of them hold per_gpu, the others per_gpu - 1. */
void plan_ep_layout(unsigned experts, unsigned gpus, unsigned *holders, unsigned *per_gpu,
		    unsigned *big);
/* top-k in effect: the parameters' override, at most the model's experts. */
unsigned plan_eff_top_k(const struct plan_model *m, const struct plan_params *p);
/* Copies of the KV cache across a tensor-parallel group (capacity). */
double plan_kv_copies(const struct plan_model *m, double tp);
/* The model, the parameters, and what only makes sense for the two together. */
int plan_pair_check(const struct plan_model *m, const struct plan_params *p, char *err, size_t errlen);

#endif
