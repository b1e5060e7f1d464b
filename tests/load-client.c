/* SPDX-License-Identifier: MIT */
/*
 * One process of the load test (tests/load.sh): connects to tierd, then OPS
 * times acquires a random batch of 1..4 distinct experts of the demo model,
 * checks every byte of every tensor against the demo checkpoint's formula
 * (demostore_fill) and releases.  Under pool pressure the daemon may refuse
 * a batch with ENOSPC (every slot pinned or being read) or EDQUOT: those are
 * counted and retried after a short random backoff.  With OVER > 0, one op in
 * OVER asks for 5 experts, one over the max_pins = 4 the test configures, so
 * quota refusals happen under load too and must be counted by the daemon.
 *
 * Exits 0 after printing one line of totals that the driver adds up and
 * compares with the daemon's counters; 1 at the first wrong byte or any
 * other failure, naming it.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "demostore.h"
#include "tierd-client.h"

#define MAX_BATCH 5

struct totals {
	uint64_t ops;		/* batches asked for, refused ones included */
	uint64_t acquired;	/* batches granted */
	uint64_t experts;	/* experts in granted batches: each released once */
	uint64_t nospace;	/* batches refused with ENOSPC */
	uint64_t nospace_experts;
	uint64_t quota;		/* batches refused with EDQUOT */
	uint64_t bytes;		/* verified */
};

static int id;

/* xorshift64*: reproducible from the seed printed in the summary. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static int fail(struct tierd_client *c, const char *what, int r)
{
	char why[512] = "";

	if (c)
		tierd_client_last_error(c, why, sizeof(why));
	fprintf(stderr, "load-client %d: %s: %s%s%s\n", id, what, strerror(-r), *why ? ": " : "", why);
	return 1;
}

/* Every byte of every tensor must be the demo checkpoint's; buf holds the
 * expected bytes of the largest tensor seen so far. */
static int verify(const struct tierd_acquisition *a, uint8_t **buf, size_t *cap, uint64_t *bytes)
{
	for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
		const struct tierd_expert *e = tierd_acquisition_expert(a, i);

		for (uint32_t t = 0; t < e->ntensors; t++) {
			const struct tierd_tensor *x = &e->tensors[t];
			const uint8_t *p = x->data;

			if (x->length > *cap) {
				uint8_t *nb = realloc(*buf, x->length);

				if (!nb)
					return -ENOMEM;
				*buf = nb;
				*cap = x->length;
			}
			demostore_fill(e->key.layer, e->key.expert, t, 0, *buf, x->length);
			if (memcmp(p, *buf, x->length)) {
				uint64_t off = 0;

				while (p[off] == (*buf)[off])
					off++;
				fprintf(stderr, "load-client %d: layer %u expert %u tensor %s byte %llu: 0x%02x, want 0x%02x\n",
					id, e->key.layer, e->key.expert, x->name, (unsigned long long)off,
					p[off], (*buf)[off]);
				return -EBADMSG;
			}
			*bytes += x->length;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct tierd_client *c = NULL;
	struct tierd_model_info mi;
	struct totals tot = { 0 };
	uint8_t *buf = NULL;
	size_t cap = 0;
	uint64_t seed, ops, over, s;
	int model, r, ret = 1;

	if (argc != 6) {
		fprintf(stderr, "Usage: load-client SOCKET ID OPS SEED OVER\n");
		return 2;
	}
	id = atoi(argv[2]);
	ops = strtoull(argv[3], NULL, 10);
	seed = strtoull(argv[4], NULL, 10);
	over = strtoull(argv[5], NULL, 10);
	/* xorshift must not start at 0. */
	s = seed * 0x9e3779b97f4a7c15ull + 1;

	r = tierd_client_connect(&c, argv[1], "load");
	if (r) {
		fail(NULL, "connect", r);
		goto out;
	}
	model = tierd_client_model_find(c, "demo");
	if (model < 0 || (r = tierd_client_model_info(c, (unsigned)model, &mi)) < 0) {
		fail(c, "model demo", model < 0 ? model : r);
		goto out;
	}
	if (!mi.nlayers || !mi.experts_per_layer || mi.nexperts < MAX_BATCH) {
		fprintf(stderr, "load-client %d: model demo has %u layers of %u experts: too few\n", id,
			mi.nlayers, mi.experts_per_layer);
		goto out;
	}
	while (tot.ops < ops) {
		struct tierd_key keys[MAX_BATCH];
		struct tierd_acquisition *a;
		size_t n = over && rnd(&s) % over == 0 ? MAX_BATCH : 1 + rnd(&s) % 4;

		for (size_t i = 0; i < n; i++) {
			bool dup;

			do {
				keys[i] = (struct tierd_key){ (uint32_t)model, (uint32_t)(rnd(&s) % mi.nlayers),
							      (uint32_t)(rnd(&s) % mi.experts_per_layer) };
				dup = false;
				for (size_t j = 0; j < i; j++)
					dup |= keys[j].layer == keys[i].layer && keys[j].expert == keys[i].expert;
			} while (dup);
		}
		tot.ops++;
		/* A minute is far beyond any fetch here: a stuck daemon, not load. */
		r = tierd_client_acquire(c, keys, n, 60000, &a);
		if (r == -ENOSPC || r == -EDQUOT) {
			if (r == -ENOSPC) {
				tot.nospace++;
				tot.nospace_experts += n;
			} else {
				tot.quota++;
			}
			/* Let other clients release; random so they do not retry in step. */
			usleep((useconds_t)(500 + rnd(&s) % 4500));
			continue;
		}
		if (r) {
			fail(c, "acquire", r);
			goto out;
		}
		tot.acquired++;
		tot.experts += n;
		r = verify(a, &buf, &cap, &tot.bytes);
		if (r) {
			if (r != -EBADMSG)
				fail(c, "verify", r);
			goto out;
		}
		r = tierd_client_release(c, a);
		if (r) {
			fail(c, "release", r);
			goto out;
		}
	}
	printf("load-client %d: seed %llu ops %llu acquired %llu experts %llu nospace %llu nospace_experts %llu "
	       "quota %llu bytes %llu\n",
	       id, (unsigned long long)seed, (unsigned long long)tot.ops, (unsigned long long)tot.acquired,
	       (unsigned long long)tot.experts, (unsigned long long)tot.nospace,
	       (unsigned long long)tot.nospace_experts, (unsigned long long)tot.quota,
	       (unsigned long long)tot.bytes);
	ret = 0;
out:
	tierd_client_close(c);
	free(buf);
	return ret;
}
