/* SPDX-License-Identifier: MIT */
/*
 * The residency table and pin areas (tierd/engine/residency.c), with the
 * test in the client's place: it maps the descriptors a client gets.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cmocka.h>

#include "residency.h"
#include "tierd-fastpath.h"

static const struct residency_model models[] = { { 2, 3 }, { 0, 0 }, { 4, 2 } };

struct client_view {
	const struct tierd_fast_hdr *hdr;
	struct tierd_fast_entry *ent;
	struct tierd_fast_pin *pins;
	uint64_t tsize, asize;
};

static void map_client(struct residency *r, struct residency_area *a, struct client_view *v)
{
	v->tsize = residency_table_size(r);
	v->asize = residency_area_size(r);
	v->hdr = mmap(NULL, v->tsize, PROT_READ, MAP_SHARED, residency_table_fd(r), 0);
	assert_true(v->hdr != MAP_FAILED);
	v->ent = (struct tierd_fast_entry *)((uint8_t *)v->hdr + v->hdr->entries_offset);
	v->pins = mmap(NULL, v->asize, PROT_READ | PROT_WRITE, MAP_SHARED, residency_area_fd(a), 0);
	assert_true(v->pins != MAP_FAILED);
}

static void unmap_client(struct client_view *v)
{
	munmap((void *)v->hdr, v->tsize);
	munmap(v->pins, v->asize);
}

static void test_layout(void **state)
{
	struct residency *r;
	struct residency_area *a;
	struct client_view v;
	bool allowed[3] = { true, true, true };
	char err[128];

	assert_int_equal(residency_create(&r, models, 3, err, sizeof(err)), 0);
	assert_int_equal(residency_area_new(r, allowed, &a), 0);
	map_client(r, a, &v);
	assert_int_equal(v.hdr->magic, TIERD_FAST_MAGIC);
	assert_int_equal(v.hdr->nentries, 6 + 8);
	assert_int_equal(v.hdr->models[0].flags, TIERD_FAST_MODEL_F_ON);
	assert_int_equal(v.hdr->models[1].flags, 0);	/* no experts: no entries */
	assert_int_equal(v.hdr->models[2].base, 6);
	assert_int_equal(residency_index(r, &(struct tierd_key){ 2, 3, 1 }), 6 + 3 * 2 + 1);
	assert_int_equal(residency_index(r, &(struct tierd_key){ 2, 4, 0 }), -ENOENT);
	assert_int_equal(residency_index(r, &(struct tierd_key){ 0, 0, 3 }), -ENOENT);
	assert_int_equal(residency_index(r, &(struct tierd_key){ 1, 0, 0 }), -ENOENT);
	assert_int_equal(residency_index(r, &(struct tierd_key){ 3, 0, 0 }), -ENOENT);
	/* Nothing servable until published. */
	for (uint32_t i = 0; i < v.hdr->nentries; i++)
		assert_true(atomic_load(&v.ent[i].gen) & 1);
	/* The client cannot write the table, nor resize its area under the
	 * daemon's mapping. */
	assert_true(mmap(NULL, v.tsize, PROT_READ | PROT_WRITE, MAP_SHARED, residency_table_fd(r), 0) ==
		    MAP_FAILED);
	assert_int_not_equal(ftruncate(residency_area_fd(a), 0), 0);
	assert_int_not_equal(ftruncate(residency_area_fd(a), (off_t)v.asize * 2), 0);
	unmap_client(&v);
	residency_destroy(r);	/* frees the area too */
}

static void test_claim(void **state)
{
	struct residency *r;
	struct residency_area *a;
	struct client_view v;
	bool allowed[3] = { true, true, true };
	char err[128];
	uint64_t g;

	assert_int_equal(residency_create(&r, models, 3, err, sizeof(err)), 0);
	assert_int_equal(residency_area_new(r, allowed, &a), 0);
	map_client(r, a, &v);
	residency_publish(r, 4, 0, 8192, 3);
	g = atomic_load(&v.ent[4].gen);
	assert_false(g & 1);
	assert_int_equal(atomic_load(&v.ent[4].offset), 8192);
	assert_int_equal(atomic_load(&v.ent[4].layout), 3);
	/* A pin: no claim, the entry published again under a new generation. */
	atomic_fetch_add(&v.pins[4].pins, 1);
	assert_true(residency_pinned(r, 4, 0));
	assert_false(residency_claim(r, 4, 0));
	assert_int_equal(atomic_load(&v.ent[4].gen), g + 2);
	assert_int_equal(atomic_load(&v.ent[4].offset), 8192);
	/* Unpinned: claimed, unpublished. */
	atomic_fetch_sub(&v.pins[4].pins, 1);
	assert_true(residency_claim(r, 4, 0));
	assert_true(atomic_load(&v.ent[4].gen) & 1);
	/* Published again elsewhere: a newer generation still. */
	residency_publish(r, 4, 0, 4096, 3);
	assert_int_equal(atomic_load(&v.ent[4].gen), g + 4);
	/* Pins of a model the client may not use do not count. */
	atomic_store(&v.pins[4].pins, 7);
	allowed[0] = false;
	assert_false(residency_pinned(r, 4, 0));
	allowed[0] = true;
	assert_true(residency_pinned(r, 4, 0));
	/* The client gone: its area with it. */
	residency_area_free(r, a);
	assert_false(residency_pinned(r, 4, 0));
	assert_true(residency_claim(r, 4, 0));
	munmap((void *)v.hdr, v.tsize);
	munmap(v.pins, v.asize);
	residency_destroy(r);
}

struct uses {
	unsigned calls;
	uint64_t total;
	struct tierd_key last;
};

static void count_uses(void *arg, const struct tierd_key *key, uint32_t n)
{
	struct uses *u = arg;

	u->calls++;
	u->total += n;
	u->last = *key;
}

static void test_sweep_and_garbage(void **state)
{
	struct residency *r;
	struct residency_area *a, *good;
	struct client_view v, gv;
	bool allowed[3] = { true, true, false }, all[3] = { true, true, true };
	struct uses u = { 0 };
	struct residency_sweep sw;
	size_t done = 0;
	char err[128];

	assert_int_equal(residency_create(&r, models, 3, err, sizeof(err)), 0);
	assert_int_equal(residency_area_new(r, allowed, &a), 0);
	assert_int_equal(residency_area_new(r, all, &good), 0);
	map_client(r, a, &v);
	map_client(r, good, &gv);
	/* Uses since the last sweep, wrapping. */
	atomic_store(&gv.pins[7].uses, UINT32_MAX - 1);
	residency_area_sweep(r, good, count_uses, &u, &sw);
	assert_int_equal(u.total, UINT32_MAX - 1);
	atomic_store(&gv.pins[7].uses, 3);
	u = (struct uses){ 0 };
	residency_area_sweep(r, good, count_uses, &u, &sw);
	assert_int_equal(u.calls, 1);
	assert_int_equal(u.total, 5);
	assert_int_equal(u.last.model, 2);
	assert_int_equal(u.last.layer, 0);
	assert_int_equal(u.last.expert, 1);
	assert_int_equal(sw.pinned, 0);
	assert_int_equal(sw.releases, 5);	/* used 5 times, none held */
	/* Two acquires, one held: one release. */
	atomic_store(&gv.pins[7].uses, 5);
	atomic_store(&gv.pins[7].pins, 1);
	residency_area_sweep(r, good, count_uses, &u, &sw);
	assert_int_equal(sw.uses, 2);
	assert_int_equal(sw.releases, 1);
	atomic_store(&gv.pins[7].pins, 0);
	residency_area_sweep(r, good, count_uses, &u, &sw);
	assert_int_equal(sw.releases, 1);
	/* Random bytes over a whole area: only entries count, only of the
	 * models it may use; the rest of the mapping is never read. */
	while (done < v.asize) {
		ssize_t n = getrandom((uint8_t *)v.pins + done, v.asize - done, 0);

		assert_true(n > 0);
		done += (size_t)n;
	}
	for (uint32_t i = 0; i < 14; i++)
		if (!atomic_load(&v.pins[i].pins))
			atomic_store(&v.pins[i].pins, 1);
	u = (struct uses){ 0 };
	residency_area_sweep(r, a, count_uses, &u, &sw);
	assert_int_equal(sw.pinned, 6);	/* model 0's; model 2 not allowed */
	assert_true(u.calls <= 6);
	assert_true(residency_pinned(r, 0, 0));
	assert_false(residency_pinned(r, 6, 2));
	/* The other client's area is its own. */
	residency_area_sweep(r, good, count_uses, &u, &sw);
	assert_int_equal(sw.pinned, 0);
	residency_area_free(r, a);
	assert_false(residency_pinned(r, 0, 0));
	unmap_client(&v);
	unmap_client(&gv);
	residency_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_claim),
		cmocka_unit_test(test_sweep_and_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
