/* SPDX-License-Identifier: MIT */
/*
 * Checks, from a client of a running tierd on a machine with several NUMA
 * nodes (the VM suite boots one), that the pools are where they should be:
 *
 *   numa-check SOCK pools
 *     every page of each pool is on one node, and no two pools share one
 *   numa-check SOCK acquire (node N | cpu C) [expect M] LAYER FIRST COUNT
 *     a client that says node N in its HELLO (or says nothing and runs on
 *     CPU C only) acquires experts LAYER/FIRST.. and finds every tensor's
 *     pages on node M (default: its own node)
 *   numa-check SOCK counters
 *     the per-node metrics add up to the daemon's totals; prints them
 *
 * Where pages are comes from move_pages(2) with no target nodes: the node
 * of each page, as the kernel has it.  Exit status 0 when all holds.
 */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tierd-client.h"

#define PAGE		4096UL
#define BATCH		1024

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "numa-check: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* The node of every page in [p, p + len): one node, or -1 when they differ
 * (or -errno of move_pages).  Reads each page first: a page this process has
 * not touched has no entry in its page table, and move_pages says -ENOENT. */
static int node_of_range(const void *p, uint64_t len, uint64_t *pages)
{
	const volatile uint8_t *b = (const volatile uint8_t *)((uintptr_t)p & ~(PAGE - 1));
	const uint8_t *end = (const uint8_t *)p + len;
	void *addr[BATCH];
	int status[BATCH], node = -2;

	*pages = 0;
	while ((const uint8_t *)b < end) {
		unsigned n = 0;

		for (; n < BATCH && (const uint8_t *)b < end; n++, b += PAGE) {
			(void)*b;
			addr[n] = (void *)b;
		}
		if (move_pages(0, n, addr, NULL, status, 0))
			return -errno;
		for (unsigned i = 0; i < n; i++) {
			if (status[i] < 0)
				return status[i];
			if (node == -2)
				node = status[i];
			else if (node != status[i])
				return -1;
		}
		*pages += n;
	}
	return node;
}

static int check_pools(struct tierd_client *c)
{
	int np = tierd_client_pool_count(c), seen[64] = { 0 };

	if (np < 2)
		return fail("%d pool(s): expected one per node", np);
	for (int p = 0; p < np; p++) {
		uint64_t size, pages;
		const void *base = tierd_client_pool_base(c, (unsigned)p, &size);
		int node = base ? node_of_range(base, size, &pages) : -EINVAL;

		if (node < 0)
			return fail("pool %d: its pages are not on one node (%d)", p, node);
		printf("pool %d node %d pages %llu\n", p, node, (unsigned long long)pages);
		if (node < 64 && seen[node]++)
			return fail("two pools on node %d", node);
	}
	return 0;
}

static int check_acquire(struct tierd_client *c, int expect, uint32_t layer, uint32_t first,
			 uint32_t count)
{
	struct tierd_key keys[64];
	struct tierd_acquisition *a;
	int r;

	if (count > 64)
		count = 64;
	for (uint32_t i = 0; i < count; i++)
		keys[i] = (struct tierd_key){ 0, layer, first + i };
	r = tierd_client_acquire(c, keys, count, 60000, &a);
	if (r < 0) {
		char why[256];

		tierd_client_last_error(c, why, sizeof(why));
		return fail("acquire: %s (%d)", why, r);
	}
	for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
		const struct tierd_expert *x = tierd_acquisition_expert(a, i);

		for (uint32_t t = 0; t < x->ntensors; t++) {
			const struct tierd_tensor *tt = &x->tensors[t];
			uint64_t pages;
			int node = node_of_range(tt->data, tt->length, &pages);

			printf("layer %u expert %u tensor %s pool %u node %d\n", x->key.layer, x->key.expert,
			       tt->name, tt->pool, node);
			if (node != expect) {
				tierd_client_release(c, a);
				return fail("tensor %s: on node %d, not %d", tt->name, node, expect);
			}
		}
	}
	tierd_client_release(c, a);
	return 0;
}

static double sample_sum(json_object *root, const char *family, const char *node, const char *from)
{
	json_object *fams, *f, *samples, *s, *v, *labels, *l;
	double sum = 0;

	if (!json_object_object_get_ex(root, "families", &fams))
		return -1;
	for (size_t i = 0; i < json_object_array_length(fams); i++) {
		f = json_object_array_get_idx(fams, i);
		if (!json_object_object_get_ex(f, "name", &v) || strcmp(json_object_get_string(v), family) ||
		    !json_object_object_get_ex(f, "samples", &samples))
			continue;
		for (size_t j = 0; j < json_object_array_length(samples); j++) {
			s = json_object_array_get_idx(samples, j);
			if (!json_object_object_get_ex(s, "labels", &labels))
				continue;
			if (node && (!json_object_object_get_ex(labels, "node", &l) ||
				     strcmp(json_object_get_string(l), node)))
				continue;
			if (from && (!json_object_object_get_ex(labels, "from", &l) ||
				     strcmp(json_object_get_string(l), from)))
				continue;
			if (json_object_object_get_ex(s, "value", &v))
				sum += json_object_get_double(v);
		}
	}
	return sum;
}

static int check_counters(struct tierd_client *c)
{
	char *text = NULL, node[16];
	size_t len = 0;
	json_object *root;
	double total, sum;
	int r = tierd_client_metrics_as(c, TIERD_CLIENT_METRICS_JSON, &text, &len, 30000);

	if (r < 0)
		return fail("metrics: %s", strerror(-r));
	root = json_tokener_parse(text);
	free(text);
	if (!root)
		return fail("metrics: not JSON");
	total = sample_sum(root, "tierd_pool_resident_bytes", NULL, NULL);
	sum = sample_sum(root, "tierd_pool_node_resident_bytes", NULL, NULL);
	printf("resident %.0f sum of nodes %.0f\n", total, sum);
	for (int n = 0; n < 2; n++) {
		snprintf(node, sizeof(node), "%d", n);
		printf("node %d resident_bytes %.0f experts %.0f fetches %.0f local %.0f remote %.0f\n", n,
		       sample_sum(root, "tierd_pool_node_resident_bytes", node, NULL),
		       sample_sum(root, "tierd_pool_node_resident_experts", node, NULL),
		       sample_sum(root, "tierd_pool_node_fetches_total", node, NULL),
		       sample_sum(root, "tierd_pool_node_acquires_total", node, "local"),
		       sample_sum(root, "tierd_pool_node_acquires_total", node, "remote"));
	}
	json_object_put(root);
	if (total <= 0 || total != sum)
		return fail("per-node resident bytes (%.0f) do not add up to the total (%.0f)", sum, total);
	return 0;
}

int main(int argc, char **argv)
{
	struct tierd_client *c = NULL;
	int node = TIERD_CLIENT_NODE_NONE, expect = -1, r, a = 3;
	cpu_set_t set;

	if (argc < 3)
		return fail("usage: numa-check SOCK pools|counters|acquire ...") + 1;
	if (!strcmp(argv[2], "acquire")) {
		if (argc < 8)
			return 2;
		if (!strcmp(argv[a], "cpu")) {
			int cpu = atoi(argv[a + 1]);

			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			/* Before connecting: the daemon reads it at HELLO. */
			if (sched_setaffinity(0, sizeof(set), &set))
				return fail("sched_setaffinity to CPU %d: %s", cpu, strerror(errno));
			expect = numa_node_of_cpu(cpu);
		} else {
			node = atoi(argv[a + 1]);
			expect = node;
		}
		a += 2;
		if (!strcmp(argv[a], "expect")) {
			expect = atoi(argv[a + 1]);
			a += 2;
		}
		if (argc < a + 3)
			return 2;
	}
	r = tierd_client_connect_node(&c, argv[1], "numa-check", node);
	if (r < 0)
		return fail("connect to %s: %s", argv[1], strerror(-r));
	if (!strcmp(argv[2], "pools"))
		r = check_pools(c);
	else if (!strcmp(argv[2], "counters"))
		r = check_counters(c);
	else if (!strcmp(argv[2], "acquire"))
		r = check_acquire(c, expect, (uint32_t)atoi(argv[a]), (uint32_t)atoi(argv[a + 1]),
				  (uint32_t)atoi(argv[a + 2]));
	else
		r = 2;
	tierd_client_close(c);
	return r;
}
