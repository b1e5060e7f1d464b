/* SPDX-License-Identifier: MIT */
/*
 * The replay lab: the shared routing trace (../shared beside the source
 * tree; missing is a failure, not a skip) gives the reference LRU and MIN
 * figures of its README exactly; MIN on small cases by hand; the lab's
 * refusals; prefetch counted as the daemon does it.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "replay.h"
#include "trace.h"

#define SHARED_TRACE	"/traces/granite-3.0-1b-a400m.json"

struct seqs {
	struct trace_event *ev[8];
	size_t n[8];
	char name[8][64];
	unsigned nseqs;
	uint32_t nlayers, nexperts;
};

static void load_shared(struct seqs *s)
{
	const char *shared = getenv("TIERD_SHARED_DIR"), *top = getenv("top_srcdir");
	struct trace_reader *r = NULL;
	struct trace_event ev;
	char path[1024], err[512] = "";
	int ret;

	/* $TIERD_SHARED_DIR (make check sets it), else ../shared beside the sources. */
	if (shared)
		snprintf(path, sizeof(path), "%s" SHARED_TRACE, shared);
	else
		snprintf(path, sizeof(path), "%s/../shared" SHARED_TRACE, top ? top : "..");
	ret = trace_open(&r, path, err, sizeof(err));
	if (ret < 0)
		fail_msg("%s: %s (the shared trace must be beside the source tree)", path, err);
	memset(s, 0, sizeof(*s));
	s->nlayers = trace_info(r)->nlayers;
	s->nexperts = trace_info(r)->nexperts;
	while ((ret = trace_next(r, &ev, err, sizeof(err))) > 0) {
		unsigned i = ev.client;

		assert_true(i < 8);
		if (i >= s->nseqs) {
			s->nseqs = i + 1;
			snprintf(s->name[i], sizeof(s->name[i]), "%s", trace_info(r)->sequence_names[i]);
		}
		s->ev[i] = realloc(s->ev[i], (s->n[i] + 1) * sizeof(ev));
		assert_non_null(s->ev[i]);
		s->ev[i][s->n[i]++] = ev;
	}
	assert_int_equal(ret, 0);
	trace_close(r);
}

static void free_seqs(struct seqs *s)
{
	for (unsigned i = 0; i < s->nseqs; i++)
		free(s->ev[i]);
}

static unsigned seq_named(const struct seqs *s, const char *name)
{
	for (unsigned i = 0; i < s->nseqs; i++)
		if (!strcmp(s->name[i], name))
			return i;
	fail_msg("no prompt %s in the shared trace", name);
	return 0;
}

/* The table of ../shared/traces/README.md. */
static const struct {
	const char *prompt;
	uint64_t capacity, lru, min;
} reference[] = {
	{ "english_prose", 192, 6590, 4547 },
	{ "english_prose", 384, 4459, 1978 },
	{ "english_prose", 576, 1700, 938 },
	{ "code", 192, 7949, 4724 },
	{ "code", 384, 3221, 1367 },
	{ "code", 576, 779, 684 },
};

static void test_reference_figures(void **state)
{
	struct seqs s;

	load_shared(&s);
	assert_int_equal(s.nlayers * s.nexperts, 768);
	for (size_t i = 0; i < sizeof(reference) / sizeof(reference[0]); i++) {
		unsigned q = seq_named(&s, reference[i].prompt);
		struct replay_conf c = { .policy = "lru", .capacity = reference[i].capacity,
					 .nlayers = s.nlayers, .nexperts = s.nexperts, .expert_bytes = 1 };
		struct replay_result r;
		uint64_t min;
		char err[256] = "";

		assert_int_equal(replay_run(&c, s.ev[q], s.n[q], &r, err, sizeof(err)), 0);
		assert_int_equal(r.accesses, 12288);
		assert_int_equal(r.tokens, 64);
		assert_int_equal(r.demand_misses, reference[i].lru);
		assert_int_equal(r.hits + r.demand_misses, r.accesses);
		assert_int_equal(replay_min(s.ev[q], s.n[q], reference[i].capacity, &min, err, sizeof(err)), 0);
		assert_int_equal(min, reference[i].min);
		/* Told a horizon longer than the trace, foresight is MIN;
		 * told one token, it is between MIN and LRU here. */
		assert_int_equal(replay_foresight(s.ev[q], s.n[q], reference[i].capacity,
						  (uint64_t)100 * s.nlayers, &min, err, sizeof(err)), 0);
		assert_int_equal(min, reference[i].min);
		assert_int_equal(replay_foresight(s.ev[q], s.n[q], reference[i].capacity, s.nlayers, &min,
						  err, sizeof(err)), 0);
		assert_true(min > reference[i].min);
		assert_true(min <= reference[i].lru || reference[i].capacity == 576);
		/* A policy told a horizon longer than the trace is MIN too;
		 * told one token, it lies between MIN and itself untold. */
		c.told = (uint64_t)100 * s.nlayers;
		assert_int_equal(replay_run(&c, s.ev[q], s.n[q], &r, err, sizeof(err)), 0);
		assert_int_equal(r.demand_misses, reference[i].min);
		c.told = s.nlayers;
		assert_int_equal(replay_run(&c, s.ev[q], s.n[q], &r, err, sizeof(err)), 0);
		assert_true(r.demand_misses > reference[i].min);
		assert_true(r.demand_misses < reference[i].lru);
	}
	free_seqs(&s);
}

/* Every policy, with and without prefetch, on the shared trace: the counts
 * add up, nothing beats MIN as a demand pager, prefetch counts are sane. */
static void test_policies_consistent(void **state)
{
	static const char *const pol[] = { "lru", "lfu", "lfru", "activation", "predictive" };
	struct seqs s;

	load_shared(&s);
	for (unsigned q = 0; q < s.nseqs; q++) {
		uint64_t min;
		char err[256] = "";

		assert_int_equal(replay_min(s.ev[q], s.n[q], 384, &min, err, sizeof(err)), 0);
		for (size_t i = 0; i < sizeof(pol) / sizeof(pol[0]); i++)
			for (int pf = 0; pf < 2; pf++) {
				struct replay_conf c = {
					.policy = pol[i], .prefetch = pf, .capacity = 384,
					.nlayers = s.nlayers, .nexperts = s.nexperts, .expert_bytes = 4096,
					.pf = { .depth = PREFETCH_DEFAULT_DEPTH,
						.min_prob = PREFETCH_DEFAULT_MIN_PROB },
				};
				struct replay_result r;

				assert_int_equal(replay_run(&c, s.ev[q], s.n[q], &r, err, sizeof(err)), 0);
				assert_int_equal(r.hits + r.demand_misses, r.accesses);
				assert_int_equal(r.fetched_experts, r.demand_misses + r.prefetch_issued);
				assert_int_equal(r.fetched_bytes, r.fetched_experts * 4096);
				assert_int_equal(r.prefetch_used + r.prefetch_wasted, r.prefetch_issued);
				if (!pf) {
					assert_int_equal(r.prefetch_issued, 0);
					/* MIN is optimal among demand pagers. */
					assert_true(r.demand_misses >= min);
				}
				/* Fetching is never below what MIN must fetch. */
				assert_true(r.fetched_experts >= min);
			}
	}
	free_seqs(&s);
}

static struct trace_event acq(uint32_t token, uint32_t layer, const uint32_t *x, uint32_t n)
{
	struct trace_event e = { .kind = TRACE_ACQUIRE, .token = token, .layer = layer, .nexperts = n };

	memcpy(e.experts, x, n * sizeof(*x));
	return e;
}

/* MIN by hand: capacity 2, one expert per step, keys a b c a b. */
static void test_min_small(void **state)
{
	const uint32_t a = 0, b = 1, c = 2;
	struct trace_event ev[5] = {
		acq(0, 0, &a, 1), acq(0, 0, &b, 1), acq(0, 0, &c, 1), acq(0, 0, &a, 1), acq(0, 0, &b, 1),
	};
	struct replay_conf conf = { .policy = "lru", .capacity = 2, .nlayers = 1, .nexperts = 3 };
	struct replay_result r;
	uint64_t min;
	char err[128];

	/* MIN: a b miss, c evicts b (used later than a), a hits, b misses. */
	assert_int_equal(replay_min(ev, 5, 2, &min, err, sizeof(err)), 0);
	assert_int_equal(min, 4);
	/* LRU misses every one. */
	assert_int_equal(replay_run(&conf, ev, 5, &r, err, sizeof(err)), 0);
	assert_int_equal(r.demand_misses, 5);
}

/* Foresight by hand: capacity 2, keys a a b c x b.  At c, a (used twice,
 * never again) and b (used once, again two steps on) are both resident.
 * Told one step ahead, neither is known to be needed: the less used, b, goes,
 * and misses again at the end; told two steps, b is kept, as MIN keeps it. */
static void test_foresight_small(void **state)
{
	const uint32_t a = 0, b = 1, c = 2, x = 3;
	struct trace_event ev[6] = {
		acq(0, 0, &a, 1), acq(1, 0, &a, 1), acq(2, 0, &b, 1),
		acq(3, 0, &c, 1), acq(4, 0, &x, 1), acq(5, 0, &b, 1),
	};
	uint64_t misses;
	char err[128];

	assert_int_equal(replay_min(ev, 6, 2, &misses, err, sizeof(err)), 0);
	assert_int_equal(misses, 4);
	assert_int_equal(replay_foresight(ev, 6, 2, 1, &misses, err, sizeof(err)), 0);
	assert_int_equal(misses, 5);
	assert_int_equal(replay_foresight(ev, 6, 2, 2, &misses, err, sizeof(err)), 0);
	assert_int_equal(misses, 4);
}

/* Warm: a predictor that learnt a chain from an earlier sequence prefetches
 * the next layer right from a new sequence's first acquire; cold, it has to
 * learn it first.  The warm events reach the predictor only: the replay
 * still starts cold (its first layer misses). */
static void test_warm(void **state)
{
	enum { NL = 6, NE = 16, K = 2, WARM = 20, RUN = 4 };
	struct trace_event warm[WARM * NL], ev[RUN * NL];
	struct replay_conf c = { .policy = "predictive", .prefetch = true, .capacity = 3 * K,
				 .nlayers = NL, .nexperts = NE, .expert_bytes = 1,
				 .pf = { .depth = 1, .min_prob = 0.5 } };
	struct replay_result cold, hot;
	char err[128];

	for (uint32_t t = 0; t < WARM + RUN; t++)
		for (uint32_t l = 0; l < NL; l++) {
			uint32_t x[K] = { (t + l) % NE, (t + l + 8) % NE };

			if (t < WARM) {
				warm[t * NL + l] = acq(t, l, x, K);
				warm[t * NL + l].client = 1;
			} else {
				ev[(t - WARM) * NL + l] = acq(t - WARM, l, x, K);
			}
		}
	assert_int_equal(replay_run(&c, ev, RUN * NL, &cold, err, sizeof(err)), 0);
	c.warm = warm;
	c.nwarm = WARM * NL;
	assert_int_equal(replay_run(&c, ev, RUN * NL, &hot, err, sizeof(err)), 0);
	/* Warm: only the first layer misses (nothing told it what comes). */
	assert_int_equal(hot.demand_misses, K);
	assert_true(cold.demand_misses > 2 * K);
	assert_int_equal(hot.accesses, cold.accesses);
}

/* A layer's own experts are not evicted while it is served: capacity 2,
 * a layer of {a, b} with a resident and b missing evicts c, not a. */
static void test_layer_pinned(void **state)
{
	const uint32_t a = 0, c = 2, ab[2] = { 0, 1 }, ac[2] = { 0, 2 };
	struct trace_event ev[4] = { acq(0, 0, &c, 1), acq(0, 0, &a, 1), acq(1, 0, ab, 2), acq(2, 0, ac, 2) };
	struct replay_conf conf = { .policy = "lru", .capacity = 2, .nlayers = 1, .nexperts = 3 };
	struct replay_result r;
	uint64_t min;
	char err[128];

	assert_int_equal(replay_run(&conf, ev, 3, &r, err, sizeof(err)), 0);
	/* c, a, then b: a hit (pinned before b's fetch), b a miss. */
	assert_int_equal(r.demand_misses, 3);
	assert_int_equal(r.hits, 1);
	assert_int_equal(replay_min(ev, 4, 2, &min, err, sizeof(err)), 0);
	/* c a b miss (b evicts c: c's next use is later than a's), then a hits, c misses. */
	assert_int_equal(min, 4);
}

static void test_refusals(void **state)
{
	const uint32_t x3[3] = { 0, 1, 2 }, big = 7;
	struct trace_event ev[1] = { acq(0, 0, x3, 3) };
	struct replay_conf conf = { .policy = "lru", .capacity = 2, .nlayers = 1, .nexperts = 3 };
	struct replay_result r;
	uint64_t min;
	char err[256] = "";

	/* A layer that cannot fit: named. */
	assert_int_equal(replay_run(&conf, ev, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "token 0 layer 0: 3 experts do not fit 2 slots"));
	assert_int_equal(replay_min(ev, 1, 2, &min, err, sizeof(err)), -EINVAL);
	/* An unknown policy: named, with the known ones. */
	conf.policy = "belady";
	conf.capacity = 3;
	assert_int_equal(replay_run(&conf, ev, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "\"belady\""));
	assert_non_null(strstr(err, "predictive"));
	/* An expert outside the model's shape. */
	conf.policy = "lru";
	conf.capacity = 8;
	ev[0] = acq(0, 0, &big, 1);
	assert_int_equal(replay_run(&conf, ev, 1, &r, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "token 0 layer 0"));
}

/* A malformed trace is refused before anything is replayed, with where. */
static void test_malformed_trace(void **state)
{
	char path[] = "/tmp/test-replay-XXXXXX";
	struct trace_reader *r = NULL;
	char err[512] = "";
	int fd = mkstemp(path);
	static const char bad[] = "{\"num_layers\": 2, \"num_experts\": 4, \"top_k\": 2,\n"
				  " \"prompts\": {\"p\": {\"prompt_len\": 1, \"prefill\": [[[0, 1], [2, 9]]],\n"
				  " \"decode\": []}}}\n";

	assert_true(fd >= 0);
	assert_int_equal(write(fd, bad, sizeof(bad) - 1), (ssize_t)sizeof(bad) - 1);
	close(fd);
	assert_int_equal(trace_open(&r, path, err, sizeof(err)), -EINVAL);
	assert_null(r);
	/* The message says which file, and what is out of range. */
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "9"));
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_figures),
		cmocka_unit_test(test_policies_consistent),
		cmocka_unit_test(test_min_small),
		cmocka_unit_test(test_foresight_small),
		cmocka_unit_test(test_warm),
		cmocka_unit_test(test_layer_pinned),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_malformed_trace),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
