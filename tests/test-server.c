/* SPDX-License-Identifier: MIT */
/*
 * White-box test of the server in one process: the real engine and loop in
 * the main thread, a libtierd-client in a second thread.  Checks what only
 * the server's own API shows: routing hints kept per expert, tokens per
 * model, counters, and that every pin is gone after the client closes; and
 * inside it (server-int.h), clients found by id as they come and go.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "conf.h"
#include "demostore.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "server-int.h"
#include "tierd-client.h"
#include "topo.h"
#include "tierd-proto.h"
#include "usage.h"

struct fixture {
	char dir[64];
	char sock[128];
	struct tierd_conf conf;
	struct engine *engine;
	struct loop *loop;
	struct server *server;
	struct usage *usage;		/* hints and tokens, as the daemon keeps them */
	int done_fd;			/* the client thread signals the loop */
	int client_err;
};

static void on_engine(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	engine_process(arg);
}

static void on_done(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct fixture *f = arg;
	uint64_t v;

	assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
	loop_quit(f->loop, 0);
}

/* Set by setup_numa: a synthetic machine for the engine's pools. */
static const char *setup_topo;

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct demostore_opts o;
	char err[512], set[256];

	log_init("test-server", LOG_WARNING);
	strcpy(f->dir, "/tmp/test-server.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/tierd.sock", f->dir);
	demostore_opts_default(&o);
	o.layers = 2;
	o.experts = 4;
	snprintf(set, sizeof(set), "%s/demo", f->dir);
	assert_int_equal(demostore_write(set, &o, err, sizeof(err)), 0);
	assert_int_equal(conf_init(&f->conf), 0);
	snprintf(set, sizeof(set), "model demo.path=%s/demo", f->dir);
	assert_int_equal(conf_set(&f->conf, set, err, sizeof(err)), 0);
	snprintf(set, sizeof(set), "daemon.socket=%s", f->sock);
	assert_int_equal(conf_set(&f->conf, set, err, sizeof(err)), 0);
	/* Not the system's state: operator pins are saved there. */
	snprintf(set, sizeof(set), "daemon.state_dir=%s", f->dir);
	assert_int_equal(conf_set(&f->conf, set, err, sizeof(err)), 0);
	assert_int_equal(conf_set(&f->conf, "pool.size=4M", err, sizeof(err)), 0);
	/* Not "auto" (half of this small pool's slots): the client pins two. */
	assert_int_equal(conf_set(&f->conf, "client.max_pins=8", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&f->conf, "pool.hugepages=no", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&f->conf, "pool.lock=no", err, sizeof(err)), 0);
	if (setup_topo) {
		struct topo t;

		assert_int_equal(topo_parse(&t, setup_topo, err, sizeof(err)), 0);
		assert_int_equal(conf_set(&f->conf, "pool.nodes=auto", err, sizeof(err)), 0);
		if (engine_create_topo(&f->engine, &f->conf, &t, err, sizeof(err)))
			fail_msg("engine: %s", err);
	} else if (engine_create(&f->engine, &f->conf, err, sizeof(err))) {
		fail_msg("engine: %s", err);
	}
	assert_int_equal(loop_create(&f->loop), 0);
	assert_int_equal(loop_add_fd(f->loop, engine_fd(f->engine), EPOLLIN, on_engine, f->engine, NULL), 0);
	f->done_fd = eventfd(0, EFD_CLOEXEC);
	assert_true(f->done_fd >= 0);
	assert_int_equal(loop_add_fd(f->loop, f->done_fd, EPOLLIN, on_done, f, NULL), 0);
	assert_int_equal(server_create(&f->server, f->loop, f->engine, &f->conf, -1), 0);
	assert_int_equal(usage_create(&f->usage, f->engine, NULL), 0);
	server_set_observer(f->server, usage_observer(), f->usage);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	engine_drain(f->engine);
	server_destroy(f->server);
	usage_destroy(f->usage);
	loop_destroy(f->loop);
	engine_destroy(f->engine);
	conf_free(&f->conf);
	close(f->done_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void *client_thread(void *arg)
{
	struct fixture *f = arg;
	struct tierd_client *c;
	struct tierd_acquisition *a;
	const struct tierd_key keys[2] = { { 0, 1, 2 }, { 0, 1, 3 } };
	const uint32_t experts[3] = { 2, 3, 99 };	/* 99: not in the checkpoint */
	const float weights[3] = { 0.5f, 0.25f, 0.25f };
	uint64_t v[32];
	uint64_t one = 1;
	int r;

	r = tierd_client_connect(&c, f->sock, "test-server");
	if (!r)
		r = tierd_client_acquire(c, keys, 2, 10000, &a);
	if (!r)
		r = tierd_client_routing_hint(c, 0, 1, experts, weights, 3);
	if (!r)
		r = tierd_client_routing_hint(c, 0, 1, experts, weights, 1);
	if (!r)
		r = tierd_client_report_tokens(c, 0, 17);
	/* Would wrap the daemon's 64-bit token counters: refused, not added. */
	if (!r)
		r = tierd_client_report_tokens(c, 0, UINT64_MAX);
	/* Answers come in order: once STATS is answered, the above were handled. */
	if (!r)
		r = tierd_client_stats(c, v, 32) > 0 ? 0 : -EIO;
	if (!r) {
		char why[256];

		tierd_client_last_error(c, why, sizeof(why));
		if (!strstr(why, "at most 4294967296 in one report"))
			r = -ERANGE;
	}
	/* Leave with the pins held: closing must release them. */
	tierd_client_close(c);
	f->client_err = r;
	(void)!write(f->done_fd, &one, sizeof(one));
	return NULL;
}

static void test_hints_tokens_and_cleanup(void **state)
{
	struct fixture *f = *state;
	struct engine_stats st;
	uint64_t v[TIERD_STAT_COUNT], count;
	double weight;
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, client_thread, f), 0);
	assert_int_equal(loop_run(f->loop), 0);
	pthread_join(th, NULL);
	assert_int_equal(f->client_err, 0);

	assert_int_equal(usage_hint_stats(f->usage, 0, 1, 2, &count, &weight), 0);
	assert_int_equal(count, 2);
	assert_true(weight > 0.99 && weight < 1.01);
	assert_int_equal(usage_hint_stats(f->usage, 0, 1, 3, &count, &weight), 0);
	assert_int_equal(count, 1);
	assert_true(weight > 0.24 && weight < 0.26);
	assert_int_equal(usage_hint_stats(f->usage, 0, 0, 2, &count, &weight), 0);
	assert_int_equal(count, 0);
	assert_int_equal(usage_hint_stats(f->usage, 0, 1, 99, &count, &weight), -ENOENT);
	assert_int_equal(usage_hint_stats(f->usage, 5, 1, 2, &count, &weight), -ENOENT);
	assert_int_equal(usage_model_tokens(f->usage, 0), 17);

	/* The close is seen by the loop: run it until the client is gone. */
	for (int i = 0; i < 100 && server_client_count(f->server); i++)
		loop_run_once(f->loop, 10);
	assert_int_equal(server_client_count(f->server), 0);
	engine_get_stats(f->engine, &st);
	assert_int_equal(st.pins, 0);
	server_get_stats(f->server, v);
	assert_int_equal(v[TIERD_STAT_HINTS], 4);
	assert_int_equal(v[TIERD_STAT_TOKENS], 17);
	assert_int_equal(v[TIERD_STAT_ACQUIRES], 2);
	assert_int_equal(v[TIERD_STAT_PROTOCOL_ERRORS], 0);
}

/* Runs the loop until the server has n clients; false if it does not. */
static bool wait_clients(struct fixture *f, unsigned n)
{
	for (int i = 0; i < 500 && server_client_count(f->server) != n; i++)
		loop_run_once(f->loop, 10);
	return server_client_count(f->server) == n;
}

/*
 * The engine names a fetch's owner by client id: every connected client is
 * found by its id, through the table's growth past its first 64 buckets and
 * as clients leave, and the id of one gone finds nothing.
 */
#define BYID_CONNS 100

static void test_clients_by_id(void **state)
{
	struct fixture *f = *state;
	struct server *s = f->server;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fds[BYID_CONNS];
	uint32_t ids[BYID_CONNS], maxid = 0;
	unsigned nids = 0, found;
	struct client *c;

	/* One uid connects them all. */
	f->conf.max_connections_per_uid = 2 * BYID_CONNS;
	strcpy(sa.sun_path, f->sock);
	for (int i = 0; i < BYID_CONNS; i++) {
		fds[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		assert_true(fds[i] >= 0);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
		/* Within the listen backlog: accepted as they come. */
		if (i % 32 == 31)
			assert_true(wait_clients(f, (unsigned)i + 1));
	}
	assert_true(wait_clients(f, BYID_CONNS));
	assert_true(s->nbyid >= BYID_CONNS);
	TAILQ_FOREACH(c, &s->clients, link) {
		assert_ptr_equal(server_client_by_id(s, c->id), c);
		ids[nids++] = c->id;
		if (c->id > maxid)
			maxid = c->id;
	}
	assert_int_equal(nids, BYID_CONNS);
	assert_null(server_client_by_id(s, maxid + 1));
	assert_null(server_client_by_id(s, 0));
	/* Half of them leave. */
	for (int i = 0; i < BYID_CONNS; i += 2)
		close(fds[i]);
	assert_true(wait_clients(f, BYID_CONNS / 2));
	found = 0;
	for (unsigned i = 0; i < nids; i++) {
		c = server_client_by_id(s, ids[i]);
		if (c) {
			assert_int_equal(c->id, ids[i]);
			assert_false(c->dead);
			found++;
		}
	}
	assert_int_equal(found, BYID_CONNS / 2);
	TAILQ_FOREACH(c, &s->clients, link)
		assert_ptr_equal(server_client_by_id(s, c->id), c);
	for (int i = 1; i < BYID_CONNS; i += 2)
		close(fds[i]);
	assert_true(wait_clients(f, 0));
	for (unsigned i = 0; i < nids; i++)
		assert_null(server_client_by_id(s, ids[i]));
}

/* The socket path: a live daemon's is kept, a dead one's replaced, a
 * file that is not a socket refused. */
static void test_bind(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct server *second = NULL;
	struct stat st;
	int fd;

	assert_int_equal(server_create(&second, f->loop, f->engine, &f->conf, -1), -EADDRINUSE);
	assert_int_equal(stat(f->sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	/* The first server still answers. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	strcpy(sa.sun_path, f->sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);

	/* Gone without unlinking: the file is stale and is replaced. */
	server_destroy(f->server);
	f->server = NULL;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(server_create(&f->server, f->loop, f->engine, &f->conf, -1), 0);
	server_destroy(f->server);
	f->server = NULL;

	fd = open(f->sock, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(server_create(&f->server, f->loop, f->engine, &f->conf, -1), -EEXIST);
	assert_null(f->server);
	assert_int_equal(stat(f->sock, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

/* A daemon that announces a pool larger than the descriptor it passes. */
static void *short_pool_daemon(void *arg)
{
	static alignas(8) uint8_t buf[TIERD_PROTO_MAX_MSG];
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	int lfd = *(int *)arg, cfd, mfd;
	struct tierd_msg_hdr h;
	struct tierd_proto_buf b;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl = { 0 };
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *cm;
	long len;

	cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	mfd = memfd_create("short-pool", MFD_CLOEXEC);
	if (!w || cfd < 0 || mfd < 0 || ftruncate(mfd, 4096) ||
	    recv(cfd, buf, sizeof(buf), 0) < (ssize_t)sizeof(h))
		goto out;
	memcpy(&h, buf, sizeof(h));
	w->instance = 1;
	w->npools = 1;
	w->pool_size[0] = 8192;
	tierd_proto_begin(&b, buf, sizeof(buf), TIERD_MSG_WELCOME, 0, h.request_id);
	tierd_proto_put_welcome(&b, w);
	len = tierd_proto_end(&b);
	if (len < 0)
		goto out;
	iov = (struct iovec){ buf, (size_t)len };
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &mfd, sizeof(int));
	(void)!sendmsg(cfd, &mh, MSG_NOSIGNAL);
	/* Until the client gives up. */
	(void)!recv(cfd, buf, sizeof(buf), 0);
out:
	free(w);
	if (mfd >= 0)
		close(mfd);
	if (cfd >= 0)
		close(cfd);
	return NULL;
}

/* Mapping it would let a tensor read past the file end fault with SIGBUS:
 * the connection is refused instead. */
static void test_short_pool_refused(void **state)
{
	char dir[] = "/tmp/test-server.XXXXXX";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tierd_client *c = NULL;
	pthread_t th;
	int lfd;

	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fake.sock", dir);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(pthread_create(&th, NULL, short_pool_daemon, &lfd), 0);
	assert_int_equal(tierd_client_connect(&c, sa.sun_path, "short-pool"), -EBADMSG);
	pthread_join(th, NULL);
	close(lfd);
	unlink(sa.sun_path);
	rmdir(dir);
}

static int setup_numa(void **state)
{
	int r;

	setup_topo = "0:0;1:1";
	r = setup(state);
	setup_topo = NULL;
	return r;
}

/* The pool of every tensor of expert (0, layer, expert), for a client that
 * says node (or TIERD_CLIENT_NODE_NONE); -1 on failure or pools mixed. */
struct numa_ask {
	struct fixture *f;
	int node;
	uint32_t layer, expert;
	int pool;
};

static void *numa_client(void *arg)
{
	struct numa_ask *q = arg;
	const struct tierd_key k = { 0, q->layer, q->expert };
	struct tierd_client *c;
	struct tierd_acquisition *a;
	uint64_t one = 1;

	q->pool = -1;
	if (!tierd_client_connect_node(&c, q->f->sock, "numa", q->node)) {
		if (!tierd_client_acquire(c, &k, 1, 10000, &a)) {
			const struct tierd_expert *x = tierd_acquisition_expert(a, 0);

			q->pool = (int)x->tensors[0].pool;
			for (uint32_t t = 1; t < x->ntensors; t++)
				if ((int)x->tensors[t].pool != q->pool)
					q->pool = -1;
			tierd_client_release(c, a);
		}
		tierd_client_close(c);
	}
	(void)!write(q->f->done_fd, &one, sizeof(one));
	return NULL;
}

static int numa_pool(struct fixture *f, int node, uint32_t layer, uint32_t expert)
{
	struct numa_ask q = { f, node, layer, expert, -1 };
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, numa_client, &q), 0);
	assert_int_equal(loop_run(f->loop), 0);
	pthread_join(th, NULL);
	return q.pool;
}

/*
 * Pools per node on a synthetic two-node machine (CPU 0 on node 0, CPU 1 on
 * node 1): a client is served from the pool of the node it says, else of the
 * CPUs its process may run on (the daemon reads the affinity of the peer's
 * pid: here the loop's thread), and a node without a pool gets pool 0.
 */
static void test_numa_node_choice(void **state)
{
	struct fixture *f = *state;
	cpu_set_t all, one;

	assert_int_equal(engine_pool_count(f->engine), 2);
	assert_int_equal(numa_pool(f, 1, 0, 0), 1);
	assert_int_equal(numa_pool(f, 0, 0, 1), 0);
	assert_int_equal(numa_pool(f, 7, 0, 2), 0);
	/* First asker owns: node 0 is served node 1's copy. */
	assert_int_equal(numa_pool(f, 0, 0, 0), 1);
	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	if (!CPU_ISSET(1, &all)) {
		skip();
		return;
	}
	CPU_ZERO(&one);
	CPU_SET(1, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	assert_int_equal(numa_pool(f, TIERD_CLIENT_NODE_NONE, 1, 0), 1);
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	assert_int_equal(numa_pool(f, TIERD_CLIENT_NODE_NONE, 1, 1), 0);
	assert_int_equal(sched_setaffinity(0, sizeof(all), &all), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hints_tokens_and_cleanup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clients_by_id, setup, teardown),
		cmocka_unit_test(test_short_pool_refused),
		cmocka_unit_test_setup_teardown(test_numa_node_choice, setup_numa, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
