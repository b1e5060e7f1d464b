/* SPDX-License-Identifier: MIT */
/* tierctl plan select: the candidates, best first, and the tierd config chosen. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "plan.h"
#include "plan_hw.h"
#include "plan_model.h"
#include "tierctl-plan.h"
#include "tierctl.h"

/* Whole MiB per node, rounded up, with room for the slot headers of the pool. */
static unsigned long long pool_mib(const struct plan_params *p, const struct plan_candidate *best)
{
	return (unsigned long long)ceil(best->r.ddr_need_bytes / p->hw.nodes * 1.02 / (1 << 20));
}

/* The share of the fetches (reads not served by HBM) the DDR pool serves. */
static double pool_hit(const struct plan_candidate *x)
{
	double rest = 1 - x->place.frac[PLAN_TIER_HBM];

	return rest > 0 ? x->place.frac[PLAN_TIER_DDR] / rest : 0;
}

static const char *objective_name(enum plan_objective o)
{
	switch (o) {
	case PLAN_OBJ_ENERGY:
		return "energy";
	case PLAN_OBJ_LATENCY:
		return "latency";
	case PLAN_OBJ_POOL:
		return "smallest DDR pool";
	}
	return "?";
}

static void print_snippet(const struct plan_cli *c, const struct plan_model *m,
			  const struct plan_params *p, const struct plan_candidate *best)
{
	const struct plan_result *r = &best->r;
	char name[sizeof(m->name)];
	unsigned long long mib = pool_mib(p, best);

	printf("\n# tierd.conf for %s, chosen by tierctl plan select: batch %u, routed experts\n",
	       m->name, best->batch);
	if (best->policy) {
		printf("# %.0f%% in GPU memory (clients keep them resident); a DDR pool of %.0f%% of them\n"
		       "# caching the rest with policy %s served %.1f%% of the fetches in the replay of\n"
		       "# %s: %.0f%% of the reads from DDR, %.0f%% from NVMe.\n",
		       best->place.frac[PLAN_TIER_HBM] * 100, best->place.ddr_pool * 100, best->policy,
		       pool_hit(best) * 100, c->trace, best->place.frac[PLAN_TIER_DDR] * 100,
		       best->place.frac[PLAN_TIER_SSD] * 100);
	} else {
		printf("# %.0f%% in GPU memory (clients keep them resident), %.0f%% in the DDR pool, "
		       "%.0f%% read from NVMe.\n", best->place.frac[PLAN_TIER_HBM] * 100,
		       best->place.frac[PLAN_TIER_DDR] * 100, best->place.frac[PLAN_TIER_SSD] * 100);
	}
	printf("# Expected: %.4g J/token, %.3f ms/token, %.0f tokens/s.\n", r->energy_per_token_j,
	       r->latency_per_token_s * 1e3, r->tokens_per_s);
	/* A name from a file path may hold characters an INI section header cannot. */
	snprintf(name, sizeof(name), "%s", m->name);
	for (char *q = name; *q; q++)
		if (!isalnum((unsigned char)*q) && !strchr("._-", *q))
			*q = '-';
	if (!mib) {
		printf("# No expert needs the DDR pool: a minimal pool for the catalog's bookkeeping.\n");
		mib = 64;
	}
	if (p->hw.nodes > 1)
		printf("# One tierd per node: %u nodes, each with this pool.\n", p->hw.nodes);
	printf("[pool]\nsize = %lluM\n\n", mib);
	if (best->policy)
		printf("[cache]\npolicy = %s\n\n", best->policy);
	printf("[model %s]\n# Set path to the checkpoint directory (safetensors).\n"
	       "path = /var/lib/tierd/models/%s\nquota = %lluM\n", name, name, mib);
}

static void print_json(const struct plan_cli *c, const struct plan_model *m,
		       const struct plan_params *p, const struct plan_select_req *req,
		       const struct plan_candidate *cand, size_t n, size_t shown,
		       const struct plan_cli_trace *tr)
{
	struct json_object *root = plan_cli_setup_json(m, p), *arr = json_object_new_array();
	struct json_object *conf = json_object_new_object();
	char size[32];

	for (size_t i = 0; i < shown; i++) {
		struct json_object *o;
		char name[64];

		if (cand[i].policy)
			snprintf(name, sizeof(name), "hbm%.0f-pool%.0f-%s", cand[i].place.frac[PLAN_TIER_HBM] * 100,
				 cand[i].place.ddr_pool * 100, cand[i].policy);
		else
			snprintf(name, sizeof(name), "hbm%.0f-ddr%.0f-ssd%.0f",
				 cand[i].place.frac[PLAN_TIER_HBM] * 100,
				 cand[i].place.frac[PLAN_TIER_DDR] * 100,
				 cand[i].place.frac[PLAN_TIER_SSD] * 100);
		o = plan_cli_result_json(&cand[i].r, name, &cand[i].place, req->hbm_bytes);
		if (cand[i].policy) {
			json_object_object_add(o, "policy", json_object_new_string(cand[i].policy));
			json_object_object_add(o, "ddr_pool_fraction", json_object_new_double(cand[i].place.ddr_pool));
			json_object_object_add(o, "pool_hit_rate", json_object_new_double(pool_hit(&cand[i])));
		}
		json_object_array_add(arr, o);
	}
	json_object_object_add(root, "feasible", json_object_new_int64((int64_t)n));
	json_object_object_add(root, "candidates", arr);
	json_object_object_add(root, "chosen", json_object_get(json_object_array_get_idx(arr, 0)));
	snprintf(size, sizeof(size), "%lluM", pool_mib(p, &cand[0]) ? pool_mib(p, &cand[0]) : 64);
	json_object_object_add(conf, "pool_size", json_object_new_string(size));
	if (cand[0].policy)
		json_object_object_add(conf, "cache_policy", json_object_new_string(cand[0].policy));
	json_object_object_add(root, "config", conf);
	if (c->trace)
		json_object_object_add(root, "routing", plan_cli_trace_json(c, tr));
	printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
						      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
}

int plan_cli_select(const struct plan_cli *c0)
{
	struct plan_cli c = *c0;
	struct plan_model m;
	struct plan_params p;
	struct plan_candidate *cand = NULL;
	struct plan_select_req req = { 0 };
	struct plan_cli_trace tr = { 0 };
	size_t n = 0, shown;
	char err[512];
	int r, ret = 2;

	if (plan_cli_setup(&c, &m, &p) < 0)
		return 2;
	plan_cli_sort_batches(c.batches, &c.nbatches);
	req.hbm_bytes = (c.hbm_gib >= 0 ? c.hbm_gib : p.hw.hbm_gib * p.hw.nodes * p.hw.gpus_per_node) * GIB;
	req.ddr_bytes = (c.ddr_gib >= 0 ? c.ddr_gib : p.hw.ddr_gib * p.hw.nodes) * GIB;
	req.max_latency_s = c.max_latency_ms / 1e3;
	req.max_energy_j = c.max_energy_j;
	req.objective = c.objective;
	req.batches = c.batches;
	req.nbatches = c.nbatches;
	req.ddr_steps = c.ddr_steps;
	if (c.trace) {
		if (plan_cli_trace_load(&c, &m, &p, &tr) < 0)
			return 2;
		r = plan_cli_trace_curves(&c, &tr, c.ddr_steps ? c.ddr_steps : 10);
		if (r < 0) {
			ret = r == -ENOMEM ? 1 : 2;
			goto out;
		}
		req.routing = tr.routing;
		req.curves = tr.curves;
		req.ncurves = tr.npolicies;
	}
	r = plan_select(&m, &p, &req, &cand, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "tierctl plan select: %s\n", err);
		ret = r == -ENOMEM ? 1 : 2;
		goto out;
	}
	shown = c.limit && c.limit < n ? c.limit : n;
	if (c.json) {
		print_json(&c, &m, &p, &req, cand, n, shown, &tr);
		ret = 0;
		goto out;
	}
	plan_cli_print_header(stdout, &m, &p);
	printf("\n%zu feasible (batch, placement) pairs within HBM %.0f GiB, DDR %.0f GiB", n,
	       req.hbm_bytes / GIB, req.ddr_bytes / GIB);
	if (req.max_latency_s > 0)
		printf(", <= %g ms/token", c.max_latency_ms);
	if (req.max_energy_j > 0)
		printf(", <= %g J/token", req.max_energy_j);
	printf("; best %s first%s:\n", objective_name(c.objective), shown < n ? " (--limit)" : "");
	printf("%5s %6s %6s %6s %9s %10s %9s %9s", "batch", "hbm%", "ddr%", "ssd%", "DDR GiB",
	       "J/token", "ms/token", "tok/s");
	printf(c.trace ? " %6s %-10s\n" : "\n", "hit%", "policy");
	for (size_t i = 0; i < shown; i++) {
		const struct plan_candidate *x = &cand[i];

		printf("%5u %6.1f %6.1f %6.1f %9.1f %10.4f %9.3f %9.0f", x->batch,
		       x->place.frac[PLAN_TIER_HBM] * 100, x->place.frac[PLAN_TIER_DDR] * 100,
		       x->place.frac[PLAN_TIER_SSD] * 100, x->r.ddr_need_bytes / GIB,
		       x->r.energy_per_token_j, x->r.latency_per_token_s * 1e3, x->r.tokens_per_s);
		if (c.trace)
			printf(" %6.1f %-10s", pool_hit(x) * 100, x->policy ? x->policy : "-");
		printf("%s\n", i ? "" : "  <- chosen");
	}
	if (c.trace)
		printf("hit%%: fetches (reads not served by HBM) the DDR pool served in the replay; "
		       "ddr%%, ssd%%: shares of all expert reads\n");
	print_snippet(&c, &m, &p, &cand[0]);
	ret = 0;
out:
	free(cand);
	plan_cli_trace_free(&tr);
	return ret;
}
