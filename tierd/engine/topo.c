/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topo.h"

/* One list of ids ("0-3,8"): each id calls fn; -EINVAL when malformed. */
static int parse_list(const char *s, unsigned max, void (*fn)(unsigned id, void *arg), void *arg)
{
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\n' || !*p)
		return 0;	/* an empty list: a node without CPUs */
	for (;;) {
		char *end;
		unsigned long lo, hi;

		if (*p < '0' || *p > '9')
			return -EINVAL;
		lo = strtoul(p, &end, 10);
		hi = lo;
		p = end;
		if (*p == '-') {
			p++;
			if (*p < '0' || *p > '9')
				return -EINVAL;
			hi = strtoul(p, &end, 10);
			p = end;
		}
		if (hi < lo || hi >= max)
			return -EINVAL;
		for (unsigned long i = lo; i <= hi; i++)
			fn((unsigned)i, arg);
		if (*p == ',') {
			p++;
			continue;
		}
		if (!*p || *p == '\n')
			return 0;
		return -EINVAL;
	}
}

static void set_cpu(unsigned id, void *arg)
{
	CPU_SET(id, (cpu_set_t *)arg);
}

int topo_parse_cpulist(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	return parse_list(s, TOPO_MAX_CPUS, set_cpu, set);
}

static void add_node(unsigned id, void *arg)
{
	struct topo *t = arg;

	if (t->nnodes < TOPO_MAX_NODES && !topo_has_node(t, (int)id)) {
		t->nodes[t->nnodes].id = (int)id;
		CPU_ZERO(&t->nodes[t->nnodes].cpus);
		t->nnodes++;
	}
}

static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int r = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f))
		r = ferror(f) ? -EIO : -ENODATA;
	fclose(f);
	return r;
}

static int cmp_node(const void *a, const void *b)
{
	const struct topo_node *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

int topo_read(struct topo *t, const char *root, char *err, size_t errlen)
{
	char path[PATH_MAX], line[4096];
	int r;

	memset(t, 0, sizeof(*t));
	t->synthetic = root != NULL && strcmp(root, TOPO_SYSFS) != 0;
	if (!root)
		root = TOPO_SYSFS;
	snprintf(path, sizeof(path), "%s/has_memory", root);
	r = read_line(path, line, sizeof(line));
	if (r == -ENOENT) {
		/* A kernel without NUMA: one node with every CPU. */
		t->nnodes = 1;
		t->nodes[0].id = 0;
		for (unsigned i = 0; i < TOPO_MAX_CPUS; i++)
			CPU_SET(i, &t->nodes[0].cpus);
		return 0;
	}
	if (r < 0) {
		snprintf(err, errlen, "topology: %s: %s", path, strerror(-r));
		return r;
	}
	if (parse_list(line, TOPO_MAX_NODES, add_node, t) < 0) {
		snprintf(err, errlen, "topology: %s: not a list of nodes: %.64s", path, line);
		return -EINVAL;
	}
	for (unsigned i = 0; i < t->nnodes; i++) {
		snprintf(path, sizeof(path), "%s/node%d/cpulist", root, t->nodes[i].id);
		r = read_line(path, line, sizeof(line));
		/* A node of memory only (CXL, HBM as memory) has no CPUs. */
		if (r == -ENOENT || r == -ENODATA)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "topology: %s: %s", path, strerror(-r));
			return r;
		}
		if (topo_parse_cpulist(line, &t->nodes[i].cpus) < 0) {
			snprintf(err, errlen, "topology: %s: not a CPU list: %.64s", path, line);
			return -EINVAL;
		}
	}
	if (!t->nnodes) {
		snprintf(err, errlen, "topology: %s/has_memory: no node has memory", root);
		return -ENODEV;
	}
	qsort(t->nodes, t->nnodes, sizeof(t->nodes[0]), cmp_node);
	return 0;
}

int topo_parse(struct topo *t, const char *spec, char *err, size_t errlen)
{
	char buf[1024], *save = NULL, *tok;

	memset(t, 0, sizeof(*t));
	t->synthetic = true;
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "topology: description too long");
		return -ERANGE;
	}
	strcpy(buf, spec);
	for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
		char *colon = strchr(tok, ':'), *end;
		long id;

		if (!colon) {
			snprintf(err, errlen, "topology: \"%s\": expected node:cpulist", tok);
			return -EINVAL;
		}
		*colon = '\0';
		id = strtol(tok, &end, 10);
		if (end == tok || *end || id < 0 || id >= TOPO_MAX_NODES || topo_has_node(t, (int)id) ||
		    t->nnodes == TOPO_MAX_NODES) {
			snprintf(err, errlen, "topology: node \"%s\": not a new node id below %d", tok,
				 TOPO_MAX_NODES);
			return -EINVAL;
		}
		t->nodes[t->nnodes].id = (int)id;
		if (topo_parse_cpulist(colon + 1, &t->nodes[t->nnodes].cpus) < 0) {
			snprintf(err, errlen, "topology: node %ld: not a CPU list: %s", id, colon + 1);
			return -EINVAL;
		}
		t->nnodes++;
	}
	if (!t->nnodes) {
		snprintf(err, errlen, "topology: no node");
		return -EINVAL;
	}
	qsort(t->nodes, t->nnodes, sizeof(t->nodes[0]), cmp_node);
	return 0;
}

bool topo_has_node(const struct topo *t, int node)
{
	for (unsigned i = 0; i < t->nnodes; i++)
		if (t->nodes[i].id == node)
			return true;
	return false;
}

int topo_node_of_cpus(const struct topo *t, const cpu_set_t *set)
{
	int best = -ENOENT, best_n = 0;

	/* Nodes are sorted: a tie keeps the lower id. */
	for (unsigned i = 0; i < t->nnodes; i++) {
		cpu_set_t both;
		int n;

		CPU_AND(&both, &t->nodes[i].cpus, set);
		n = CPU_COUNT(&both);
		if (n > best_n) {
			best_n = n;
			best = t->nodes[i].id;
		}
	}
	return best;
}
