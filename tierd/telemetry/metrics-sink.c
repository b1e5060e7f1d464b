/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "metrics-int.h"

/*
 * One sample set, two renderings: the Prometheus text exposition and JSON
 * (what tierctl reads: the same samples, no text to parse back).  The
 * render functions of metrics.c name families and samples; the sink writes
 * them.
 */

/* Label values escape backslash, double quote and newline. */
static void put_label(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*v, f);
	}
}

void ms_family(struct msink *s, const char *name, const char *type, const char *help)
{
	json_object *fam;

	if (s->f) {
		fprintf(s->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
		return;
	}
	fam = json_object_new_object();
	s->samples = json_object_new_array();
	if (!fam || !s->samples || json_object_object_add(fam, "name", json_object_new_string(name)) ||
	    json_object_object_add(fam, "type", json_object_new_string(type)) ||
	    json_object_object_add(fam, "help", json_object_new_string(help)) ||
	    json_object_object_add(fam, "samples", s->samples) || json_object_array_add(s->fams, fam)) {
		s->nomem = true;
		json_object_put(fam);
		s->samples = NULL;
	}
}

/* A sample: name, value, then label name/value pairs ending with NULL.
 * Integers stay integers (counters of bytes pass 2^53 in JSON doubles). */
enum mval { MV_INT, MV_DOUBLE };

static void vsample(struct msink *s, const char *name, enum mval t, int64_t i, double d, va_list ap)
{
	json_object *x, *labels;
	const char *k, *sep = "{";

	if (s->f) {
		fputs(name, s->f);
		while ((k = va_arg(ap, const char *))) {
			fprintf(s->f, "%s%s=\"", sep, k);
			put_label(s->f, va_arg(ap, const char *));
			fputc('"', s->f);
			sep = ",";
		}
		if (*sep == ',')
			fputc('}', s->f);
		if (t == MV_INT)
			fprintf(s->f, " %lld\n", (long long)i);
		else
			fprintf(s->f, " %.9g\n", d);
		return;
	}
	if (!s->samples)
		return;			/* the family could not be added */
	x = json_object_new_object();
	labels = json_object_new_object();
	if (!x || !labels) {
		json_object_put(x);
		json_object_put(labels);
		s->nomem = true;
		return;
	}
	while ((k = va_arg(ap, const char *)))
		if (json_object_object_add(labels, k, json_object_new_string(va_arg(ap, const char *))))
			s->nomem = true;
	if (json_object_object_add(x, "name", json_object_new_string(name)) ||
	    json_object_object_add(x, "labels", labels) ||
	    json_object_object_add(x, "value", t == MV_INT ? json_object_new_int64(i) : json_object_new_double(d)) ||
	    json_object_array_add(s->samples, x)) {
		s->nomem = true;
		json_object_put(x);
	}
}

void ms_sample_u(struct msink *s, const char *name, uint64_t v, ...)
{
	va_list ap;

	va_start(ap, v);
	/* Counters never reach 2^63; clamped, not wrapped, if one did. */
	vsample(s, name, MV_INT, v > INT64_MAX ? INT64_MAX : (int64_t)v, 0, ap);
	va_end(ap);
}

void ms_sample_i(struct msink *s, const char *name, int64_t v, ...)
{
	va_list ap;

	va_start(ap, v);
	vsample(s, name, MV_INT, v, 0, ap);
	va_end(ap);
}

void ms_sample_d(struct msink *s, const char *name, double v, ...)
{
	va_list ap;

	va_start(ap, v);
	vsample(s, name, MV_DOUBLE, 0, v, ap);
	va_end(ap);
}


/* The buckets, sum and count of a histogram; key/value: one label or NULL. */
void ms_hist_tail(struct msink *s, const char *name, const char *key, const char *value,
		      const double *le, const uint64_t *cum, unsigned n, double sum_s)
{
	char bucket[128], sum[128], count[128], les[32];

	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(sum, sizeof(sum), "%s_sum", name);
	snprintf(count, sizeof(count), "%s_count", name);
	for (unsigned i = 0; i <= n; i++) {
		if (i < n)
			snprintf(les, sizeof(les), "%.9g", le[i]);
		else
			snprintf(les, sizeof(les), "+Inf");
		if (key)
			ms_sample_u(s, bucket, cum[i], key, value, "le", les, NULL);
		else
			ms_sample_u(s, bucket, cum[i], "le", les, NULL);
	}
	if (key) {
		ms_sample_d(s, sum, sum_s, key, value, NULL);
		ms_sample_u(s, count, cum[n], key, value, NULL);
	} else {
		ms_sample_d(s, sum, sum_s, NULL);
		ms_sample_u(s, count, cum[n], NULL);
	}
}
