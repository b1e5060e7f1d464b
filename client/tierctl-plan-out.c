/* SPDX-License-Identifier: MIT */
/* tierctl plan: the table, --json and --svg of the per-batch figures. */
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

unsigned plan_cli_top_k(const struct plan_model *m, const struct plan_params *p)
{
	return p->top_k ? p->top_k : m->top_k;
}

void plan_cli_print_header(FILE *f, const struct plan_model *m, const struct plan_params *p)
{
	struct plan_sizes sz;

	plan_sizes_get(m, p, &sz);
	fprintf(f, "%s on %s: %u node%s x %u GPUs, context %u", m->name, p->hw.name, p->hw.nodes,
		p->hw.nodes > 1 ? "s" : "", p->hw.gpus_per_node, p->context);
	if (m->experts)
		fprintf(f, ", top-%u of %u experts", plan_cli_top_k(m, p), m->experts);
	fprintf(f, ", flash x%g\n", p->en.flash_scale);
	fprintf(f, "%.1f B params: %.1f GiB resident, %.1f GiB routed experts (%u MoE layers); "
		"KV %.0f KiB per token; HBM %.0f GiB, link %.0f GB/s per GPU\n",
		sz.params / 1e9, sz.resident_bytes / GIB, sz.routed_bytes / GIB, sz.moe_layers,
		sz.kv_bytes_per_token / 1024, p->hw.hbm_gib * p->hw.nodes * p->hw.gpus_per_node,
		p->hw.link_gbps);
}

static const char *const part_short[PLAN_NPARTS] = {
	"attn+kv", "dense", "exp-hbm", "exp-ddr", "exp-ssd", "fetch", "compute", "cache", "static",
};

static const char *const time_short[PLAN_NTIMES] = {
	"fc", "attn", "exp", "ar", "a2a", "wait",
};

struct json_object *plan_cli_result_json(const struct plan_result *r, const char *placement,
				       const struct plan_place *pl, double hbm_cap)
{
	struct json_object *o = json_object_new_object(), *b = json_object_new_object();
	struct json_object *fr = json_object_new_object(), *by = json_object_new_object();
	struct json_object *need = json_object_new_object(), *bound = json_object_new_object();
	struct json_object *ts = json_object_new_object(), *ep = json_object_new_object();

	json_object_object_add(o, "batch", json_object_new_int64(r->batch));
	json_object_object_add(o, "placement", json_object_new_string(placement));
	for (int t = 0; t < PLAN_NTIERS; t++)
		json_object_object_add(fr, plan_tier_name(t), json_object_new_double(pl->frac[t]));
	json_object_object_add(o, "experts_fraction", fr);
	json_object_object_add(o, "energy_per_token_j", json_object_new_double(r->energy_per_token_j));
	json_object_object_add(o, "latency_per_token_s", json_object_new_double(r->latency_per_token_s));
	json_object_object_add(o, "tokens_per_s", json_object_new_double(r->tokens_per_s));
	for (int i = 0; i < PLAN_NPARTS; i++)
		json_object_object_add(b, plan_part_name(i), json_object_new_double(r->energy_j[i]));
	json_object_object_add(o, "breakdown_j", b);
	for (int t = 0; t < PLAN_NTIERS; t++)
		json_object_object_add(by, plan_tier_name(t), json_object_new_double(r->bytes_read[t]));
	json_object_object_add(by, "hbm_write", json_object_new_double(r->hbm_write_bytes));
	json_object_object_add(by, "onchip", json_object_new_double(r->cache_bytes));
	json_object_object_add(o, "bytes_per_step", by);
	json_object_object_add(o, "flops_per_step", json_object_new_double(r->flops));
	json_object_object_add(o, "distinct_experts_per_layer", json_object_new_double(r->distinct_experts));
	for (int i = 0; i < PLAN_NTIMES; i++)
		json_object_object_add(ts, plan_time_name(i), json_object_new_double(r->time_s[i]));
	json_object_object_add(o, "time_s", ts);
	json_object_object_add(ep, "distinct_experts", json_object_new_double(r->distinct_experts));
	json_object_object_add(ep, "max_experts_per_gpu", json_object_new_double(r->ep_max_experts));
	json_object_object_add(ep, "mean_experts_per_gpu", json_object_new_double(r->ep_mean_experts));
	json_object_object_add(ep, "imbalance", json_object_new_double(
		r->ep_mean_experts > 0 ? r->ep_max_experts / r->ep_mean_experts : 0));
	json_object_object_add(ep, "max_over_all_active", json_object_new_double(r->ep_max_over_all));
	json_object_object_add(o, "expert_parallel", ep);
	json_object_object_add(o, "comm_bytes_per_gpu", json_object_new_double(r->comm_bytes_per_gpu));
	json_object_object_add(bound, "compute", json_object_new_int(r->bound_compute));
	json_object_object_add(bound, "hbm", json_object_new_int(r->bound_hbm));
	json_object_object_add(bound, "offload", json_object_new_int(r->bound_offload));
	json_object_object_add(o, "layers_bound_by", bound);
	json_object_object_add(need, "hbm", json_object_new_double(r->hbm_need_bytes));
	json_object_object_add(need, "ddr", json_object_new_double(r->ddr_need_bytes));
	json_object_object_add(need, "ssd", json_object_new_double(r->ssd_need_bytes));
	json_object_object_add(o, "capacity_bytes", need);
	json_object_object_add(o, "fits_hbm", json_object_new_boolean(r->hbm_need_bytes <= hbm_cap));
	return o;
}

struct json_object *plan_cli_setup_json(const struct plan_model *m, const struct plan_params *p)
{
	struct json_object *o = json_object_new_object(), *mo = json_object_new_object();
	struct json_object *hw = json_object_new_object(), *en = json_object_new_object();
	struct plan_sizes sz;

	plan_sizes_get(m, p, &sz);
	json_object_object_add(mo, "name", json_object_new_string(m->name));
	json_object_object_add(mo, "params", json_object_new_double(sz.params));
	json_object_object_add(mo, "resident_bytes", json_object_new_double(sz.resident_bytes));
	json_object_object_add(mo, "routed_bytes", json_object_new_double(sz.routed_bytes));
	json_object_object_add(mo, "expert_bytes", json_object_new_double(sz.expert_bytes));
	json_object_object_add(mo, "kv_bytes_per_token", json_object_new_double(sz.kv_bytes_per_token));
	json_object_object_add(mo, "moe_layers", json_object_new_int(sz.moe_layers));
	json_object_object_add(mo, "experts", json_object_new_int(m->experts));
	json_object_object_add(mo, "top_k", json_object_new_int(plan_cli_top_k(m, p)));
	json_object_object_add(o, "model", mo);
	json_object_object_add(hw, "name", json_object_new_string(p->hw.name));
	json_object_object_add(hw, "nodes", json_object_new_int(p->hw.nodes));
	json_object_object_add(hw, "gpus_per_node", json_object_new_int(p->hw.gpus_per_node));
	json_object_object_add(hw, "gpu_tflops", json_object_new_double(p->hw.gpu_tflops));
	json_object_object_add(hw, "hbm_gbps", json_object_new_double(p->hw.hbm_gbps));
	json_object_object_add(hw, "hbm_gib", json_object_new_double(p->hw.hbm_gib));
	json_object_object_add(hw, "link_gbps", json_object_new_double(p->hw.link_gbps));
	json_object_object_add(hw, "ddr_gbps", json_object_new_double(p->hw.ddr_gbps));
	json_object_object_add(hw, "ssd_gbps", json_object_new_double(p->hw.ssd_gbps));
	json_object_object_add(hw, "tp", json_object_new_int(plan_tp(&p->hw)));
	json_object_object_add(hw, "nvlink_gbps", json_object_new_double(p->hw.nvlink_gbps));
	json_object_object_add(hw, "nvlink_lat_us", json_object_new_double(p->hw.nvlink_lat_us));
	json_object_object_add(hw, "ib_gbps", json_object_new_double(p->hw.ib_gbps));
	json_object_object_add(hw, "ib_lat_us", json_object_new_double(p->hw.ib_lat_us));
	json_object_object_add(hw, "act_bytes", json_object_new_double(p->hw.act_bytes));
	json_object_object_add(o, "hardware", hw);
	json_object_object_add(en, "pj_hbm", json_object_new_double(p->en.pj_hbm));
	json_object_object_add(en, "pj_ddr", json_object_new_double(p->en.pj_ddr));
	json_object_object_add(en, "pj_flash", json_object_new_double(p->en.pj_flash));
	json_object_object_add(en, "flash_scale", json_object_new_double(p->en.flash_scale));
	json_object_object_add(en, "pj_flop", json_object_new_double(p->en.pj_flop));
	json_object_object_add(en, "pj_l1", json_object_new_double(p->en.pj_l1));
	json_object_object_add(en, "pj_l2", json_object_new_double(p->en.pj_l2));
	json_object_object_add(en, "gpu_idle_w", json_object_new_double(p->en.gpu_idle_w));
	json_object_object_add(en, "ddr_static_w", json_object_new_double(p->en.ddr_static_w));
	json_object_object_add(en, "ddr_static_gb", json_object_new_double(p->en.ddr_static_gb));
	json_object_object_add(en, "ddr_gb_per_gpu", json_object_new_double(p->en.ddr_gb_per_gpu));
	json_object_object_add(en, "ssd_idle_w", json_object_new_double(p->en.ssd_idle_w));
	json_object_object_add(o, "energy", en);
	json_object_object_add(o, "context", json_object_new_int(p->context));
	json_object_object_add(o, "mla_kv_reads", json_object_new_int(p->mla_kv_reads));
	return o;
}

static int write_svg(const char *path, const struct plan_model *m, const struct plan_params *p,
		     const unsigned *batches, size_t nb, const struct plan_result *res)
{
	char title[160], sub[256];
	struct plan_chart ch = { .title = title, .subtitle = sub, .batches = batches,
				 .nbatches = nb, .res = res };
	FILE *f;
	int r;

	snprintf(title, sizeof(title), "%s: energy per token by batch size", m->name);
	snprintf(sub, sizeof(sub), "%s on %s, %u x %u GPUs, context %u, flash x%g; J per token, log scales",
		 m->name, p->hw.name, p->hw.nodes, p->hw.gpus_per_node, p->context, p->en.flash_scale);
	f = fopen(path, "we");
	if (!f) {
		r = -errno;
		fprintf(stderr, "tierctl plan: %s: %s\n", path, strerror(-r));
		return r;
	}
	r = plan_chart_write(f, &ch);
	if (fclose(f) && !r)
		r = -EIO;
	if (r < 0)
		fprintf(stderr, "tierctl plan: %s: cannot write the chart: %s\n", path, strerror(-r));
	return r;
}

int plan_cli_run(const struct plan_cli *c0, bool json)
{
	struct plan_cli c = *c0;
	struct plan_model m;
	struct plan_params p;
	struct plan_result *res = NULL;
	struct plan_cli_trace tr = { 0 };
	struct json_object *root = NULL, *arr;
	double hbm_cap;
	bool any_place = false, nofit = false;
	char err[512];
	int r, ret = 2;

	if (plan_cli_setup(&c, &m, &p) < 0)
		return 2;
	plan_cli_sort_batches(c.batches, &c.nbatches);
	if (c.trace && plan_cli_trace_load(&c, &m, &p, &tr) < 0)
		return 2;
	for (int t = 0; t < PLAN_NTIERS; t++)
		any_place |= c.place[t];
	if (!any_place)
		for (int t = 0; t < PLAN_NTIERS; t++)
			c.place[t] = true;
	if (!m.experts)		/* a dense model has no routed experts to place */
		for (int t = 1; t < PLAN_NTIERS; t++)
			c.place[t] = false;
	hbm_cap = p.hw.hbm_gib * GIB * p.hw.nodes * p.hw.gpus_per_node;

	res = calloc(c.nbatches * PLAN_NTIERS, sizeof(*res));
	if (!res) {
		ret = 1;
		goto out;
	}
	/* All three placements are computed (the chart needs them); --placement filters the output. */
	for (size_t i = 0; i < c.nbatches; i++) {
		for (int t = 0; t < PLAN_NTIERS; t++) {
			struct plan_place pl;

			plan_place_all(t, &pl);
			r = plan_eval_routed(&m, &p, &pl, c.batches[i], c.trace ? &tr.routing[i] : NULL,
					     &res[i * PLAN_NTIERS + t], err, sizeof(err));
			if (r < 0) {
				fprintf(stderr, "tierctl plan: %s\n", err);
				goto out;
			}
		}
	}

	if (json) {
		root = plan_cli_setup_json(&m, &p);
		arr = json_object_new_array();
		json_object_object_add(root, "results", arr);
		if (c.trace)
			json_object_object_add(root, "routing", plan_cli_trace_json(&c, &tr));
		for (size_t i = 0; i < c.nbatches; i++) {
			for (int t = 0; t < PLAN_NTIERS; t++) {
				struct plan_place pl;

				if (!c.place[t])
					continue;
				plan_place_all(t, &pl);
				json_object_array_add(arr, plan_cli_result_json(&res[i * PLAN_NTIERS + t],
								       plan_tier_name(t), &pl, hbm_cap));
			}
		}
		printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		plan_cli_print_header(stdout, &m, &p);
		printf("\n%5s %-5s %10s %9s %9s |", "batch", "place", "J/token", "ms/token", "tok/s");
		for (int i = 0; i < PLAN_NPARTS; i++)
			printf(" %8s", part_short[i]);
		printf("  (mJ/token) |");
		for (int i = 0; i < PLAN_NTIMES; i++)
			printf(" %6s", time_short[i]);
		printf("  (ms/step) | ep-max  bound c/h/o\n");
		for (size_t i = 0; i < c.nbatches; i++) {
			for (int t = 0; t < PLAN_NTIERS; t++) {
				const struct plan_result *x = &res[i * PLAN_NTIERS + t];
				bool fits = x->hbm_need_bytes <= hbm_cap;

				if (!c.place[t])
					continue;
				nofit |= !fits;
				printf("%5u %-4s%c %10.4f %9.3f %9.1f |", x->batch, plan_tier_name(t),
				       fits ? ' ' : '*', x->energy_per_token_j, x->latency_per_token_s * 1e3,
				       x->tokens_per_s);
				for (int k = 0; k < PLAN_NPARTS; k++)
					printf(" %8.3f", x->energy_j[k] * 1e3);
				printf("  %10s |", "");
				for (int k = 0; k < PLAN_NTIMES; k++)
					printf(" %6.2f", x->time_s[k] * 1e3);
				printf("  %9s | %6.2f  %u/%u/%u\n", "", x->ep_max_experts, x->bound_compute,
				       x->bound_hbm, x->bound_offload);
			}
		}
		if (nofit)
			printf("* does not fit in the %.0f GiB of HBM (weights kept there plus KV cache)\n",
			       hbm_cap / GIB);
		if (c.place[PLAN_TIER_HBM] && c.place[PLAN_TIER_SSD]) {
			const struct plan_result *a = &res[PLAN_TIER_HBM], *b = &res[PLAN_TIER_SSD];
			const struct plan_result *y = &res[(c.nbatches - 1) * PLAN_NTIERS + PLAN_TIER_HBM];
			const struct plan_result *z = &res[(c.nbatches - 1) * PLAN_NTIERS + PLAN_TIER_SSD];

			printf("SSD / HBM energy per token: %.1fx at batch %u, %.1fx at batch %u\n",
			       b->energy_per_token_j / a->energy_per_token_j, a->batch,
			       z->energy_per_token_j / y->energy_per_token_j, y->batch);
		}
		if (c.trace)
			plan_cli_trace_print(stdout, &c, &tr, p.hw.nodes * p.hw.gpus_per_node);
	}
	if (c.svg && write_svg(c.svg, &m, &p, c.batches, c.nbatches, res) < 0) {
		ret = 1;
		goto out;
	}
	ret = 0;
out:
	json_object_put(root);
	free(res);
	plan_cli_trace_free(&tr);
	return ret;
}
