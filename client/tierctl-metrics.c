/* SPDX-License-Identifier: MIT */
/*
 * The daemon's metrics as tierctl reads them: the JSON rendering of the
 * sample (METRICS format 1), walked with json-c.  The text exposition is for
 * Prometheus; nothing here parses it back.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierctl.h"
#include "tierd-client.h"

int tierctl_metrics_fetch(struct tierd_client *c, bool quiet, json_object **root)
{
	char *text = NULL, why[512] = "";
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	size_t len = 0;
	int r;

	*root = NULL;
	r = tierd_client_metrics_as(c, TIERD_CLIENT_METRICS_JSON, &text, &len, 30000);
	if (r && quiet) {
		free(text);
		return r;
	}
	if (r) {
		tierd_client_last_error(c, why, sizeof(why));
		fprintf(stderr, "tierctl: metrics: %s%s%s%s\n", strerror(-r), *why ? ": " : "", why,
			r == -EOPNOTSUPP ? " (a tierd older than this tierctl: protocol 1.2 needed)" : "");
		return r;
	}
	tok = json_tokener_new();
	if (!tok) {
		free(text);
		return -ENOMEM;
	}
	*root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	if (!*root || jerr != json_tokener_success || !json_object_is_type(*root, json_type_object)) {
		if (!quiet)
			fprintf(stderr, "tierctl: metrics: the daemon's JSON does not parse at byte %zu: %s\n",
			json_tokener_get_parse_end(tok), json_tokener_error_desc(jerr));
		json_object_put(*root);
		*root = NULL;
		r = -EBADMSG;
	}
	json_tokener_free(tok);
	free(text);
	return r;
}

const char *tierctl_sample_label(json_object *sample, const char *key)
{
	json_object *labels, *v;

	if (!json_object_object_get_ex(sample, "labels", &labels) ||
	    !json_object_object_get_ex(labels, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

double tierctl_sample_value(json_object *sample)
{
	json_object *v;

	return json_object_object_get_ex(sample, "value", &v) ? json_object_get_double(v) : 0;
}

/* Whether the sample holds every key/value pair of match (NULL-ended). */
static bool matches(json_object *sample, const char *const *match)
{
	for (size_t i = 0; match && match[i]; i += 2) {
		const char *v = tierctl_sample_label(sample, match[i]);

		if (!v || strcmp(v, match[i + 1]))
			return false;
	}
	return true;
}

void tierctl_metrics_foreach(json_object *root, const char *name, const char *const *match,
			     void (*fn)(json_object *sample, void *arg), void *arg)
{
	json_object *fams, *samples, *n;

	if (!root || !json_object_object_get_ex(root, "families", &fams))
		return;
	for (size_t i = 0; i < json_object_array_length(fams); i++) {
		json_object *fam = json_object_array_get_idx(fams, i);

		if (!json_object_object_get_ex(fam, "samples", &samples))
			continue;
		for (size_t k = 0; k < json_object_array_length(samples); k++) {
			json_object *s = json_object_array_get_idx(samples, k);

			if (json_object_object_get_ex(s, "name", &n) && !strcmp(json_object_get_string(n), name) &&
			    matches(s, match))
				fn(s, arg);
		}
	}
}

static void add(json_object *sample, void *arg)
{
	*(double *)arg += tierctl_sample_value(sample);
}

double tierctl_metrics_sum(json_object *root, const char *name, const char *const *match)
{
	double sum = 0;

	tierctl_metrics_foreach(root, name, match, add, &sum);
	return sum;
}
