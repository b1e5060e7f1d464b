/* SPDX-License-Identifier: MIT */
/*
 * White-box test of libtierd-client against a fake daemon: a child process
 * that speaks the protocol with tierd/proto/proto.c, so a test can kill it
 * (restart), stop it (SIGSTOP), make it send what a broken daemon sends, or
 * send a dtype.  The library is compiled into this program, with its
 * timeouts shortened and its allocations routed through a failure injector.
 *
 * A hang is a failure: a watchdog alarm ends a test that does not return.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "catalog.h"
#include "tierd-fastpath.h"
#include "safetensors.h"

/* ---- the library, with failure injection ---- */

static int alloc_fail_at = -1;		/* which allocation fails (counting from 0); -1: none */
static int alloc_seen;

static bool alloc_fails(void)
{
	return alloc_fail_at >= 0 && alloc_seen++ == alloc_fail_at;
}

static void *inj_malloc(size_t n)
{
	return alloc_fails() ? NULL : malloc(n);
}

static void *inj_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : calloc(n, size);
}

static char *inj_strdup(const char *s)
{
	return alloc_fails() ? NULL : strdup(s);
}

#define CONNECT_TIMEOUT_MS	2000
#define REQUEST_TIMEOUT_MS	300
#define malloc(n)		inj_malloc(n)
#define calloc(n, size)		inj_calloc(n, size)
#define strdup(s)		inj_strdup(s)
/* The library's sources, in one translation unit with this test. */
#include "tierd-client-acq.c"
#include "tierd-client-mux.c"
#include "tierd-client-conn.c"
#include "tierd-client-fast.c"
#include "tierd-client.c"
#include "tierd-client-numa.c"
#undef malloc
#undef calloc
#undef strdup

/* ---- the fake daemon ---- */

#define F_LAYERS	2
#define F_EXPERTS	4
#define F_SLOT		4096u
#define F_POOL		(F_LAYERS * F_EXPERTS * F_SLOT)
#define WATCHDOG_S	60

enum fake_mode {
	FAKE_SERVE,		/* answers like tierd */
	FAKE_JUNK,		/* answers ACQUIRE only with answers to other requests */
};

/* Counters the fake daemon keeps for the test (shared memory). */
struct fake_counts {
	atomic_uint acquired;		/* keys */
	atomic_uint released;
	atomic_int hello_node;		/* the NUMA node the last HELLO said */
};

struct fixture {
	char dir[64];
	char sock[128];
	int lfd;			/* the listening socket, kept across restarts */
	pid_t pid;			/* the current fake daemon */
	struct fake_counts *counts;
	bool fast;			/* WELCOME hands over a residency table */
	int table;			/* ... this one, kept across restarts */
	struct tierd_fast_entry *entries;	/* its entries, for the test to change */
};

/* The fast path's shared memory as a daemon sizes it (4 KiB multiples). */
#define F_ENTRIES	(F_LAYERS * F_EXPERTS)
#define F_TABLE_SIZE	((sizeof(struct tierd_fast_hdr) + F_ENTRIES * sizeof(struct tierd_fast_entry) + 4095) & ~4095ul)
#define F_AREA_SIZE	((F_ENTRIES * sizeof(struct tierd_fast_pin) + sizeof(struct tierd_fast_area_tail) + 4095) & ~4095ul)

static void fake_send(int fd, const void *buf, long len)
{
	/* A client that went away is not the daemon's failure. */
	if (len > 0)
		(void)!send(fd, buf, (size_t)len, MSG_NOSIGNAL);
}

/*
 * The daemons' residency table (made by the test, which may change it):
 * every expert resident in its slot of the pool (the offsets
 * fake_acquired() answers), layout version 1.
 */
static void fake_table(struct fixture *f)
{
	struct tierd_fast_hdr *h;
	struct tierd_fast_entry *e;
	int fd = memfd_create("tierd-test-table", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)F_TABLE_SIZE), 0);
	h = mmap(NULL, F_TABLE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	h->magic = TIERD_FAST_MAGIC;
	h->version = TIERD_FAST_VERSION;
	h->nmodels = 1;
	h->nentries = F_ENTRIES;
	h->entries_offset = sizeof(*h);
	h->models[0] = (struct tierd_fast_model){ 0, F_LAYERS, F_EXPERTS, TIERD_FAST_MODEL_F_ON };
	e = (struct tierd_fast_entry *)(h + 1);
	for (uint32_t i = 0; i < F_ENTRIES; i++) {
		atomic_store(&e[i].offset, (uint64_t)i * F_SLOT);
		atomic_store(&e[i].pool, 0);
		atomic_store(&e[i].layout, 1);
		atomic_store(&e[i].gen, 2);
	}
	f->fast = true;
	f->table = fd;
	f->entries = e;
}

/* A reload that may have moved every expert: a new layout version each. */
static void fake_table_reload(struct fixture *f, uint32_t layout)
{
	for (uint32_t i = 0; i < F_ENTRIES; i++) {
		struct tierd_fast_entry *e = &f->entries[i];

		atomic_fetch_add(&e->gen, 1);
		atomic_store(&e->layout, layout);
		atomic_fetch_add(&e->gen, 1);
	}
}

/* table < 0: no fast path; else its fd and the connection's pin area. */
static void fake_welcome(int fd, int pool, int table, int area, unsigned gen, uint64_t id)
{
	static alignas(8) uint8_t tx[TIERD_PROTO_MAX_MSG];
	int fds[3] = { pool, table, area };
	union {
		char b[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} ctl;
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	struct tierd_proto_buf b;
	struct iovec iov = { .iov_base = tx };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm;
	long len;

	if (!w)
		_exit(2);
	w->instance = gen;
	w->npools = 1;
	w->pool_size[0] = F_POOL;
	w->nmodels = 1;
	w->models[0] = (struct tierd_proto_model){ "demo", TIERD_MODEL_F_ALLOWED, F_LAYERS, F_EXPERTS, 2,
						   F_LAYERS * F_EXPERTS, F_SLOT };
	if (table >= 0) {
		w->fast = TIERD_WELCOME_F_FAST;
		w->fast_table_size = F_TABLE_SIZE;
		w->fast_area_size = F_AREA_SIZE;
	}
	tierd_proto_begin(&b, tx, sizeof(tx), TIERD_MSG_WELCOME, 0, id);
	tierd_proto_put_welcome(&b, w);
	len = tierd_proto_end(&b);
	free(w);
	if (len < 0)
		_exit(2);
	iov.iov_len = (size_t)len;
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN((table >= 0 ? 3 : 1) * sizeof(int));
	mh.msg_controllen = CMSG_SPACE((table >= 0 ? 3 : 1) * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, (table >= 0 ? 3 : 1) * sizeof(int));
	(void)!sendmsg(fd, &mh, MSG_NOSIGNAL);
}

/* One tensor per expert, in its slot: layer * F_EXPERTS + expert. */
static long fake_acquired(uint8_t *tx, uint64_t id, const struct tierd_key *k, uint32_t n, uint32_t dtype)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, tx, TIERD_PROTO_MAX_MSG, TIERD_MSG_ACQUIRED, 0, id);
	tierd_proto_put_u32(&b, n);
	tierd_proto_put_u32(&b, 0);
	for (uint32_t i = 0; i < n; i++) {
		char name[64];

		tierd_proto_put_u32(&b, k[i].model);
		tierd_proto_put_u32(&b, k[i].layer);
		tierd_proto_put_u32(&b, k[i].expert);
		tierd_proto_put_u32(&b, 1);
		tierd_proto_put_u32(&b, 0);
		tierd_proto_put_u32(&b, dtype);
		tierd_proto_put_u64(&b, (uint64_t)(k[i].layer * F_EXPERTS + k[i].expert) * F_SLOT);
		tierd_proto_put_u64(&b, F_SLOT);
		tierd_proto_put_u32(&b, 1);
		tierd_proto_put_u64(&b, F_SLOT);
		snprintf(name, sizeof(name), "model.layers.%u.experts.%u.w", k[i].layer, k[i].expert);
		tierd_proto_put_str(&b, name);
	}
	return tierd_proto_end(&b);
}

static void fake_serve(struct fixture *f, int fd, int pool, int table, unsigned gen, enum fake_mode mode,
		       uint32_t dtype)
{
	int area = -1;

	static alignas(8) uint8_t rx[TIERD_PROTO_MAX_MSG], tx[TIERD_PROTO_MAX_MSG];

	for (;;) {
		ssize_t n = recv(fd, rx, sizeof(rx), 0);
		const struct tierd_key *k;
		struct tierd_msg_hdr h;
		uint64_t v[TIERD_STAT_COUNT] = { 0 };
		const uint8_t *pl = rx + sizeof(h);
		const char *why;
		uint32_t count = 0;

		if (n <= 0)
			break;
		if (tierd_proto_decode_hdr(rx, (size_t)n, &h, &why))
			_exit(3);
		switch (h.type) {
		case TIERD_MSG_HELLO: {
			struct tierd_msg_hello hm;

			if (tierd_proto_decode_hello(pl, h.length, &hm, &why))
				_exit(3);
			atomic_store(&f->counts->hello_node, hm.numa_node);
			/* Each connection its own pin area. */
			if (table >= 0 && area < 0) {
				area = memfd_create("tierd-test-area", MFD_CLOEXEC);
				if (area < 0 || ftruncate(area, (off_t)F_AREA_SIZE))
					_exit(2);
			}
			fake_welcome(fd, pool, table, area, gen, h.request_id);
			break;
		}
		case TIERD_MSG_ACQUIRE:
			if (tierd_proto_decode_keys(pl, h.length, &k, &count, &why))
				_exit(3);
			atomic_fetch_add(&f->counts->acquired, count);
			if (mode == FAKE_JUNK) {
				/* Until the client gives up and closes. */
				long len = tierd_proto_encode_u64(tx, sizeof(tx), TIERD_MSG_OK, h.request_id + 1000, 0);

				while (send(fd, tx, (size_t)len, MSG_NOSIGNAL) == len)
					usleep(10000);
				break;
			}
			fake_send(fd, tx, fake_acquired(tx, h.request_id, k, count, dtype));
			break;
		case TIERD_MSG_RELEASE:
			if (tierd_proto_decode_keys(pl, h.length, &k, &count, &why))
				_exit(3);
			atomic_fetch_add(&f->counts->released, count);
			break;
		case TIERD_MSG_PREFETCH:
		case TIERD_MSG_EVICT:
		case TIERD_MSG_PIN:
		case TIERD_MSG_UNPIN:
			if (tierd_proto_decode_keys(pl, h.length, &k, &count, &why))
				_exit(3);
			fake_send(fd, tx, tierd_proto_encode_u64(tx, sizeof(tx), TIERD_MSG_OK, h.request_id, count));
			break;
		case TIERD_MSG_STATS:
			v[TIERD_STAT_PINS] = atomic_load(&f->counts->acquired) - atomic_load(&f->counts->released);
			fake_send(fd, tx, tierd_proto_encode_stats(tx, sizeof(tx), h.request_id, v, TIERD_STAT_COUNT));
			break;
		case TIERD_MSG_WARM:
			fake_send(fd, tx, tierd_proto_encode_progress(tx, sizeof(tx), h.request_id, 1, 2));
			fake_send(fd, tx, tierd_proto_encode_progress(tx, sizeof(tx), h.request_id, 2, 2));
			fake_send(fd, tx, tierd_proto_encode_u64(tx, sizeof(tx), TIERD_MSG_OK, h.request_id, 2));
			break;
		case TIERD_MSG_METRICS: {
			static const char text[] = "tierd_up 1\n";
			size_t sent;

			fake_send(fd, tx, tierd_proto_encode_metrics_data(tx, sizeof(tx), h.request_id, text,
									  sizeof(text) - 1, 0, &sent));
			break;
		}
		case TIERD_MSG_ROUTING_HINT:
		case TIERD_MSG_TOKEN_REPORT:
			break;
		default:
			_exit(4);
		}
	}
	if (area >= 0)
		close(area);
}

/* Generation gen's pool is a memfd named tierd-test-pool-<gen>, every byte gen * 0x10. */
static void fake_start(struct fixture *f, unsigned gen, enum fake_mode mode, uint32_t dtype)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		static uint8_t fill[F_POOL];
		char name[32];
		int pool, table = f->fast ? f->table : -1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(name, sizeof(name), "tierd-test-pool-%u", gen);
		pool = memfd_create(name, MFD_CLOEXEC);
		memset(fill, (int)(gen * 0x10), sizeof(fill));
		if (pool < 0 || pwrite(pool, fill, sizeof(fill), 0) != (ssize_t)sizeof(fill))
			_exit(2);
		for (;;) {
			int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd < 0)
				_exit(2);
			fake_serve(f, fd, pool, table, gen, mode, dtype);
			close(fd);
		}
	}
	f->pid = pid;
}

static void fake_stop(struct fixture *f)
{
	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	f->pid = 0;
}

static void on_watchdog(int sig)
{
	static const char msg[] = "test-client: a test hung (watchdog)\n";

	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	assert_non_null(f);
	strcpy(f->dir, "/tmp/test-client.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/tierd.sock", f->dir);
	strcpy(sa.sun_path, f->sock);
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 16), 0);
	f->counts = mmap(NULL, sizeof(*f->counts), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(f->counts != MAP_FAILED);
	signal(SIGALRM, on_watchdog);
	alarm(WATCHDOG_S);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	alarm(0);
	fake_stop(f);
	if (f->fast) {
		munmap((uint8_t *)f->entries - sizeof(struct tierd_fast_hdr), F_TABLE_SIZE);
		close(f->table);
	}
	close(f->lfd);
	unlink(f->sock);
	rmdir(f->dir);
	munmap(f->counts, sizeof(*f->counts));
	free(f);
	return 0;
}

/* Whether this process maps the memfd of that name. */
static bool mapped(const char *memfd)
{
	char line[512], want[64];
	bool found = false;
	FILE *fp = fopen("/proc/self/maps", "r");

	assert_non_null(fp);
	snprintf(want, sizeof(want), "/memfd:%s ", memfd);
	while (!found && fgets(line, sizeof(line), fp))
		found = strstr(line, want) != NULL;
	fclose(fp);
	return found;
}

static const uint8_t *tensor_data(const struct tierd_acquisition *a, size_t i)
{
	return tierd_acquisition_expert(a, i)->tensors[0].data;
}

struct reconnects {
	unsigned calls, ok, lost;
};

static void on_reconnect(struct tierd_client *c, unsigned ok, unsigned lost, void *arg)
{
	struct reconnects *r = arg;

	(void)c;
	r->calls++;
	r->ok += ok;
	r->lost += lost;
}

/*
 * A daemon restart under acquisitions: pointers taken before it stay
 * readable after the re-acquire, and the old pool is unmapped when the last
 * acquisition made through it is released.
 */
static void test_restart_keeps_old_pool(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key ka = { 0, 1, 2 }, kb = { 0, 0, 1 };
	struct tierd_acquisition *a, *b;
	struct reconnects rc = { 0 };
	const struct tierd_tensor *old_tensors;
	const volatile uint8_t *old_a, *old_b;
	struct tierd_client *c;

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	tierd_client_set_reconnect_cb(c, on_reconnect, &rc);
	assert_int_equal(tierd_client_acquire(c, &ka, 1, -1, &a), 0);
	assert_int_equal(tierd_client_acquire(c, &kb, 1, -1, &b), 0);
	old_tensors = tierd_acquisition_expert(a, 0)->tensors;
	old_a = tensor_data(a, 0);
	old_b = tensor_data(b, 0);
	assert_int_equal(old_a[0], 0x10);
	assert_int_equal(old_b[F_SLOT - 1], 0x10);
	assert_true(mapped("tierd-test-pool-1"));

	/* The daemon dies; its pool lives on in this process's mapping only. */
	fake_stop(f);
	fake_start(f, 2, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_process(c, -1), 0);	/* reads the close */
	assert_int_equal(tierd_acquisition_status(c, a), -ENOTCONN);
	assert_int_equal(tierd_client_reconnect(c), 0);
	assert_int_equal(rc.calls, 1);
	assert_int_equal(rc.ok, 2);
	assert_int_equal(tierd_acquisition_status(c, a), 0);
	assert_int_equal(tierd_acquisition_status(c, b), 0);

	/* Re-acquired in the new pool... */
	assert_int_equal(tensor_data(a, 0)[0], 0x20);
	assert_int_equal(tensor_data(b, 0)[0], 0x20);
	/* ... and what was handed out before still reads, without a fault. */
	assert_int_equal(old_a[0], 0x10);
	assert_int_equal(old_a[F_SLOT - 1], 0x10);
	assert_int_equal(old_b[0], 0x10);
	assert_ptr_equal(old_tensors[0].data, old_a);
	assert_true(mapped("tierd-test-pool-1"));
	assert_true(mapped("tierd-test-pool-2"));

	/* The old pool goes with the last acquisition made through it. */
	assert_int_equal(tierd_client_release(c, a), 0);
	assert_true(mapped("tierd-test-pool-1"));
	assert_int_equal(old_b[0], 0x10);
	assert_int_equal(tierd_client_release(c, b), 0);
	assert_false(mapped("tierd-test-pool-1"));
	assert_true(mapped("tierd-test-pool-2"));
	tierd_client_close(c);
	assert_false(mapped("tierd-test-pool-2"));
}

/* Layouts the library keeps alive (white-box). */
static unsigned layouts_alive(struct tierd_client *c)
{
	const struct fast_layout *l;
	unsigned n = 0;

	LIST_FOREACH(l, &c->layouts, link)
		n++;
	return n;
}

/*
 * A long-running client of a restarting daemon: each connection learns its
 * layouts anew, and those of the connections before go once nothing points
 * at them (a fast acquisition held across restarts keeps its tensor names
 * readable until it is released).  Memory stays bounded whatever the number
 * of restarts.
 */
static void test_fast_layouts_bounded(void **state)
{
	static const char want[] = "model.layers.1.experts.2.w";
	struct fixture *f = *state;
	const struct tierd_key k = { 0, 1, 2 };
	struct tierd_acquisition *a, *b, *held = NULL;
	const struct tierd_tensor *old = NULL;
	struct tierd_client *c;

	unsetenv("TIERD_NO_FASTPATH");
	fake_table(f);
	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	for (unsigned round = 0; round < 16; round++) {
		assert_non_null(c->fast);
		/* Through the socket, which teaches the layout; then fast. */
		assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &a), 0);
		assert_false(a->fast);
		assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &b), 0);
		assert_true(b->fast);
		assert_string_equal(tierd_acquisition_expert(b, 0)->tensors[0].name, want);
		assert_int_equal(tensor_data(b, 0)[0], (uint8_t)((round + 1) * 0x10));
		assert_int_equal(tierd_client_release(c, a), 0);
		if (round == 3) {
			held = b;
			old = tierd_acquisition_expert(b, 0)->tensors;
		} else {
			assert_int_equal(tierd_client_release(c, b), 0);
		}
		/* This connection's layout, and the held acquisition's. */
		assert_in_range(layouts_alive(c), 1, held ? 2 : 1);

		fake_stop(f);
		fake_start(f, round + 2, FAKE_SERVE, TIERD_DTYPE_U8);
		assert_int_equal(tierd_client_process(c, -1), 0);	/* reads the close */
		assert_int_equal(tierd_client_reconnect(c), 0);
		if (held) {
			assert_int_equal(tierd_acquisition_status(c, held), 0);
			assert_string_equal(old[0].name, want);
		}
		if (round == 7) {
			assert_int_equal(tierd_client_release(c, held), 0);
			held = NULL;
		}
	}
	/* Nothing learnt on this connection yet, nothing held. */
	assert_int_equal(layouts_alive(c), 0);
	tierd_client_close(c);
}

/*
 * Reloads under a connection: each new layout version is learnt again from
 * a socket acquire, and the layout it replaces goes (with the last fast
 * acquisition naming it).
 */
static void test_fast_layouts_reload(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k = { 0, 0, 3 };
	struct tierd_acquisition *a, *b, *held;
	const struct tierd_tensor *old;
	struct tierd_client *c;

	unsetenv("TIERD_NO_FASTPATH");
	fake_table(f);
	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &a), 0);
	assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &held), 0);
	assert_true(held->fast);
	old = tierd_acquisition_expert(held, 0)->tensors;
	assert_int_equal(tierd_client_release(c, a), 0);
	for (uint32_t layout = 2; layout < 18; layout++) {
		fake_table_reload(f, layout);
		/* The layout learnt no longer holds: through the socket. */
		assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &a), 0);
		assert_false(a->fast);
		assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &b), 0);
		assert_true(b->fast);
		assert_int_equal(tierd_client_release(c, a), 0);
		assert_int_equal(tierd_client_release(c, b), 0);
		/* The current one and the held acquisition's. */
		assert_int_equal(layouts_alive(c), 2);
		assert_string_equal(old[0].name, "model.layers.0.experts.3.w");
	}
	assert_int_equal(tierd_client_release(c, held), 0);
	assert_int_equal(layouts_alive(c), 1);
	tierd_client_close(c);
}

/* Every call that waits for the daemon ends on a stopped one. */
static void test_stopped_daemon_times_out(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k = { 0, 0, 0 };
	struct tierd_client *c;
	uint64_t v[TIERD_STAT_COUNT];
	char why[512], *text;
	int st, r = 0;

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	assert_int_equal(tierd_client_stats_timeout(c, v, TIERD_STAT_COUNT, -1), TIERD_STAT_COUNT);
	assert_int_equal(tierd_client_metrics_timeout(c, &text, NULL, -1), 0);
	assert_string_equal(text, "tierd_up 1\n");
	free(text);
	assert_int_equal(kill(f->pid, SIGSTOP), 0);
	assert_int_equal(waitpid(f->pid, &st, WUNTRACED), f->pid);
	assert_true(WIFSTOPPED(st));

	assert_int_equal(tierd_client_stats_timeout(c, v, TIERD_STAT_COUNT, 100), -ETIMEDOUT);
	tierd_client_last_error(c, why, sizeof(why));
	assert_non_null(strstr(why, "no answer from tierd within 100 ms"));
	assert_int_equal(tierd_client_prefetch_timeout(c, &k, 1, 100), -ETIMEDOUT);
	assert_int_equal(tierd_client_evict_timeout(c, &k, 1, 100), -ETIMEDOUT);
	assert_int_equal(tierd_client_unpin_timeout(c, &k, 1, 100), -ETIMEDOUT);
	assert_int_equal(tierd_client_metrics_timeout(c, &text, NULL, 100), -ETIMEDOUT);
	/* Those without a timeout argument wait REQUEST_TIMEOUT_MS (shortened here). */
	assert_int_equal(tierd_client_stats(c, v, TIERD_STAT_COUNT), -ETIMEDOUT);
	assert_int_equal(tierd_client_prefetch(c, &k, 1), -ETIMEDOUT);
	assert_int_equal(tierd_client_evict(c, &k, 1), -ETIMEDOUT);
	assert_int_equal(tierd_client_unpin(c, &k, 1), -ETIMEDOUT);

	/* Requests without an answer fill the socket of a daemon that does not
	 * read; then a send gives up and drops the connection. */
	for (int i = 0; i < 1000000 && !r; i++)
		r = tierd_client_report_tokens(c, 0, 1);
	assert_int_equal(r, -ETIMEDOUT);
	tierd_client_last_error(c, why, sizeof(why));
	assert_non_null(strstr(why, "did not read its socket"));

	/* Resumed, it is found again by the next call. */
	assert_int_equal(kill(f->pid, SIGCONT), 0);
	assert_int_equal(tierd_client_stats_timeout(c, v, TIERD_STAT_COUNT, -1), TIERD_STAT_COUNT);
	tierd_client_close(c);
}

/*
 * After a restart, a daemon that keeps sending packets that are not the
 * answer to the re-acquire: the wait ends at its deadline (a timeout that
 * went negative used to make poll() wait forever, with the lock held).
 */
static void test_reacquire_deadline(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k = { 0, 1, 1 };
	struct tierd_acquisition *a;
	struct tierd_client *c;
	char why[512];

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &a), 0);
	fake_stop(f);
	fake_start(f, 2, FAKE_JUNK, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_process(c, -1), 0);
	assert_int_equal(tierd_client_reconnect(c), -ETIMEDOUT);
	tierd_client_last_error(c, why, sizeof(why));
	assert_non_null(strstr(why, "re-acquire"));
	/* Not lost: the next reconnection tries again. */
	assert_int_equal(tierd_acquisition_status(c, a), -ENOTCONN);
	assert_int_equal(tierd_client_release(c, a), 0);
	tierd_client_close(c);
}

struct warm_state {
	struct tierd_client *c;
	unsigned calls;
	uint64_t done, total;
	int inner;
};

static void on_progress(uint64_t done, uint64_t total, void *arg)
{
	struct warm_state *w = arg;
	uint64_t v[4];

	w->calls++;
	w->done = done;
	w->total = total;
	/* Calls back into the library, which takes the client lock. */
	if (tierd_client_model_count(w->c) != 1 || tierd_client_stats_timeout(w->c, v, 4, -1) != 4)
		w->inner = -1;
}

static void test_warm_progress_reenters(void **state)
{
	struct fixture *f = *state;
	struct warm_state w = { 0 };

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&w.c, f->sock, "test-client"), 0);
	assert_int_equal(tierd_client_warm(w.c, 0, 0, UINT32_MAX, on_progress, &w, -1), 0);
	assert_true(w.calls >= 1);
	assert_int_equal(w.done, 2);
	assert_int_equal(w.total, 2);
	assert_int_equal(w.inner, 0);
	tierd_client_close(w.c);
}

struct async_result {
	unsigned calls;
	int err;
	struct tierd_acquisition *a;
};

static void on_acquired(struct tierd_client *c, int err, struct tierd_acquisition *a, void *arg)
{
	struct async_result *res = arg;

	(void)c;
	res->calls++;
	res->err = err;
	res->a = a;
}

/* After a failure, the daemon holds no pin for this client. */
static void assert_pins_returned(struct fixture *f, struct tierd_client *c)
{
	uint64_t v[TIERD_STAT_COUNT];

	/* The socket keeps order: once STATS is answered, the RELEASE was read. */
	assert_int_equal(tierd_client_stats_timeout(c, v, TIERD_STAT_COUNT, -1), TIERD_STAT_COUNT);
	assert_int_equal(v[TIERD_STAT_PINS], 0);
	assert_int_equal(atomic_load(&f->counts->released), atomic_load(&f->counts->acquired));
}

/*
 * Every allocation of an asynchronous acquire's completion fails in turn:
 * the callback gets -ENOMEM and no acquisition, the pins go back, nothing is
 * freed twice or leaked (the sanitizers' run checks the last two).
 */
static void test_async_acquire_out_of_memory(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k[2] = { { 0, 1, 2 }, { 0, 1, 3 } };
	struct tierd_client *c;
	char why[512];
	int at;

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	for (at = 0;; at++) {
		struct async_result res = { 0 };

		assert_int_equal(tierd_client_acquire_async(c, k, 2, on_acquired, &res), 0);
		alloc_seen = 0;
		alloc_fail_at = at;
		while (!res.calls)
			assert_true(tierd_client_process(c, -1) >= 0);
		alloc_fail_at = -1;
		assert_int_equal(res.calls, 1);
		if (!res.err) {
			assert_non_null(res.a);
			assert_int_equal(tensor_data(res.a, 1)[0], 0x10);
			assert_int_equal(tierd_client_release(c, res.a), 0);
			break;
		}
		assert_int_equal(res.err, -ENOMEM);
		assert_null(res.a);
		tierd_client_last_error(c, why, sizeof(why));
		assert_non_null(strstr(why, "out of memory"));
		assert_pins_returned(f, c);
	}
	/* The acquisition, its names, its arrays: several allocations were failed. */
	assert_true(at >= 4);
	assert_pins_returned(f, c);
	tierd_client_close(c);
}

/* The same for the blocking acquire, from its first allocation on. */
static void test_acquire_out_of_memory(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k[2] = { { 0, 0, 2 }, { 0, 0, 3 } };
	struct tierd_acquisition *a = NULL;
	struct tierd_client *c;
	int at, r;

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	for (at = 0;; at++) {
		alloc_seen = 0;
		alloc_fail_at = at;
		r = tierd_client_acquire(c, k, 2, -1, &a);
		alloc_fail_at = -1;
		if (!r)
			break;
		assert_int_equal(r, -ENOMEM);
		assert_pins_returned(f, c);
	}
	assert_true(at >= 6);
	assert_int_equal(tensor_data(a, 0)[0], 0x10);
	assert_int_equal(tierd_client_release(c, a), 0);
	assert_pins_returned(f, c);
	tierd_client_close(c);
}

/* The dtype codes are the daemon's enum tierd_dtype; F8_E8M0 was missing. */
/*
 * A daemon that accepts nothing (stopped, overloaded): its listen queue
 * fills, and connect() would wait forever.  The library gives up after its
 * connect timeout and says why.
 */
static void test_connect_full_listen_queue(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tierd_client *c = NULL;
	int held[64], nheld = 0;

	strcpy(sa.sun_path, f->sock);
	assert_int_equal(listen(f->lfd, 0), 0);
	/* Fill the queue: connects that would wait say EAGAIN instead. */
	while (nheld < 64) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			assert_int_equal(errno, EAGAIN);
			close(fd);
			break;
		}
		held[nheld++] = fd;
	}
	assert_true(nheld < 64);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), -ETIMEDOUT);
	assert_null(c);
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	/* Once the queue drains, the next try gets through to the daemon. */
	assert_int_equal(listen(f->lfd, 16), 0);
	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	tierd_client_close(c);
}

static void test_dtypes(void **state)
{
	struct fixture *f = *state;
	const struct tierd_key k = { 0, 1, 0 };
	const struct tierd_tensor *t;
	struct tierd_acquisition *a;
	struct tierd_client *c;

	for (unsigned i = 0; i < TIERD_DTYPE_COUNT; i++) {
		assert_string_equal(tierd_dtype_name(i), tierd_dtype_name((enum tierd_dtype)i));
		assert_int_equal(tierd_dtype_size(i), tierd_dtype_size((enum tierd_dtype)i));
	}
	assert_string_equal(tierd_dtype_name(TIERD_DTYPE_COUNT), "unknown");
	assert_int_equal(tierd_dtype_size(TIERD_DTYPE_COUNT), 0);

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_F8_E8M0);
	assert_int_equal(tierd_client_connect(&c, f->sock, "test-client"), 0);
	assert_int_equal(tierd_client_acquire(c, &k, 1, -1, &a), 0);
	t = &tierd_acquisition_expert(a, 0)->tensors[0];
	assert_int_equal(t->dtype, TIERD_DTYPE_F8_E8M0);
	assert_string_equal(tierd_dtype_name(t->dtype), "F8_E8M0");
	assert_int_equal(t->length, t->shape[0] * tierd_dtype_size(t->dtype));
	assert_int_equal(tierd_client_release(c, a), 0);
	tierd_client_close(c);
}

_Static_assert(TIERD_DTYPE_F8_E8M0 == (int)TIERD_DTYPE_F8_E8M0, "client and daemon dtype codes");

static void put_node(const char *root, const char *dev, const char *text)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "mkdir -p '%s/bus/pci/devices/%s'", root, dev);
	assert_int_equal(system(path), 0);
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/numa_node", root, dev);
	fp = fopen(path, "we");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* A GPU's node from a synthetic sysfs, in the spellings CUDA and
 * nvidia-smi give its address; and the node said in HELLO. */
static void test_numa_node(void **state)
{
	struct fixture *f = *state;
	struct tierd_client *c;
	char root[512];

	snprintf(root, sizeof(root), "%s/sys", f->dir);
	put_node(root, "0000:3b:00.0", "1\n");
	put_node(root, "0000:17:00.0", "-1\n");
	assert_int_equal(tdc_pci_numa_node(root, "0000:3B:00.0"), 1);
	assert_int_equal(tdc_pci_numa_node(root, "00000000:3b:00.0"), 1);
	assert_int_equal(tdc_pci_numa_node(root, "3b:00.0"), 1);
	assert_int_equal(tdc_pci_numa_node(root, "0000:17:00.0"), -ENODATA);
	assert_int_equal(tdc_pci_numa_node(root, "0000:18:00.0"), -ENOENT);
	assert_int_equal(tdc_pci_numa_node(root, "gpu0"), -EINVAL);
	assert_int_equal(tdc_pci_numa_node(root, "0000:3b:00.0x"), -EINVAL);

	fake_start(f, 1, FAKE_SERVE, TIERD_DTYPE_U8);
	assert_int_equal(tierd_client_connect_node(&c, f->sock, "numa", 1), 0);
	assert_int_equal(atomic_load(&f->counts->hello_node), 1);
	tierd_client_close(c);
	setenv("TIERD_NUMA_NODE", "2", 1);
	assert_int_equal(tierd_client_connect(&c, f->sock, "numa"), 0);
	assert_int_equal(atomic_load(&f->counts->hello_node), 2);
	tierd_client_close(c);
	assert_int_equal(tierd_client_connect_node(&c, f->sock, "numa", TIERD_CLIENT_NODE_NONE), 0);
	assert_int_equal(atomic_load(&f->counts->hello_node), TIERD_NODE_UNSAID);
	tierd_client_close(c);
	unsetenv("TIERD_NUMA_NODE");
	assert_int_equal(tierd_client_connect(&c, f->sock, "numa"), 0);
	assert_int_equal(atomic_load(&f->counts->hello_node), TIERD_NODE_UNSAID);
	tierd_client_close(c);
	snprintf(root, sizeof(root), "rm -rf '%s/sys'", f->dir);
	assert_int_equal(system(root), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_restart_keeps_old_pool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fast_layouts_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fast_layouts_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stopped_daemon_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reacquire_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_warm_progress_reenters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_acquire_out_of_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_acquire_out_of_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dtypes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numa_node, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_full_listen_queue, setup, teardown),
	};

	/* A daemon that went away is not a reason to die. */
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);	/* one test, by name (a glob) */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
