/* SPDX-License-Identifier: MIT */
/* tierctl: the operator's and debugger's tool.  Dispatches to subcommands. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "tierctl.h"

struct tierctl_cmd {
	const char *name;
	tierctl_cmd_fn fn;
	const char *help;
};

/* Subcommands, one line each; the implementations live in client/tierctl-*.c. */
static const struct tierctl_cmd commands[] = {
	/* catalog */
	{ "check", cmd_check, "validate a checkpoint and print its expert catalog" },
	{ "demo-store", cmd_demo_store, "write a demo MoE checkpoint with verifiable contents" },

	/* engine */
	{ "bench", cmd_bench, "bench fetch DIR: engine read throughput vs fio, cold cache; bench acquire: service latency" },
	{ "fetch", cmd_fetch, "fetch one expert through the engine and show where it landed" },
	{ "demo", cmd_demo, "fetch, verify, release every expert of a few layers; bytes, time, energy" },

	/* plan */
	{ "plan", cmd_plan, "per-token energy and latency of MoE placements; \"plan select\" picks one" },

	/* energy */
	{ "metrics", cmd_metrics, "print Prometheus metrics (energy, bytes, power states)" },
	{ "energy", cmd_energy, "per-tier energy table" },
	{ "top", cmd_top, "live view: bandwidth per tier, hit rate, joules per token" },

	/* service */
	{ "status", cmd_status, "summary of the running tierd (--json)" },
	{ "stats", cmd_stats, "every counter of the running tierd (--json)" },
	{ "models", cmd_models, "models served and whether this user may use them" },
	{ "prefetch", cmd_prefetch, "MODEL LAYERS EXPERTS: load experts ahead of need" },
	{ "acquire", cmd_acquire, "MODEL LAYERS EXPERTS [--hold S]: pin, show tensors, release" },
	{ "release", cmd_release, "MODEL LAYERS EXPERTS: release operator pins (same as unpin)" },
	{ "evict", cmd_evict, "MODEL LAYERS EXPERTS: drop unpinned experts from the pool" },
	{ "pin", cmd_pin, "MODEL LAYERS EXPERTS: operator pins, kept by the daemon" },
	{ "unpin", cmd_unpin, "MODEL LAYERS EXPERTS: drop operator pins" },
	{ "warm", cmd_warm, "MODEL [FIRST[-LAST]]: load layers into the pool, with progress" },

	{ NULL, NULL, NULL },
};

/* Decimal digits only (no sign, no blank), at most UINT32_MAX. */
static const char *parse_u32_digits(const char *s, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)*s))
		return NULL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || v > UINT32_MAX)
		return NULL;
	*out = (uint32_t)v;
	return end;
}

int tierctl_parse_range(const char *what, const char *s, uint32_t max, uint32_t *first, uint32_t *last)
{
	const char *end = parse_u32_digits(s, first);

	*last = *first;
	if (end && *end == '-')
		end = parse_u32_digits(end + 1, last);
	if (!end || *end || *last < *first || *last >= max) {
		fprintf(stderr, "tierctl: %s \"%s\": expected a number or a range FIRST-LAST below %u\n", what, s,
			max);
		return -EINVAL;
	}
	return 0;
}

int tierctl_parse_int(const char *option, const char *s, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max || v < INT_MIN || v > INT_MAX) {
		fprintf(stderr, "tierctl: %s \"%s\": expected a whole number from %ld to %ld\n", option, s,
			min, max);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

int tierctl_parse_double(const char *option, const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min && v <= max)) {
		fprintf(stderr, "tierctl: %s \"%s\": expected a number from %g to %g\n", option, s, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: tierctl [-s SOCKET] [-c CONFIG] [--json] [--timeout MS] COMMAND [ARGS...]\n\n"
		"--timeout: how long a command waits for the daemon (default 60000 for acquire and pin,\n"
		"no limit for warm, 10000 for the others).\n\nCommands:\n");
	for (const struct tierctl_cmd *c = commands; c->name; c++)
		fprintf(f, "  %-14s %s\n", c->name, c->help);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct tierctl_opts o = { .socket_path = TIERD_DEFAULT_SOCKET, .timeout_ms = -2 };
	int opt;

	log_init("tierctl", LOG_NOTICE);
	log_set_prefix(0);
	/* '+' stops at the subcommand, whose own options follow it. */
	while ((opt = getopt_long(argc, argv, "+s:c:jt:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (tierctl_parse_int("--timeout", optarg, -1, INT_MAX, &o.timeout_ms))
				return 2;
			break;
		case 's': o.socket_path = optarg; break;
		case 'c': o.config_path = optarg; break;
		case 'j': o.json = 1; break;
		case 'h': usage(stdout); return EXIT_SUCCESS;
		case 'V': printf("tierctl %s\n", PACKAGE_VERSION); return EXIT_SUCCESS;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	for (const struct tierctl_cmd *c = commands; c->name; c++) {
		if (!strcmp(c->name, argv[optind])) {
			int first = optind;

			int rc;

			/* Subcommands run getopt on their own argv; 0 resets glibc's state. */
			optind = 0;
			rc = c->fn(&o, argc - first, argv + first);
			/* A table or JSON lost on a full disk or a closed pipe is a failure. */
			if (fflush(stdout) || ferror(stdout)) {
				fprintf(stderr, "tierctl: writing the output: %s\n", strerror(errno));
				return rc ? rc : EXIT_FAILURE;
			}
			return rc;
		}
	}
	fprintf(stderr, "tierctl: unknown command \"%s\"\n", argv[optind]);
	usage(stderr);
	return 2;
}
