/* SPDX-License-Identifier: MIT */
/*
 * tierctl metrics / energy / top.
 *
 * By default these ask the running daemon (-s SOCKET) for its metrics
 * (METRICS over the socket: the same text its HTTP endpoint serves), whose
 * counters cover its whole lifetime and carry the attribution to models and
 * clients.  With --local they measure in this process instead: load the
 * probes (when privileged), look at the devices of the configured models
 * and run the energy model over a short interval (no daemon needed, no
 * attribution).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
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
#include "tierd-client.h"

static const struct option energy_longopts[] = {
	{ "local", no_argument, NULL, 'l' },
	{ "interval", required_argument, NULL, 'i' },
	{ "count", required_argument, NULL, 'n' },
	{ 0 }
};

/* ---- the daemon's metrics ---- */

static int daemon_connect(const struct tierctl_opts *o, struct tierd_client **c)
{
	int r = tierd_client_connect(c, o->socket_path, "tierctl");

	if (r)
		fprintf(stderr, "tierctl: cannot reach tierd at %s: %s (--local measures in this process)\n",
			o->socket_path, strerror(-r));
	return r;
}

static int daemon_metrics(struct tierd_client *c, char **text, size_t *len)
{
	int r = tierd_client_metrics(c, text, len);

	if (r) {
		char why[512] = "";

		tierd_client_last_error(c, why, sizeof(why));
		fprintf(stderr, "tierctl: metrics: %s%s%s\n", strerror(-r), *why ? ": " : "", why);
	}
	return r;
}

/* Connects, asks once, closes: the text (raw) or the samples (root). */
static int daemon_scrape(const struct tierctl_opts *o, json_object **root, char **raw, size_t *len)
{
	struct tierd_client *c;
	int r = daemon_connect(o, &c);

	if (r)
		return r;
	r = raw ? daemon_metrics(c, raw, len) : tierctl_metrics_fetch(c, false, root);
	tierd_client_close(c);
	return r;
}

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

/* --local and -i SECONDS, what `metrics` and `energy` take. */
static int parse_local_opts(int argc, char **argv, const char *usage, bool *local, unsigned *ms)
{
	int opt;

	while ((opt = getopt_long(argc, argv, "li:", energy_longopts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			*local = true;
			break;
		case 'i':
			if (parse_interval(optarg, ms))
				return -EINVAL;
			break;
		default:
			fprintf(stderr, "Usage: %s\n", usage);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "Usage: %s\n", usage);
		return -EINVAL;
	}
	return 0;
}

int cmd_metrics(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_conf c;
	struct telemetry *t;
	unsigned ms = 1000;
	bool local = false;
	char *text;
	size_t len;
	int r;

	if (parse_local_opts(argc, argv, "tierctl metrics [--local [-i SECONDS]]", &local, &ms))
		return 2;
	if (!local) {
		if (daemon_scrape(o, NULL, &text, &len))
			return 1;
		fwrite(text, 1, len, stdout);
		free(text);
		return 0;
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

static int energy_local(const struct tierctl_opts *o, unsigned ms)
{
	struct tierd_conf c;
	struct telemetry *t;
	const struct energy *e;

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

/* Per-model or per-client rows of the daemon's attribution. */
struct attr_row {
	char key[256];
	double joules, bytes, tokens;
};

struct attr_acc {
	const char *key;
	int field;			/* 0 joules, 1 bytes, 2 tokens */
	struct attr_row *v;
	size_t n;
	int err;
};

static void attr_add(json_object *sample, void *arg)
{
	struct attr_acc *a = arg;
	const char *k = tierctl_sample_label(sample, a->key);
	size_t j;

	if (!k || a->err)
		return;
	for (j = 0; j < a->n && strcmp(a->v[j].key, k); j++)
		;
	if (j == a->n) {
		struct attr_row *nv = realloc(a->v, (a->n + 1) * sizeof(*nv));

		if (!nv) {
			a->err = -ENOMEM;
			return;
		}
		a->v = nv;
		memset(&a->v[j], 0, sizeof(a->v[j]));
		snprintf(a->v[j].key, sizeof(a->v[j].key), "%s", k);
		a->n++;
	}
	*(a->field == 0 ? &a->v[j].joules : a->field == 1 ? &a->v[j].bytes : &a->v[j].tokens) +=
		tierctl_sample_value(sample);
}

/* Rows of tierd_PREFIX_{energy_joules,fetched_bytes,tokens}_total by label key. */
static int attr_rows(json_object *root, const char *key, const char *prefix, struct attr_row **out,
		     size_t *n)
{
	static const char *const fam[] = { "energy_joules_total", "fetched_bytes_total", "tokens_total" };
	struct attr_acc a = { .key = key };
	char name[96];

	for (int f = 0; f < 3; f++) {
		snprintf(name, sizeof(name), "tierd_%s_%s", prefix, fam[f]);
		a.field = f;
		tierctl_metrics_foreach(root, name, NULL, attr_add, &a);
	}
	if (a.err) {
		free(a.v);
		return a.err;
	}
	*out = a.v;
	*n = a.n;
	return 0;
}

static const char *const tier_names[] = { "hbm", "ddr", "ssd" };

static double tier_j(json_object *root, const char *tier, const char *component)
{
	const char *m[] = { "tier", tier, component ? "component" : NULL, component, NULL };

	return tierctl_metrics_sum(root, "tierd_energy_joules_total", m);
}

static json_object *attr_json(const struct attr_row *v, size_t n, const char *key)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		json_object *x = json_object_new_object();

		json_object_object_add(x, key, json_object_new_string(v[i].key));
		json_object_object_add(x, "joules", json_object_new_double(v[i].joules));
		json_object_object_add(x, "fetched_bytes", json_object_new_int64((int64_t)v[i].bytes));
		json_object_object_add(x, "tokens", json_object_new_int64((int64_t)v[i].tokens));
		json_object_array_add(a, x);
	}
	return a;
}

static void attr_print(const char *title, const struct attr_row *v, size_t n)
{
	printf("%-20s %14s %14s %10s %14s\n", title, "joules", "fetched B", "tokens", "J/token");
	for (size_t i = 0; i < n; i++) {
		char jt[32] = "-";

		if (v[i].tokens > 0)
			snprintf(jt, sizeof(jt), "%.6g", v[i].joules / v[i].tokens);
		printf("%-20s %14.6g %14.0f %10.0f %14s\n", v[i].key, v[i].joules, v[i].bytes, v[i].tokens, jt);
	}
}

static void info_source(json_object *sample, void *arg)
{
	const char *v = tierctl_sample_label(sample, "energy_source");

	snprintf(arg, 32, "%s", v ? v : "");
}

static int energy_daemon(const struct tierctl_opts *o)
{
	struct attr_row *models = NULL, *clients = NULL;
	size_t nm = 0, nc = 0;
	json_object *p = NULL;
	char src[32] = "";
	int r;

	if (daemon_scrape(o, &p, NULL, NULL))
		return 1;
	tierctl_metrics_foreach(p, "tierd_info", NULL, info_source, src);
	r = attr_rows(p, "model", "model", &models, &nm);
	if (!r)
		r = attr_rows(p, "client", "client", &clients, &nc);
	if (r) {
		fprintf(stderr, "tierctl: %s\n", strerror(-r));
		goto out;
	}
	if (o->json) {
		json_object *root = json_object_new_object(), *tiers = json_object_new_object();

		for (size_t i = 0; i < 3; i++) {
			json_object *x = json_object_new_object();

			json_object_object_add(x, "dynamic_j", json_object_new_double(tier_j(p, tier_names[i], "dynamic")));
			json_object_object_add(x, "static_j", json_object_new_double(tier_j(p, tier_names[i], "static")));
			json_object_object_add(tiers, tier_names[i], x);
		}
		json_object_object_add(root, "source", json_object_new_string(src));
		json_object_object_add(root, "tiers", tiers);
		json_object_object_add(root, "other_j",
				       json_object_new_double(tierctl_metrics_sum(p, "tierd_energy_other_joules_total", NULL)));
		json_object_object_add(root, "other_bytes",
				       json_object_new_int64((int64_t)tierctl_metrics_sum(p, "tierd_other_bytes_total", NULL)));
		json_object_object_add(root, "tokens",
				       json_object_new_int64((int64_t)tierctl_metrics_sum(p, "tierd_tokens_total", NULL)));
		json_object_object_add(root, "models", attr_json(models, nm, "model"));
		json_object_object_add(root, "clients", attr_json(clients, nc, "client"));
		puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
		json_object_put(root);
		goto out;
	}
	printf("energy since tierd started (SSD bytes from %s)\n", *src ? src : "?");
	printf("%-6s %14s %14s %14s\n", "tier", "dynamic J", "static J", "total J");
	for (size_t i = 0; i < 3; i++)
		printf("%-6s %14.6g %14.6g %14.6g\n", tier_names[i], tier_j(p, tier_names[i], "dynamic"),
		       tier_j(p, tier_names[i], "static"), tier_j(p, tier_names[i], NULL));
	printf("other: %.0f device bytes tierd did not read, %.6g J; unattributed static %.6g J\n",
	       tierctl_metrics_sum(p, "tierd_other_bytes_total", NULL), tierctl_metrics_sum(p, "tierd_energy_other_joules_total", NULL),
	       tierctl_metrics_sum(p, "tierd_energy_unattributed_joules_total", NULL));
	printf("tokens: %.0f\n\n", tierctl_metrics_sum(p, "tierd_tokens_total", NULL));
	attr_print("model", models, nm);
	putchar('\n');
	attr_print("client", clients, nc);
out:
	free(models);
	free(clients);
	json_object_put(p);
	return r ? 1 : 0;
}

int cmd_energy(const struct tierctl_opts *o, int argc, char **argv)
{
	unsigned ms = 1000;
	bool local = false;

	if (parse_local_opts(argc, argv, "tierctl energy [--local [-i SECONDS]]", &local, &ms))
		return 2;
	return local ? energy_local(o, ms) : energy_daemon(o);
}

struct top_totals {
	uint64_t ssd_bytes, ddr_bytes, tokens, hits, misses;
	double joules;
};

static void top_totals_local(struct telemetry *t, struct top_totals *x)
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

static void found(json_object *sample, void *arg)
{
	(void)sample;
	*(bool *)arg = true;
}

static void top_totals_daemon(json_object *p, struct top_totals *x)
{
	static const char *const ebpf[] = { "tier", "ssd", "source", "ebpf", NULL };
	static const char *const tierd_ssd[] = { "tier", "ssd", "source", "tierd", NULL };
	static const char *const ddr[] = { "tier", "ddr", "source", "tierd", NULL };
	static const char *const any_ebpf[] = { "source", "ebpf", NULL };
	bool have_ebpf = false;

	tierctl_metrics_foreach(p, "tierd_bytes_total", any_ebpf, found, &have_ebpf);
	x->ssd_bytes = (uint64_t)tierctl_metrics_sum(p, "tierd_bytes_total", have_ebpf ? ebpf : tierd_ssd);
	x->ddr_bytes = (uint64_t)tierctl_metrics_sum(p, "tierd_bytes_total", ddr);
	x->tokens = (uint64_t)tierctl_metrics_sum(p, "tierd_tokens_total", NULL);
	x->hits = (uint64_t)tierctl_metrics_sum(p, "tierd_cache_hits_total", NULL);
	x->misses = (uint64_t)tierctl_metrics_sum(p, "tierd_cache_misses_total", NULL);
	x->joules = tierctl_metrics_sum(p, "tierd_energy_joules_total", NULL);
}

/* Samples the daemon (c) or the local telemetry (t) into x. */
static int top_sample(struct tierd_client *c, struct telemetry *t, struct top_totals *x)
{
	json_object *p;
	int r;

	memset(x, 0, sizeof(*x));
	if (t) {
		telemetry_tick(t, telemetry_now_ns());
		top_totals_local(t, x);
		return 0;
	}
	r = tierctl_metrics_fetch(c, false, &p);
	if (r)
		return r;
	top_totals_daemon(p, x);
	json_object_put(p);
	return 0;
}

int cmd_top(const struct tierctl_opts *o, int argc, char **argv)
{
	struct telemetry_opts to = { .exports = false };
	struct tierd_client *cl = NULL;
	struct telemetry *t = NULL;
	struct top_totals a, b;
	struct tierd_conf c;
	unsigned ms = 1000;
	long count = -1;
	bool tty = isatty(STDOUT_FILENO), local = false;
	int opt, r;

	while ((opt = getopt_long(argc, argv, "li:n:", energy_longopts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			local = true;
			break;
		case 'i':
			if (parse_interval(optarg, &ms) || !ms)
				return 2;
			break;
		case 'n': {
			char *end;

			errno = 0;
			count = strtol(optarg, &end, 10);
			if (end == optarg || *end || errno || count < 1) {
				fprintf(stderr, "tierctl top: -n \"%s\": expected a positive count\n", optarg);
				return 2;
			}
			break;
		}
		default:
			fprintf(stderr, "Usage: tierctl top [--local] [-i SECONDS] [-n COUNT]\n");
			return 2;
		}
	}
	if (local) {
		if (load_conf(o, &c))
			return 1;
		to.probes = c.probes;
		r = telemetry_create(&t, &c, &to, c.pool_size, telemetry_now_ns());
		if (r) {
			fprintf(stderr, "tierctl: cannot start measuring: %s\n", strerror(-r));
			conf_free(&c);
			return 1;
		}
	} else if (daemon_connect(o, &cl)) {
		return 1;
	}
	r = top_sample(cl, t, &a);
	for (long n = 0; !r && (count < 0 || n < count); n++) {
		double dt = ms / 1000.0;
		uint64_t acq;

		sleep_ms(ms);
		r = top_sample(cl, t, &b);
		if (r)
			break;
		if (b.ssd_bytes < a.ssd_bytes || b.ddr_bytes < a.ddr_bytes || b.tokens < a.tokens ||
		    b.hits < a.hits || b.misses < a.misses || b.joules < a.joules) {
			/* The daemon restarted (the library reconnected): start over. */
			a = b;
			continue;
		}
		acq = (b.hits - a.hits) + (b.misses - a.misses);
		if (tty)
			fputs("\033[H\033[2J", stdout);
		printf("tierd top  (every %.1f s, %s)\n", dt, t ? "measured in tierctl" : o->socket_path);
		printf("%-24s %12.1f MB/s\n", "SSD read+write", (b.ssd_bytes - a.ssd_bytes) / dt / 1e6);
		printf("%-24s %12.1f MB/s\n", "DDR -> HBM", (b.ddr_bytes - a.ddr_bytes) / dt / 1e6);
		if (t)
			printf("%-24s %12s\n", "cache hit rate", "- (needs the daemon)");
		else if (acq)
			printf("%-24s %11.1f %%  (%llu acquires)\n", "cache hit rate",
			       100.0 * (double)(b.hits - a.hits) / (double)acq, (unsigned long long)acq);
		else
			printf("%-24s %12s\n", "cache hit rate", "- (no acquires)");
		printf("%-24s %12.3f W\n", "power (model)", (b.joules - a.joules) / dt);
		if (b.tokens > a.tokens)
			printf("%-24s %12.6f J\n", "energy per token",
			       (b.joules - a.joules) / (double)(b.tokens - a.tokens));
		else
			printf("%-24s %12s\n", "energy per token", "- (no tokens reported)");
		fflush(stdout);
		a = b;
	}
	if (t) {
		telemetry_destroy(t);
		conf_free(&c);
	}
	tierd_client_close(cl);
	return r ? 1 : 0;
}
