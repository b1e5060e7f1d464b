/* SPDX-License-Identifier: MIT */
/*
 * Internal to `tierctl plan`: what its files share.  tierctl-plan.c parses
 * the command line and builds the model and parameters; tierctl-plan-out.c
 * prints the per-batch table, --json and --svg; tierctl-plan-select.c runs
 * `plan select`; tierctl-plan-svg.c draws the chart.
 */
#ifndef TIERCTL_PLAN_H
#define TIERCTL_PLAN_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>

#include "plan.h"
#include "plan_trace.h"

#define MAX_BATCHES 64
#define MAX_SETS 64
#define GIB (1024.0 * 1024 * 1024)

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
	const char *trace;		/* --trace: measured routing */
	/* select */
	double hbm_gib, ddr_gib;	/* < 0: from the hardware */
	double max_latency_ms, max_energy_j;
	enum plan_objective objective;
	unsigned ddr_steps;
	unsigned limit;
	const char *policies;		/* --policy: comma separated; NULL: every one */
};

/* Routing measured in --trace, by batch size (tierctl-plan-trace.c). */
struct plan_cli_trace_batch {
	struct plan_trace_batch info;
	double distinct, ep_max;		/* measured */
	double distinct_uniform, ep_max_uniform;
};

struct plan_cli_trace {
	struct plan_trace *t;
	size_t nbatches;			/* the command line's, sorted */
	double *freq;				/* [nbatches][experts + 1] */
	struct plan_routing *routing;		/* [nbatches] */
	struct plan_cli_trace_batch *by_batch;	/* [nbatches] */
	/* select: hit-rate curves, [nbatches][npolicies], at pool sizes pool[] */
	char **policies;
	size_t npolicies;
	double *pool, *hits;
	struct plan_hit_curve *curves;
};

/*
 * Builds the model and the parameters: model, its system, the hardware file or
 * measurement, --nodes/--gpus, --set, then the what-if flags, each over the last.
 * Prints what is wrong.
 */
int plan_cli_setup(const struct plan_cli *c, struct plan_model *m, struct plan_params *p);
/* Ascending and without repeats. */
void plan_cli_sort_batches(unsigned *b, size_t *n);
unsigned plan_cli_top_k(const struct plan_model *m, const struct plan_params *p);
void plan_cli_print_header(FILE *f, const struct plan_model *m, const struct plan_params *p);
struct json_object *plan_cli_setup_json(const struct plan_model *m, const struct plan_params *p);
struct json_object *plan_cli_result_json(const struct plan_result *r, const char *placement,
					 const struct plan_place *pl, double hbm_cap);
/* The two commands; their exit status (0, 1 on a system error, 2 on bad input). */
int plan_cli_run(const struct plan_cli *c, bool json);
int plan_cli_select(const struct plan_cli *c);

/* Reads --trace and measures its routing for c's batches (sorted); checks the
 * trace against the model.  Prints what is wrong. */
int plan_cli_trace_load(const struct plan_cli *c, const struct plan_model *m,
			const struct plan_params *p, struct plan_cli_trace *tr);
/* The hit-rate curves of --policy (or every policy), at pool sizes k / steps. */
int plan_cli_trace_curves(const struct plan_cli *c, struct plan_cli_trace *tr, unsigned steps);
void plan_cli_trace_print(FILE *f, const struct plan_cli *c, const struct plan_cli_trace *tr,
			  unsigned gpus);
struct json_object *plan_cli_trace_json(const struct plan_cli *c, const struct plan_cli_trace *tr);
void plan_cli_trace_free(struct plan_cli_trace *tr);

struct plan_chart {
	const char *title;
	const char *subtitle;
	const unsigned *batches;	/* ascending */
	size_t nbatches;
	const struct plan_result *res;	/* [nbatches][PLAN_NTIERS]: hbm, ddr, ssd */
};

/* Writes the chart as SVG text; -EINVAL if there is nothing to draw, -EIO on a write error. */
int plan_chart_write(FILE *f, const struct plan_chart *c);

#endif
