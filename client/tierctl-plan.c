/* SPDX-License-Identifier: MIT */
/*
 * tierctl plan: per-token energy and latency of routed experts in HBM, DDR or
 * SSD, by batch size; and `tierctl plan select`, which picks a placement and DDR
 * cache size under capacity, latency and energy constraints.  The model is
 * client/plan/plan.c; this file parses options and prints.
 */
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

#define MAX_BATCHES 64
#define MAX_SETS 64
#define GIB (1024.0 * 1024 * 1024)
/* Bytes read when measuring the disk: enough to get past caches and ramp-up. */
#define MEASURE_BYTES (1ull << 30)

/* Everything the command line asks for. */
struct plan_cli {
	bool select;
	const char *model;
	const char *model_config;
	const char *hardware;
	const char *measure_file;
	double h2d_gbps;
	unsigned nodes, gpus;		/* 0: the model's system */
	const char *flash_scale, *top_k, *context;
	const char *sets[MAX_SETS];
	size_t nsets;
	unsigned batches[MAX_BATCHES];
	size_t nbatches;
	bool place[PLAN_NTIERS];
	bool json;
	const char *svg;
	bool list;
	/* select */
	double hbm_gib, ddr_gib;	/* < 0: from the hardware */
	double max_latency_ms, max_energy_j;
	enum plan_objective objective;
	unsigned ddr_steps;
	unsigned limit;
};

enum {
	OPT_MODEL_CONFIG = 256, OPT_MEASURE_FILE, OPT_H2D, OPT_NODES, OPT_GPUS, OPT_FLASH,
	OPT_TOPK, OPT_CONTEXT, OPT_SET, OPT_PLACEMENT, OPT_JSON, OPT_SVG, OPT_LIST,
	OPT_HBM_GIB, OPT_DDR_GIB, OPT_MAX_LAT, OPT_MAX_EN, OPT_OBJECTIVE, OPT_DDR_STEPS,
	OPT_LIMIT,
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tierctl plan (--model NAME | --model-config config.json) [--batch N[,N...]]\n"
		"         [--hardware dgx-h100-nvl5|dgx-h100-nvl4|FILE|local] [--measure-file PATH]\n"
		"         [--h2d-gbps X] [--nodes N] [--gpus N] [--flash-scale X] [--top-k K]\n"
		"         [--context N] [--set key=value]... [--placement hbm,ddr,ssd] [--json] [--svg FILE]\n"
		"       tierctl plan select (--model NAME | --model-config FILE) [--hbm-gib X] [--ddr-gib Y]\n"
		"         [--max-latency-ms L] [--max-energy-j J] [--objective energy|latency]\n"
		"         [--batch ...] [--ddr-steps N] [--limit N] [the options above]\n"
		"       tierctl plan --list\n"
		"Batch lists: \"1,8,64\" or \"1-1024\" (powers of two).  See tierctl-plan(8).\n");
}

static int parse_double(const char *opt, const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(*out) || *out < 0) {
		fprintf(stderr, "tierctl plan: %s: expected a non-negative number, got \"%s\"\n", opt, s);
		return -EINVAL;
	}
	return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned *out)
{
	double v;

	if (parse_double(opt, s, &v) < 0)
		return -EINVAL;
	if (v != floor(v) || v < 1 || v > 1e6) {
		fprintf(stderr, "tierctl plan: %s: expected a positive integer, got \"%s\"\n", opt, s);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_placements(const char *s, bool *place)
{
	char buf[64], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		goto bad;
	snprintf(buf, sizeof(buf), "%s", s);
	memset(place, 0, sizeof(bool) * PLAN_NTIERS);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int t;

		for (t = 0; t < PLAN_NTIERS; t++)
			if (!strcmp(tok, plan_tier_name(t)))
				break;
		if (t == PLAN_NTIERS)
			goto bad;
		place[t] = true;
	}
	for (int t = 0; t < PLAN_NTIERS; t++)
		if (place[t])
			return 0;
bad:
	fprintf(stderr, "tierctl plan: --placement: expected a list of hbm, ddr, ssd, got \"%s\"\n", s);
	return -EINVAL;
}

static int parse_args(struct plan_cli *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "model-config", required_argument, NULL, OPT_MODEL_CONFIG },
		{ "batch", required_argument, NULL, 'b' },
		{ "hardware", required_argument, NULL, 'H' },
		{ "measure-file", required_argument, NULL, OPT_MEASURE_FILE },
		{ "h2d-gbps", required_argument, NULL, OPT_H2D },
		{ "nodes", required_argument, NULL, OPT_NODES },
		{ "gpus", required_argument, NULL, OPT_GPUS },
		{ "flash-scale", required_argument, NULL, OPT_FLASH },
		{ "top-k", required_argument, NULL, OPT_TOPK },
		{ "context", required_argument, NULL, OPT_CONTEXT },
		{ "set", required_argument, NULL, OPT_SET },
		{ "placement", required_argument, NULL, OPT_PLACEMENT },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "svg", required_argument, NULL, OPT_SVG },
		{ "list", no_argument, NULL, OPT_LIST },
		{ "hbm-gib", required_argument, NULL, OPT_HBM_GIB },
		{ "ddr-gib", required_argument, NULL, OPT_DDR_GIB },
		{ "max-latency-ms", required_argument, NULL, OPT_MAX_LAT },
		{ "max-energy-j", required_argument, NULL, OPT_MAX_EN },
		{ "objective", required_argument, NULL, OPT_OBJECTIVE },
		{ "ddr-steps", required_argument, NULL, OPT_DDR_STEPS },
		{ "limit", required_argument, NULL, OPT_LIMIT },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *batches = NULL;
	bool select_only = false;
	int opt, r;

	if (argc > 1 && !strcmp(argv[1], "select")) {
		c->select = true;
		argc--;
		argv++;
	}
	while ((opt = getopt_long(argc, argv, "m:b:H:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm': c->model = optarg; break;
		case OPT_MODEL_CONFIG: c->model_config = optarg; break;
		case 'b': batches = optarg; break;
		case 'H': c->hardware = optarg; break;
		case OPT_MEASURE_FILE: c->measure_file = optarg; break;
		case OPT_H2D:
			if (parse_double("--h2d-gbps", optarg, &c->h2d_gbps) < 0 || !(c->h2d_gbps > 0)) {
				fprintf(stderr, "tierctl plan: --h2d-gbps must be positive\n");
				return -EINVAL;
			}
			break;
		case OPT_NODES:
			if ((r = parse_uint("--nodes", optarg, &c->nodes)) < 0)
				return r;
			break;
		case OPT_GPUS:
			if ((r = parse_uint("--gpus", optarg, &c->gpus)) < 0)
				return r;
			break;
		case OPT_FLASH: c->flash_scale = optarg; break;
		case OPT_TOPK: c->top_k = optarg; break;
		case OPT_CONTEXT: c->context = optarg; break;
		case OPT_SET:
			if (c->nsets == MAX_SETS) {
				fprintf(stderr, "tierctl plan: at most %d --set\n", MAX_SETS);
				return -EINVAL;
			}
			c->sets[c->nsets++] = optarg;
			break;
		case OPT_PLACEMENT:
			if ((r = parse_placements(optarg, c->place)) < 0)
				return r;
			break;
		case OPT_JSON: c->json = true; break;
		case OPT_SVG: c->svg = optarg; break;
		case OPT_LIST: c->list = true; break;
		case OPT_HBM_GIB:
			select_only = true;
			if ((r = parse_double("--hbm-gib", optarg, &c->hbm_gib)) < 0)
				return r;
			break;
		case OPT_DDR_GIB:
			select_only = true;
			if ((r = parse_double("--ddr-gib", optarg, &c->ddr_gib)) < 0)
				return r;
			break;
		case OPT_MAX_LAT:
			select_only = true;
			if ((r = parse_double("--max-latency-ms", optarg, &c->max_latency_ms)) < 0)
				return r;
			break;
		case OPT_MAX_EN:
			select_only = true;
			if ((r = parse_double("--max-energy-j", optarg, &c->max_energy_j)) < 0)
				return r;
			break;
		case OPT_OBJECTIVE:
			select_only = true;
			if (!strcmp(optarg, "energy")) {
				c->objective = PLAN_OBJ_ENERGY;
			} else if (!strcmp(optarg, "latency")) {
				c->objective = PLAN_OBJ_LATENCY;
			} else {
				fprintf(stderr, "tierctl plan: --objective: expected energy or latency, got \"%s\"\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_DDR_STEPS:
			select_only = true;
			if ((r = parse_uint("--ddr-steps", optarg, &c->ddr_steps)) < 0)
				return r;
			if (c->ddr_steps > 1000) {
				fprintf(stderr, "tierctl plan: --ddr-steps: at most 1000\n");
				return -EINVAL;
			}
			break;
		case OPT_LIMIT:
			select_only = true;
			if ((r = parse_uint("--limit", optarg, &c->limit)) < 0)
				return r;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tierctl plan: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return -EINVAL;
	}
	if (c->list)
		return 0;
	if (select_only && !c->select) {
		fprintf(stderr, "tierctl plan: --hbm-gib, --ddr-gib, --max-*, --objective, --ddr-steps "
			"and --limit belong to \"tierctl plan select\"\n");
		return -EINVAL;
	}
	if (!!c->model == !!c->model_config) {
		fprintf(stderr, "tierctl plan: give one of --model NAME or --model-config FILE\n");
		return -EINVAL;
	}
	if (c->measure_file && (!c->hardware || strcmp(c->hardware, "local"))) {
		fprintf(stderr, "tierctl plan: --measure-file goes with --hardware local\n");
		return -EINVAL;
	}
	if (c->h2d_gbps > 0 && (!c->hardware || strcmp(c->hardware, "local"))) {
		fprintf(stderr, "tierctl plan: --h2d-gbps goes with --hardware local\n");
		return -EINVAL;
	}
	if (!batches)
		batches = "1-1024";
	r = plan_parse_batches(batches, c->batches, MAX_BATCHES, &c->nbatches);
	if (r < 0) {
		fprintf(stderr, "tierctl plan: --batch: expected positive sizes like \"1,8,64\" or "
			"\"1-1024\" (at most %d), got \"%s\"\n", MAX_BATCHES, batches);
		return -EINVAL;
	}
	return 0;
}

/*
 * Builds the model and the parameters: model, its system, the hardware file or
 * measurement, --nodes/--gpus, --set, then the what-if flags, each over the last.
 */
static int setup(const struct plan_cli *c, struct plan_model *m, struct plan_params *p)
{
	unsigned nodes = 1, gpus = 8;
	char err[512];
	int r;

	plan_params_default(p);
	if (c->model)
		r = plan_model_builtin(c->model, m, &nodes, &gpus, err, sizeof(err));
	else
		r = plan_model_from_file(c->model_config, m, err, sizeof(err));
	if (r < 0)
		goto bad;
	p->hw.nodes = nodes;
	p->hw.gpus_per_node = gpus;

	if (!c->hardware || !strcmp(c->hardware, "dgx-h100-nvl5") || !strcmp(c->hardware, "dgx-h100") ||
	    !strcmp(c->hardware, "dgx-h100-nvl4")) {
		r = plan_hw_builtin(c->hardware ? c->hardware : "dgx-h100-nvl5", &p->hw, err, sizeof(err));
		if (r < 0)
			goto bad;
		p->hw.nodes = nodes;
		p->hw.gpus_per_node = gpus;
	} else if (!strcmp(c->hardware, "local")) {
		double gbps;

		/* GPU figures stay the built-in H100's: this machine has no GPU to measure. */
		snprintf(p->hw.name, sizeof(p->hw.name), "local");
		p->hw.nodes = 1;
		p->hw.gpus_per_node = 1;
		r = plan_hw_measure_copy(&gbps, err, sizeof(err));
		if (r < 0)
			goto bad;
		p->hw.ddr_gbps = gbps;
		if (c->measure_file) {
			r = plan_hw_measure_read(c->measure_file, MEASURE_BYTES, &gbps, err, sizeof(err));
			if (r < 0)
				goto bad;
			p->hw.ssd_gbps = gbps;
		} else {
			fprintf(stderr, "tierctl plan: no --measure-file: SSD reads assumed as fast as the link\n");
		}
		if (c->h2d_gbps > 0)
			p->hw.link_gbps = c->h2d_gbps;
		else
			fprintf(stderr, "tierctl plan: no --h2d-gbps from a client: host-to-GPU link "
				"assumed %.0f GB/s\n", p->hw.link_gbps);
		if (!c->json)
			fprintf(stderr, "tierctl plan: measured here: DDR copy %.2f GB/s, disk read %.2f GB/s "
				"(O_DIRECT, io_uring, QD8 x 1 MiB)\n", p->hw.ddr_gbps, p->hw.ssd_gbps);
	} else {
		r = plan_hw_load_file(p, c->hardware, err, sizeof(err));
		if (r == -ENOENT && !strchr(c->hardware, '/') && !strchr(c->hardware, '.'))
			r = plan_hw_builtin(c->hardware, &p->hw, err, sizeof(err));
		if (r < 0)
			goto bad;
	}
	if (c->nodes)
		p->hw.nodes = c->nodes;
	if (c->gpus)
		p->hw.gpus_per_node = c->gpus;
	for (size_t i = 0; i < c->nsets; i++) {
		const char *eq = strchr(c->sets[i], '=');
		char key[64];

		if (!eq || eq == c->sets[i] || (size_t)(eq - c->sets[i]) >= sizeof(key)) {
			snprintf(err, sizeof(err), "--set \"%s\": expected key=value", c->sets[i]);
			r = -EINVAL;
			goto bad;
		}
		snprintf(key, sizeof(key), "%.*s", (int)(eq - c->sets[i]), c->sets[i]);
		r = plan_set(p, key, eq + 1, err, sizeof(err));
		if (r < 0)
			goto bad;
	}
	if ((c->flash_scale && (r = plan_set(p, "flash_scale", c->flash_scale, err, sizeof(err))) < 0) ||
	    (c->top_k && (r = plan_set(p, "top_k", c->top_k, err, sizeof(err))) < 0) ||
	    (c->context && (r = plan_set(p, "context", c->context, err, sizeof(err))) < 0))
		goto bad;
	if (c->top_k && !p->top_k) {
		snprintf(err, sizeof(err), "top_k: must be at least 1");
		r = -EINVAL;
		goto bad;
	}
	r = plan_params_check(p, err, sizeof(err));
	if (r < 0)
		goto bad;
	return 0;
bad:
	fprintf(stderr, "tierctl plan: %s\n", err);
	return r;
}

static unsigned eff_k(const struct plan_model *m, const struct plan_params *p)
{
	return p->top_k ? p->top_k : m->top_k;
}

static void print_header(FILE *f, const struct plan_model *m, const struct plan_params *p)
{
	struct plan_sizes sz;

	plan_sizes_get(m, p, &sz);
	fprintf(f, "%s on %s: %u node%s x %u GPUs, context %u", m->name, p->hw.name, p->hw.nodes,
		p->hw.nodes > 1 ? "s" : "", p->hw.gpus_per_node, p->context);
	if (m->experts)
		fprintf(f, ", top-%u of %u experts", eff_k(m, p), m->experts);
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

static struct json_object *result_json(const struct plan_result *r, const char *placement,
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

static struct json_object *setup_json(const struct plan_model *m, const struct plan_params *p)
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
	json_object_object_add(mo, "top_k", json_object_new_int(eff_k(m, p)));
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

/* Ascending and without repeats, for the chart's x axis. */
static void sort_batches(unsigned *b, size_t *n)
{
	size_t out = 0;

	for (size_t i = 1; i < *n; i++) {
		unsigned v = b[i];
		size_t j = i;

		while (j > 0 && b[j - 1] > v) {
			b[j] = b[j - 1];
			j--;
		}
		b[j] = v;
	}
	for (size_t i = 0; i < *n; i++)
		if (!out || b[out - 1] != b[i])
			b[out++] = b[i];
	*n = out;
}

static int run_plan(const struct plan_cli *c0, bool json)
{
	struct plan_cli c = *c0;
	struct plan_model m;
	struct plan_params p;
	struct plan_result *res = NULL;
	struct json_object *root = NULL, *arr;
	double hbm_cap;
	bool any_place = false, nofit = false;
	char err[512];
	int r, ret = 2;

	if (setup(&c, &m, &p) < 0)
		return 2;
	sort_batches(c.batches, &c.nbatches);
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
	if (!res)
		return 1;
	/* All three placements are computed (the chart needs them); --placement filters the output. */
	for (size_t i = 0; i < c.nbatches; i++) {
		for (int t = 0; t < PLAN_NTIERS; t++) {
			struct plan_place pl;

			plan_place_all(t, &pl);
			r = plan_eval(&m, &p, &pl, c.batches[i], &res[i * PLAN_NTIERS + t], err, sizeof(err));
			if (r < 0) {
				fprintf(stderr, "tierctl plan: %s\n", err);
				goto out;
			}
		}
	}

	if (json) {
		root = setup_json(&m, &p);
		arr = json_object_new_array();
		json_object_object_add(root, "results", arr);
		for (size_t i = 0; i < c.nbatches; i++) {
			for (int t = 0; t < PLAN_NTIERS; t++) {
				struct plan_place pl;

				if (!c.place[t])
					continue;
				plan_place_all(t, &pl);
				json_object_array_add(arr, result_json(&res[i * PLAN_NTIERS + t],
								       plan_tier_name(t), &pl, hbm_cap));
			}
		}
		printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		print_header(stdout, &m, &p);
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
	}
	if (c.svg && write_svg(c.svg, &m, &p, c.batches, c.nbatches, res) < 0) {
		ret = 1;
		goto out;
	}
	ret = 0;
out:
	json_object_put(root);
	free(res);
	return ret;
}

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

static int run_select(const struct plan_cli *c0)
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

	if (setup(&c, &m, &p) < 0)
		return 2;
	sort_batches(c.batches, &c.nbatches);
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
		root = setup_json(&m, &p);
		arr = json_object_new_array();
		for (size_t i = 0; i < shown; i++) {
			char name[48];

			snprintf(name, sizeof(name), "hbm%.0f-ddr%.0f-ssd%.0f",
				 cand[i].place.frac[PLAN_TIER_HBM] * 100,
				 cand[i].place.frac[PLAN_TIER_DDR] * 100,
				 cand[i].place.frac[PLAN_TIER_SSD] * 100);
			json_object_array_add(arr, result_json(&cand[i].r, name, &cand[i].place, req.hbm_bytes));
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
	print_header(stdout, &m, &p);
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

static void list_builtins(void)
{
	printf("models:");
	for (const char *const *n = plan_model_builtin_names(); *n; n++)
		printf(" %s", *n);
	printf("\nhardware: dgx-h100-nvl5 (default, alias dgx-h100) dgx-h100-nvl4 local FILE\nkeys:");
	for (size_t i = 0; plan_key_name(i); i++)
		printf(" %s", plan_key_name(i));
	printf("\n");
}

int cmd_plan(const struct tierctl_opts *o, int argc, char **argv)
{
	struct plan_cli c = { .hbm_gib = -1, .ddr_gib = -1, .objective = PLAN_OBJ_ENERGY };
	int r;

	r = parse_args(&c, argc, argv);
	if (r)
		return r > 0 ? 0 : 2;
	if (c.list) {
		list_builtins();
		return 0;
	}
	c.json |= o->json != 0;
	if (c.select)
		return run_select(&c);
	return run_plan(&c, c.json);
}
