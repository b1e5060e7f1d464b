/* SPDX-License-Identifier: MIT */
/*
 * tierctl plan --trace: routing measured in a trace instead of uniform
 * routing (the distribution of distinct experts per batch and layer), how far
 * the two differ, and for `plan select --trace` the DDR cache's hit-rate
 * curves replayed through tierd's cache policies (client/plan/plan_trace.c).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cache.h"
#include "plan.h"
#include "plan_trace.h"
#include "tierctl-plan.h"

void plan_cli_trace_free(struct plan_cli_trace *tr)
{
	plan_trace_free(tr->t);
	free(tr->freq);
	free(tr->routing);
	free(tr->by_batch);
	free(tr->pool);
	free(tr->hits);
	free(tr->curves);
	for (size_t i = 0; i < tr->npolicies; i++)
		free(tr->policies[i]);
	free(tr->policies);
	memset(tr, 0, sizeof(*tr));
}

int plan_cli_trace_load(const struct plan_cli *c, const struct plan_model *m,
			const struct plan_params *p, struct plan_cli_trace *tr)
{
	unsigned k = plan_cli_top_k(m, p), gpus = p->hw.nodes * p->hw.gpus_per_node;
	const struct plan_trace_shape *sh;
	size_t bins;
	char err[512] = "";
	int r;

	memset(tr, 0, sizeof(*tr));
	r = plan_trace_load(&tr->t, c->trace, err, sizeof(err));
	if (r < 0)
		goto bad;
	sh = plan_trace_shape(tr->t);
	if (sh->nexperts != m->experts || (sh->top_k && sh->top_k != k)) {
		snprintf(err, sizeof(err), "%s: the trace routes top-%u of %u experts, %s top-%u of %u: "
			 "measured routing applies only to the model it was recorded from",
			 c->trace, sh->top_k, sh->nexperts, m->name, k, m->experts);
		r = -EINVAL;
		goto bad;
	}
	bins = (size_t)m->experts + 1;
	tr->nbatches = c->nbatches;
	tr->freq = calloc(c->nbatches * bins, sizeof(*tr->freq));
	tr->routing = calloc(c->nbatches, sizeof(*tr->routing));
	tr->by_batch = calloc(c->nbatches, sizeof(*tr->by_batch));
	if (!tr->freq || !tr->routing || !tr->by_batch) {
		r = -ENOMEM;
		goto bad;
	}
	for (size_t i = 0; i < c->nbatches; i++) {
		struct plan_cli_trace_batch *x = &tr->by_batch[i];

		r = plan_trace_distinct(tr->t, c->batches[i], gpus, &tr->freq[i * bins], bins, &x->info,
					err, sizeof(err));
		if (r < 0)
			goto bad;
		tr->routing[i].freq = &tr->freq[i * bins];
		tr->routing[i].n = bins;
		tr->routing[i].ep_max = x->info.ep_max;
		r = plan_routing_stats(&tr->routing[i], m->experts, gpus, &x->distinct, &x->ep_max,
				       err, sizeof(err));
		if (r < 0)
			goto bad;
		x->distinct_uniform = plan_distinct_experts(m->experts, k, c->batches[i]);
		x->ep_max_uniform = plan_ep_max_uniform(m->experts, k, c->batches[i], gpus);
	}
	return 0;
bad:
	fprintf(stderr, "tierctl plan: %s\n", err[0] ? err : strerror(-r));
	plan_cli_trace_free(tr);
	return r;
}

/* The policies asked for (--policy), or every one tierd has. */
static int policies_of(const struct plan_cli *c, struct plan_cli_trace *tr)
{
	const char *list = c->policies ? c->policies : cache_policy_names();
	char *buf = strdup(list), *save = NULL, *tok;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		char **np;

		if (!cache_policy_find(tok)) {
			fprintf(stderr, "tierctl plan select: --policy: unknown policy \"%s\" (tierd has: %s)\n",
				tok, cache_policy_names());
			r = -EINVAL;
			break;
		}
		np = realloc(tr->policies, (tr->npolicies + 1) * sizeof(*np));
		if (!np || !(np[tr->npolicies] = strdup(tok))) {
			if (np)
				tr->policies = np;
			r = -ENOMEM;
			break;
		}
		tr->policies = np;
		tr->npolicies++;
	}
	free(buf);
	if (!r && !tr->npolicies) {
		fprintf(stderr, "tierctl plan select: --policy: no policy named\n");
		r = -EINVAL;
	}
	return r;
}

int plan_cli_trace_curves(const struct plan_cli *c, struct plan_cli_trace *tr, unsigned steps)
{
	size_t npts = steps, ncurves;
	char err[512] = "";
	int r;

	r = policies_of(c, tr);
	if (r < 0)
		return r;
	ncurves = tr->nbatches * tr->npolicies;
	tr->pool = calloc(npts, sizeof(*tr->pool));
	tr->hits = calloc(ncurves * npts, sizeof(*tr->hits));
	tr->curves = calloc(ncurves, sizeof(*tr->curves));
	if (!tr->pool || !tr->hits || !tr->curves)
		return -ENOMEM;
	for (size_t k = 0; k < npts; k++)
		tr->pool[k] = (double)(k + 1) / steps;
	for (size_t i = 0; i < tr->nbatches; i++) {
		for (size_t j = 0; j < tr->npolicies; j++) {
			struct plan_hit_curve *cv = &tr->curves[i * tr->npolicies + j];
			double *hit = &tr->hits[(i * tr->npolicies + j) * npts];

			r = plan_trace_hit_curve(tr->t, c->batches[i], tr->policies[j], tr->pool, npts, hit,
						 err, sizeof(err));
			if (r < 0) {
				fprintf(stderr, "tierctl plan select: %s: %s\n", c->trace,
					err[0] ? err : strerror(-r));
				return r;
			}
			cv->policy = tr->policies[j];
			cv->pool = tr->pool;
			cv->hit = hit;
			cv->n = npts;
		}
	}
	return 0;
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

void plan_cli_trace_print(FILE *f, const struct plan_cli *c, const struct plan_cli_trace *tr,
			  unsigned gpus)
{
	const struct plan_trace_shape *sh = plan_trace_shape(tr->t);
	bool repeats = false;

	fprintf(f, "\nRouting measured in %s (%s%s%s: %u sequences, %u decode rows, %u layers), "
		"against uniform routing.\n", c->trace, sh->format, sh->model[0] ? ", " : "", sh->model,
		sh->nseqs, sh->nrows, sh->nlayers);
	fprintf(f, "A batch of B: B streams over the sequences in turn, the streams of one sequence "
		"starting at evenly spaced rows\n(tokens of one sequence stand for independent "
		"requests: they share experts more than strangers would).\n");
	fprintf(f, "%5s | %9s %9s %6s | %9s %9s %6s | %8s\n", "batch", "distinct", "uniform", "ratio",
		"busiest", "uniform", "ratio", "samples");
	for (size_t i = 0; i < tr->nbatches; i++) {
		const struct plan_cli_trace_batch *x = &tr->by_batch[i];

		repeats |= x->info.repeats;
		fprintf(f, "%5u | %9.2f %9.2f %6.3f | %9.2f %9.2f %6.3f | %8lu%s\n", x->info.batch,
			x->distinct, x->distinct_uniform, ratio(x->distinct, x->distinct_uniform),
			x->ep_max, x->ep_max_uniform, ratio(x->ep_max, x->ep_max_uniform),
			x->info.samples, x->info.repeats ? " r" : "");
	}
	fprintf(f, "distinct: experts a layer activates per step; busiest: of them, on the busiest of "
		"the %u GPUs\n(measured: experts laid out in order over the GPUs; uniform: the expected "
		"maximum)\n", gpus);
	if (repeats)
		fprintf(f, "r: more streams than a sequence has rows: rows repeat within a batch\n");
}

struct json_object *plan_cli_trace_json(const struct plan_cli *c, const struct plan_cli_trace *tr)
{
	const struct plan_trace_shape *sh = plan_trace_shape(tr->t);
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
	size_t bins = (size_t)sh->nexperts + 1;

	json_object_object_add(o, "source", json_object_new_string("trace"));
	json_object_object_add(o, "trace", json_object_new_string(c->trace));
	json_object_object_add(o, "format", json_object_new_string(sh->format));
	json_object_object_add(o, "trace_model", json_object_new_string(sh->model));
	json_object_object_add(o, "sequences", json_object_new_int(sh->nseqs));
	json_object_object_add(o, "decode_rows", json_object_new_int(sh->nrows));
	json_object_object_add(o, "layers", json_object_new_int(sh->nlayers));
	json_object_object_add(o, "batch_formation", json_object_new_string(
		"B streams over the sequences in turn; the streams of one sequence start at evenly "
		"spaced rows and wrap around; every rotation of the sequences counted"));
	for (size_t i = 0; i < tr->nbatches; i++) {
		const struct plan_cli_trace_batch *x = &tr->by_batch[i];
		struct json_object *b = json_object_new_object(), *h = json_object_new_array();

		json_object_object_add(b, "batch", json_object_new_int(x->info.batch));
		json_object_object_add(b, "distinct_measured", json_object_new_double(x->distinct));
		json_object_object_add(b, "distinct_uniform", json_object_new_double(x->distinct_uniform));
		json_object_object_add(b, "distinct_ratio",
				       json_object_new_double(ratio(x->distinct, x->distinct_uniform)));
		json_object_object_add(b, "busiest_gpu_measured", json_object_new_double(x->ep_max));
		json_object_object_add(b, "busiest_gpu_uniform", json_object_new_double(x->ep_max_uniform));
		json_object_object_add(b, "busiest_gpu_ratio",
				       json_object_new_double(ratio(x->ep_max, x->ep_max_uniform)));
		json_object_object_add(b, "samples", json_object_new_int64((int64_t)x->info.samples));
		json_object_object_add(b, "rows_repeat", json_object_new_boolean(x->info.repeats));
		for (size_t d = 0; d < bins; d++)
			json_object_array_add(h, json_object_new_int64((int64_t)tr->freq[i * bins + d]));
		json_object_object_add(b, "histogram", h);
		json_object_array_add(arr, b);
	}
	json_object_object_add(o, "by_batch", arr);
	return o;
}
