/* SPDX-License-Identifier: MIT */
/* Slot allocator: geometry, quotas, bad frees and fragmentation cases. */
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

#include "slab.h"

#define MiB (1ULL << 20)
#define KiB (1ULL << 10)

/* Who owns each 4 KiB page of the pool: catches overlapping slots. */
struct owner_map {
	uint64_t size;
	int *page;
};

static void map_init(struct owner_map *m, uint64_t size)
{
	m->size = size;
	m->page = calloc(size / SLAB_ALIGN, sizeof(int));
	assert_non_null(m->page);
}

static void map_take(struct owner_map *m, uint64_t off, uint64_t len, int who)
{
	assert_int_equal(off % SLAB_ALIGN, 0);
	assert_true(off + len <= m->size);
	for (uint64_t p = off / SLAB_ALIGN; p < (off + len + SLAB_ALIGN - 1) / SLAB_ALIGN; p++) {
		assert_int_equal(m->page[p], 0);
		m->page[p] = who;
	}
}

static void map_give(struct owner_map *m, uint64_t off, uint64_t len, int who)
{
	for (uint64_t p = off / SLAB_ALIGN; p < (off + len + SLAB_ALIGN - 1) / SLAB_ALIGN; p++) {
		assert_int_equal(m->page[p], who);
		m->page[p] = 0;
	}
}

static void test_create_bad(void **state)
{
	struct slab *s;

	assert_int_equal(slab_create(&s, SLAB_CHUNK - 1), -EINVAL);
	assert_int_equal(slab_create(&s, 4 * MiB), 0);
	assert_int_equal(slab_class_add(s, 0, 0), -EINVAL);
	assert_int_equal(slab_class_add(s, 5 * MiB, 0), -EINVAL);	/* bigger than the pool */
	assert_int_equal(slab_alloc(s, 3, &(uint64_t){ 0 }), -EINVAL);
	slab_destroy(s);
}

static void test_fill_small(void **state)
{
	struct slab *s;
	struct slab_stats st;
	uint64_t offs[4096];
	int n = 0, cls;
	struct owner_map m;

	assert_int_equal(slab_create(&s, 16 * MiB), 0);
	map_init(&m, 16 * MiB);
	cls = slab_class_add(s, 300 * KiB + 1, 0);	/* rounded to 4 KiB */
	assert_true(cls >= 0);
	assert_int_equal(slab_class_slot_bytes(s, cls), 300 * KiB + 4 * KiB);
	while (slab_alloc(s, cls, &offs[n]) == 0) {
		map_take(&m, offs[n], slab_class_slot_bytes(s, cls), 1);
		n++;
		assert_true(n < 4096);
	}
	assert_int_equal(slab_alloc(s, cls, &offs[n]), -ENOSPC);
	/* 304 KiB slots: at most 3% of each span is lost at its tail. */
	assert_true((uint64_t)n * 304 * KiB >= 16 * MiB * 97 / 100);
	assert_int_equal(slab_class_used(s, cls), (uint64_t)n * 304 * KiB);
	for (int i = 0; i < n; i++) {
		assert_int_equal(slab_free(s, cls, offs[i]), 0);
		map_give(&m, offs[i], 304 * KiB, 1);
	}
	slab_get_stats(s, &st);
	assert_int_equal(st.chunks_free, 8);
	assert_int_equal(st.largest_free_run, 8);
	assert_int_equal(slab_class_used(s, cls), 0);
	free(m.page);
	slab_destroy(s);
}

static void test_quota(void **state)
{
	struct slab *s;
	uint64_t a, b, c;
	int cls, other;

	assert_int_equal(slab_create(&s, 64 * MiB), 0);
	cls = slab_class_add(s, 3 * MiB, 7 * MiB);
	other = slab_class_add(s, 3 * MiB, 0);
	assert_int_equal(slab_alloc(s, cls, &a), 0);
	assert_int_equal(slab_alloc(s, cls, &b), 0);
	assert_int_equal(slab_alloc(s, cls, &c), -EDQUOT);
	/* The quota is the class's own: another model is not charged. */
	assert_int_equal(slab_alloc(s, other, &c), 0);
	assert_int_equal(slab_free(s, cls, a), 0);
	assert_int_equal(slab_alloc(s, cls, &a), 0);
	assert_int_equal(slab_class_used(s, cls), 6 * MiB);
	slab_destroy(s);
}

static void test_bad_free(void **state)
{
	struct slab *s;
	uint64_t a, b;
	int small, big;

	assert_int_equal(slab_create(&s, 32 * MiB), 0);
	small = slab_class_add(s, 64 * KiB, 0);
	big = slab_class_add(s, 4 * MiB, 0);
	assert_int_equal(slab_alloc(s, small, &a), 0);
	assert_int_equal(slab_alloc(s, big, &b), 0);
	assert_int_equal(slab_free(s, small, a + 4096), -EINVAL);	/* inside a slot */
	assert_int_equal(slab_free(s, big, a), -EINVAL);		/* wrong class */
	assert_int_equal(slab_free(s, small, a + 64 * KiB), -EINVAL);	/* not allocated */
	assert_int_equal(slab_free(s, small, 1ULL << 40), -EINVAL);	/* outside */
	assert_int_equal(slab_free(s, small, a), 0);
	assert_int_equal(slab_free(s, small, a), -EINVAL);		/* double free */
	assert_int_equal(slab_free(s, big, b), 0);
	assert_int_equal(slab_free(s, big, b), -EINVAL);
	slab_destroy(s);
}

/* Two models with different expert sizes allocate in turn until the pool is full. */
static void test_alternating_sizes(void **state)
{
	struct slab *s;
	struct slab_stats st;
	struct owner_map m;
	uint64_t off[2][512];
	int n[2] = { 0, 0 }, cls[2];
	uint64_t sz[2] = { 1536 * KiB, 5 * MiB + 12 * KiB };
	bool full[2] = { false, false };

	assert_int_equal(slab_create(&s, 128 * MiB), 0);
	map_init(&m, 128 * MiB);
	cls[0] = slab_class_add(s, sz[0], 0);
	cls[1] = slab_class_add(s, sz[1], 0);
	while (!full[0] || !full[1]) {
		for (int k = 0; k < 2; k++) {
			int err;

			if (full[k])
				continue;
			err = slab_alloc(s, cls[k], &off[k][n[k]]);
			if (err == -ENOSPC) {
				full[k] = true;
				continue;
			}
			assert_int_equal(err, 0);
			map_take(&m, off[k][n[k]], sz[k], k + 1);
			n[k]++;
		}
	}
	/* Small spans grow from the bottom, large slots from the top. */
	assert_true(off[0][0] < off[1][0]);
	/* Little lost: the pool is at least 85% used at the end. */
	assert_true(n[0] * sz[0] + n[1] * sz[1] >= 128 * MiB * 85 / 100);
	/* Free the small model: its chunks form one run again and a large slot fits. */
	for (int i = 0; i < n[0]; i++) {
		assert_int_equal(slab_free(s, cls[0], off[0][i]), 0);
		map_give(&m, off[0][i], sz[0], 1);
	}
	slab_get_stats(s, &st);
	assert_true(st.largest_free_run * SLAB_CHUNK >= sz[1]);
	assert_int_equal(slab_alloc(s, cls[1], &off[1][n[1]]), 0);
	map_take(&m, off[1][n[1]], sz[1], 2);
	n[1]++;
	for (int i = 0; i < n[1]; i++)
		assert_int_equal(slab_free(s, cls[1], off[1][i]), 0);
	slab_get_stats(s, &st);
	assert_int_equal(st.chunks_free, st.chunks_total);
	assert_int_equal(st.largest_free_run, st.chunks_total);
	free(m.page);
	slab_destroy(s);
}

/* Random alloc/free over three classes: never overlapping, all back at the end. */
static void test_churn(void **state)
{
	enum { N = 256 };
	struct slab *s;
	struct slab_stats st;
	struct owner_map m;
	uint64_t sz[3] = { 200 * KiB, 2 * MiB, 7 * MiB + 4 * KiB };
	struct { int cls; uint64_t off; bool live; } held[N];
	int cls[3];
	unsigned seed = 12345;
	int ok = 0, nospc = 0;

	assert_int_equal(slab_create(&s, 256 * MiB), 0);
	map_init(&m, 256 * MiB);
	for (int k = 0; k < 3; k++)
		cls[k] = slab_class_add(s, sz[k], 0);
	memset(held, 0, sizeof(held));
	for (int it = 0; it < 20000; it++) {
		int i = rand_r(&seed) % N;

		if (held[i].live) {
			assert_int_equal(slab_free(s, held[i].cls, held[i].off), 0);
			map_give(&m, held[i].off, sz[held[i].cls], held[i].cls + 1);
			held[i].live = false;
		} else {
			int k = rand_r(&seed) % 3;
			int err = slab_alloc(s, cls[k], &held[i].off);

			if (err == -ENOSPC) {
				nospc++;
				continue;
			}
			assert_int_equal(err, 0);
			ok++;
			held[i].cls = k;
			held[i].live = true;
			map_take(&m, held[i].off, sz[k], k + 1);
		}
	}
	assert_true(ok > 1000);
	for (int i = 0; i < N; i++)
		if (held[i].live)
			assert_int_equal(slab_free(s, held[i].cls, held[i].off), 0);
	slab_get_stats(s, &st);
	assert_int_equal(st.chunks_free, st.chunks_total);
	assert_int_equal(st.largest_free_run, st.chunks_total);
	(void)nospc;
	free(m.page);
	slab_destroy(s);
}

/* A big model arrives after many small ones came and went, or while some stay. */
static void test_big_after_small(void **state)
{
	struct slab *s;
	uint64_t offs[1024], big;
	int n = 0, small, large, huge;

	assert_int_equal(slab_create(&s, 64 * MiB), 0);
	small = slab_class_add(s, 100 * KiB, 0);
	large = slab_class_add(s, 30 * MiB, 0);
	huge = slab_class_add(s, 60 * MiB, 0);
	while (slab_alloc(s, small, &offs[n]) == 0)
		n++;
	assert_int_equal(slab_alloc(s, large, &big), -ENOSPC);
	/* Every other slot freed: each span still has a slot in use. */
	for (int i = 0; i < n; i += 2)
		assert_int_equal(slab_free(s, small, offs[i]), 0);
	assert_int_equal(slab_alloc(s, large, &big), -ENOSPC);
	/* Free the top half of the small slots: spans empty, chunks come back. */
	for (int i = 1; i < n; i += 2)
		if (offs[i] >= 32 * MiB)
			assert_int_equal(slab_free(s, small, offs[i]), 0);
	assert_int_equal(slab_alloc(s, large, &big), 0);
	assert_true(big >= 32 * MiB);
	assert_int_equal(slab_alloc(s, huge, &offs[1023]), -ENOSPC);
	assert_int_equal(slab_free(s, large, big), 0);
	for (int i = 1; i < n; i += 2)
		if (offs[i] < 32 * MiB)
			assert_int_equal(slab_free(s, small, offs[i]), 0);
	assert_int_equal(slab_alloc(s, huge, &big), 0);
	assert_int_equal(big, 4 * MiB);	/* taken from the top */
	assert_int_equal(slab_free(s, huge, big), 0);
	slab_destroy(s);
}

/*
 * Classes added while spans of earlier ones are in use (a model added after
 * others served): the earlier classes' lists of spans with free slots stay
 * intact (ASan sees any pointer into a moved class table).
 */
static void test_classes_added_later(void **state)
{
	struct slab *s;
	uint64_t a[3], b;
	int c0, c;

	(void)state;
	assert_int_equal(slab_create(&s, 256 * MiB), 0);
	c0 = slab_class_add(s, 100 * 1024, 0);
	assert_true(c0 >= 0);
	assert_int_equal(slab_alloc(s, c0, &a[0]), 0);	/* a span with free slots */
	for (int i = 0; i < 20; i++) {
		c = slab_class_add(s, (uint64_t)(i + 1) * 4096 + 8192, 0);
		assert_true(c > c0);
		assert_int_equal(slab_alloc(s, c, &b), 0);
	}
	assert_int_equal(slab_alloc(s, c0, &a[1]), 0);
	assert_int_equal(slab_alloc(s, c0, &a[2]), 0);
	assert_true(a[1] != a[0] && a[2] != a[1] && a[2] != a[0]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(slab_free(s, c0, a[i]), 0);
	assert_int_equal(slab_alloc(s, c0, &a[0]), 0);
	assert_int_equal(slab_free(s, c0, a[0]), 0);
	slab_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_bad),
		cmocka_unit_test(test_fill_small),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_bad_free),
		cmocka_unit_test(test_alternating_sizes),
		cmocka_unit_test(test_churn),
		cmocka_unit_test(test_big_after_small),
		cmocka_unit_test(test_classes_added_later),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
