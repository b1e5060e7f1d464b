/* SPDX-License-Identifier: MIT */
/* tierctl commands that talk to a running tierd through libtierd-client. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tierctl.h"
#include "tierd-client.h"
#include "tierd-proto.h"

static int svc_connect(const struct tierctl_opts *o, struct tierd_client **c)
{
	int r = tierd_client_connect(c, o->socket_path, "tierctl");

	if (r) {
		fprintf(stderr, "tierctl: cannot connect to tierd at %s: %s\n", o->socket_path, strerror(-r));
		if (r == -EPROTONOSUPPORT)
			fprintf(stderr, "tierctl: protocol version mismatch between tierctl and tierd\n");
	}
	return r;
}

static int svc_fail(struct tierd_client *c, const char *what, int r)
{
	char why[512];

	tierd_client_last_error(c, why, sizeof(why));
	fprintf(stderr, "tierctl: %s: %s%s%s\n", what, strerror(-r), *why ? ": " : "", why);
	return 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int resolve_model(struct tierd_client *c, const char *s)
{
	char *end;
	long v;
	int m = tierd_client_model_find(c, s);

	if (m >= 0)
		return m;
	v = strtol(s, &end, 10);
	if (*s && !*end && v >= 0 && v < tierd_client_model_count(c))
		return (int)v;
	fprintf(stderr, "tierctl: no model \"%s\" (see tierctl models)\n", s);
	return -ENOENT;
}

/* "3", "0-7", "1,4,9-11", "all" -> a list within [0, max) (what: "layers"). */
static int parse_list(const char *what, const char *s, uint32_t max, uint32_t **out, size_t *n)
{
	char *copy = NULL, *save = NULL, *tok;
	uint32_t *v = NULL;
	size_t count = 0;
	int r = 0;

	if (!strcmp(s, "all")) {
		v = malloc((max ? max : 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		for (uint32_t i = 0; i < max; i++)
			v[count++] = i;
	} else {
		copy = strdup(s);
		if (!copy)
			return -ENOMEM;
	}
	/* Empty items ("1,,2", a trailing comma) are refused, not skipped. */
	if (copy && (!*copy || *copy == ',' || strstr(copy, ",,") || copy[strlen(copy) - 1] == ',')) {
		fprintf(stderr, "tierctl: %s \"%s\": an empty item in the list\n", what, s);
		r = -EINVAL;
	}
	for (tok = copy && !r ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		uint32_t a, b, *nv;

		r = tierctl_parse_range(what, tok, max, &a, &b);
		if (!r && b - a >= 1u << 20) {
			fprintf(stderr, "tierctl: %s \"%s\": more than 2^20 numbers\n", what, tok);
			r = -EINVAL;
		}
		if (r)
			break;
		nv = realloc(v, (count + (b - a + 1)) * sizeof(*v));
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		v = nv;
		for (uint64_t i = a; i <= b; i++)
			v[count++] = (uint32_t)i;
	}
	free(copy);
	if (r || !count) {
		free(v);
		if (!r)
			fprintf(stderr, "tierctl: %s: empty list\n", what);
		return r ? r : -EINVAL;
	}
	*out = v;
	*n = count;
	return 0;
}

/* MODEL LAYERS EXPERTS -> keys (layers x experts). */
static int parse_keys(struct tierd_client *c, int argc, char **argv, struct tierd_key **keys, size_t *n)
{
	struct tierd_model_info mi;
	uint32_t *layers = NULL, *experts = NULL;
	size_t nl = 0, ne = 0;
	int m, r;

	if (argc != 3) {
		fprintf(stderr, "tierctl: expected MODEL LAYERS EXPERTS (e.g. demo 0 0-7)\n");
		return -EINVAL;
	}
	m = resolve_model(c, argv[0]);
	if (m < 0)
		return m;
	r = tierd_client_model_info(c, (unsigned)m, &mi);
	if (!r)
		r = parse_list("layers", argv[1], mi.nlayers, &layers, &nl);
	if (!r)
		r = parse_list("experts", argv[2], mi.experts_per_layer, &experts, &ne);
	if (!r) {
		*keys = calloc(nl * ne, sizeof(**keys));
		if (!*keys)
			r = -ENOMEM;
	}
	if (!r) {
		*n = 0;
		for (size_t i = 0; i < nl; i++)
			for (size_t j = 0; j < ne; j++)
				(*keys)[(*n)++] = (struct tierd_key){ (uint32_t)m, layers[i], experts[j] };
	}
	free(layers);
	free(experts);
	return r;
}

static void print_bytes(FILE *f, uint64_t b)
{
	if (b >= (1ull << 30))
		fprintf(f, "%.2f GiB", (double)b / (double)(1ull << 30));
	else if (b >= (1ull << 20))
		fprintf(f, "%.1f MiB", (double)b / (double)(1ull << 20));
	else
		fprintf(f, "%llu B", (unsigned long long)b);
}

/* --json after the subcommand, as well as before it. */
static int parse_json_opt(const struct tierctl_opts *o, int argc, char **argv, const char *usage)
{
	static const struct option lo[] = { { "json", no_argument, NULL, 'j' }, { 0 } };
	int json = o->json, opt;

	while ((opt = getopt_long(argc, argv, "j", lo, NULL)) != -1) {
		if (opt != 'j') {
			fprintf(stderr, "Usage: %s\n", usage);
			return -EINVAL;
		}
		json = 1;
	}
	if (optind < argc) {
		fprintf(stderr, "Usage: %s\n", usage);
		return -EINVAL;
	}
	return json;
}

/* [--json], a connection and the daemon's counters: what `status` and `stats`
 * start with.  Returns 0 with *c open, or the exit status with *c closed. */
static int stats_begin(const struct tierctl_opts *o, int argc, char **argv, const char *what,
		       struct tierd_client **c, uint64_t *v, int *json)
{
	char usage[64];
	int r;

	snprintf(usage, sizeof(usage), "tierctl %s [--json]", what);
	*json = parse_json_opt(o, argc, argv, usage);
	if (*json < 0)
		return 2;
	if (svc_connect(o, c))
		return 1;
	memset(v, 0, sizeof(uint64_t) * TIERD_STAT_COUNT);
	r = tierd_client_stats(*c, v, TIERD_STAT_COUNT);
	if (r < 0) {
		svc_fail(*c, what, r);
		tierd_client_close(*c);
		return 1;
	}
	return 0;
}

static void print_pins(json_object *sample, void *arg)
{
	bool *head = arg;
	const char *client = tierctl_sample_label(sample, "client"), *uid = tierctl_sample_label(sample, "uid");

	if (!*head) {
		printf("  pins by client:\n");
		*head = true;
	}
	printf("    %-8.0f client %s uid %s\n", tierctl_sample_value(sample), client ? client : "?",
	       uid ? uid : "?");
}

/*
 * Who holds pins: the daemon's tierd_client_pins metric, one line per
 * connected client (a full pool's ENOSPC names the biggest holders; this
 * lists them all).  Without telemetry in the daemon, nothing is printed.
 */
static void print_client_pins(struct tierd_client *c)
{
	json_object *root;
	bool head = false;

	if (tierctl_metrics_fetch(c, true, &root))
		return;
	tierctl_metrics_foreach(root, "tierd_client_pins", NULL, print_pins, &head);
	json_object_put(root);
}

/* Pools per NUMA node, from the daemon's tierd_pool_node_* metrics. */
struct node_row {
	int node;
	double size, bytes, experts, fetches, local, remote;
};

struct node_rows {
	struct node_row r[TIERD_PROTO_MAX_POOLS];
	unsigned n;
	size_t field;			/* offsetof the one being collected */
};

static void collect_node(json_object *sample, void *arg)
{
	struct node_rows *nr = arg;
	const char *node = tierctl_sample_label(sample, "node"), *from = tierctl_sample_label(sample, "from");
	struct node_row *row = NULL;
	size_t field = nr->field;
	int id;

	if (!node)
		return;
	id = atoi(node);
	for (unsigned i = 0; i < nr->n; i++)
		if (nr->r[i].node == id)
			row = &nr->r[i];
	if (!row) {
		if (nr->n == TIERD_PROTO_MAX_POOLS)
			return;
		row = &nr->r[nr->n++];
		memset(row, 0, sizeof(*row));
		row->node = id;
	}
	if (from && !strcmp(from, "remote"))
		field = offsetof(struct node_row, remote);
	*(double *)((char *)row + field) = tierctl_sample_value(sample);
}

static void node_pools(struct tierd_client *c, json_object *j)
{
	static const struct {
		const char *metric, *key;
		size_t off;
	} f[] = {
		{ "tierd_pool_node_size_bytes", "size_bytes", offsetof(struct node_row, size) },
		{ "tierd_pool_node_resident_bytes", "resident_bytes", offsetof(struct node_row, bytes) },
		{ "tierd_pool_node_resident_experts", "resident_experts", offsetof(struct node_row, experts) },
		{ "tierd_pool_node_fetches_total", "fetches", offsetof(struct node_row, fetches) },
		{ "tierd_pool_node_acquires_total", "acquires_local", offsetof(struct node_row, local) },
	};
	struct node_rows nr = { .n = 0 };
	json_object *root, *arr;

	if (tierctl_metrics_fetch(c, true, &root))
		return;
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		nr.field = f[i].off;
		tierctl_metrics_foreach(root, f[i].metric, NULL, collect_node, &nr);
	}
	json_object_put(root);
	if (j) {
		arr = json_object_new_array();
		for (unsigned i = 0; i < nr.n; i++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "node", json_object_new_int(nr.r[i].node));
			for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
				json_object_object_add(o, f[k].key, json_object_new_int64(
					(int64_t)*(const double *)((const char *)&nr.r[i] + f[k].off)));
			json_object_object_add(o, "acquires_remote", json_object_new_int64((int64_t)nr.r[i].remote));
			json_object_array_add(arr, o);
		}
		json_object_object_add(j, "nodes", arr);
		return;
	}
	for (unsigned i = 0; i < nr.n; i++) {
		printf("  node %-4d ", nr.r[i].node);
		print_bytes(stdout, (uint64_t)nr.r[i].bytes);
		printf(" resident (%.0f experts) of ", nr.r[i].experts);
		print_bytes(stdout, (uint64_t)nr.r[i].size);
		printf("; %.0f fetches; acquires %.0f local, %.0f remote\n", nr.r[i].fetches, nr.r[i].local,
		       nr.r[i].remote);
	}
}

int cmd_status(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_client *c;
	uint64_t v[TIERD_STAT_COUNT];
	int json, r = stats_begin(o, argc, argv, "status", &c, v, &json);

	if (r)
		return r;
	if (json) {
		json_object *j = json_object_new_object();

		json_object_object_add(j, "socket", json_object_new_string(o->socket_path));
		json_object_object_add(j, "pid", json_object_new_int64((int64_t)v[TIERD_STAT_PID]));
		json_object_object_add(j, "uptime_s", json_object_new_double((double)v[TIERD_STAT_UPTIME_MS] / 1000.0));
		for (unsigned i = TIERD_STAT_CLIENTS; i <= TIERD_STAT_EVICTIONS; i++)
			json_object_object_add(j, tierd_client_stat_name(i), json_object_new_int64((int64_t)v[i]));
		node_pools(c, j);
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
		goto out;
	}
	printf("tierd pid %llu on %s, up %.0f s\n", (unsigned long long)v[TIERD_STAT_PID], o->socket_path, (double)v[TIERD_STAT_UPTIME_MS] / 1000.0);
	printf("  models:   %llu\n", (unsigned long long)v[TIERD_STAT_MODELS]);
	printf("  pool:     ");
	print_bytes(stdout, v[TIERD_STAT_BYTES_RESIDENT]);
	printf(" resident of ");
	print_bytes(stdout, v[TIERD_STAT_POOL_BYTES]);
	printf(" in %llu pool(s)\n", (unsigned long long)v[TIERD_STAT_POOLS]);
	node_pools(c, NULL);
	printf("  clients:  %llu, pins %llu (operator %llu)\n", (unsigned long long)v[TIERD_STAT_CLIENTS],
	       (unsigned long long)v[TIERD_STAT_PINS], (unsigned long long)v[TIERD_STAT_OPERATOR_PINS]);
	printf("  acquires: %llu hits, %llu misses, %llu evictions\n", (unsigned long long)v[TIERD_STAT_HITS],
	       (unsigned long long)v[TIERD_STAT_MISSES], (unsigned long long)v[TIERD_STAT_EVICTIONS]);
	printf("  refused:  %llu requests\n", (unsigned long long)v[TIERD_STAT_REFUSED]);
	print_client_pins(c);
out:
	tierd_client_close(c);
	return 0;
}

int cmd_stats(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_client *c;
	uint64_t v[TIERD_STAT_COUNT];
	int json, r = stats_begin(o, argc, argv, "stats", &c, v, &json);

	if (r)
		return r;
	if (json) {
		json_object *j = json_object_new_object();

		for (unsigned i = 0; i < TIERD_STAT_COUNT && tierd_client_stat_name(i); i++)
			json_object_object_add(j, tierd_client_stat_name(i), json_object_new_int64((int64_t)v[i]));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	} else {
		for (unsigned i = 0; i < TIERD_STAT_COUNT && tierd_client_stat_name(i); i++)
			printf("%-18s %llu\n", tierd_client_stat_name(i), (unsigned long long)v[i]);
	}
	tierd_client_close(c);
	return 0;
}

int cmd_models(const struct tierctl_opts *o, int argc, char **argv)
{
	struct tierd_client *c;
	int json = parse_json_opt(o, argc, argv, "tierctl models [--json]"), n;

	if (json < 0)
		return 2;
	if (svc_connect(o, &c))
		return 1;
	n = tierd_client_model_count(c);
	if (json) {
		json_object *a = json_object_new_array();

		for (int i = 0; i < n; i++) {
			struct tierd_model_info mi;
			json_object *j = json_object_new_object();

			tierd_client_model_info(c, (unsigned)i, &mi);
			json_object_object_add(j, "index", json_object_new_int(i));
			json_object_object_add(j, "name", json_object_new_string(mi.name));
			json_object_object_add(j, "allowed", json_object_new_boolean(mi.allowed));
			json_object_object_add(j, "layers", json_object_new_int64(mi.nlayers));
			json_object_object_add(j, "experts_per_layer", json_object_new_int64(mi.experts_per_layer));
			json_object_object_add(j, "top_k", json_object_new_int64(mi.top_k));
			json_object_object_add(j, "experts", json_object_new_int64((int64_t)mi.nexperts));
			json_object_object_add(j, "slot_bytes", json_object_new_int64((int64_t)mi.slot_bytes));
			json_object_array_add(a, j);
		}
		printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY));
		json_object_put(a);
	} else {
		printf("%-3s %-20s %-7s %6s %8s %5s %8s %12s\n", "#", "MODEL", "ALLOWED", "LAYERS", "EXPERTS",
		       "TOPK", "TOTAL", "SLOT BYTES");
		for (int i = 0; i < n; i++) {
			struct tierd_model_info mi;

			tierd_client_model_info(c, (unsigned)i, &mi);
			printf("%-3d %-20s %-7s %6u %8u %5u %8llu %12llu\n", i, mi.name, mi.allowed ? "yes" : "no",
			       mi.nlayers, mi.experts_per_layer, mi.top_k, (unsigned long long)mi.nexperts,
			       (unsigned long long)mi.slot_bytes);
		}
	}
	tierd_client_close(c);
	return 0;
}

/* prefetch, evict, pin, unpin, release: MODEL LAYERS EXPERTS. */
static int keys_command(const struct tierctl_opts *o, int argc, char **argv,
			int (*fn)(struct tierd_client *, const struct tierd_key *, size_t), const char *done)
{
	struct tierd_client *c;
	struct tierd_key *keys = NULL;
	size_t n = 0;
	int r;

	if (svc_connect(o, &c))
		return 1;
	r = parse_keys(c, argc - 1, argv + 1, &keys, &n);
	if (r) {
		tierd_client_close(c);
		return 2;
	}
	for (size_t i = 0; !r && i < n; i += 1024)
		r = fn(c, keys + i, n - i < 1024 ? n - i : 1024);
	if (r)
		r = svc_fail(c, argv[0], r);
	else
		printf("%s %zu expert(s)\n", done, n);
	free(keys);
	tierd_client_close(c);
	return r;
}

static int pin_timeout_ms = 60000;

static int do_pin(struct tierd_client *c, const struct tierd_key *k, size_t n)
{
	return tierd_client_pin(c, k, n, pin_timeout_ms);
}

int cmd_prefetch(const struct tierctl_opts *o, int argc, char **argv)
{
	return keys_command(o, argc, argv, tierd_client_prefetch, "prefetch queued for");
}

int cmd_evict(const struct tierctl_opts *o, int argc, char **argv)
{
	return keys_command(o, argc, argv, tierd_client_evict, "evicted");
}

int cmd_pin(const struct tierctl_opts *o, int argc, char **argv)
{
	pin_timeout_ms = tierctl_timeout(o, 60000);
	return keys_command(o, argc, argv, do_pin, "pinned");
}

int cmd_unpin(const struct tierctl_opts *o, int argc, char **argv)
{
	return keys_command(o, argc, argv, tierd_client_unpin, "unpinned");
}

/* Pins of a client go with its connection; what tierctl can release across
 * processes are the daemon-owned operator pins. */
int cmd_release(const struct tierctl_opts *o, int argc, char **argv)
{
	return keys_command(o, argc, argv, tierd_client_unpin, "released operator pins of");
}

int cmd_acquire(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "hold", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 't' },
		{ 0 }
	};
	struct tierd_client *c;
	struct tierd_acquisition *a;
	struct tierd_key *keys = NULL;
	double hold = 0, t0;
	int timeout = tierctl_timeout(o, 60000), opt, r;
	size_t n = 0;

	while ((opt = getopt_long(argc, argv, "H:t:", lo, NULL)) != -1) {
		switch (opt) {
		case 'H':
			if (tierctl_parse_double("--hold", optarg, 0, 86400, &hold))
				return 2;
			break;
		case 't':
			if (tierctl_parse_int("--timeout", optarg, -1, INT_MAX, &timeout))
				return 2;
			break;
		default:
			fprintf(stderr, "Usage: tierctl acquire [--hold SECONDS] [--timeout MS] MODEL LAYERS EXPERTS\n");
			return 2;
		}
	}
	if (svc_connect(o, &c))
		return 1;
	r = parse_keys(c, argc - optind, argv + optind, &keys, &n);
	if (r) {
		tierd_client_close(c);
		return 2;
	}
	t0 = now_s();
	r = tierd_client_acquire(c, keys, n, timeout, &a);
	if (r) {
		r = svc_fail(c, "acquire", r);
		goto out;
	}
	printf("acquired %zu expert(s) in %.3f ms\n", n, (now_s() - t0) * 1000.0);
	for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
		const struct tierd_expert *e = tierd_acquisition_expert(a, i);

		printf("layer %u expert %u:\n", e->key.layer, e->key.expert);
		for (uint32_t j = 0; j < e->ntensors; j++) {
			const struct tierd_tensor *t = &e->tensors[j];

			printf("  %-48s %-7s [", t->name, tierd_dtype_name(t->dtype));
			for (uint32_t d = 0; d < t->ndim; d++)
				printf("%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
			printf("] pool %u offset %llu length %llu\n", t->pool, (unsigned long long)t->offset,
			       (unsigned long long)t->length);
		}
	}
	if (hold > 0) {
		printf("holding the pins for %.1f s\n", hold);
		fflush(stdout);
		usleep((useconds_t)(hold * 1e6));
	}
	r = tierd_client_release(c, a);
	if (r)
		r = svc_fail(c, "release", r);
	else
		printf("released\n");
out:
	free(keys);
	tierd_client_close(c);
	return r;
}

struct progress {
	bool tty;
	double start;
};

static void warm_progress(uint64_t done, uint64_t total, void *arg)
{
	struct progress *p = arg;
	int width = 40, fill = total ? (int)(done * (uint64_t)width / total) : width;

	if (!p->tty)
		return;
	fprintf(stderr, "\r[%.*s%*s] %llu/%llu experts %.1f s", fill, "########################################",
		width - fill, "", (unsigned long long)done, (unsigned long long)total, now_s() - p->start);
	fflush(stderr);
}

int cmd_warm(const struct tierctl_opts *o, int argc, char **argv)
{
	struct progress p = { .tty = isatty(STDERR_FILENO), .start = now_s() };
	struct tierd_client *c;
	struct tierd_model_info mi;
	uint32_t first = 0, last = UINT32_MAX;
	int m, r;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "Usage: tierctl warm MODEL [FIRST[-LAST]]\n");
		return 2;
	}
	if (svc_connect(o, &c))
		return 1;
	m = resolve_model(c, argv[1]);
	if (m < 0) {
		tierd_client_close(c);
		return 2;
	}
	tierd_client_model_info(c, (unsigned)m, &mi);
	if (argc == 3 && tierctl_parse_range("layers", argv[2], mi.nlayers, &first, &last)) {
		tierd_client_close(c);
		return 2;
	}
	r = tierd_client_warm(c, (uint32_t)m, first, last, warm_progress, &p, tierctl_timeout(o, -1));
	if (p.tty)
		fprintf(stderr, "\n");
	if (r)
		r = svc_fail(c, "warm", r);
	else
		printf("warmed model %s layers %u-%u in %.2f s\n", mi.name, first,
		       last == UINT32_MAX ? mi.nlayers - 1 : last, now_s() - p.start);
	tierd_client_close(c);
	return r;
}

/* ---- bench acquire ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void pin_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		perror("sched_setaffinity");
}

/* Clients connected and ready, in memory shared with them: the timed
 * loops start together, whatever connecting took. */
static int *bench_ready, bench_clients;

static void bench_start_together(void)
{
	__atomic_add_fetch(bench_ready, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(bench_ready, __ATOMIC_SEQ_CST) < bench_clients)
		sched_yield();
}

/* Bare SOCK_SEQPACKET ping-pong of a 48-byte message. */
static int floor_child(double *lat, int ops, int cpu_client, int cpu_echo, double *span)
{
	int sv[2];
	char msg[48] = { 0 };
	pid_t echo;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		return -errno;
	echo = fork();
	if (echo < 0)
		return -errno;
	if (echo == 0) {
		close(sv[0]);
		pin_cpu(cpu_echo);
		while (recv(sv[1], msg, sizeof(msg), 0) > 0)
			if (send(sv[1], msg, sizeof(msg), 0) < 0)
				break;
		_exit(0);
	}
	close(sv[1]);
	pin_cpu(cpu_client);
	bench_start_together();
	span[0] = now_s();
	for (int i = 0; i < ops; i++) {
		double t = now_s();

		if (send(sv[0], msg, sizeof(msg), 0) < 0 || recv(sv[0], msg, sizeof(msg), 0) <= 0)
			return -EIO;
		lat[i] = now_s() - t;
	}
	span[1] = now_s();
	close(sv[0]);
	waitpid(echo, NULL, 0);
	return 0;
}

enum bench_kind {
	BENCH_PINGPONG,		/* bare SOCK_SEQPACKET ping-pong */
	BENCH_FLOOR,		/* bare memory read of the experts, no protocol */
	BENCH_SOCKET,		/* acquire+release through the socket */
	BENCH_FAST,		/* acquire+release through the residency table */
};

/*
 * The experts of one operation, in as many acquisitions as the daemon's
 * answers need: an ACQUIRED packet carries at most TIERD_PROTO_MAX_MSG
 * bytes, which a few hundred experts of many tensors pass (-E2BIG).
 */
struct bench_op {
	const struct tierd_key *keys;
	size_t k, chunk;
	struct tierd_acquisition *a[TIERD_PROTO_MAX_BATCH];
};

static int bench_acquire(struct tierd_client *c, struct bench_op *op)
{
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; i < op->k && !r; i += op->chunk, n++)
		r = tierd_client_acquire(c, op->keys + i, op->k - i < op->chunk ? op->k - i : op->chunk, -1,
					 &op->a[n]);
	if (r)
		while (n-- > 1)
			tierd_client_release(c, op->a[n - 1]);
	return r;
}

static int bench_release(struct tierd_client *c, struct bench_op *op)
{
	int r = 0;

	for (size_t i = 0, n = 0; i < op->k; i += op->chunk, n++) {
		int e = tierd_client_release(c, op->a[n]);

		r = r ? r : e;
	}
	return r;
}

/* Finds the largest batch (halving from all of them) the daemon answers. */
static int bench_chunk(struct tierd_client *c, struct bench_op *op)
{
	int r;

	for (op->chunk = op->k;; op->chunk = (op->chunk + 1) / 2) {
		r = bench_acquire(c, op);
		if (r != -E2BIG || op->chunk == 1)
			break;
	}
	return r ? r : bench_release(c, op);
}

static volatile uint64_t bench_sink;

static int acquire_child(const struct tierctl_opts *o, double *lat, int ops, const struct tierd_key *keys,
			 size_t k, size_t chunk, enum bench_kind kind, int cpu, double *span)
{
	struct bench_op op = { .keys = keys, .k = k, .chunk = chunk }, held = op;
	struct tierd_client *c;
	int r = tierd_client_connect(&c, o->socket_path, "bench");

	if (r) {
		bench_start_together();	/* the others must not wait for this one */
		return r;
	}
	pin_cpu(cpu);
	if (kind == BENCH_SOCKET)
		tierd_client_set_flags(c, TIERD_CLIENT_F_SOCKET);
	/* Once untimed: the library learns each expert's layout from a socket
	 * answer; the floor reads through pointers of an acquisition held. */
	r = bench_acquire(c, &held);
	if (!r && kind != BENCH_FLOOR) {
		r = bench_release(c, &held);
		held.k = 0;
	}
	bench_start_together();
	span[0] = now_s();
	for (int i = 0; i < ops && !r; i++) {
		double t = now_s();

		if (kind == BENCH_FLOOR) {
			uint64_t sum = 0;

			for (size_t x = 0, n = 0; x < k; x += chunk, n++)
				for (size_t j = 0; j < tierd_acquisition_count(held.a[n]); j++) {
					const struct tierd_expert *e = tierd_acquisition_expert(held.a[n], j);

					sum += *(const volatile uint8_t *)e->tensors[0].data;
				}
			bench_sink = sum;
		} else {
			r = bench_acquire(c, &op);
			if (!r)
				r = bench_release(c, &op);
		}
		lat[i] = now_s() - t;
	}
	span[1] = now_s();
	if (held.k)
		bench_release(c, &held);
	tierd_client_close(c);
	return r;
}

struct bench_result {
	double p50, p99, ops_s;
};

/* Runs 'clients' processes doing 'ops' each. */
static int bench_run(const struct tierctl_opts *o, enum bench_kind kind, int clients, int ops,
		     const struct tierd_key *keys, size_t k, size_t chunk, int cpu_client, int cpu_daemon,
		     struct bench_result *res)
{
	size_t total = (size_t)clients * (size_t)ops;
	/* Each client's latencies, then each one's first and last timestamps. */
	size_t bytes = (total + 2 * (size_t)clients + 1) * sizeof(double);
	double *lat = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	double *span, first = 0, last = 0;
	int failed = 0;

	if (lat == MAP_FAILED)
		return -errno;
	span = lat + total;
	bench_ready = (int *)(span + 2 * clients);
	bench_clients = clients;
	for (int i = 0; i < clients; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			failed = 1;
			break;
		}
		if (pid == 0) {
			double *mine = lat + (size_t)i * (size_t)ops;
			int r = kind == BENCH_PINGPONG ? floor_child(mine, ops, cpu_client, cpu_daemon, &span[2 * i])
						       : acquire_child(o, mine, ops, keys, k, chunk, kind, cpu_client,
								       &span[2 * i]);

			if (r)
				fprintf(stderr, "tierctl: bench client %d: %s\n", i, strerror(-r));
			_exit(r ? 1 : 0);
		}
	}
	for (int i = 0; i < clients; i++) {
		int st;

		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed = 1;
	}
	if (!failed) {
		/* Throughput over the timed loops only, from the first start to
		 * the last end: connecting and learning are not counted. */
		for (int i = 0; i < clients; i++) {
			if (!i || span[2 * i] < first)
				first = span[2 * i];
			if (!i || span[2 * i + 1] > last)
				last = span[2 * i + 1];
		}
		qsort(lat, total, sizeof(double), cmp_double);
		res->p50 = lat[total / 2] * 1e6;
		res->p99 = lat[(size_t)((double)total * 0.99)] * 1e6;
		res->ops_s = last > first ? (double)total / (last - first) : 0;
	}
	munmap(lat, bytes);
	return failed ? -EIO : 0;
}

/* "1,2,64": the client counts, each checked like one number. */
static int parse_clients(const char *arg, int *counts, int *n)
{
	char buf[256], *save = NULL;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	*n = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (*n == 16) {
			fprintf(stderr, "tierctl: --clients: at most 16 counts\n");
			return -EINVAL;
		}
		if (tierctl_parse_int("--clients", t, 1, 4096, &counts[(*n)++]))
			return -EINVAL;
	}
	return *n ? 0 : tierctl_parse_int("--clients", arg, 1, 4096, &counts[0]);
}

static uint64_t stat_of(struct tierd_client *c, const char *name)
{
	uint64_t v[64] = { 0 };
	int n = tierd_client_stats(c, v, 64);

	for (int i = 0; i < n && tierd_client_stat_name((unsigned)i); i++)
		if (!strcmp(tierd_client_stat_name((unsigned)i), name))
			return v[i];
	return 0;
}

int cmd_bench_acquire(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "clients", required_argument, NULL, 'c' },
		{ "ops", required_argument, NULL, 'n' },
		{ "experts", required_argument, NULL, 'k' },
		{ "model", required_argument, NULL, 'm' },
		{ "cpu-client", required_argument, NULL, 'C' },
		{ "cpu-daemon", required_argument, NULL, 'D' },
		{ 0 }
	};
	const char *model = NULL;
	int counts[16] = { 1 }, ncounts = 1;
	int ops = 2000, k = 1, cpu_client = -1, cpu_daemon = -1, opt, m, r = 0;
	struct tierd_client *c;
	struct tierd_model_info mi;
	struct tierd_key *keys;
	struct bench_op op = { 0 };
	json_object *list = NULL;

	while ((opt = getopt_long(argc, argv, "c:n:k:m:C:D:", lo, NULL)) != -1) {
		switch (opt) {
		case 'c': r = parse_clients(optarg, counts, &ncounts); break;
		case 'n': r = tierctl_parse_int("--ops", optarg, 10, 100000000, &ops); break;
		case 'k': r = tierctl_parse_int("--experts", optarg, 1, TIERD_PROTO_MAX_BATCH, &k); break;
		case 'm': model = optarg; break;
		case 'C': r = tierctl_parse_int("--cpu-client", optarg, -1, 4095, &cpu_client); break;
		case 'D': r = tierctl_parse_int("--cpu-daemon", optarg, -1, 4095, &cpu_daemon); break;
		default: r = -EINVAL; break;
		}
		if (r) {
			fprintf(stderr, "Usage: tierctl bench acquire [--clients N[,N...]] [--ops N] [--experts K] "
					"[--model M] [--cpu-client CPU] [--cpu-daemon CPU]\n");
			return 2;
		}
	}
	if (svc_connect(o, &c))
		return 1;
	m = model ? resolve_model(c, model) : 0;
	if (m < 0 || tierd_client_model_info(c, (unsigned)m, &mi)) {
		fprintf(stderr, "tierctl: no model to benchmark\n");
		tierd_client_close(c);
		return 1;
	}
	if ((uint64_t)k > (uint64_t)mi.nlayers * mi.experts_per_layer) {
		fprintf(stderr, "tierctl: bench acquire: --experts %d: model %s has %llu experts\n", k, mi.name,
			(unsigned long long)mi.nlayers * mi.experts_per_layer);
		tierd_client_close(c);
		return 2;
	}
	keys = calloc((size_t)k, sizeof(*keys));
	if (!keys) {
		fprintf(stderr, "tierctl: bench acquire: %s\n", strerror(ENOMEM));
		tierd_client_close(c);
		return 1;
	}
	for (int i = 0; i < k; i++)
		keys[i] = (struct tierd_key){ (uint32_t)m, (uint32_t)i / mi.experts_per_layer % mi.nlayers,
					      (uint32_t)i % mi.experts_per_layer };
	/* Make them resident first (the bench measures the hit path), in
	 * batches whose answers fit a packet. */
	op.keys = keys;
	op.k = (size_t)k;
	r = bench_chunk(c, &op);
	if (r) {
		r = svc_fail(c, "bench acquire", r);
		goto out;
	}
	if (o->json && ncounts > 1)
		list = json_object_new_array();
	for (int ci = 0; ci < ncounts; ci++) {
		struct bench_result pp = { 0 }, fl = { 0 }, so = { 0 }, fa = { 0 };
		int clients = counts[ci];
		uint64_t req0, req1;

		r = bench_run(o, BENCH_PINGPONG, clients, ops, NULL, 0, 0, cpu_client, cpu_daemon, &pp);
		if (!r)
			r = bench_run(o, BENCH_FLOOR, clients, ops, keys, (size_t)k, op.chunk, cpu_client, cpu_daemon, &fl);
		if (!r)
			r = bench_run(o, BENCH_SOCKET, clients, ops, keys, (size_t)k, op.chunk, cpu_client, cpu_daemon,
				      &so);
		req0 = stat_of(c, "requests");
		if (!r)
			r = bench_run(o, BENCH_FAST, clients, ops, keys, (size_t)k, op.chunk, cpu_client, cpu_daemon,
				      &fa);
		req1 = stat_of(c, "requests");
		if (r) {
			fprintf(stderr, "tierctl: bench acquire failed\n");
			r = 1;
			goto out;
		}
		if (o->json) {
			json_object *j = json_object_new_object();

			json_object_object_add(j, "clients", json_object_new_int(clients));
			json_object_object_add(j, "ops_per_client", json_object_new_int(ops));
			json_object_object_add(j, "experts_per_op", json_object_new_int(k));
			json_object_object_add(j, "acquires_per_op",
					       json_object_new_int((int)(((size_t)k + op.chunk - 1) / op.chunk)));
			json_object_object_add(j, "floor_p50_us", json_object_new_double(fl.p50));
			json_object_object_add(j, "floor_p99_us", json_object_new_double(fl.p99));
			json_object_object_add(j, "pingpong_p50_us", json_object_new_double(pp.p50));
			json_object_object_add(j, "pingpong_p99_us", json_object_new_double(pp.p99));
			json_object_object_add(j, "socket_p50_us", json_object_new_double(so.p50));
			json_object_object_add(j, "socket_p99_us", json_object_new_double(so.p99));
			json_object_object_add(j, "socket_ops_per_s", json_object_new_double(so.ops_s));
			json_object_object_add(j, "fast_p50_us", json_object_new_double(fa.p50));
			json_object_object_add(j, "fast_p99_us", json_object_new_double(fa.p99));
			json_object_object_add(j, "fast_ops_per_s", json_object_new_double(fa.ops_s));
			/* The fast run's requests: connections and their first,
			 * learning acquire; more means misses went to the socket. */
			json_object_object_add(j, "fast_run_requests", json_object_new_int64((int64_t)(req1 - req0 - 1)));
			if (list) {
				json_object_array_add(list, j);
			} else {
				printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
				json_object_put(j);
			}
		} else {
			printf("bench acquire: %d client(s) x %d ops, %d resident expert(s) per acquire+release\n",
			       clients, ops, k);
			printf("  floor (memory read):           p50 %8.2f us  p99 %8.2f us  %10.0f ops/s\n",
			       fl.p50, fl.p99, fl.ops_s);
			printf("  SOCK_SEQPACKET ping-pong:      p50 %8.2f us  p99 %8.2f us  %10.0f round trips/s\n",
			       pp.p50, pp.p99, pp.ops_s);
			printf("  acquire+release, socket:       p50 %8.2f us  p99 %8.2f us  %10.0f ops/s\n",
			       so.p50, so.p99, so.ops_s);
			printf("  acquire+release, no syscall:   p50 %8.2f us  p99 %8.2f us  %10.0f ops/s "
			       "(%llu requests in that run)\n", fa.p50, fa.p99, fa.ops_s,
			       (unsigned long long)(req1 - req0 - 1));
		}
	}
	if (list) {
		printf("%s\n", json_object_to_json_string_ext(list, JSON_C_TO_STRING_PLAIN));
		json_object_put(list);
	}
	r = 0;
out:
	free(keys);
	tierd_client_close(c);
	return r;
}
