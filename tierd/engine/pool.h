/* SPDX-License-Identifier: MIT */
/*
 * DDR pool: one shared-memory region (memfd) on one NUMA node; the engine
 * makes one per node in use (pool_plan).
 *
 * hugetlb pages when the system's hugetlb pool has enough free pages (or when
 * asked), else a 2 MiB aligned shmem mapping advised for transparent huge
 * pages.  The memory policy is set to the node before the first touch, then
 * every page is faulted in and (optionally) locked.  The file is sealed
 * against growing and shrinking, and against new writable mappings, so the
 * read-only descriptor handed to clients cannot be turned into a writable
 * one; the daemon keeps writing through its own mapping.
 */
#ifndef TIERD_POOL_H
#define TIERD_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "conf.h"
#include "topo.h"

/* Largest piece registered with io_uring as one fixed buffer. */
#define POOL_IOVEC_MAX	(1ULL << 30)

struct pool;

struct pool_opts {
	uint64_t size;			/* rounded up to 2 MiB */
	int numa_node;			/* -1: node of the calling CPU */
	enum conf_hugepages hugepages;
	bool lock;			/* mlock; needs RLIMIT_MEMLOCK or CAP_IPC_LOCK */
	/* A node of a synthetic topology (topo.h): numa_node is a label, the
	 * memory is left where the kernel puts it. */
	bool unbound;
};

/* The pools the configuration asks for on a machine: node -1 is the node
 * of the calling CPU ([pool] numa_node = auto, one pool). */
struct pool_plan {
	unsigned n;
	int node[CONF_MAX_POOL_NODES];
	uint64_t size[CONF_MAX_POOL_NODES];
};

/*
 * [pool] nodes, size and numa_node against the nodes t has.  No nodes and
 * no size per node: one pool, as numa_node says.  On failure returns a
 * negative errno and writes the reason (the key, the node) into err.
 */
int pool_plan(struct pool_plan *plan, const struct tierd_conf *c, const struct topo *t,
	      char *err, size_t errlen);

/* On failure returns a negative errno and writes the reason into err. */
int pool_create(struct pool **out, const struct pool_opts *opts, char *err, size_t errlen);
void pool_destroy(struct pool *p);

uint8_t *pool_base(const struct pool *p);
uint64_t pool_size(const struct pool *p);
int pool_node(const struct pool *p);
bool pool_hugetlb(const struct pool *p);
/* Read-only descriptor of the region for clients (O_RDONLY, sealed). */
int pool_fd_ro(const struct pool *p);
/* The region as iovecs of at most POOL_IOVEC_MAX bytes (for fixed buffers). */
const struct iovec *pool_iovecs(const struct pool *p, unsigned *n);

#endif
