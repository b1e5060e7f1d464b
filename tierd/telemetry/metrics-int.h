/* SPDX-License-Identifier: MIT */
/*
 * The sink the metrics are rendered through (metrics-sink.c): the render
 * functions of metrics.c name families and samples, the sink writes them as
 * the Prometheus text exposition (f) or as JSON (fams).  Not for other
 * modules: they use metrics.h.
 */
#ifndef TIERD_METRICS_INT_H
#define TIERD_METRICS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

struct msink {
	FILE *f;			/* text; NULL when rendering JSON */
	json_object *fams;		/* JSON: the families, in order */
	json_object *samples;		/* JSON: the current family's samples */
	bool nomem;
};

void ms_family(struct msink *s, const char *name, const char *type, const char *help);
/* A sample: name, value, then label name/value pairs ending with NULL. */
void ms_sample_u(struct msink *s, const char *name, uint64_t v, ...);
void ms_sample_i(struct msink *s, const char *name, int64_t v, ...);
void ms_sample_d(struct msink *s, const char *name, double v, ...);
/* A histogram's buckets (cumulative counts cum[0..n], bounds le[0..n-1],
 * the last +Inf), sum and count; key/value: one label, or NULL. */
void ms_hist_tail(struct msink *s, const char *name, const char *key, const char *value, const double *le,
		  const uint64_t *cum, unsigned n, double sum_s);

#endif
