/* SPDX-License-Identifier: MIT */
/*
 * The no-system-call acquire path against the real daemon, driven by
 * tests/fastpath.sh.  White-box: the library's sources are compiled in, so
 * that a test can tell a fast acquisition from a socket one and write
 * garbage into its own pin area.  Built twice: with the suite's sanitizers,
 * and with ThreadSanitizer (fastpath-client-tsan).  Every byte acquired is
 * checked against the demo checkpoint's (demostore_byte()).
 *
 *   engaged SOCK ROUNDS         acquire+release 4 resident experts ROUNDS
 *                               times: through the table unless the
 *                               socket is forced; daemon counters exact
 *   stress SOCK THREADS ROUNDS  threads acquire random experts under
 *                               eviction pressure, verify, release
 *   hold SOCK LAYER EXPERT FILE fast-acquire, say "held", wait for FILE,
 *                               verify again, release
 *   garbage SOCK                random bytes into the pin area: the
 *                               daemon must drop this connection
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "demostore.h"

/* The library's sources, in one translation unit with this test. */
#include "tierd-client-acq.c"
#include "tierd-client-mux.c"
#include "tierd-client-conn.c"
#include "tierd-client-fast.c"
#include "tierd-client-numa.c"
#include "tierd-client.c"

static int verify(const struct tierd_acquisition *a)
{
	for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
		const struct tierd_expert *e = tierd_acquisition_expert(a, i);

		for (uint32_t t = 0; t < e->ntensors; t++) {
			const uint8_t *p = e->tensors[t].data;

			for (uint64_t off = 0; off < e->tensors[t].length; off++) {
				uint8_t want = demostore_byte(e->key.layer, e->key.expert, t, off);

				if (p[off] != want) {
					fprintf(stderr, "fastpath-client: layer %u expert %u tensor %s byte %llu: "
						"0x%02x, want 0x%02x (%s acquisition)\n", e->key.layer, e->key.expert,
						e->tensors[t].name, (unsigned long long)off, p[off], want,
						a->fast ? "fast" : "socket");
					return -EBADMSG;
				}
			}
		}
	}
	return 0;
}

static int connect_or_say(struct tierd_client **c, const char *sock, const char *name)
{
	int r = tierd_client_connect(c, sock, name);

	if (r)
		fprintf(stderr, "fastpath-client: connect %s: %s\n", sock, strerror(-r));
	return r;
}

static int stat_index(const char *name)
{
	for (unsigned i = 0; tierd_client_stat_name(i); i++)
		if (!strcmp(tierd_client_stat_name(i), name))
			return (int)i;
	return -1;
}

static int cmd_engaged(int argc, char **argv)
{
	struct tierd_key keys[4] = { { 0, 0, 0 }, { 0, 0, 1 }, { 0, 0, 2 }, { 0, 0, 3 } };
	uint64_t before[64] = { 0 }, after[64] = { 0 };
	int hits = stat_index("hits"), acq = stat_index("acquires"), req = stat_index("requests");
	int rel = stat_index("releases");
	struct tierd_client *c;
	struct tierd_acquisition *a;
	long rounds = argc > 1 ? atol(argv[1]) : 100, nfast = 0;
	bool socket_only;
	int r;

	if (connect_or_say(&c, argv[0], "engaged"))
		return 1;
	socket_only = tierd_client_flags(c) & TIERD_CLIENT_F_SOCKET;
	if (argc > 2 && !strcmp(argv[2], "socket")) {
		tierd_client_set_flags(c, TIERD_CLIENT_F_SOCKET);
		socket_only = true;
	}
	/* The first acquire of an expert goes through the socket: the
	 * library learns its layout there. */
	r = tierd_client_acquire(c, keys, 4, 10000, &a);
	if (!r) {
		r = verify(a);
		tierd_client_release(c, a);
	}
	if (!r)
		r = tierd_client_stats(c, before, 64) > 0 ? 0 : -EIO;
	for (long i = 0; !r && i < rounds; i++) {
		r = tierd_client_acquire(c, keys, 4, 10000, &a);
		if (r)
			break;
		nfast += a->fast;
		r = verify(a);
		tierd_client_release(c, a);
	}
	if (!r)
		r = tierd_client_stats(c, after, 64) > 0 ? 0 : -EIO;
	if (r) {
		fprintf(stderr, "fastpath-client: engaged: %s\n", strerror(-r));
		return 1;
	}
	printf("fast %ld of %ld; requests +%llu, hits +%llu, acquires +%llu, releases +%llu\n", nfast, rounds,
	       (unsigned long long)(after[req] - before[req]), (unsigned long long)(after[hits] - before[hits]),
	       (unsigned long long)(after[acq] - before[acq]), (unsigned long long)(after[rel] - before[rel]));
	/* Hits, acquires and releases count every expert whichever way it
	 * went; the requests say which way: only the STATS itself, or acquire
	 * and release each round. */
	if (after[hits] - before[hits] != (uint64_t)rounds * 4 || after[acq] - before[acq] != (uint64_t)rounds * 4 ||
	    after[rel] - before[rel] != (uint64_t)rounds * 4)
		return 1;
	if (socket_only)
		r = nfast == 0 && after[req] - before[req] == (uint64_t)rounds * 2 + 1 ? 0 : 1;
	else
		r = nfast == rounds && after[req] - before[req] == 1 ? 0 : 1;
	tierd_client_close(c);
	return r;
}

struct stress {
	struct tierd_client *shared;
	const char *sock;
	long rounds;
	uint32_t nlayers, nexperts;
	pthread_mutex_t lock;
	long fast, socket, refused, bad;
};

static void *stress_thread(void *arg)
{
	struct stress *st = arg;
	struct tierd_client *own = NULL, *c;
	unsigned seed = (unsigned)(uintptr_t)&own ^ (unsigned)getpid();
	long fast = 0, sock = 0, refused = 0, bad = 0;

	/* Half the threads share one client (one pin area, one lock), half
	 * have their own. */
	if (rand_r(&seed) & 1 && !connect_or_say(&own, st->sock, "stress"))
		c = own;
	else
		c = st->shared;
	for (long i = 0; i < st->rounds; i++) {
		struct tierd_key keys[3];
		struct tierd_acquisition *a;
		size_t n = 1 + (size_t)rand_r(&seed) % 3;
		int r;

		for (size_t k = 0; k < n; k++)
			keys[k] = (struct tierd_key){ 0, (uint32_t)rand_r(&seed) % st->nlayers,
						      (uint32_t)rand_r(&seed) % st->nexperts };
		r = tierd_client_acquire(c, keys, n, 20000, &a);
		if (r == -ENOSPC || r == -EDQUOT) {
			refused++;	/* everything pinned by the others for a moment */
			continue;
		}
		if (r) {
			fprintf(stderr, "fastpath-client: stress acquire: %s\n", strerror(-r));
			bad++;
			break;
		}
		if (a->fast)
			fast++;
		else
			sock++;
		/* Twice, with a yield between: the daemon evicts meanwhile. */
		if (verify(a))
			bad++;
		sched_yield();
		if (verify(a))
			bad++;
		tierd_client_release(c, a);
	}
	tierd_client_close(own);
	pthread_mutex_lock(&st->lock);
	st->fast += fast;
	st->socket += sock;
	st->refused += refused;
	st->bad += bad;
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

static int cmd_stress(int argc, char **argv)
{
	struct stress st = { .sock = argv[0], .lock = PTHREAD_MUTEX_INITIALIZER };
	int nthreads = argc > 1 ? atoi(argv[1]) : 4;
	struct tierd_model_info mi;
	pthread_t th[64];

	st.rounds = argc > 2 ? atol(argv[2]) : 1000;
	if (nthreads < 1 || nthreads > 64 || connect_or_say(&st.shared, st.sock, "stress"))
		return 1;
	if (tierd_client_model_info(st.shared, 0, &mi))
		return 1;
	st.nlayers = mi.nlayers;
	st.nexperts = mi.experts_per_layer;
	for (int i = 0; i < nthreads; i++)
		pthread_create(&th[i], NULL, stress_thread, &st);
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	tierd_client_close(st.shared);
	printf("stress: %ld fast, %ld socket, %ld refused, %ld bad\n", st.fast, st.socket, st.refused, st.bad);
	/* A run with no fast acquire at all would test nothing of the path. */
	return st.bad || !st.fast ? 1 : 0;
}

static int cmd_hold(int argc, char **argv)
{
	struct tierd_key k = { 0, (uint32_t)atoi(argv[1]), (uint32_t)atoi(argv[2]) };
	struct tierd_client *c;
	struct tierd_acquisition *a;
	int r;

	if (argc < 4 || connect_or_say(&c, argv[0], "hold"))
		return 1;
	r = tierd_client_acquire(c, &k, 1, 10000, &a);	/* learns */
	if (!r) {
		tierd_client_release(c, a);
		r = tierd_client_acquire(c, &k, 1, 10000, &a);
	}
	if (r || !a->fast || verify(a)) {
		fprintf(stderr, "fastpath-client: hold: %s\n", r ? strerror(-r) : "not a fast acquisition");
		return 1;
	}
	printf("held\n");
	fflush(stdout);
	while (access(argv[3], F_OK))
		usleep(20000);
	r = verify(a);
	tierd_client_release(c, a);
	tierd_client_close(c);
	return r ? 1 : 0;
}

static int cmd_garbage(int argc, char **argv)
{
	struct tierd_client *c;
	struct pollfd pfd;
	size_t done = 0;

	if (connect_or_say(&c, argv[0], "garbage"))
		return 1;
	if (!c->fast) {
		fprintf(stderr, "fastpath-client: garbage: no pin area was handed over\n");
		return 1;
	}
	while (done < c->fast->area_size) {
		ssize_t n = getrandom((uint8_t *)c->fast->pins + done, c->fast->area_size - done, 0);

		if (n <= 0)
			return 1;
		done += (size_t)n;
	}
	/* The word after the pins is the daemon's to write: kept clear here, so
	 * that the test sees the daemon set it. */
	atomic_store(&((struct tierd_fast_area_tail *)c->fast->tail)->revoked, 0);
	printf("written\n");
	fflush(stdout);
	/* The daemon's sweep finds pins over max_pins and hangs up. */
	pfd = (struct pollfd){ .fd = c->fd, .events = POLLIN };
	for (int i = 0; i < 100; i++) {
		char b[TIERD_PROTO_MAX_MSG];

		if (poll(&pfd, 1, 100) > 0 && recv(c->fd, b, sizeof(b), MSG_DONTWAIT) <= 0) {
			struct tierd_key k = { 0, 0, 0 };
			struct tierd_acquisition *a = NULL;
			int r;

			printf("dropped\n");
			/* Not yet noticed by the library (it has not read the
			 * socket): the revoked area alone sends it to the socket. */
			if (!atomic_load(&c->fast->tail->revoked)) {
				fprintf(stderr, "fastpath-client: garbage: dropped, pin area not revoked\n");
				tierd_client_close(c);
				return 1;
			}
			r = tdc_fast_acquire(c, &k, 1, &a);
			if (r != -EAGAIN) {
				fprintf(stderr, "fastpath-client: garbage: revoked, yet acquired through the table (%d)\n", r);
				tierd_client_close(c);
				return 1;
			}
			printf("revoked\n");
			tierd_client_close(c);
			return 0;
		}
	}
	fprintf(stderr, "fastpath-client: garbage: still connected after 10 s\n");
	tierd_client_close(c);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: fastpath-client engaged|stress|hold|garbage SOCK ARGS...\n");
		return 2;
	}
	if (!strcmp(argv[1], "engaged"))
		return cmd_engaged(argc - 2, argv + 2);
	if (!strcmp(argv[1], "stress"))
		return cmd_stress(argc - 2, argv + 2);
	if (!strcmp(argv[1], "hold"))
		return cmd_hold(argc - 2, argv + 2);
	if (!strcmp(argv[1], "garbage"))
		return cmd_garbage(argc - 2, argv + 2);
	fprintf(stderr, "fastpath-client: unknown command %s\n", argv[1]);
	return 2;
}
