/* SPDX-License-Identifier: MIT */
/* DDR pool: memfd region, read-only descriptor, seals, hugetlb, mlock errors;
 * the NUMA topology (a synthetic sysfs) and the pools a configuration asks for. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010	/* Linux 5.1; older headers lack it */
#endif
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "pool.h"
#include "topo.h"

#define MiB (1ULL << 20)

static struct pool *make(uint64_t size, enum conf_hugepages hp, bool lock)
{
	struct pool_opts o = { .size = size, .numa_node = -1, .hugepages = hp, .lock = lock };
	struct pool *p = NULL;
	char err[512] = "";
	int e = pool_create(&p, &o, err, sizeof(err));

	if (e < 0)
		fail_msg("pool_create: %s (%s)", strerror(-e), err);
	return p;
}

static void test_region(void **state)
{
	struct pool *p = make(6 * MiB + 1, CONF_HUGEPAGES_NO, false);
	const struct iovec *iov;
	unsigned n;
	uint8_t *ro;

	assert_int_equal(pool_size(p), 8 * MiB);
	assert_int_equal((uintptr_t)pool_base(p) % (2 * MiB), 0);
	assert_false(pool_hugetlb(p));
	iov = pool_iovecs(p, &n);
	assert_int_equal(n, 1);
	assert_ptr_equal(iov[0].iov_base, pool_base(p));
	assert_int_equal(iov[0].iov_len, 8 * MiB);
	for (uint64_t i = 0; i < pool_size(p); i += 4096)
		pool_base(p)[i] = (uint8_t)(i >> 12);
	/* A client's view through the read-only descriptor sees the same bytes. */
	ro = mmap(NULL, pool_size(p), PROT_READ, MAP_SHARED, pool_fd_ro(p), 0);
	assert_ptr_not_equal(ro, MAP_FAILED);
	for (uint64_t i = 0; i < pool_size(p); i += 4096)
		assert_int_equal(ro[i], (uint8_t)(i >> 12));
	pool_base(p)[4096] = 0xab;
	assert_int_equal(ro[4096], 0xab);
	munmap(ro, pool_size(p));
	pool_destroy(p);
}

static void test_readonly(void **state)
{
	struct pool *p = make(4 * MiB, CONF_HUGEPAGES_NO, false);
	int fd = pool_fd_ro(p), rw, status;
	char path[64];
	void *m;
	pid_t pid;

	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	/* No writable shared mapping through the client's descriptor. */
	m = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_ptr_equal(m, MAP_FAILED);
	assert_int_equal(errno, EACCES);
	assert_int_equal(write(fd, "x", 1), -1);
	/* Writing through a read-only mapping faults (in a child). */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		volatile uint8_t *ro;

		/* The test runner catches SIGSEGV; the child must die of it. */
		signal(SIGSEGV, SIG_DFL);
		ro = mmap(NULL, 4 * MiB, PROT_READ, MAP_SHARED, fd, 0);
		if (ro == MAP_FAILED)
			_exit(2);
		ro[0] = 1;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
	/* Reopening it read-write through /proc does not help: sealed. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	rw = open(path, O_RDWR);
	/* Either the reopen itself is refused, or every write through it is. */
	if (rw < 0) {
		assert_true(errno == EACCES || errno == EPERM);
	} else {
		m = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
		assert_ptr_equal(m, MAP_FAILED);
		assert_int_equal(errno, EPERM);
		assert_int_equal(write(rw, "x", 1), -1);
		assert_int_equal(errno, EPERM);
		assert_int_equal(ftruncate(rw, 2 * MiB), -1);
		assert_int_equal(errno, EPERM);
		assert_int_equal(ftruncate(rw, 8 * MiB), -1);
		assert_int_equal(errno, EPERM);
		close(rw);
	}
	assert_int_equal(fcntl(fd, F_GET_SEALS) &
			 (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL),
			 F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
	/* The daemon still writes through its own mapping. */
	pool_base(p)[0] = 7;
	pool_destroy(p);
}

static void test_iovec_split(void **state)
{
	struct pool *p = make(POOL_IOVEC_MAX + 2 * MiB, CONF_HUGEPAGES_NO, false);
	const struct iovec *iov;
	unsigned n;

	iov = pool_iovecs(p, &n);
	assert_int_equal(n, 2);
	assert_int_equal(iov[0].iov_len, POOL_IOVEC_MAX);
	assert_int_equal(iov[1].iov_len, 2 * MiB);
	assert_ptr_equal(iov[1].iov_base, pool_base(p) + POOL_IOVEC_MAX);
	pool_destroy(p);
}

static void test_bad_options(void **state)
{
	struct pool_opts o = { .size = 4 * MiB, .numa_node = 999, .hugepages = CONF_HUGEPAGES_NO };
	struct pool *p;
	char err[512] = "";

	assert_int_equal(pool_create(&p, &o, err, sizeof(err)), -ENODEV);
	assert_non_null(strstr(err, "999"));
	o.numa_node = -1;
	o.size = 0;
	assert_int_equal(pool_create(&p, &o, err, sizeof(err)), -EINVAL);
}

static unsigned long read_ul(const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long v = 0;

	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static bool write_ul(const char *path, unsigned long v)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%lu\n", v) > 0;
	return fclose(f) == 0 && ok;
}

/* hugetlb: refused when the pool has no pages, used when root adds some. */
static void test_hugetlb(void **state)
{
	const char *nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
	struct pool_opts o = { .size = 8 * MiB, .numa_node = -1, .hugepages = CONF_HUGEPAGES_YES };
	unsigned long before = read_ul(nr), avail;
	struct pool *p = NULL;
	char err[512] = "";
	int e;

	if (geteuid() != 0 || !write_ul(nr, before + 4)) {
		skip();
		return;
	}
	avail = read_ul("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
	e = pool_create(&p, &o, err, sizeof(err));
	if (e == 0) {
		assert_true(pool_hugetlb(p));
		pool_base(p)[0] = 1;
		assert_int_equal(fcntl(pool_fd_ro(p), F_GET_SEALS) & F_SEAL_GROW, F_SEAL_GROW);
		pool_destroy(p);
	}
	write_ul(nr, before);
	/* The kernel may find fewer free pages than asked for (fragmented memory). */
	if (avail >= 4 && e != 0)
		fail_msg("hugetlb pool with %lu free pages: %s", avail, err);
	/* Ask for more than exists. */
	o.size = (read_ul("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") + 1) * 2 * MiB;
	assert_int_equal(pool_create(&p, &o, err, sizeof(err)), -ENOMEM);
	assert_non_null(strstr(err, "nr_hugepages"));
	/* Said, not passed silently: the hugetlb pool itself was not tried. */
	if (e != 0) {
		print_message("# no free hugetlb pages (%lu): the hugetlb pool was not checked\n", avail);
		skip();
	}
}

/* mlock beyond RLIMIT_MEMLOCK without CAP_IPC_LOCK names the limit. */
static void test_lock_limit(void **state)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 1 * MiB, 1 * MiB };
		struct pool_opts o = { .size = 4 * MiB, .numa_node = -1,
				       .hugepages = CONF_HUGEPAGES_NO, .lock = true };
		struct pool *p;
		char err[512] = "";
		int e;

		log_set_level(LOG_ERR);
		if (setrlimit(RLIMIT_MEMLOCK, &rl))
			_exit(3);
		/* Root has CAP_IPC_LOCK: drop to nobody, which has none. */
		if (geteuid() == 0 && setuid(65534))
			_exit(4);
		e = pool_create(&p, &o, err, sizeof(err));
		if (e == 0)
			_exit(5);
		_exit(strstr(err, "RLIMIT_MEMLOCK") ? 0 : 6);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	if (geteuid() == 0) {
		struct pool *p = make(4 * MiB, CONF_HUGEPAGES_NO, true);

		pool_destroy(p);
	}
}

static void put_file(const char *dir, const char *name, const char *text)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "we");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_topo_sysfs(void **state)
{
	char root[] = "/tmp/test-pool-sysfs.XXXXXX", path[4096], err[256] = "";
	struct topo t;
	cpu_set_t set;

	assert_non_null(mkdtemp(root));
	/* Two nodes with memory and CPUs, a third with CPUs and no memory, a
	 * fourth with memory and no CPUs (CXL). */
	put_file(root, "has_memory", "0-1,3\n");
	for (int n = 0; n < 4; n++) {
		snprintf(path, sizeof(path), "%s/node%d", root, n);
		assert_int_equal(mkdir(path, 0755), 0);
	}
	put_file(root, "node0/cpulist", "0-3,8-11\n");
	put_file(root, "node1/cpulist", "4-7,12-15\n");
	put_file(root, "node2/cpulist", "16-17\n");
	put_file(root, "node3/cpulist", "\n");
	assert_int_equal(topo_read(&t, root, err, sizeof(err)), 0);
	assert_true(t.synthetic);
	assert_int_equal(t.nnodes, 3);
	assert_true(topo_has_node(&t, 0) && topo_has_node(&t, 1) && topo_has_node(&t, 3));
	assert_false(topo_has_node(&t, 2));
	assert_int_equal(CPU_COUNT(&t.nodes[0].cpus), 8);
	assert_true(CPU_ISSET(12, &t.nodes[1].cpus));
	assert_int_equal(CPU_COUNT(&t.nodes[2].cpus), 0);
	assert_int_equal(topo_parse_cpulist("5-6", &set), 0);
	assert_int_equal(topo_node_of_cpus(&t, &set), 1);
	/* A tie: the lower node. */
	assert_int_equal(topo_parse_cpulist("3,4", &set), 0);
	assert_int_equal(topo_node_of_cpus(&t, &set), 0);
	assert_int_equal(topo_parse_cpulist("0,4-5", &set), 0);
	assert_int_equal(topo_node_of_cpus(&t, &set), 1);
	assert_int_equal(topo_parse_cpulist("16", &set), 0);
	assert_int_equal(topo_node_of_cpus(&t, &set), -ENOENT);
	/* Malformed files are named. */
	put_file(root, "node1/cpulist", "4-x\n");
	assert_int_equal(topo_read(&t, root, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "node1/cpulist"));
	put_file(root, "has_memory", "\n");
	assert_int_equal(topo_read(&t, root, err, sizeof(err)), -ENODEV);
	/* No node directory at all: a kernel without NUMA, one node. */
	snprintf(path, sizeof(path), "%s/none", root);
	assert_int_equal(topo_read(&t, path, err, sizeof(err)), 0);
	assert_int_equal(t.nnodes, 1);
	assert_int_equal(t.nodes[0].id, 0);
	assert_int_equal(topo_node_of_cpus(&t, &set), 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", root);
	assert_int_equal(system(path), 0);

	assert_int_equal(topo_parse_cpulist("3-1", &set), -EINVAL);
	assert_int_equal(topo_parse_cpulist("1,,2", &set), -EINVAL);
	assert_int_equal(topo_parse(&t, "1:4-7;0:0-3", err, sizeof(err)), 0);
	assert_int_equal(t.nodes[0].id, 0);	/* sorted */
	assert_int_equal(topo_parse(&t, "0:0-3;0:4", err, sizeof(err)), -EINVAL);
	assert_int_equal(topo_parse(&t, "0", err, sizeof(err)), -EINVAL);
}

static int plan_of(const char *conf_text, const char *topo, struct pool_plan *plan, char *err, size_t errlen)
{
	struct tierd_conf c;
	struct topo t;
	int r;

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "p.conf", conf_text, err, errlen), 0);
	assert_int_equal(conf_validate(&c, err, errlen), 0);
	assert_int_equal(topo_parse(&t, topo, err, errlen), 0);
	r = pool_plan(plan, &c, &t, err, errlen);
	conf_free(&c);
	return r;
}

static void test_plan(void **state)
{
	const char *two = "0:0-3;1:4-7";
	struct pool_plan p;
	char err[256] = "";

	/* One pool, as before: the first node of a synthetic machine. */
	assert_int_equal(plan_of("[pool]\nsize = 4G\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.node[0], 0);
	assert_int_equal(p.size[0], 4ULL << 30);
	assert_int_equal(plan_of("[pool]\nnuma_node = 1\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.node[0], 1);
	assert_int_equal(plan_of("[pool]\nnuma_node = 2\n", two, &p, err, sizeof(err)), -ENODEV);
	assert_non_null(strstr(err, "[pool] numa_node 2"));
	assert_non_null(strstr(err, "has 0,1"));
	/* Every node, one size each. */
	assert_int_equal(plan_of("[pool]\nnodes = auto\nsize = 2G\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.node[1], 1);
	assert_int_equal(p.size[0], 2ULL << 30);
	assert_int_equal(p.size[1], 2ULL << 30);
	assert_int_equal(plan_of("[pool]\nnodes = auto\nsize = 0:2G,1:1G\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.size[0], 2ULL << 30);
	assert_int_equal(p.size[1], 1ULL << 30);
	/* auto on a machine with a node the sizes forget. */
	assert_int_equal(plan_of("[pool]\nnodes = auto\nsize = 0:2G\n", two, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no size for node 1"));
	/* The nodes named by the sizes alone. */
	assert_int_equal(plan_of("[pool]\nsize = 1:3G\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.node[0], 1);
	assert_int_equal(p.size[0], 3ULL << 30);
	assert_int_equal(plan_of("[pool]\nnodes = 1,0\n", two, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.node[0], 1);
	assert_int_equal(plan_of("[pool]\nnodes = 0,2\n", two, &p, err, sizeof(err)), -ENODEV);
	assert_non_null(strstr(err, "[pool] nodes: node 2"));
	assert_int_equal(plan_of("[pool]\nnodes = auto\n", "0:0-1;1:2-3;2:4-5;3:6-7", &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 4);
	{
		char many[512] = "";

		for (int i = 0; i < CONF_MAX_POOL_NODES + 1; i++)
			snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s%d:%d", i ? ";" : "", i, i);
		assert_int_equal(plan_of("[pool]\nnodes = auto\n", many, &p, err, sizeof(err)), -E2BIG);
		assert_non_null(strstr(err, "list the nodes"));
	}
}

/* On a synthetic topology a pool carries its node as a label. */
static void test_unbound(void **state)
{
	struct pool_opts o = { .size = 2 * MiB, .numa_node = 5, .hugepages = CONF_HUGEPAGES_NO,
			       .unbound = true };
	struct pool *p = NULL;
	char err[256] = "";

	assert_int_equal(pool_create(&p, &o, err, sizeof(err)), 0);
	assert_int_equal(pool_node(p), 5);
	pool_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_region),
		cmocka_unit_test(test_readonly),
		cmocka_unit_test(test_iovec_split),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_hugetlb),
		cmocka_unit_test(test_lock_limit),
		cmocka_unit_test(test_topo_sysfs),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_unbound),
	};

	log_init("test-pool", LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
