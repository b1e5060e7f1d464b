/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"

#define HUGE_2M	(2ULL << 20)

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct pool {
	uint8_t *base;
	uint64_t size;
	int fd;			/* read-write, the daemon's */
	int fd_ro;		/* handed to clients */
	int node;
	bool hugetlb;
	bool locked;
	struct iovec *iov;
	unsigned niov;
};

/* Free 2 MiB hugetlb pages, from /proc/meminfo; 0 when unknown. */
static uint64_t hugetlb_free_2m(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long free_pages = 0, page_kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "HugePages_Free: %llu", &free_pages);
		sscanf(line, "Hugepagesize: %llu kB", &page_kb);
	}
	fclose(f);
	/* MFD_HUGE_2MB is what we ask for; other default sizes count as none. */
	return page_kb == 2048 ? free_pages : 0;
}

static int resolve_node(int want, char *err, size_t errlen)
{
	int cpu;

	if (numa_available() < 0) {
		if (want > 0) {
			snprintf(err, errlen, "pool: [pool] numa_node %d: NUMA is not available here", want);
			return -ENODEV;
		}
		return 0;
	}
	if (want < 0) {
		cpu = sched_getcpu();
		want = cpu < 0 ? 0 : numa_node_of_cpu(cpu);
		return want < 0 ? 0 : want;
	}
	if (want > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)want)) {
		snprintf(err, errlen, "pool: [pool] numa_node %d: no such node (highest is %d)",
			 want, numa_max_node());
		return -ENODEV;
	}
	return want;
}

/* Sets the memory policy of the (not yet touched) range to the node. */
static int bind_node(struct pool *p, char *err, size_t errlen)
{
	struct bitmask *mask;
	int err_;

	if (numa_available() < 0) {
		log_info("pool: NUMA not available, memory policy left as is");
		return 0;
	}
	mask = numa_allocate_nodemask();
	if (!mask)
		return -ENOMEM;
	numa_bitmask_setbit(mask, (unsigned)p->node);
	err_ = mbind(p->base, p->size, MPOL_BIND, mask->maskp, mask->size + 1, 0) ? -errno : 0;
	numa_free_nodemask(mask);
	if (err_ < 0)
		snprintf(err, errlen, "pool: binding %llu bytes to NUMA node %d: %s",
			 (unsigned long long)p->size, p->node, strerror(-err_));
	return err_;
}

static int fault_in(struct pool *p, char *err, size_t errlen)
{
	long page = sysconf(_SC_PAGESIZE);
	int e;

	if (!madvise(p->base, p->size, MADV_POPULATE_WRITE))
		return 0;
	e = -errno;
	if (e != -EINVAL) {
		/* Touching would not do better: a hugetlb page the node cannot give
		 * is a SIGBUS, so say why here instead. */
		snprintf(err, errlen, "pool: faulting in %llu bytes on NUMA node %d: %s%s",
			 (unsigned long long)p->size, p->node, strerror(-e),
			 p->hugetlb ? " (too few free hugetlb pages on that node?)" : "");
		return e;
	}
	/* Kernels before 5.14 have no MADV_POPULATE_WRITE: touch one byte per page. */
	for (uint64_t off = 0; off < p->size; off += (uint64_t)page)
		((volatile uint8_t *)p->base)[off] = 0;
	return 0;
}

static int lock_pool(struct pool *p, char *err, size_t errlen)
{
	struct rlimit rl = { 0 };
	int e;

	/* The raw system call: sanitizer runtimes replace mlock() with a no-op. */
	if (!syscall(SYS_mlock, p->base, (size_t)p->size)) {
		p->locked = true;
		return 0;
	}
	e = -errno;
	getrlimit(RLIMIT_MEMLOCK, &rl);
	if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(err, errlen, "pool: mlock of %llu bytes failed: %s",
			 (unsigned long long)p->size, strerror(-e));
	else
		snprintf(err, errlen,
			 "pool: mlock of %llu bytes failed: %s; RLIMIT_MEMLOCK is %llu bytes "
			 "(raise it, e.g. LimitMEMLOCK=infinity in the unit or ulimit -l, grant "
			 "CAP_IPC_LOCK, or set [pool] lock = no)",
			 (unsigned long long)p->size, strerror(-e), (unsigned long long)rl.rlim_cur);
	return e;
}

static int make_iovecs(struct pool *p)
{
	p->niov = (unsigned)((p->size + POOL_IOVEC_MAX - 1) / POOL_IOVEC_MAX);
	p->iov = calloc(p->niov, sizeof(*p->iov));
	if (!p->iov)
		return -ENOMEM;
	for (unsigned i = 0; i < p->niov; i++) {
		uint64_t off = (uint64_t)i * POOL_IOVEC_MAX;
		uint64_t len = p->size - off < POOL_IOVEC_MAX ? p->size - off : POOL_IOVEC_MAX;

		p->iov[i].iov_base = p->base + off;
		p->iov[i].iov_len = len;
	}
	return 0;
}

/*
 * A 2 MiB aligned shared mapping of the memfd (THP needs the alignment), or
 * NULL with errno set.
 */
static uint8_t *map_aligned(const struct pool *p)
{
	uint8_t *area, *aligned;
	uint64_t lead;

	if (p->hugetlb) {
		area = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
		return area == MAP_FAILED ? NULL : area;
	}
	area = mmap(NULL, p->size + HUGE_2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return NULL;
	aligned = (uint8_t *)(((uintptr_t)area + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
	lead = (uint64_t)(aligned - area);
	if (lead)
		munmap(area, lead);
	munmap(aligned + p->size, HUGE_2M - lead);
	if (mmap(aligned, p->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, p->fd, 0) == MAP_FAILED) {
		int e = errno;

		munmap(aligned, p->size);
		errno = e;
		return NULL;
	}
	if (madvise(aligned, p->size, MADV_HUGEPAGE))
		log_info("pool: MADV_HUGEPAGE refused (%s); using small pages", strerror(errno));
	return aligned;
}

static const char *thp_shmem_mode(char *buf, size_t len)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
	char *l, *r;

	snprintf(buf, len, "unknown");
	if (!f)
		return buf;
	if (fgets(buf, (int)len, f)) {
		l = strchr(buf, '[');
		r = l ? strchr(l, ']') : NULL;
		if (l && r) {
			*r = '\0';
			memmove(buf, l + 1, strlen(l + 1) + 1);
		}
	}
	fclose(f);
	return buf;
}

int pool_create(struct pool **out, const struct pool_opts *o, char *err, size_t errlen)
{
	struct pool *p;
	char name[64], path[64], mode[64];
	uint64_t need;
	int e;

	if (o->size == 0 || o->size > (1ULL << 46)) {
		snprintf(err, errlen, "pool: size %llu out of range", (unsigned long long)o->size);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->fd = p->fd_ro = -1;
	p->size = (o->size + HUGE_2M - 1) & ~(HUGE_2M - 1);
	e = o->unbound ? (o->numa_node < 0 ? 0 : o->numa_node) : resolve_node(o->numa_node, err, errlen);
	if (e < 0)
		goto fail;
	p->node = e;

	need = p->size / HUGE_2M;
	switch (o->hugepages) {
	case CONF_HUGEPAGES_AUTO:
		p->hugetlb = hugetlb_free_2m() >= need;
		break;
	case CONF_HUGEPAGES_YES:
		if (hugetlb_free_2m() < need) {
			snprintf(err, errlen, "pool: [pool] hugepages = yes but only %llu of the %llu "
				 "free 2 MiB hugetlb pages needed exist (raise /proc/sys/vm/nr_hugepages)",
				 (unsigned long long)hugetlb_free_2m(), (unsigned long long)need);
			e = -ENOMEM;
			goto fail;
		}
		p->hugetlb = true;
		break;
	case CONF_HUGEPAGES_NO:
		p->hugetlb = false;
		break;
	}

	snprintf(name, sizeof(name), "tierd-pool-node%d", p->node);
	p->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING |
			     (p->hugetlb ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	if (p->fd < 0) {
		e = -errno;
		snprintf(err, errlen, "pool: memfd_create: %s", strerror(-e));
		goto fail;
	}
	if (ftruncate(p->fd, (off_t)p->size)) {
		e = -errno;
		snprintf(err, errlen, "pool: sizing the memfd to %llu bytes: %s",
			 (unsigned long long)p->size, strerror(-e));
		goto fail;
	}
	p->base = map_aligned(p);
	if (!p->base) {
		e = -errno;
		snprintf(err, errlen, "pool: mmap of %llu bytes: %s", (unsigned long long)p->size, strerror(-e));
		goto fail;
	}
	/* Policy first: pages are placed when first touched. */
	e = o->unbound ? 0 : bind_node(p, err, errlen);
	if (e < 0)
		goto fail;
	e = fault_in(p, err, errlen);
	if (e < 0)
		goto fail;
	if (o->lock) {
		e = lock_pool(p, err, errlen);
		if (e < 0)
			goto fail;
	}
	/* No growing or shrinking under a client's mapping, and no new writable
	 * mapping or write(2) through any descriptor: only ours, made above. */
	if (fcntl(p->fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)) {
		e = -errno;
		snprintf(err, errlen, "pool: sealing the memfd: %s", strerror(-e));
		goto fail;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p->fd);
	p->fd_ro = open(path, O_RDONLY | O_CLOEXEC);
	if (p->fd_ro < 0) {
		e = -errno;
		snprintf(err, errlen, "pool: reopening the memfd read-only via %s: %s", path, strerror(-e));
		goto fail;
	}
	e = make_iovecs(p);
	if (e < 0)
		goto fail;
	if (p->hugetlb)
		log_notice("pool: %llu MiB on NUMA node %d in hugetlb 2 MiB pages%s",
			   (unsigned long long)(p->size >> 20), p->node, p->locked ? ", locked" : "");
	else
		log_notice("pool: %llu MiB on NUMA node %d, 2 MiB aligned for transparent huge pages "
			   "(shmem THP mode: %s; %s)%s",
			   (unsigned long long)(p->size >> 20), p->node, thp_shmem_mode(mode, sizeof(mode)),
			   o->hugepages == CONF_HUGEPAGES_NO ? "hugepages = no" :
			   "too few free hugetlb pages",
			   p->locked ? ", locked" : "");
	*out = p;
	return 0;
fail:
	pool_destroy(p);
	return e;
}

static void nodes_text(const struct topo *t, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < t->nnodes && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%d", i ? "," : "", t->nodes[i].id);
}

static bool node_listed_size(const struct tierd_conf *c, int node)
{
	for (unsigned i = 0; i < c->npool_sizes; i++)
		if (c->pool_size_node[i] == node)
			return true;
	return false;
}

static uint64_t node_size(const struct tierd_conf *c, int node)
{
	for (unsigned i = 0; i < c->npool_sizes; i++)
		if (c->pool_size_node[i] == node)
			return c->pool_size_bytes[i];
	return c->pool_size;
}

int pool_plan(struct pool_plan *plan, const struct tierd_conf *c, const struct topo *t,
	      char *err, size_t errlen)
{
	char have[256];

	memset(plan, 0, sizeof(*plan));
	nodes_text(t, have, sizeof(have));
	if (c->pool_nodes_auto) {
		if (t->nnodes > CONF_MAX_POOL_NODES) {
			snprintf(err, errlen, "pool: [pool] nodes = auto: this machine has %u nodes with "
				 "memory (%s), at most %d pools: list the nodes near the GPUs",
				 t->nnodes, have, CONF_MAX_POOL_NODES);
			return -E2BIG;
		}
		for (unsigned i = 0; i < t->nnodes; i++)
			plan->node[plan->n++] = t->nodes[i].id;
	} else if (c->npool_nodes) {
		for (unsigned i = 0; i < c->npool_nodes; i++)
			plan->node[plan->n++] = c->pool_nodes[i];
	} else if (c->npool_sizes) {
		for (unsigned i = 0; i < c->npool_sizes; i++)
			plan->node[plan->n++] = c->pool_size_node[i];
	} else {
		/* The configuration of one pool keeps its meaning. */
		plan->n = 1;
		plan->node[0] = c->numa_node;
		if (c->numa_node < 0 && t->synthetic)
			plan->node[0] = t->nodes[0].id;
		if (plan->node[0] >= 0 && !topo_has_node(t, plan->node[0])) {
			snprintf(err, errlen, "pool: [pool] numa_node %d: no such node with memory (this "
				 "machine has %s)", plan->node[0], have);
			return -ENODEV;
		}
		plan->size[0] = c->pool_size;
		return 0;
	}
	for (unsigned i = 0; i < plan->n; i++) {
		if (!topo_has_node(t, plan->node[i])) {
			snprintf(err, errlen, "pool: [pool] %s: node %d: no such node with memory (this "
				 "machine has %s)", c->npool_nodes ? "nodes" : "size", plan->node[i], have);
			return -ENODEV;
		}
		plan->size[i] = node_size(c, plan->node[i]);
		/* nodes = auto on a machine with a node the sizes forget. */
		if (c->npool_sizes && !node_listed_size(c, plan->node[i])) {
			snprintf(err, errlen, "pool: [pool] size: no size for node %d (nodes = auto: this "
				 "machine has %s; give NODE:SIZE for each, or one size for all)",
				 plan->node[i], have);
			return -EINVAL;
		}
	}
	return 0;
}

void pool_destroy(struct pool *p)
{
	if (!p)
		return;
	if (p->base)
		munmap(p->base, p->size);
	if (p->fd_ro >= 0)
		close(p->fd_ro);
	if (p->fd >= 0)
		close(p->fd);
	free(p->iov);
	free(p);
}

uint8_t *pool_base(const struct pool *p) { return p->base; }
uint64_t pool_size(const struct pool *p) { return p->size; }
int pool_node(const struct pool *p) { return p->node; }
bool pool_hugetlb(const struct pool *p) { return p->hugetlb; }
int pool_fd_ro(const struct pool *p) { return p->fd_ro; }

const struct iovec *pool_iovecs(const struct pool *p, unsigned *n)
{
	*n = p->niov;
	return p->iov;
}
