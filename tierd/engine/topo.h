/* SPDX-License-Identifier: MIT */
/*
 * NUMA topology: the nodes of the machine that have memory, and which CPUs
 * each holds, read from sysfs (/sys/devices/system/node).  The root is a
 * parameter so that tests can describe a machine they do not run on; a
 * topology read from anywhere else, or built by topo_parse(), is synthetic:
 * pools on it are labelled with their node but not bound (pool.h).
 */
#ifndef TIERD_TOPO_H
#define TIERD_TOPO_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>

#define TOPO_SYSFS		"/sys/devices/system/node"
#define TOPO_MAX_NODES		64
#define TOPO_MAX_CPUS		CPU_SETSIZE

struct topo_node {
	int id;
	cpu_set_t cpus;
};

struct topo {
	unsigned nnodes;
	struct topo_node nodes[TOPO_MAX_NODES];	/* by id, ascending */
	bool synthetic;
};

/* The nodes with memory under root (NULL: TOPO_SYSFS).  A machine without
 * that directory (NUMA off in the kernel) is one node 0 with every CPU. */
int topo_read(struct topo *t, const char *root, char *err, size_t errlen);
/* "0:0-3;1:4-7": node:cpulist pairs, for tests.  Synthetic. */
int topo_parse(struct topo *t, const char *spec, char *err, size_t errlen);
/* A cpulist ("0-3,8,10-11") into set; -EINVAL when malformed. */
int topo_parse_cpulist(const char *s, cpu_set_t *set);

bool topo_has_node(const struct topo *t, int node);
/* The node holding most of the CPUs of set (ties: the lowest id), or
 * -ENOENT when no node holds any of them. */
int topo_node_of_cpus(const struct topo *t, const cpu_set_t *set);

#endif
