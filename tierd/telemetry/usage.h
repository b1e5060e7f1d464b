/* SPDX-License-Identifier: MIT */
/*
 * What clients did, kept apart from the service that serves them: routing
 * hints per expert (how often the routers chose it, with what weight), tokens
 * per model, and the energy of the bytes they moved (fetched from SSD for
 * them, copied from the pool to their GPU).  The server tells it through
 * struct server_observer (server.h); the metrics and a predictive placement
 * policy read it here.
 */
#ifndef TIERD_USAGE_H
#define TIERD_USAGE_H

#include <stdint.h>

#include "server.h"

struct usage;
struct engine;
struct energy;

/* Experts and models as the engine has them; energy NULL: no energy
 * accounting (hints and tokens are kept all the same). */
int usage_create(struct usage **out, const struct engine *e, struct energy *energy);
void usage_destroy(struct usage *u);

/* The observer to hand to server_set_observer(), with u as its argument. */
const struct server_observer *usage_observer(void);

/* Tokens reported for a model (engine model index). */
uint64_t usage_model_tokens(const struct usage *u, uint32_t model);
/* Routing hints received for one expert.  -ENOENT if unknown. */
int usage_hint_stats(const struct usage *u, uint32_t model, uint32_t layer, uint32_t expert,
		     uint64_t *count, double *weight_sum);

#endif
