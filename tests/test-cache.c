/* SPDX-License-Identifier: MIT */
/* Cache: residency table, pin rules, LRU order, pinned entries never evicted. */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"
#include "predict.h"

static struct cache_entry *add_resident(struct cache *c, uint32_t m, uint32_t l, uint32_t x)
{
	struct tierd_key k = { m, l, x };
	struct cache_entry *e;

	assert_int_equal(cache_add(c, &k, (uint64_t)x << 21, &e), 0);
	cache_set_resident(c, e);
	return e;
}

static struct cache_entry *victim(struct cache *c)
{
	struct cache_entry *e = NULL;

	assert_int_equal(cache_victim(c, NULL, NULL, &e), 0);
	return e;
}

static void test_table(void **state)
{
	struct cache *c;
	struct cache_entry *e;
	struct tierd_key k;

	assert_int_equal(cache_create(&c, "no-such-policy"), -EINVAL);
	assert_int_equal(cache_create(&c, "LRU"), 0);
	assert_string_equal(cache_policy_name(c), "lru");
	/* Enough entries to grow the table a few times. */
	for (uint32_t m = 0; m < 3; m++)
		for (uint32_t l = 0; l < 40; l++)
			for (uint32_t x = 0; x < 20; x++) {
				k = (struct tierd_key){ m, l, x };
				assert_int_equal(cache_add(c, &k, ((uint64_t)m << 32) | (l << 16) | x, &e), 0);
			}
	assert_int_equal(cache_count(c), 2400);
	k = (struct tierd_key){ 1, 2, 3 };
	assert_int_equal(cache_add(c, &k, 0, &e), -EEXIST);
	for (uint32_t m = 0; m < 3; m++)
		for (uint32_t l = 0; l < 40; l++)
			for (uint32_t x = 0; x < 20; x++) {
				k = (struct tierd_key){ m, l, x };
				e = cache_lookup(c, &k);
				assert_non_null(e);
				assert_int_equal(e->slot, ((uint64_t)m << 32) | (l << 16) | x);
				assert_int_equal(e->state, CACHE_FETCHING);
			}
	k = (struct tierd_key){ 3, 0, 0 };
	assert_null(cache_lookup(c, &k));
	k = (struct tierd_key){ 0, 0, 20 };
	assert_null(cache_lookup(c, &k));
	k = (struct tierd_key){ 2, 39, 19 };
	cache_remove(c, cache_lookup(c, &k));
	assert_null(cache_lookup(c, &k));
	assert_int_equal(cache_count(c), 2399);
	/* Entries still fetching are never victims. */
	assert_int_equal(cache_victim(c, NULL, NULL, &e), -ENOSPC);
	cache_destroy(c);
}

static void test_lru_order(void **state)
{
	struct cache *c;
	struct cache_entry *a, *b, *d;

	assert_int_equal(cache_create(&c, "lru"), 0);
	a = add_resident(c, 0, 0, 1);
	b = add_resident(c, 0, 0, 2);
	d = add_resident(c, 0, 0, 3);
	assert_ptr_equal(victim(c), a);
	cache_touch(c, a);			/* a used again: b is oldest */
	assert_ptr_equal(victim(c), b);
	cache_touch(c, b);
	assert_ptr_equal(victim(c), d);
	cache_remove(c, d);
	assert_ptr_equal(victim(c), a);
	cache_remove(c, a);
	assert_ptr_equal(victim(c), b);
	cache_remove(c, b);
	assert_int_equal(cache_victim(c, NULL, NULL, &a), -ENOSPC);
	cache_destroy(c);
}

static void test_pins(void **state)
{
	struct cache *c;
	struct cache_entry *e[4], *v;

	assert_int_equal(cache_create(&c, "lru"), 0);
	for (uint32_t i = 0; i < 4; i++)
		e[i] = add_resident(c, 0, 1, i);
	cache_pin(c, e[0]);
	cache_pin(c, e[0]);
	cache_pin(c, e[1]);
	assert_int_equal(cache_pins(c), 3);
	assert_ptr_equal(victim(c), e[2]);	/* oldest unpinned */
	cache_pin(c, e[2]);
	cache_pin(c, e[3]);
	/* Everything pinned: nothing to evict. */
	assert_int_equal(cache_victim(c, NULL, NULL, &v), -ENOSPC);
	assert_int_equal(cache_unpin(c, e[0]), 0);
	assert_int_equal(cache_victim(c, NULL, NULL, &v), -ENOSPC);	/* still one pin */
	assert_int_equal(cache_unpin(c, e[0]), 0);
	assert_int_equal(cache_unpin(c, e[0]), -EINVAL);
	assert_ptr_equal(victim(c), e[0]);
	assert_int_equal(cache_unpin(c, e[3]), 0);
	/* e[0] is older than e[3]. */
	assert_ptr_equal(victim(c), e[0]);
	cache_touch(c, e[0]);
	assert_ptr_equal(victim(c), e[3]);
	/* Removing a pinned entry drops its pins from the total. */
	cache_remove(c, e[1]);
	assert_int_equal(cache_pins(c), 1);
	cache_destroy(c);
}

static bool model_is(const struct cache_entry *e, void *arg)
{
	return e->key.model == *(uint32_t *)arg;
}

static void test_filter(void **state)
{
	struct cache *c;
	struct cache_entry *a, *b, *v;
	uint32_t m = 1;

	assert_int_equal(cache_create(&c, "lru"), 0);
	a = add_resident(c, 0, 0, 0);
	b = add_resident(c, 1, 0, 0);
	assert_ptr_equal(victim(c), a);
	assert_int_equal(cache_victim(c, model_is, &m, &v), 0);
	assert_ptr_equal(v, b);
	cache_pin(c, b);
	assert_int_equal(cache_victim(c, model_is, &m, &v), -ENOSPC);
	cache_destroy(c);
}

/* Random touches, pins and removals against a reference: the victim is always
 * the least recently used unpinned resident entry. */
static void test_random_against_reference(void **state)
{
	enum { N = 64 };
	struct cache *c;
	struct cache_entry *e[N], *v;
	uint64_t last[N];
	bool live[N];
	unsigned seed = 7;
	uint64_t now = 0;

	assert_int_equal(cache_create(&c, "lru"), 0);
	for (int i = 0; i < N; i++) {
		e[i] = add_resident(c, 2, 0, (uint32_t)i);
		last[i] = ++now;
		live[i] = true;
	}
	for (int it = 0; it < 5000; it++) {
		int i = rand_r(&seed) % N, op = rand_r(&seed) % 5, best = -1;
		int err;

		if (!live[i]) {
			e[i] = add_resident(c, 2, 0, (uint32_t)i);
			last[i] = ++now;
			live[i] = true;
			continue;
		}
		if (op == 0) {
			cache_touch(c, e[i]);
			last[i] = ++now;
		} else if (op == 1) {
			cache_pin(c, e[i]);
		} else if (op == 2) {
			if (e[i]->pins)
				assert_int_equal(cache_unpin(c, e[i]), 0);
		} else if (op == 3) {
			cache_remove(c, e[i]);
			live[i] = false;
		}
		for (int k = 0; k < N; k++)
			if (live[k] && !e[k]->pins && (best < 0 || last[k] < last[best]))
				best = k;
		err = cache_victim(c, NULL, NULL, &v);
		if (best < 0) {
			assert_int_equal(err, -ENOSPC);
		} else {
			assert_int_equal(err, 0);
			assert_ptr_equal(v, e[best]);
		}
	}
	cache_destroy(c);
}

/* Evicts the policy's victim, as the engine does: its key. */
static struct tierd_key evict(struct cache *c)
{
	struct cache_entry *v = victim(c);
	struct tierd_key k = v->key;

	cache_remove(c, v);
	return k;
}

/* LFU: the least used goes first; ageing lets new entries overtake a count
 * earned long ago (without it, a stays forever). */
static void test_lfu(void **state)
{
	struct cache *c;
	struct cache_entry *a, *b, *v;
	struct tierd_key k;
	bool a_evicted = false;

	assert_int_equal(cache_create(&c, "lfu"), 0);
	a = add_resident(c, 0, 0, 1);
	b = add_resident(c, 0, 0, 2);
	add_resident(c, 0, 0, 3);
	for (int i = 0; i < 5; i++)
		cache_touch(c, a);
	cache_touch(c, b);
	k = evict(c);
	assert_int_equal(k.expert, 3);
	/* Pinned: never, however rarely used. */
	cache_pin(c, b);
	assert_true(victim(c) == a);
	assert_int_equal(cache_unpin(c, b), 0);
	assert_true(victim(c) == b);
	/* New experts, each used twice, then evicted in turn: the age rises. */
	for (uint32_t x = 10; x < 30 && !a_evicted; x++) {
		struct cache_entry *n = add_resident(c, 0, 1, x);

		cache_touch(c, n);
		cache_touch(c, n);
		v = victim(c);
		a_evicted = v == a;
		cache_remove(c, v);
	}
	assert_true(a_evicted);
	cache_destroy(c);
}

/* LFRU: a count decays with the accesses since: a, used often long ago,
 * goes before b, used a little just now (LFU would keep a). */
static void test_lfru(void **state)
{
	struct cache *c;
	struct cache_entry *a, *b, *x[4];

	assert_int_equal(cache_create(&c, "lfru"), 0);
	a = add_resident(c, 0, 0, 1);
	b = add_resident(c, 0, 0, 2);
	for (int i = 0; i < 10; i++)
		cache_touch(c, a);
	for (uint32_t i = 0; i < 4; i++)
		x[i] = add_resident(c, 0, 1, i);
	for (int r = 0; r < 10; r++)
		for (uint32_t i = 0; i < 4; i++)
			cache_touch(c, x[i]);
	for (int i = 0; i < 3; i++)
		cache_touch(c, b);
	for (uint32_t i = 0; i < 4; i++)
		cache_pin(c, x[i]);
	assert_true(victim(c) == a);
	/* Used again, a's count outweighs b's. */
	for (int i = 0; i < 5; i++)
		cache_touch(c, a);
	assert_true(victim(c) == b);
	cache_destroy(c);
}

static void observe(struct cache *c, uint32_t layer, const uint32_t *x, uint32_t n, bool hint)
{
	assert_int_equal(cache_observe(c, 0, 7, layer, x, n, hint), 0);
}

/* Activation-aware: what the sequence used more stays; among equal counts,
 * the layer that runs sooner stays. */
static void test_activation(void **state)
{
	struct cache *c;
	struct cache_entry *often, *once, *l0, *l2;
	const uint32_t x01[2] = { 0, 1 }, x0[1] = { 0 }, x23[2] = { 2, 3 };

	assert_int_equal(cache_create(&c, "activation"), 0);
	assert_int_equal(predict_model(cache_predictor(c), 0, 4, 4), 0);
	assert_int_equal(cache_observe(c, 0, 7, 4, x0, 1, false), -ERANGE);
	/* A prompt: layer 1 uses expert 0 in every token, expert 1 once. */
	for (int t = 0; t < 6; t++)
		for (uint32_t l = 0; l < 4; l++)
			observe(c, l, l == 1 ? (t ? x0 : x01) : x23, l == 1 && !t ? 2 : (l == 1 ? 1 : 2), true);
	often = add_resident(c, 0, 1, 0);
	once = add_resident(c, 0, 1, 1);
	/* Touched last: recency does not save it. */
	cache_touch(c, once);
	assert_true(victim(c) == once);
	cache_pin(c, once);
	cache_pin(c, often);
	/* Equal counts at layers 0 and 2 after the token ended (layer 3):
	 * layer 0 runs next, layer 2 later, so layer 2's goes. */
	l2 = add_resident(c, 0, 2, 2);
	l0 = add_resident(c, 0, 0, 2);
	cache_touch(c, l2);
	assert_true(victim(c) == l2);
	/* Now layer 1 ran: layer 2 is next and layer 0 furthest. */
	observe(c, 0, x23, 2, false);
	observe(c, 1, x0, 1, false);
	assert_true(victim(c) == l0);
	cache_destroy(c);
}

/* Predictive: a deterministic chain (layer L expert e, then L+1 expert e+1)
 * is learned, and the expert the chain needs next is kept over others. */
static void test_predictive(void **state)
{
	struct cache *c;
	struct cache_entry *next, *other;

	assert_int_equal(cache_create(&c, "predictive"), 0);
	assert_int_equal(predict_model(cache_predictor(c), 0, 4, 8), 0);
	for (uint32_t t = 0; t < 40; t++)
		for (uint32_t l = 0; l < 4; l++) {
			uint32_t x = (t + l) % 8;

			observe(c, l, &x, 1, false);
		}
	/* Token 40 runs layer 0 with expert 40 % 8 = 0, then layer 1 with 1. */
	other = add_resident(c, 0, 1, 5);
	next = add_resident(c, 0, 1, 1);
	cache_touch(c, other);
	assert_true(victim(c) == other);
	(void)next;
	cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_lru_order),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_random_against_reference),
		cmocka_unit_test(test_lfu),
		cmocka_unit_test(test_lfru),
		cmocka_unit_test(test_activation),
		cmocka_unit_test(test_predictive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
