/* SPDX-License-Identifier: MIT */
/* What clients did: hints, tokens, bytes moved for them (usage.h). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "catalog.h"
#include "energy.h"
#include "engine.h"
#include "tierd-proto.h"
#include "usage.h"

_Static_assert(SERVER_CLIENT_DEPARTED == ENERGY_CLIENT_DEPARTED, "one departed id");
_Static_assert(SERVER_CLIENT_NONE == ENERGY_CLIENT_NONE, "one anonymous id");

struct usage {
	const struct engine *engine;
	struct energy *energy;
	uint32_t nmodels;
	uint64_t *tokens;		/* per model */
	/* Per model, indexed like the catalog's experts. */
	struct usage_hints {
		uint64_t *count;
		double *weight;
	} *hints;
};

int usage_create(struct usage **out, const struct engine *e, struct energy *energy)
{
	struct usage *u = calloc(1, sizeof(*u));
	int n = engine_model_count(e);

	if (!u)
		return -ENOMEM;
	u->engine = e;
	u->energy = energy;
	u->nmodels = n > 0 ? (uint32_t)n : 0;
	u->tokens = calloc((size_t)u->nmodels + 1, sizeof(*u->tokens));
	u->hints = calloc((size_t)u->nmodels + 1, sizeof(*u->hints));
	if (!u->tokens || !u->hints)
		goto fail;
	for (uint32_t i = 0; i < u->nmodels; i++) {
		uint32_t x = engine_model_catalog(e, i)->nexperts;

		u->hints[i].count = calloc((size_t)x + 1, sizeof(uint64_t));
		u->hints[i].weight = calloc((size_t)x + 1, sizeof(double));
		if (!u->hints[i].count || !u->hints[i].weight)
			goto fail;
	}
	*out = u;
	return 0;
fail:
	usage_destroy(u);
	return -ENOMEM;
}

void usage_destroy(struct usage *u)
{
	if (!u)
		return;
	for (uint32_t i = 0; u->hints && i < u->nmodels; i++) {
		free(u->hints[i].count);
		free(u->hints[i].weight);
	}
	free(u->hints);
	free(u->tokens);
	free(u);
}

static void on_fetched(void *arg, uint32_t client, uint32_t model, uint64_t bytes)
{
	struct usage *u = arg;

	if (u->energy && model < u->nmodels)
		energy_account_fetch(u->energy, engine_model_name(u->engine, model), client, bytes);
}

static void on_acquired(void *arg, uint32_t client, uint32_t model, uint64_t bytes)
{
	struct usage *u = arg;

	if (u->energy && model < u->nmodels)
		energy_account_hbm(u->energy, engine_model_name(u->engine, model), client, bytes);
}

static void on_hints(void *arg, uint32_t client, uint32_t model, uint32_t layer,
		     const struct tierd_proto_hint *h, uint32_t n)
{
	struct usage *u = arg;
	const struct catalog *cat;

	(void)client;
	if (model >= u->nmodels)
		return;
	cat = engine_model_catalog(u->engine, model);
	for (uint32_t i = 0; i < n; i++) {
		const struct catalog_expert *x = catalog_find(cat, layer, h[i].expert);

		/* A hint about an expert the checkpoint lacks is the router's
		 * business, not a protocol fault: not counted per expert. */
		if (x) {
			u->hints[model].count[x - cat->experts]++;
			u->hints[model].weight[x - cat->experts] += h[i].weight;
		}
	}
}

static void on_tokens(void *arg, uint32_t client, uint32_t model, uint64_t n)
{
	struct usage *u = arg;

	if (model >= u->nmodels)
		return;
	u->tokens[model] += n;
	if (u->energy)
		energy_account_tokens(u->energy, engine_model_name(u->engine, model), client, n);
}

static void on_client_gone(void *arg, uint32_t client)
{
	struct usage *u = arg;

	/* Its energy is kept, folded into "departed"; its id is never reused. */
	if (u->energy)
		energy_client_forget(u->energy, client);
}

static const struct server_observer observer = {
	.fetched = on_fetched,
	.acquired = on_acquired,
	.hints = on_hints,
	.tokens = on_tokens,
	.client_gone = on_client_gone,
};

const struct server_observer *usage_observer(void)
{
	return &observer;
}

uint64_t usage_model_tokens(const struct usage *u, uint32_t model)
{
	return model < u->nmodels ? u->tokens[model] : 0;
}

int usage_hint_stats(const struct usage *u, uint32_t model, uint32_t layer, uint32_t expert,
		     uint64_t *count, double *weight_sum)
{
	const struct catalog *cat;
	const struct catalog_expert *x;

	if (model >= u->nmodels)
		return -ENOENT;
	cat = engine_model_catalog(u->engine, model);
	x = catalog_find(cat, layer, expert);
	if (!x)
		return -ENOENT;
	*count = u->hints[model].count[x - cat->experts];
	*weight_sum = u->hints[model].weight[x - cat->experts];
	return 0;
}
