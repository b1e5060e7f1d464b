/* SPDX-License-Identifier: MIT */
/*
 * tierctl metrics / energy / top.
 *
 * These compute their figures in this process: they load the probes (when
 * privileged), look at the devices of the configured models and run the
 * energy model over a short interval.  Once the daemon answers them, they
 * should ask it instead (its counters cover its whole lifetime and carry
 * the attribution to models and clients).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "energy.h"
#include "log.h"
#include "telemetry.h"
#include "tierctl.h"

static int load_conf(const struct tierctl_opts *o, struct tierd_conf *c)
{
	const char *path = o->config_path;
	char err[512];
	int r = conf_init(c);

	if (r)
		return r;
	if (!path && !access(TIERD_DEFAULT_CONFIG, R_OK))
		path = TIERD_DEFAULT_CONFIG;
	if (path) {
		r = conf_load_file(c, path, err, sizeof(err));
		if (r) {
			fprintf(stderr, "tierctl: %s\n", err);
			conf_free(c);
		}
	}
	return r;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Opens telemetry locally and lets it watch for interval_ms. */
static int local_sample(const struct tierctl_opts *o, unsigned interval_ms, struct tierd_conf *c,
			struct telemetry **t)
{
	struct telemetry_opts to = { .exports = false };
	int r = load_conf(o, c);

	if (r)
		return r;
	to.probes = c->probes;
	r = telemetry_create(t, c, &to, c->pool_size, telemetry_now_ns());
	if (r) {
		fprintf(stderr, "tierctl: cannot start measuring: %s\n", strerror(-r));
		conf_free(c);
		return r;
	}
	telemetry_tick(*t, telemetry_now_ns());
	sleep_ms(interval_ms);
	telemetry_tick(*t, telemetry_now_ns());
	return 0;
}

static int parse_interval(const char *s, unsigned *ms)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0 || v > 3600) {
		fprintf(stderr, "tierctl: interval \"%s\": expected seconds (0 to 3600)\n", s);
		return -EINVAL;
	}
	*ms = (unsigned)(v * 1000);
	return 0;
}

int cmd_metrics(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_conf c;
	struct telemetry *t;
	unsigned ms = 1000;
	char *text;
	size_t len;
	int opt, r;

	while ((opt = getopt(argc, argv, "i:")) != -1) {
		switch (opt) {
		case 'i':
			if (parse_interval(optarg, &ms))
				return 2;
			break;
		default:
			fprintf(stderr, "Usage: tierctl metrics [-i SECONDS]\n");
			return 2;
		}
	}
	if (local_sample(o, ms, &c, &t))
		return 1;
	r = telemetry_render(t, &text, &len);
	if (!r) {
		fwrite(text, 1, len, stdout);
		free(text);
	}
	telemetry_destroy(t);
	conf_free(&c);
	return r ? 1 : 0;
}

static double tier_total(const struct energy *e, enum energy_tier tier)
{
	return energy_joules(e, tier, ENERGY_DYNAMIC) + energy_joules(e, tier, ENERGY_STATIC);
}

static void energy_json(const struct energy *e)
{
	json_object *root = json_object_new_object(), *tiers = json_object_new_object();

	for (int i = 0; i < ENERGY_TIERS; i++) {
		json_object *x = json_object_new_object();

		json_object_object_add(x, "dynamic_j",
				       json_object_new_double(energy_joules(e, (enum energy_tier)i, ENERGY_DYNAMIC)));
		json_object_object_add(x, "static_j",
				       json_object_new_double(energy_joules(e, (enum energy_tier)i, ENERGY_STATIC)));
		json_object_object_add(tiers, energy_tier_name((enum energy_tier)i), x);
	}
	json_object_object_add(root, "source",
			       json_object_new_string(energy_source_name(energy_source(e))));
	json_object_object_add(root, "seconds", json_object_new_double(energy_static_seconds(e)));
	json_object_object_add(root, "tiers", tiers);
	json_object_object_add(root, "other_j", json_object_new_double(energy_other_joules(e)));
	json_object_object_add(root, "other_bytes", json_object_new_int64((int64_t)energy_other_bytes(e)));
	json_object_object_add(root, "device_bytes", json_object_new_int64((int64_t)energy_device_bytes(e)));
	json_object_object_add(root, "tierd_bytes", json_object_new_int64((int64_t)energy_tierd_bytes(e)));
	puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
	json_object_put(root);
}

int cmd_energy(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_conf c;
	struct telemetry *t;
	const struct energy *e;
	unsigned ms = 1000;
	int opt;

	while ((opt = getopt(argc, argv, "i:")) != -1) {
		switch (opt) {
		case 'i':
			if (parse_interval(optarg, &ms))
				return 2;
			break;
		default:
			fprintf(stderr, "Usage: tierctl energy [-i SECONDS]\n");
			return 2;
		}
	}
	if (local_sample(o, ms, &c, &t))
		return 1;
	e = telemetry_energy(t);
	if (o->json) {
		energy_json(e);
	} else {
		printf("energy over %.1f s (SSD bytes from %s)\n", energy_static_seconds(e),
		       energy_source_name(energy_source(e)));
		printf("%-6s %14s %14s %14s\n", "tier", "dynamic J", "static J", "total J");
		for (int i = 0; i < ENERGY_TIERS; i++)
			printf("%-6s %14.6g %14.6g %14.6g\n", energy_tier_name((enum energy_tier)i),
			       energy_joules(e, (enum energy_tier)i, ENERGY_DYNAMIC),
			       energy_joules(e, (enum energy_tier)i, ENERGY_STATIC),
			       tier_total(e, (enum energy_tier)i));
		printf("other: %llu device bytes tierd did not read, %.6g J\n",
		       (unsigned long long)energy_other_bytes(e), energy_other_joules(e));
		for (size_t i = 0; i < energy_device_count(e); i++) {
			const struct energy_device *d = energy_device_at(e, i);

			printf("device %s: read %llu B, busy %.3f s, %s\n", d->name,
			       (unsigned long long)d->read_bytes, d->busy_ns / 1e9,
			       d->is_nvme ? "NVMe (power states inferred)" : "not NVMe");
		}
	}
	telemetry_destroy(t);
	conf_free(&c);
	return 0;
}

struct top_totals {
	uint64_t ssd_bytes, ddr_bytes, tokens;
	double joules;
};

static void top_totals(struct telemetry *t, struct top_totals *x)
{
	const struct probes_snapshot *s = telemetry_probes(t);
	const struct energy *e = telemetry_energy(t);

	memset(x, 0, sizeof(*x));
	if (s)
		for (size_t i = 0; i < s->ndev; i++)
			x->ssd_bytes += s->dev[i].read_bytes + s->dev[i].write_bytes;
	else
		x->ssd_bytes = energy_tierd_bytes(e);
	x->ddr_bytes = energy_hbm_bytes(e);
	x->tokens = energy_tokens(e);
	for (int i = 0; i < ENERGY_TIERS; i++)
		x->joules += tier_total(e, (enum energy_tier)i);
}

int cmd_top(const struct tierctl_opts *o, int argc, char **argv)
{
	struct telemetry_opts to = { .exports = false };
	struct top_totals a, b;
	struct tierd_conf c;
	struct telemetry *t;
	unsigned ms = 1000;
	long count = -1;
	bool tty = isatty(STDOUT_FILENO);
	int opt, r;

	while ((opt = getopt(argc, argv, "i:n:")) != -1) {
		switch (opt) {
		case 'i':
			if (parse_interval(optarg, &ms) || !ms)
				return 2;
			break;
		case 'n':
			count = strtol(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "Usage: tierctl top [-i SECONDS] [-n COUNT]\n");
			return 2;
		}
	}
	if (load_conf(o, &c))
		return 1;
	to.probes = c.probes;
	r = telemetry_create(&t, &c, &to, c.pool_size, telemetry_now_ns());
	if (r) {
		fprintf(stderr, "tierctl: cannot start measuring: %s\n", strerror(-r));
		conf_free(&c);
		return 1;
	}
	telemetry_tick(t, telemetry_now_ns());
	top_totals(t, &a);
	for (long n = 0; count < 0 || n < count; n++) {
		double dt = ms / 1000.0;

		sleep_ms(ms);
		telemetry_tick(t, telemetry_now_ns());
		top_totals(t, &b);
		if (tty)
			fputs("\033[H\033[2J", stdout);
		printf("tierd top  (every %.1f s, SSD bytes from %s)\n", dt,
		       energy_source_name(energy_source(telemetry_energy(t))));
		printf("%-24s %12.1f MB/s\n", "SSD read+write", (b.ssd_bytes - a.ssd_bytes) / dt / 1e6);
		printf("%-24s %12.1f MB/s\n", "DDR -> HBM", (b.ddr_bytes - a.ddr_bytes) / dt / 1e6);
		printf("%-24s %12s\n", "cache hit rate", "- (needs the daemon)");
		printf("%-24s %12.3f W\n", "power (model)", (b.joules - a.joules) / dt);
		if (b.tokens > a.tokens)
			printf("%-24s %12.6f J\n", "energy per token",
			       (b.joules - a.joules) / (double)(b.tokens - a.tokens));
		else
			printf("%-24s %12s\n", "energy per token", "- (no tokens reported)");
		fflush(stdout);
		a = b;
	}
	telemetry_destroy(t);
	conf_free(&c);
	return 0;
}
