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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_find),
		cmocka_unit_test(test_drop),
		cmocka_unit_test(test_grow_and_remove_middle),
		cmocka_unit_test(test_clone),
		cmocka_unit_test(test_release_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
