/* SPDX-License-Identifier: MIT */
/*
 * tierctl plan: per-token energy and latency of routed experts in HBM, DDR or
 * SSD, by batch size; and `tierctl plan select`, which picks a placement and DDR
 * cache size under capacity, latency and energy constraints.  The model is
 * client/plan/; this file parses options and builds the parameters, the
 * others print (see tierctl-plan.h).
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

/* Bytes read when measuring the disk: enough to get past caches and ramp-up. */
#define MEASURE_BYTES (1ull << 30)

enum {
	OPT_MODEL_CONFIG = 256, OPT_MEASURE_FILE, OPT_H2D, OPT_NODES, OPT_GPUS, OPT_FLASH,
	OPT_TOPK, OPT_CONTEXT, OPT_SET, OPT_PLACEMENT, OPT_JSON, OPT_SVG, OPT_LIST,
	OPT_HBM_GIB, OPT_DDR_GIB, OPT_MAX_LAT, OPT_MAX_EN, OPT_OBJECTIVE, OPT_DDR_STEPS,
	OPT_LIMIT, OPT_TRACE, OPT_POLICY,
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tierctl plan (--model NAME | --model-config config.json) [--batch N[,N...]]\n"
		"         [--hardware dgx-h100-nvl5|dgx-h100-nvl4|FILE|local] [--measure-file PATH]\n"
		"         [--h2d-gbps X] [--nodes N] [--gpus N] [--flash-scale X] [--top-k K]\n"
		"         [--context N] [--set key=value]... [--placement hbm,ddr,ssd] [--json] [--svg FILE]\n"
		"         [--trace FILE]\n"
		"       tierctl plan select (--model NAME | --model-config FILE) [--hbm-gib X] [--ddr-gib Y]\n"
		"         [--max-latency-ms L] [--max-energy-j J] [--objective energy|latency|pool]\n"
		"         [--batch ...] [--ddr-steps N] [--limit N] [--trace FILE [--policy NAME[,NAME...]]]\n"
		"         [the options above]\n"
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
		{ "trace", required_argument, NULL, OPT_TRACE },
		{ "policy", required_argument, NULL, OPT_POLICY },
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
			} else if (!strcmp(optarg, "pool")) {
				c->objective = PLAN_OBJ_POOL;
			} else {
				fprintf(stderr, "tierctl plan: --objective: expected energy, latency or pool, "
					"got \"%s\"\n", optarg);
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
		case OPT_TRACE: c->trace = optarg; break;
		case OPT_POLICY:
			select_only = true;
			c->policies = optarg;
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
		fprintf(stderr, "tierctl plan: --hbm-gib, --ddr-gib, --max-*, --objective, --ddr-steps, "
			"--limit and --policy belong to \"tierctl plan select\"\n");
		return -EINVAL;
	}
	if (c->policies && !c->trace) {
		fprintf(stderr, "tierctl plan select: --policy goes with --trace (the hit rates are "
			"measured per policy)\n");
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
int plan_cli_setup(const struct plan_cli *c, struct plan_model *m, struct plan_params *p)
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

/* Ascending and without repeats, for the chart's x axis. */
void plan_cli_sort_batches(unsigned *b, size_t *n)
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
		return plan_cli_select(&c);
	return plan_cli_run(&c, c.json);
}
