/* SPDX-License-Identifier: MIT */
/* tierctl subcommands: each lives in its own file and is listed in tierctl.c. */
#ifndef TIERCTL_H
#define TIERCTL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

struct tierd_client;

struct tierctl_opts {
	const char *socket_path;	/* -s SOCKET */
	const char *config_path;	/* -c CONFIG, for commands that open the engine */
	int json;			/* --json */
	int timeout_ms;			/* --timeout MS; -2: the command's default */
};

/*
 * Command-line numbers, checked: the whole string, within [min, max].  On
 * error prints "tierctl: OPTION "VALUE": expected ..." and returns -EINVAL.
 */
int tierctl_parse_int(const char *option, const char *s, long min, long max, int *out);
/*
 * "N" or "FIRST-LAST" (decimal digits only, FIRST <= LAST < max): a layer or
 * expert range.  On error prints "tierctl: WHAT "S": expected ..." and
 * returns -EINVAL.
 */
int tierctl_parse_range(const char *what, const char *s, uint32_t max, uint32_t *first, uint32_t *last);
int tierctl_parse_double(const char *option, const char *s, double min, double max, double *out);

/*
 * The daemon's metrics sampled now, as JSON (tierctl-metrics.c): samples are
 * found by name and by label pairs (match: "key", "value", ..., NULL).
 * Errors are printed unless quiet; *root is json_object_put() by the caller.
 */
int tierctl_metrics_fetch(struct tierd_client *c, bool quiet, json_object **root);
void tierctl_metrics_foreach(json_object *root, const char *name, const char *const *match,
			     void (*fn)(json_object *sample, void *arg), void *arg);
double tierctl_metrics_sum(json_object *root, const char *name, const char *const *match);
const char *tierctl_sample_label(json_object *sample, const char *key);
double tierctl_sample_value(json_object *sample);

/* The wait for the daemon: --timeout, or the command's default (-1: none). */
static inline int tierctl_timeout(const struct tierctl_opts *o, int dflt_ms)
{
	return o->timeout_ms == -2 ? dflt_ms : o->timeout_ms;
}

/* Every subcommand: argv[0] is the subcommand's name; returns an exit status. */
typedef int (*tierctl_cmd_fn)(const struct tierctl_opts *o, int argc, char **argv);

/* catalog */
int cmd_check(const struct tierctl_opts *o, int argc, char **argv);
int cmd_demo_store(const struct tierctl_opts *o, int argc, char **argv);

/* engine */
int cmd_bench(const struct tierctl_opts *o, int argc, char **argv);
int cmd_fetch(const struct tierctl_opts *o, int argc, char **argv);
int cmd_demo(const struct tierctl_opts *o, int argc, char **argv);

/* plan */
int cmd_plan(const struct tierctl_opts *o, int argc, char **argv);

/* energy */
int cmd_metrics(const struct tierctl_opts *o, int argc, char **argv);
int cmd_energy(const struct tierctl_opts *o, int argc, char **argv);
int cmd_top(const struct tierctl_opts *o, int argc, char **argv);

/* service */
int cmd_status(const struct tierctl_opts *o, int argc, char **argv);
int cmd_stats(const struct tierctl_opts *o, int argc, char **argv);
int cmd_models(const struct tierctl_opts *o, int argc, char **argv);
int cmd_prefetch(const struct tierctl_opts *o, int argc, char **argv);
int cmd_acquire(const struct tierctl_opts *o, int argc, char **argv);
int cmd_release(const struct tierctl_opts *o, int argc, char **argv);
int cmd_evict(const struct tierctl_opts *o, int argc, char **argv);
int cmd_pin(const struct tierctl_opts *o, int argc, char **argv);
int cmd_unpin(const struct tierctl_opts *o, int argc, char **argv);
int cmd_warm(const struct tierctl_opts *o, int argc, char **argv);
/* tierctl bench acquire, dispatched by cmd_bench (tierctl-engine.c) */
int cmd_bench_acquire(const struct tierctl_opts *o, int argc, char **argv);

#endif
