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

static void print_snippet(const struct plan_model *m, const struct plan_params *p,
			  const struct plan_candidate *best)
{
	const struct plan_result *r = &best->r;
	char name[sizeof(m->name)];
	double per_node = r->ddr_need_bytes / p->hw.nodes;
	/* Whole MiB, rounded up, with room for the slot headers of the pool. */
	unsigned long long mib = (unsigned long long)ceil(per_node * 1.02 / (1 << 20));

	printf("\n# tierd.conf for %s, chosen by tierctl plan select: batch %u, routed experts\n",
	       m->name, best->batch);
	printf("# %.0f%% in GPU memory (clients keep them resident), %.0f%% in the DDR pool, "
	       "%.0f%% read from NVMe.\n", best->place.frac[PLAN_TIER_HBM] * 100,
	       best->place.frac[PLAN_TIER_DDR] * 100, best->place.frac[PLAN_TIER_SSD] * 100);
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
	printf("[model %s]\n# Set path to the checkpoint directory (safetensors).\n"
	       "path = /var/lib/tierd/models/%s\nquota = %lluM\n", name, name, mib);
}

int plan_cli_select(const struct plan_cli *c0)
{
	struct plan_cli c = *c0;
	struct plan_model m;
	struct plan_params p;
	struct plan_candidate *cand = NULL;
	struct plan_select_req req = { 0 };
	struct json_object *root = NULL, *arr;
	size_t n = 0, shown;
	char err[512];
	int r;

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
	r = plan_select(&m, &p, &req, &cand, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "tierctl plan select: %s\n", err);
		return r == -ENOMEM ? 1 : 2;
	}
	shown = c.limit && c.limit < n ? c.limit : n;
	if (c.json) {
		root = plan_cli_setup_json(&m, &p);
		arr = json_object_new_array();
		for (size_t i = 0; i < shown; i++) {
			char name[48];

			snprintf(name, sizeof(name), "hbm%.0f-ddr%.0f-ssd%.0f",
				 cand[i].place.frac[PLAN_TIER_HBM] * 100,
				 cand[i].place.frac[PLAN_TIER_DDR] * 100,
				 cand[i].place.frac[PLAN_TIER_SSD] * 100);
			json_object_array_add(arr, plan_cli_result_json(&cand[i].r, name, &cand[i].place, req.hbm_bytes));
		}
		json_object_object_add(root, "feasible", json_object_new_int64((int64_t)n));
		json_object_object_add(root, "candidates", arr);
		json_object_object_add(root, "chosen", json_object_get(json_object_array_get_idx(arr, 0)));
		printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(root);
		free(cand);
		return 0;
	}
	plan_cli_print_header(stdout, &m, &p);
	printf("\n%zu feasible (batch, placement) pairs within HBM %.0f GiB, DDR %.0f GiB", n,
	       req.hbm_bytes / GIB, req.ddr_bytes / GIB);
	if (req.max_latency_s > 0)
		printf(", <= %g ms/token", c.max_latency_ms);
	if (req.max_energy_j > 0)
		printf(", <= %g J/token", req.max_energy_j);
	printf("; best %s first%s:\n", c.objective == PLAN_OBJ_ENERGY ? "energy" : "latency",
	       shown < n ? " (--limit)" : "");
	printf("%5s %6s %6s %6s %9s %10s %9s %9s\n", "batch", "hbm%", "ddr%", "ssd%", "DDR GiB",
	       "J/token", "ms/token", "tok/s");
	for (size_t i = 0; i < shown; i++) {
		const struct plan_candidate *x = &cand[i];

		printf("%5u %6.1f %6.1f %6.1f %9.1f %10.4f %9.3f %9.0f%s\n", x->batch,
		       x->place.frac[PLAN_TIER_HBM] * 100, x->place.frac[PLAN_TIER_DDR] * 100,
		       x->place.frac[PLAN_TIER_SSD] * 100, x->r.ddr_need_bytes / GIB,
		       x->r.energy_per_token_j, x->r.latency_per_token_s * 1e3, x->r.tokens_per_s,
		       i ? "" : "  <- chosen");
	}
	print_snippet(&m, &p, &cand[0]);
	free(cand);
	return 0;
}
