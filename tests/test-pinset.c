/* SPDX-License-Identifier: MIT */
/*
 * Pin sets (tierd/service/pinset.c), compiled in without the engine:
 * engine_release() is this file's, and counts what it is asked to release.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "pinset.h"

#define MAX_RELEASES 64

static struct {
	const struct engine *e;
	unsigned n;
	struct tierd_key keys[MAX_RELEASES];
} released;

int engine_release(struct engine *e, const struct tierd_key *key)
{
	assert_true(released.n < MAX_RELEASES);
	released.e = e;
	released.keys[released.n++] = *key;
	return 0;
}

static unsigned released_of(const struct tierd_key *k)
{
	unsigned n = 0;

	for (unsigned i = 0; i < released.n; i++)
		n += released.keys[i].model == k->model && released.keys[i].layer == k->layer &&
		     released.keys[i].expert == k->expert;
	return n;
}

static const struct tierd_key k1 = { 0, 1, 2 }, k2 = { 0, 1, 3 }, k3 = { 1, 1, 2 };

static void test_add_find(void **state)
{
	struct pinset ps = { 0 };
	struct pin *p;

	assert_null(pinset_find(&ps, &k1));
	assert_int_equal(pinset_add(&ps, &k1), 0);
	assert_int_equal(pinset_add(&ps, &k1), 0);
	assert_int_equal(pinset_add(&ps, &k2), 0);
	/* Keys differing in one field only are distinct. */
	assert_int_equal(pinset_add(&ps, &k3), 0);
	assert_int_equal(ps.n, 3);
	assert_int_equal(ps.total, 4);
	p = pinset_find(&ps, &k1);
	assert_non_null(p);
	assert_int_equal(p->count, 2);
	assert_int_equal(pinset_find(&ps, &k2)->count, 1);
	assert_int_equal(pinset_find(&ps, &k3)->count, 1);
	assert_null(pinset_find(&ps, &(struct tierd_key){ 0, 2, 2 }));
	pinset_free(&ps);
	assert_null(ps.v);
	assert_int_equal(ps.n, 0);
	assert_int_equal(ps.total, 0);
}

static void test_drop(void **state)
{
	struct pinset ps = { 0 };

	assert_int_equal(pinset_drop(&ps, &k1), -ENOENT);
	assert_int_equal(pinset_add(&ps, &k1), 0);
	assert_int_equal(pinset_add(&ps, &k1), 0);
	assert_int_equal(pinset_add(&ps, &k2), 0);
	assert_int_equal(pinset_drop(&ps, &k1), 0);
	assert_int_equal(pinset_find(&ps, &k1)->count, 1);
	assert_int_equal(ps.total, 2);
	/* The last hold takes the entry with it. */
	assert_int_equal(pinset_drop(&ps, &k1), 0);
	assert_null(pinset_find(&ps, &k1));
	assert_int_equal(ps.n, 1);
	assert_int_equal(ps.total, 1);
	/* Dropping what is not held changes nothing. */
	assert_int_equal(pinset_drop(&ps, &k1), -ENOENT);
	assert_int_equal(pinset_drop(&ps, &k3), -ENOENT);
	assert_int_equal(ps.total, 1);
	assert_int_equal(pinset_find(&ps, &k2)->count, 1);
	assert_int_equal(pinset_drop(&ps, &k2), 0);
	assert_int_equal(ps.n, 0);
	assert_int_equal(ps.total, 0);
	pinset_free(&ps);
}

/* Past the first allocation, and entries removed from the middle: every
 * other key keeps its count. */
static void test_grow_and_remove_middle(void **state)
{
	struct pinset ps = { 0 };
	const uint32_t N = 100;

	for (uint32_t i = 0; i < N; i++)
		for (uint32_t j = 0; j <= i % 3; j++)
			assert_int_equal(pinset_add(&ps, &(struct tierd_key){ 0, i, 7 }), 0);
	assert_int_equal(ps.n, N);
	for (uint32_t i = 0; i < N; i += 2)
		for (uint32_t j = 0; j <= i % 3; j++)
			assert_int_equal(pinset_drop(&ps, &(struct tierd_key){ 0, i, 7 }), 0);
	assert_int_equal(ps.n, N / 2);
	for (uint32_t i = 0; i < N; i++) {
		struct pin *p = pinset_find(&ps, &(struct tierd_key){ 0, i, 7 });

		if (i % 2 == 0) {
			assert_null(p);
		} else {
			assert_non_null(p);
			assert_int_equal(p->count, i % 3 + 1);
		}
	}
	pinset_free(&ps);
}

static void test_clone(void **state)
{
	struct pinset a = { 0 }, b, empty;

	/* An empty set clones without allocating. */
	assert_int_equal(pinset_clone(&empty, &a), 0);
	assert_null(empty.v);
	assert_int_equal(empty.total, 0);
	assert_int_equal(pinset_add(&empty, &k1), 0);
	pinset_free(&empty);

	assert_int_equal(pinset_add(&a, &k1), 0);
	assert_int_equal(pinset_add(&a, &k1), 0);
	assert_int_equal(pinset_add(&a, &k2), 0);
	assert_int_equal(pinset_clone(&b, &a), 0);
	assert_ptr_not_equal(b.v, a.v);
	assert_int_equal(b.n, 2);
	assert_int_equal(b.total, 3);
	assert_int_equal(pinset_find(&b, &k1)->count, 2);
	/* The copy changes alone: the operator pins are changed on a copy,
	 * kept only once saved. */
	assert_int_equal(pinset_drop(&b, &k1), 0);
	assert_int_equal(pinset_drop(&b, &k2), 0);
	assert_int_equal(pinset_add(&b, &k3), 0);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.total, 3);
	assert_int_equal(pinset_find(&a, &k1)->count, 2);
	assert_int_equal(pinset_find(&a, &k2)->count, 1);
	assert_null(pinset_find(&a, &k3));
	assert_int_equal(b.total, 2);
	pinset_free(&a);
	pinset_free(&b);
}

static void test_release_all(void **state)
{
	struct pinset ps = { 0 };
	struct engine *e = (struct engine *)&ps;	/* never dereferenced */

	released.n = 0;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pinset_add(&ps, &k1), 0);
	assert_int_equal(pinset_add(&ps, &k2), 0);
	assert_int_equal(pinset_add(&ps, &k3), 0);
	assert_int_equal(pinset_drop(&ps, &k3), 0);
	/* One release per hold, to the engine given. */
	pinset_release_all(&ps, e);
	assert_int_equal(released.n, 4);
	assert_ptr_equal(released.e, e);
	assert_int_equal(released_of(&k1), 3);
	assert_int_equal(released_of(&k2), 1);
	assert_int_equal(released_of(&k3), 0);
	assert_null(ps.v);
	assert_int_equal(ps.n, 0);
	assert_int_equal(ps.cap, 0);
	assert_int_equal(ps.total, 0);
	/* Emptied: again releases nothing, and the set is usable. */
	pinset_release_all(&ps, e);
	assert_int_equal(released.n, 4);
	assert_int_equal(pinset_add(&ps, &k2), 0);
	/* pinset_free releases nothing. */
	pinset_free(&ps);
	assert_int_equal(released.n, 4);
}

/*
 * The index against a plain model: many keys (past several growths and so
 * index rebuilds, keys that differ in one field only, so that some share a
 * probe run), holds added and dropped in a scrambled order, entries removed
 * from the middle (each moving the last into its place), and after every
 * step of a phase each key's count as the model says.
 */
#define MANY 3000u

static struct tierd_key many_key(uint32_t i)
{
	/* Three shapes of key, distinct: neighbours in every field. */
	switch (i % 3) {
	case 0:
		return (struct tierd_key){ 1, i / 3, 5 };
	case 1:
		return (struct tierd_key){ 2, 5, i / 3 };
	}
	return (struct tierd_key){ 3 + i / 3, 0, 0 };
}

static void check_model(struct pinset *ps, const uint32_t *want)
{
	uint64_t total = 0;
	size_t n = 0;

	for (uint32_t i = 0; i < MANY; i++) {
		struct tierd_key k = many_key(i);
		struct pin *p = pinset_find(ps, &k);

		if (!want[i]) {
			assert_null(p);
			continue;
		}
		assert_non_null(p);
		assert_int_equal(p->key.model, k.model);
		assert_int_equal(p->key.layer, k.layer);
		assert_int_equal(p->key.expert, k.expert);
		assert_int_equal(p->count, want[i]);
		total += want[i];
		n++;
	}
	assert_int_equal(ps->n, n);
	assert_int_equal(ps->total, total);
	/* The array holds exactly the keys held, once each. */
	for (size_t i = 0; i < ps->n; i++)
		assert_ptr_equal(pinset_find(ps, &ps->v[i].key), &ps->v[i]);
}

static void test_many(void **state)
{
	static uint32_t want[MANY], kept[MANY];
	struct pinset ps = { 0 }, copy;
	/* A permutation of 0..MANY-1: 7 is coprime with MANY. */
	const uint32_t step = 7;

	memset(want, 0, sizeof(want));
	for (uint32_t i = 0; i < MANY; i++) {
		uint32_t j = i * step % MANY;

		struct tierd_key k = many_key(j);

		for (uint32_t h = 0; h <= j % 4; h++) {
			assert_int_equal(pinset_add(&ps, &k), 0);
			want[j]++;
		}
		if (i % 500 == 0)
			check_model(&ps, want);
	}
	check_model(&ps, want);
	assert_true(ps.cap >= MANY);
	/* Removals from the middle: every third key, whole; one hold of
	 * every fifth; checked along the way. */
	for (uint32_t i = 0; i < MANY; i++) {
		uint32_t j = (MANY - 1 - i) * step % MANY;
		struct tierd_key k = many_key(j);

		if (j % 3 == 1) {
			while (want[j]) {
				assert_int_equal(pinset_drop(&ps, &k), 0);
				want[j]--;
			}
			assert_int_equal(pinset_drop(&ps, &k), -ENOENT);
		} else if (j % 5 == 0) {
			assert_int_equal(pinset_drop(&ps, &k), 0);
			want[j]--;
		}
		if (i % 500 == 0)
			check_model(&ps, want);
	}
	check_model(&ps, want);
	/* A clone's index is its own: emptying the set leaves it whole. */
	assert_int_equal(pinset_clone(&copy, &ps), 0);
	memcpy(kept, want, sizeof(kept));
	check_model(&copy, want);
	for (uint32_t j = 0; j < MANY; j++) {
		struct tierd_key k = many_key(j);

		while (want[j]) {
			assert_int_equal(pinset_drop(&ps, &k), 0);
			want[j]--;
		}
	}
	check_model(&ps, want);
	assert_int_equal(ps.n, 0);
	check_model(&copy, kept);
	/* Emptied and refilled: lookups in a set that has held others. */
	for (uint32_t j = MANY; j-- > 0;) {
		struct tierd_key k = many_key(j);

		assert_int_equal(pinset_add(&ps, &k), 0);
		want[j]++;
	}
	check_model(&ps, want);
	pinset_free(&ps);
	pinset_free(&copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_find),
		cmocka_unit_test(test_drop),
		cmocka_unit_test(test_grow_and_remove_middle),
		cmocka_unit_test(test_clone),
		cmocka_unit_test(test_release_all),
		cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
