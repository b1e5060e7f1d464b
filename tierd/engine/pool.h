/* SPDX-License-Identifier: MIT */
/*
 * DDR pool: one shared-memory region (memfd) on one NUMA node.
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

/* Largest piece registered with io_uring as one fixed buffer. */
#define POOL_IOVEC_MAX	(1ULL << 30)

struct pool;

struct pool_opts {
	uint64_t size;			/* rounded up to 2 MiB */
	int numa_node;			/* -1: node of the calling CPU */
	enum conf_hugepages hugepages;
	bool lock;			/* mlock; needs RLIMIT_MEMLOCK or CAP_IPC_LOCK */
};

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
