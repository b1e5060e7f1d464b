/* SPDX-License-Identifier: MIT */
/*
 * The engine on a hand-built catalog over files on the local disk: every byte
 * of every expert, shared fetches, hits, eviction with pins and quotas,
 * prefetch and cancel, refused layouts, a fetch that fails, and the file
 * changing under the engine.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine.h"
#include "fetch.h"
#include "log.h"
#include "topo.h"

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define LAYERS 2
#define EXPERTS 4
#define TENSORS 3
#define HEADER 1000		/* like a safetensors header: data starts unaligned */

struct fixture {
	char path[4096];
	struct catalog cat;
	struct catalog_file file;
	struct catalog_expert experts[LAYERS * EXPERTS];
	struct catalog_tensor tensors[LAYERS * EXPERTS * TENSORS];
	char names[LAYERS * EXPERTS * TENSORS][64];
	uint64_t file_size;
};

static uint8_t byte_at(uint64_t off)
{
	return (uint8_t)((off * 2654435761u) >> 9 ^ off >> 16 ^ 0x5a);
}

/* Tensors back to back after an unaligned header; odd lengths; the last one
 * ends the file off a 4 KiB boundary. */
static void fixture_build(struct fixture *fx)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	uint64_t off = HEADER, len[TENSORS] = { 300 * KiB + 2, 300 * KiB + 2, 150 * KiB + 7 };
	uint8_t *buf;
	int fd, n = 0;

	memset(fx, 0, sizeof(*fx));
	for (uint32_t l = 0; l < LAYERS; l++)
		for (uint32_t x = 0; x < EXPERTS; x++) {
			struct catalog_expert *ex = &fx->experts[l * EXPERTS + x];
			ex->layer = l * 3;	/* sparse layer numbers */
			ex->expert = x;
			ex->ntensors = TENSORS;
			ex->tensors = &fx->tensors[n];
			for (int t = 0; t < TENSORS; t++, n++) {
				struct catalog_tensor *ct = &fx->tensors[n];

				snprintf(fx->names[n], sizeof(fx->names[n]), "l%u.e%u.w%d", ex->layer, x, t);
				ct->name = fx->names[n];
				ct->dtype = TIERD_DTYPE_U8;
				ct->ndim = 1;
				ct->shape[0] = len[t];
				ct->offset = off;
				ct->length = len[t];
				ex->bytes += len[t];
				off += len[t];
			}
		}
	/* Catalogs list tensors by name, not by file offset: plan either way. */
	{
		struct catalog_tensor tmp = fx->tensors[3];

		fx->tensors[3] = fx->tensors[5];
		fx->tensors[5] = tmp;
	}
	fx->file_size = off;
	snprintf(fx->path, sizeof(fx->path), "%s/test-engine.XXXXXX", dir);
	fd = mkstemp(fx->path);
	assert_true(fd >= 0);
	buf = malloc(off);
	assert_non_null(buf);
	for (uint64_t i = 0; i < off; i++)
		buf[i] = byte_at(i);
	assert_int_equal(write(fd, buf, off), (ssize_t)off);
	close(fd);
	free(buf);
	fx->file.path = fx->path;
	fx->file.size = off;
	fx->cat.dir = (char *)dir;
	fx->cat.preset = (char *)"hand";
	fx->cat.nfiles = 1;
	fx->cat.files = &fx->file;
	fx->cat.nexperts = LAYERS * EXPERTS;
	fx->cat.experts = fx->experts;
	fx->cat.nlayers = LAYERS;
	fx->cat.experts_per_layer = EXPERTS;
	assert_int_equal(catalog_layout_slots(&fx->cat, FETCH_ALIGN), 0);
}

static void fixture_free(struct fixture *fx)
{
	unlink(fx->path);
	for (int i = 0; i < LAYERS * EXPERTS; i++)
		free(fx->experts[i].extents);
}

/* A fresh file and catalog after a test changed them. */
static void fixture_reset(struct fixture *fx)
{
	fixture_free(fx);
	fixture_build(fx);
}

static int setup(void **state)
{
	struct fixture *fx = malloc(sizeof(*fx));

	fixture_build(fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	fixture_free(fx);
	free(fx);
	return 0;
}

/* [cache] prefetch and prefetch_max_slots (0: the default) for the next make(). */
static bool make_prefetch;
static unsigned make_prefetch_slots;

static struct engine *make(struct fixture *fx, uint64_t pool, unsigned depth, uint64_t quota)
{
	struct tierd_conf conf;
	struct engine *e = NULL;
	char err[512] = "";
	int r;

	assert_int_equal(conf_init(&conf), 0);
	conf.pool_size = pool;
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	conf.queue_depth = depth;
	conf.request_size = 128 * KiB;
	conf.prefetch = make_prefetch;
	conf.prefetch_min_prob = 0.5;
	if (make_prefetch_slots)
		conf.prefetch_max_slots = make_prefetch_slots;
	r = engine_create(&e, &conf, err, sizeof(err));
	conf_free(&conf);
	if (r < 0)
		fail_msg("engine_create: %s", err);
	r = engine_add_model(e, "hand", &fx->cat, false, quota, err, sizeof(err));
	if (r < 0)
		fail_msg("engine_add_model: %s", err);
	assert_int_equal(r, 0);
	return e;
}

struct got {
	int calls;
	int err;
	struct engine_slot_info info;
	int *counter;
	int order;
};

static void on_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct got *g = arg;

	g->calls++;
	g->err = err;
	if (info)
		g->info = *info;
	if (g->counter)
		g->order = ++*g->counter;
}

static void verify(const struct engine *e, const struct engine_slot_info *info)
{
	const uint8_t *slot = (const uint8_t *)engine_pool_base(e, info->pool) + info->offset;

	assert_non_null(info->expert);
	for (uint32_t t = 0; t < info->expert->ntensors; t++) {
		const struct catalog_tensor *ct = &info->expert->tensors[t];

		for (uint64_t i = 0; i < ct->length; i++)
			if (slot[ct->slot_offset + i] != byte_at(ct->offset + i))
				fail_msg("%s byte %llu wrong", ct->name, (unsigned long long)i);
	}
}

static void test_every_byte(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 64 * MiB, 8, 0);
	struct got g[LAYERS * EXPERTS];
	struct engine_stats st;

	memset(g, 0, sizeof(g));
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };

		assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]), 0);
	}
	assert_int_equal(engine_drain(e), 0);
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };

		assert_int_equal(g[i].calls, 1);
		assert_int_equal(g[i].err, 0);
		assert_ptr_equal(g[i].info.expert, &fx->experts[i]);
		verify(e, &g[i].info);
		assert_int_equal(engine_release(e, &k), 0);
		assert_int_equal(engine_release(e, &k), -EINVAL);
	}
	engine_get_stats(e, &st);
	assert_int_equal(st.misses, LAYERS * EXPERTS);
	assert_int_equal(st.fetches, LAYERS * EXPERTS);
	assert_int_equal(st.fetch_errors, 0);
	assert_int_equal(st.pins, 0);
	/* Each tensor read once, plus at most a page of alignment slack each side. */
	assert_true(st.bytes_read >= fx->file_size - HEADER);
	assert_true(st.bytes_read <= fx->file_size + LAYERS * EXPERTS * TENSORS * 2 * FETCH_ALIGN);
	assert_int_equal(st.bytes_resident, fx->file_size - HEADER);
	/* Unknown experts. */
	assert_int_equal(engine_acquire(e, &(struct tierd_key){ 0, 1, 0 }, ENGINE_DEMAND, on_done, g), -ENOENT);
	assert_int_equal(engine_acquire(e, &(struct tierd_key){ 1, 0, 0 }, ENGINE_DEMAND, on_done, g), -ENOENT);
	assert_int_equal(engine_acquire(e, &(struct tierd_key){ 0, 0, EXPERTS }, ENGINE_DEMAND, on_done, g), -ENOENT);
	engine_destroy(e);
}

static void test_shared_and_hit(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 4, 0);
	struct tierd_key k = { 0, 3, 2 };
	struct got a = { 0 }, b = { 0 }, c = { 0 };
	struct engine_stats st;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(engine_acquire(e, &k, ENGINE_PREFETCH, on_done, &a), 0);
	assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &b), 0);
	assert_int_equal(engine_release(e, &k), -EBUSY);	/* still being read */
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(a.info.offset, b.info.offset);
	engine_get_stats(e, &st);
	assert_int_equal(st.fetches, 1);	/* one read for both */
	assert_int_equal(st.pins, 2);
	/* Resident now: a hit calls back before returning. */
	assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &c), 0);
	assert_int_equal(c.calls, 1);
	verify(e, &c.info);
	engine_get_stats(e, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.fetches, 1);
	assert_int_equal(engine_evict(e, &k), -EBUSY);	/* pinned */
	for (int i = 0; i < 3; i++)
		assert_int_equal(engine_release(e, &k), 0);
	assert_int_equal(engine_evict(e, &k), 0);
	assert_int_equal(engine_evict(e, &k), -ENOENT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.bytes_resident, 0);
	/* The eviction is in the age histogram, in the bucket of its own age,
	 * and that age is no longer than the whole test so far. */
	for (unsigned i = 0; i <= ENGINE_EVICT_AGE_BUCKETS; i++) {
		bool here = (i == ENGINE_EVICT_AGE_BUCKETS ||
			     (double)st.evict_age_ns_sum <= engine_evict_age_le[i] * 1e9) &&
			    (i == 0 || (double)st.evict_age_ns_sum > engine_evict_age_le[i - 1] * 1e9);

		assert_int_equal(st.evict_age_hist[i], here ? 1 : 0);
	}
	assert_true(st.evict_age_ns_sum > 0);
	assert_true(st.evict_age_ns_sum <= (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ULL +
						 (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec);
	engine_destroy(e);
}

/* A pool of 4 slots (2 MiB chunks, one slot each): LRU eviction, pins hold. */
static void test_evict_and_pins(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct got g[LAYERS * EXPERTS];
	struct engine_stats st;
	int slots = 0;

	assert_true(fx->cat.slot_bytes <= 1 * MiB);
	e = make(fx, 2 * MiB, 2, 0);
	memset(g, 0, sizeof(g));
	/* A small class packs slots into the chunk: count them. */
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };
		int r = engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]);

		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		slots++;
	}
	assert_int_equal(engine_drain(e), 0);
	assert_true(slots >= 1 && slots < LAYERS * EXPERTS);
	/* Everything pinned: the next one is refused. */
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, (uint64_t)slots);
	/* Release the first: it is the one evicted for the next. */
	assert_int_equal(engine_release(e, &(struct tierd_key){ 0, fx->experts[0].layer, fx->experts[0].expert }), 0);
	{
		struct tierd_key k = { 0, fx->experts[slots].layer, fx->experts[slots].expert };

		assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[slots]), 0);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(g[slots].err, 0);
		assert_int_equal(g[slots].info.offset, g[0].info.offset);
		verify(e, &g[slots].info);
	}
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, 1);
	/* Pinned experts still hold their bytes. */
	for (int i = 1; i < slots; i++)
		verify(e, &g[i].info);
	engine_destroy(e);
}

/*
 * Two models in one pool of one chunk.  Another model's slots serve only
 * once their whole span is free: while one of model a's experts is pinned,
 * an acquire of model b is refused and evicts nothing (it used to evict every
 * unpinned expert of a and fail all the same); a prefetch evicts at most
 * [pool] max_evict_per_alloc (0 here); once nothing of a is pinned, b's
 * acquire empties a's span and gets its slot, every byte right.
 */
static void test_evict_across_models(void **state)
{
	struct fixture *fx = *state;
	struct tierd_conf conf;
	struct engine *e = NULL;
	struct got g[LAYERS * EXPERTS], b = { 0 };
	struct engine_stats st;
	char err[512] = "";
	int slots = 0;
	bool started;
	struct tierd_key kb = { 1, fx->experts[0].layer, fx->experts[0].expert };

	assert_int_equal(conf_init(&conf), 0);
	conf.pool_size = 2 * MiB;
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	conf.queue_depth = 2;
	conf.request_size = 128 * KiB;
	conf.max_evict_per_alloc = 0;
	if (engine_create(&e, &conf, err, sizeof(err)))
		fail_msg("engine_create: %s", err);
	conf_free(&conf);
	assert_int_equal(engine_add_model(e, "a", &fx->cat, false, 0, err, sizeof(err)), 0);
	assert_int_equal(engine_add_model(e, "b", &fx->cat, false, 0, err, sizeof(err)), 1);
	memset(g, 0, sizeof(g));
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };
		int r = engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]);

		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		slots++;
	}
	assert_int_equal(engine_drain(e), 0);
	assert_true(slots >= 2);
	/* All of a unpinned but its first expert. */
	for (int i = 1; i < slots; i++)
		assert_int_equal(engine_release(e, &(struct tierd_key){ 0, fx->experts[i].layer,
									    fx->experts[i].expert }), 0);
	assert_int_equal(engine_acquire(e, &kb, ENGINE_DEMAND, on_done, &b), -ENOSPC);
	assert_int_equal(engine_prefetch_started(e, &kb, 0, &started), -ENOSPC);
	assert_false(started);
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, 0);
	/* The acquire that found the pool full, and b's. */
	assert_int_equal(st.refused, 2);
	for (int i = 1; i < slots; i++)
		assert_int_equal(engine_evict_check(e, &(struct tierd_key){ 0, fx->experts[i].layer,
									      fx->experts[i].expert }), 0);
	/* Nothing of a pinned: the span goes whole, b gets its slot. */
	assert_int_equal(engine_release(e, &(struct tierd_key){ 0, fx->experts[0].layer,
								    fx->experts[0].expert }), 0);
	assert_int_equal(engine_acquire(e, &kb, ENGINE_DEMAND, on_done, &b), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(b.err, 0);
	verify(e, &b.info);
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, (uint64_t)slots);
	assert_int_equal(st.hits + st.misses + st.refused, (uint64_t)slots + 3);
	engine_destroy(e);
}

static void test_quota(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 2, 2 * ((fx->cat.slot_bytes + 4095) & ~4095ULL));
	struct got g[3];
	struct engine_stats st;

	memset(g, 0, sizeof(g));
	for (int i = 0; i < 2; i++)
		assert_int_equal(engine_acquire(e, &(struct tierd_key){ 0, 0, (uint32_t)i }, ENGINE_DEMAND,
						on_done, &g[i]), 0);
	assert_int_equal(engine_acquire(e, &(struct tierd_key){ 0, 0, 2 }, ENGINE_DEMAND, on_done, &g[2]),
			 -EDQUOT);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(engine_release(e, &(struct tierd_key){ 0, 0, 1 }), 0);
	assert_int_equal(engine_acquire(e, &(struct tierd_key){ 0, 0, 2 }, ENGINE_DEMAND, on_done, &g[2]), 0);
	assert_int_equal(engine_drain(e), 0);
	verify(e, &g[2].info);
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, 1);
	engine_destroy(e);
}

/* Depth 1: demand ahead of prefetches, a promoted prefetch, a cancelled one. */
static void test_prefetch_cancel(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 1, 0);
	struct tierd_key a = { 0, 0, 0 }, b = { 0, 0, 1 }, c = { 0, 0, 2 }, d = { 0, 0, 3 };
	struct got ga = { 0 }, gb = { 0 }, gd = { 0 }, gc = { 0 };
	struct engine_stats st;
	int counter = 0;

	ga.counter = gb.counter = gc.counter = gd.counter = &counter;
	assert_int_equal(engine_prefetch(e, &a), 0);		/* in flight at once */
	assert_int_equal(engine_prefetch(e, &b), 0);
	assert_int_equal(engine_prefetch(e, &c), 0);
	assert_int_equal(engine_prefetch(e, &c), 0);		/* already on its way */
	assert_int_equal(engine_cancel_prefetch(e, &a), -EBUSY);
	assert_int_equal(engine_cancel_prefetch(e, &c), 0);
	assert_int_equal(engine_cancel_prefetch(e, &c), -ENOENT);
	assert_int_equal(engine_acquire(e, &d, ENGINE_DEMAND, on_done, &gd), 0);
	assert_int_equal(engine_acquire(e, &b, ENGINE_PREFETCH, on_done, &gb), 0);
	assert_int_equal(engine_cancel_prefetch(e, &b), -EBUSY);	/* someone waits */
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(gd.order, 1);	/* demand d before prefetch b */
	assert_int_equal(gb.order, 2);
	assert_int_equal(engine_cancel_prefetch(e, &a), -EALREADY);
	assert_int_equal(engine_acquire(e, &a, ENGINE_DEMAND, on_done, &ga), 0);
	assert_int_equal(ga.calls, 1);	/* prefetched: a hit */
	verify(e, &ga.info);
	assert_int_equal(engine_acquire(e, &c, ENGINE_DEMAND, on_done, &gc), 0);
	assert_int_equal(engine_drain(e), 0);
	verify(e, &gc.info);
	engine_get_stats(e, &st);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.hits, 1);
	engine_destroy(e);
}

/* What the observer heard: per expert of layer 0, owner and bytes. */
struct seen {
	int calls;
	uint32_t owner[EXPERTS];
	uint64_t bytes[EXPERTS], total;
};

static void on_fetch(void *arg, const struct tierd_key *key, uint32_t owner, int err, uint64_t bytes)
{
	struct seen *s = arg;

	assert_int_equal(err, 0);
	assert_int_equal(key->layer, 0);
	s->calls++;
	s->owner[key->expert] = owner;
	s->bytes[key->expert] = bytes;
	s->total += bytes;
}

/*
 * Fetches belong to their first requester; an anonymous prefetch goes to
 * the first demand requester that joins it; hits and joins change nothing.
 * The latency histogram counts every completed fetch.
 */
static void test_fetch_owner(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 1, 0);
	struct tierd_key k0 = { 0, 0, 0 }, k1 = { 0, 0, 1 }, k2 = { 0, 0, 2 }, k3 = { 0, 0, 3 };
	struct got g[6];
	struct engine_stats st;
	struct seen seen = { 0 };
	uint64_t hist = 0;

	memset(g, 0, sizeof(g));
	engine_set_fetch_observer(e, on_fetch, &seen);
	assert_int_equal(engine_acquire_for(e, &k0, ENGINE_DEMAND, 7, on_done, &g[0]), 0);
	assert_int_equal(engine_acquire_for(e, &k0, ENGINE_DEMAND, 8, on_done, &g[1]), 0);	/* joins */
	assert_int_equal(engine_prefetch_for(e, &k1, 9), 0);
	assert_int_equal(engine_acquire_for(e, &k1, ENGINE_DEMAND, 10, on_done, &g[2]), 0);
	assert_int_equal(engine_prefetch(e, &k2), 0);					/* anonymous */
	assert_int_equal(engine_acquire_for(e, &k2, ENGINE_PREFETCH, 11, on_done, &g[3]), 0);
	assert_int_equal(engine_acquire_for(e, &k2, ENGINE_DEMAND, 12, on_done, &g[4]), 0);
	assert_int_equal(engine_acquire(e, &k3, ENGINE_DEMAND, on_done, &g[5]), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(seen.calls, 4);
	assert_int_equal(seen.owner[0], 7);
	assert_int_equal(seen.owner[1], 9);
	assert_int_equal(seen.owner[2], 12);
	assert_int_equal(seen.owner[3], ENGINE_OWNER_NONE);
	engine_get_stats(e, &st);
	assert_int_equal(seen.total, st.bytes_read);
	for (int i = 0; i < EXPERTS; i++)
		assert_true(seen.bytes[i] >= fx->experts[i].bytes);
	for (unsigned i = 0; i < ENGINE_LAT_SLOTS; i++)
		hist += st.fetch_ns_hist[i];
	assert_int_equal(hist, 4);
	assert_true(st.fetch_ns_sum > 0);
	/* A hit is no fetch: the observer hears nothing. */
	assert_int_equal(engine_acquire_for(e, &k0, ENGINE_DEMAND, 13, on_done, &g[0]), 0);
	assert_int_equal(seen.calls, 4);
	engine_set_fetch_observer(e, NULL, NULL);
	for (int i = 0; i < 6; i++) {
		const struct tierd_key *k[] = { &k0, &k0, &k1, &k2, &k2, &k3 };

		assert_int_equal(engine_release(e, k[i]), 0);
	}
	assert_int_equal(engine_release(e, &k0), 0);
	engine_destroy(e);
}

static void test_bad_layout(void **state)
{
	struct fixture *fx = *state;
	struct tierd_conf conf;
	struct engine *e;
	char err[512] = "";
	struct catalog_extent *x1 = fx->experts[1].extents;
	uint64_t saved;

	assert_int_equal(conf_init(&conf), 0);
	conf.pool_size = 8 * MiB;
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	assert_int_equal(engine_create(&e, &conf, err, sizeof(err)), 0);
	/* The tensors of expert 1 are not in file order: three reads. */
	assert_int_equal(fx->experts[1].nextents, 3);
	saved = x1[1].slot_offset;
	/* A read that would not start on a 4 KiB slot boundary. */
	x1[1].slot_offset += 8;
	assert_int_equal(engine_add_model(e, "bad", &fx->cat, false, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "layer 0 expert 1: read 1"));
	/* One reaching past the end of the slot. */
	x1[1].slot_offset = fx->cat.slot_bytes - 4096;
	assert_int_equal(engine_add_model(e, "bad", &fx->cat, false, 0, err, sizeof(err)), -EINVAL);
	/* Two reads on the same slot bytes. */
	x1[1].slot_offset = x1[2].slot_offset;
	assert_int_equal(engine_add_model(e, "bad", &fx->cat, false, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "overlap"));
	x1[1].slot_offset = saved;
	fixture_reset(fx);
	/* A slot bigger than the pool. */
	fx->cat.slot_bytes = 64 * MiB;
	assert_int_equal(engine_add_model(e, "big", &fx->cat, false, 0, err, sizeof(err)), -ENOSPC);
	fx->cat.slot_bytes = 0;
	assert_int_equal(engine_add_model(e, "none", &fx->cat, false, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(engine_model_count(e), 0);
	engine_destroy(e);
	conf_free(&conf);
	fixture_reset(fx);
}

/* The file shrinks under the engine: reads come back short before the
 * recorded end, the fetch fails with EIO and nothing is resident.  The
 * shrinking is a change of the checkpoint: the fetch that did read all its
 * bytes is not served either, and the model stops. */
static void test_fetch_error(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 4, 0);
	struct tierd_key k = { 0, 3, 3 }, first = { 0, 0, 0 };
	struct got g = { 0 }, h = { 0 };
	struct engine_model_status ms;
	struct engine_stats st;

	assert_int_equal(truncate(fx->path, (off_t)(fx->file_size / 2)), 0);
	assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g), 0);
	assert_int_equal(engine_acquire(e, &first, ENGINE_DEMAND, on_done, &h), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.err, -EIO);
	assert_int_equal(h.calls, 1);
	assert_int_equal(h.err, -ESTALE);
	engine_get_stats(e, &st);
	assert_int_equal(st.fetch_errors, 1);
	assert_int_equal(st.pins, 0);
	assert_int_equal(st.bytes_resident, 0);
	assert_int_equal(engine_release(e, &k), -ENOENT);	/* not resident */
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_true(ms.stale);
	engine_destroy(e);
	fixture_reset(fx);
}

/* Writes n bytes of v at off in place, as an editor or a download resumed
 * over the file would. */
static void rewrite(const struct fixture *fx, uint64_t off, size_t n, uint8_t v)
{
	uint8_t buf[4096];
	int fd = open(fx->path, O_WRONLY);

	assert_true(fd >= 0 && n <= sizeof(buf));
	memset(buf, v, n);
	assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	close(fd);
}

/* The file's times far in the past, before the engine opens it: a rewrite
 * within the same timestamp tick as the fixture's write still shows. */
static void age_file(const struct fixture *fx)
{
	struct timespec old[2] = { { 946684800, 0 }, { 946684800, 0 } };

	assert_int_equal(utimensat(AT_FDCWD, fx->path, old, 0), 0);
}

/*
 * Rewritten in place and found by the identity check: the model stops.
 * Unpinned experts leave the pool, a pinned one keeps its old bytes for its
 * holder, nothing more is served (-ESTALE with a reason naming the file),
 * and the old slot goes back when the last pin does.
 */
static void test_stale_in_place(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct tierd_key a = { 0, 0, 0 }, b = { 0, 0, 1 };
	struct got ga = { 0 }, gb = { 0 }, gc = { 0 };
	struct engine_model_status ms;
	struct engine_stats st;
	const char *why;

	age_file(fx);
	e = make(fx, 16 * MiB, 4, 0);
	assert_int_equal(engine_check_files(e), 0);	/* nothing changed yet */
	assert_int_equal(engine_acquire(e, &a, ENGINE_DEMAND, on_done, &ga), 0);
	assert_int_equal(engine_acquire(e, &b, ENGINE_DEMAND, on_done, &gb), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(ga.err, 0);
	assert_int_equal(gb.err, 0);
	assert_int_equal(engine_release(e, &b), 0);	/* a stays pinned */
	assert_null(engine_model_stale_reason(e, 0));

	rewrite(fx, fx->experts[0].tensors[0].offset, 64, 0xee);
	assert_int_equal(engine_check_files(e), 1);
	assert_int_equal(engine_check_files(e), 0);	/* once per change */
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_true(ms.stale);
	assert_int_equal(ms.changes, 1);
	why = engine_model_stale_reason(e, 0);
	assert_non_null(why);
	assert_non_null(strstr(why, fx->path));
	assert_non_null(strstr(why, "on disk"));
	assert_int_equal(engine_acquire(e, &a, ENGINE_DEMAND, on_done, &gc), -ESTALE);
	assert_int_equal(engine_acquire(e, &b, ENGINE_DEMAND, on_done, &gc), -ESTALE);
	assert_int_equal(engine_prefetch(e, &b), -ESTALE);
	assert_int_equal(gc.calls, 0);
	assert_int_equal(engine_evict(e, &b), -ENOENT);		/* left the pool */
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 1);
	assert_int_equal(st.bytes_resident, fx->experts[0].bytes);
	/* The holder still reads the bytes it was given, all of the old file. */
	verify(e, &ga.info);
	assert_int_equal(engine_release(e, &a), 0);
	assert_int_equal(engine_release(e, &a), -ENOENT);
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 0);
	assert_int_equal(st.bytes_resident, 0);
	engine_destroy(e);
	fixture_reset(fx);
}

/*
 * A change while fetches are queued and in flight: the queued ones are told
 * -ESTALE at once, the ones reading are told when their reads end, none is
 * resident, every slot goes back.
 */
static void test_stale_in_flight(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make(fx, 16 * MiB, 1, 0);
	struct got g[LAYERS * EXPERTS];
	struct engine_stats st;
	int told = 0;

	memset(g, 0, sizeof(g));
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };

		assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]), 0);
	}
	assert_int_equal(engine_model_set_stale(e, 0, fx->path, "was written"), 0);
	for (int i = 0; i < LAYERS * EXPERTS; i++)
		told += g[i].calls;
	/* Depth 1: the first is reading, the others were queued. */
	assert_int_equal(told, LAYERS * EXPERTS - 1);
	assert_int_equal(engine_drain(e), 0);
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		assert_int_equal(g[i].calls, 1);
		assert_int_equal(g[i].err, -ESTALE);
	}
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 0);
	assert_int_equal(st.bytes_resident, 0);
	assert_int_equal(st.fetch_errors, 0);
	engine_destroy(e);
}

/* Rewritten while an expert is being read: the check at the end of the
 * fetch sees it, the bytes are not served and the model stops. */
static void test_change_during_fetch(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct tierd_key k = { 0, 3, 1 };
	struct got g = { 0 };
	struct engine_model_status ms;

	age_file(fx);
	e = make(fx, 16 * MiB, 4, 0);
	assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g), 0);
	/* Completions run from engine_drain, on this thread: after the write. */
	rewrite(fx, fx->experts[LAYERS * EXPERTS - 1].tensors[0].offset, 16, 0x11);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.err, -ESTALE);
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_true(ms.stale);
	assert_int_equal(ms.changes, 1);
	engine_destroy(e);
	fixture_reset(fx);
}

/* One layer acquired as a client does it: acquire, wait, tell, release. */
static void layer_step(struct engine *e, uint32_t layer, uint32_t expert, bool release)
{
	struct tierd_key k = { 0, layer, expert };
	struct got g = { 0 };

	assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 1, on_done, &g), 0);
	engine_observe(e, 1, &k, 1);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(g.err, 0);
	if (release)
		assert_int_equal(engine_release(e, &k), 0);
}

/* The fixture's layers are 0 and 3: token t uses expert t % 2 at layer 0
 * and t % 2 + 2 at layer 3, a chain the predictor learns. */
static void teach(struct engine *e, unsigned tokens)
{
	for (unsigned t = 0; t < tokens; t++) {
		layer_step(e, 0, t % 2, true);
		layer_step(e, 3, t % 2 + 2, true);
	}
}

/*
 * The daemon's own prefetch: after layer 0, the expert layer 3 will need
 * is fetched ahead and the acquire finds it (used); a prefetch the acquire
 * shows wrong is cancelled before it is read, its slot freed.
 */
static void test_prefetch_ahead(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct engine_placement pl;
	struct engine_stats st;
	struct tierd_key l3[2] = { { 0, 3, 2 }, { 0, 3, 3 } }, filler = { 0, 0, 3 };

	make_prefetch = true;
	e = make(fx, 16 * MiB, 1, 0);
	make_prefetch = false;
	teach(e, 8);
	/* Layer 3's expert is fetched ahead: acquiring it is a hit. */
	assert_int_equal(engine_evict(e, &l3[0]), 0);
	assert_int_equal(engine_evict(e, &l3[1]), 0);
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	{
		struct engine_placement before = pl;

		layer_step(e, 0, 0, true);	/* token 8: expert 0, then 2 */
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(engine_evict_check(e, &l3[0]), 0);	/* resident, not pinned */
		layer_step(e, 3, 2, true);
		assert_int_equal(engine_model_placement(e, 0, &pl), 0);
		assert_int_equal(pl.prefetch_ahead, before.prefetch_ahead + 1);
		assert_int_equal(pl.prefetch_used, before.prefetch_used + 1);
		assert_int_equal(pl.hits, before.hits + 2);
	}
	/* Token 9 should use 1 then 3; the client takes 1 then 2.  The queue
	 * (depth 1) is held by a client's prefetch, so the daemon's fetch of
	 * (3, 3) waits and can be cancelled. */
	assert_int_equal(engine_evict_check(e, &l3[1]), -ENOENT);
	assert_int_equal(engine_evict(e, &l3[0]), 0);
	assert_int_equal(engine_prefetch(e, &filler), 0);
	{
		struct tierd_key k = { 0, 0, 1 };
		struct got g = { 0 };

		assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 1, on_done, &g), 0);
		assert_int_equal(g.calls, 1);	/* resident: a hit, no wait */
		engine_observe(e, 1, &k, 1);
	}
	assert_int_equal(engine_evict_check(e, &l3[1]), -EBUSY);	/* on its way */
	{
		struct tierd_key k = { 0, 3, 2 };
		struct got g = { 0 };

		assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 1, on_done, &g), 0);
		engine_observe(e, 1, &k, 1);
		/* Gone at once, slot and all. */
		assert_int_equal(engine_evict_check(e, &l3[1]), -ENOENT);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(engine_release(e, &k), 0);
	}
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	assert_int_equal(pl.prefetch_cancelled, 1);
	engine_get_stats(e, &st);
	assert_int_equal(st.cancelled, 1);
	assert_int_equal(st.pins, 1);		/* (0, 1) still held */
	engine_destroy(e);
}

/*
 * A prefetch no acquire settles must not hold the budget forever: with room
 * for one prefetch not yet used, one evicted before its layer ran (the
 * client skipped it) no longer counts, and the next prefetch is issued.
 */
static void test_prefetch_budget_moves_on(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct engine_placement pl;
	struct tierd_key l3[2] = { { 0, 3, 2 }, { 0, 3, 3 } };
	uint64_t ahead;

	make_prefetch = true;
	make_prefetch_slots = 1;
	e = make(fx, 16 * MiB, 2, 0);
	make_prefetch = false;
	make_prefetch_slots = 0;
	teach(e, 8);
	assert_int_equal(engine_evict(e, &l3[0]), 0);
	assert_int_equal(engine_evict(e, &l3[1]), 0);
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	ahead = pl.prefetch_ahead;
	/* Token 8 runs layer 0 (expert 0): (3, 2) fetched ahead, then evicted
	 * unused; the client skips layer 3 and runs layer 0 again. */
	layer_step(e, 0, 0, true);
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	assert_int_equal(pl.prefetch_ahead, ahead + 1);
	assert_int_equal(engine_evict(e, &l3[0]), 0);
	layer_step(e, 0, 0, true);
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	assert_int_equal(pl.prefetch_ahead, ahead + 2);
	assert_int_equal(pl.prefetch_wasted, 1);
	assert_int_equal(engine_evict_check(e, &l3[0]), 0);	/* fetched again */
	engine_destroy(e);
}

/*
 * Prefetch never evicts a pinned expert (one in use): a pool full of pinned
 * experts gets no daemon prefetch at all, and every byte stays.
 */
static void test_prefetch_spares_pinned(void **state)
{
	struct fixture *fx = *state;
	struct engine *e;
	struct engine_placement pl;
	struct engine_stats st;
	struct got g[LAYERS * EXPERTS];
	int slots = 0;
	uint64_t evictions;

	make_prefetch = true;
	e = make(fx, 2 * MiB, 2, 0);
	make_prefetch = false;
	teach(e, 4);
	engine_get_stats(e, &st);
	evictions = st.evictions;
	memset(g, 0, sizeof(g));
	/* Pin what fits, layer 0's first: the chain's next needs are not resident. */
	for (int i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };
		int r = engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]);

		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		assert_int_equal(engine_drain(e), 0);
		slots++;
	}
	assert_true(slots >= 1 && slots < LAYERS * EXPERTS);
	engine_get_stats(e, &st);
	evictions = st.evictions;
	assert_int_equal(engine_model_placement(e, 0, &pl), 0);
	{
		uint64_t ahead = pl.prefetch_ahead;
		struct tierd_key k = { 0, 0, 0 };

		/* The layer is pinned already: a hit, then the daemon would fetch
		 * layer 3 ahead, but every slot is pinned. */
		engine_observe(e, 1, &k, 1);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(engine_model_placement(e, 0, &pl), 0);
		assert_int_equal(pl.prefetch_ahead, ahead);
	}
	engine_get_stats(e, &st);
	assert_int_equal(st.evictions, evictions);
	assert_int_equal(st.pins, (uint64_t)slots);
	for (int i = 0; i < slots; i++)
		verify(e, &g[i].info);
	engine_destroy(e);
}

/* Owners 100 and up work on node 1, the rest on node 0. */
static int owner_node_pool(void *arg, uint32_t owner)
{
	return engine_pool_of_node(arg, owner >= 100 ? 1 : 0);
}

static struct engine *make_two_nodes(struct fixture *fx, uint64_t size0, uint64_t size1)
{
	struct tierd_conf conf;
	struct engine *e = NULL;
	struct topo t;
	char err[512] = "";
	int r;

	assert_int_equal(topo_parse(&t, "0:0-1;1:2-3", err, sizeof(err)), 0);
	assert_int_equal(conf_init(&conf), 0);
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	conf.queue_depth = 4;
	conf.request_size = 128 * KiB;
	conf.npool_nodes = 2;
	conf.pool_nodes[0] = 0;
	conf.pool_nodes[1] = 1;
	conf.npool_sizes = 2;
	conf.pool_size_node[0] = 0;
	conf.pool_size_bytes[0] = size0;
	conf.pool_size_node[1] = 1;
	conf.pool_size_bytes[1] = size1;
	r = engine_create_topo(&e, &conf, &t, err, sizeof(err));
	conf_free(&conf);
	if (r < 0)
		fail_msg("engine_create_topo: %s", err);
	r = engine_add_model(e, "hand", &fx->cat, false, 0, err, sizeof(err));
	if (r < 0)
		fail_msg("engine_add_model: %s", err);
	return e;
}

static void check_pool_sums(const struct engine *e)
{
	struct engine_pool_stats ps;
	struct engine_stats st;
	uint64_t bytes = 0, fetches = 0, served = 0, evictions = 0;

	engine_get_stats(e, &st);
	for (int p = 0; p < engine_pool_count(e); p++) {
		assert_int_equal(engine_get_pool_stats(e, (uint32_t)p, &ps), 0);
		bytes += ps.bytes_resident;
		fetches += ps.fetches;
		served += ps.served_local + ps.served_remote;
		evictions += ps.evictions;
	}
	assert_int_equal(bytes, st.bytes_resident);
	assert_int_equal(fetches, st.fetches);
	assert_int_equal(served, st.hits + st.misses);
	assert_int_equal(evictions, st.evictions);
	assert_int_equal(engine_get_pool_stats(e, (uint32_t)engine_pool_count(e), &ps), -ENOENT);
}

/*
 * Two pools on a synthetic two-node machine: a fetch lands in the pool of the
 * node of the owner that asked first; an owner on the other node is served
 * that copy (remote); eviction for a slot in one pool never touches the
 * other; the counters per pool add up to the engine's.
 */
static void test_numa_pools(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make_two_nodes(fx, 8 * MiB, 2 * MiB);
	struct tierd_key k0 = { 0, 0, 0 }, k1 = { 0, 0, 1 };
	struct engine_pool_stats p0, p1;
	struct got g[4];

	memset(g, 0, sizeof(g));
	assert_int_equal(engine_pool_count(e), 2);
	assert_int_equal(engine_pool_node(e, 0), 0);
	assert_int_equal(engine_pool_node(e, 1), 1);
	assert_int_equal(engine_pool_size(e, 0), 8 * MiB);
	assert_int_equal(engine_pool_size(e, 1), 2 * MiB);
	assert_int_equal(engine_pool_of_node(e, 1), 1);
	assert_int_equal(engine_pool_of_node(e, 2), -ENOENT);
	assert_ptr_not_equal(engine_pool_base(e, 0), engine_pool_base(e, 1));
	engine_set_owner_pool(e, owner_node_pool, e);

	assert_int_equal(engine_acquire_for(e, &k0, ENGINE_DEMAND, 101, on_done, &g[0]), 0);
	assert_int_equal(engine_acquire_for(e, &k1, ENGINE_DEMAND, 7, on_done, &g[1]), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(g[0].err, 0);
	assert_int_equal(g[0].info.pool, 1);
	assert_int_equal(g[1].info.pool, 0);
	verify(e, &g[0].info);
	verify(e, &g[1].info);
	/* Node 0 asks for what node 1 fetched: the one copy, remote. */
	assert_int_equal(engine_acquire_for(e, &k0, ENGINE_DEMAND, 8, on_done, &g[2]), 0);
	assert_int_equal(g[2].calls, 1);
	assert_int_equal(g[2].info.pool, 1);
	assert_int_equal(g[2].info.offset, g[0].info.offset);
	assert_int_equal(engine_get_pool_stats(e, 0, &p0), 0);
	assert_int_equal(engine_get_pool_stats(e, 1, &p1), 0);
	assert_int_equal(p0.served_local, 1);
	assert_int_equal(p0.served_remote, 1);
	assert_int_equal(p1.served_local, 1);
	assert_int_equal(p1.served_remote, 0);
	assert_int_equal(p1.bytes_resident, fx->experts[0].bytes);
	assert_int_equal(p0.bytes_resident, fx->experts[1].bytes);
	assert_int_equal(p1.experts_resident, 1);
	check_pool_sums(e);
	for (int i = 0; i < 3; i++)
		assert_int_equal(engine_release(e, i == 1 ? &k1 : &k0), 0);

	/* Node 1 reads every expert of layer 3 (and k0 again): its 2 MiB pool
	 * holds fewer than that, so it evicts, only from its own pool. */
	for (uint32_t x = 0; x < EXPERTS; x++) {
		struct tierd_key k = { 0, 3, x };
		struct got gg = { 0 };

		assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 100 + x, on_done, &gg), 0);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(gg.err, 0);
		assert_int_equal(gg.info.pool, 1);
		verify(e, &gg.info);
		assert_int_equal(engine_release(e, &k), 0);
	}
	assert_int_equal(engine_get_pool_stats(e, 0, &p0), 0);
	assert_int_equal(engine_get_pool_stats(e, 1, &p1), 0);
	assert_true(p1.evictions > 0);
	assert_int_equal(p0.evictions, 0);
	assert_int_equal(engine_evict_check(e, &k1), 0);	/* still resident in pool 0 */
	check_pool_sums(e);

	/* A prefetch lands in the pool of whoever asked for it. */
	{
		struct tierd_key k = { 0, 0, 2 };
		struct got gg = { 0 };

		assert_int_equal(engine_prefetch_for(e, &k, 150), 0);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 3, on_done, &gg), 0);
		assert_int_equal(gg.info.pool, 1);
		assert_int_equal(engine_release(e, &k), 0);
	}
	/* Whoever the engine is not told about is on pool 0. */
	engine_set_owner_pool(e, NULL, NULL);
	{
		struct tierd_key k = { 0, 0, 3 };
		struct got gg = { 0 };

		assert_int_equal(engine_acquire_for(e, &k, ENGINE_DEMAND, 199, on_done, &gg), 0);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(gg.info.pool, 0);
		assert_int_equal(engine_release(e, &k), 0);
	}
	check_pool_sums(e);
	engine_destroy(e);
}

/* Node 1's pool full of pinned experts: free room on node 0 serves the next
 * one (remote) rather than a refusal; with no room anywhere, -ENOSPC. */
static void test_numa_full_pool(void **state)
{
	struct fixture *fx = *state;
	struct engine *e = make_two_nodes(fx, 2 * MiB, 2 * MiB);
	struct engine_pool_stats p0, p1;
	struct got g[LAYERS * EXPERTS];
	int placed[2] = { 0, 0 }, i;

	memset(g, 0, sizeof(g));
	engine_set_owner_pool(e, owner_node_pool, e);
	for (i = 0; i < LAYERS * EXPERTS; i++) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };
		int r = engine_acquire_for(e, &k, ENGINE_DEMAND, 100, on_done, &g[i]);

		if (r == -ENOSPC)
			break;
		assert_int_equal(r, 0);
		assert_int_equal(engine_drain(e), 0);
		assert_int_equal(g[i].err, 0);
		verify(e, &g[i].info);
		placed[g[i].info.pool]++;
	}
	/* Both pools filled, node 1's first; then nothing is left. */
	assert_true(placed[1] > 0 && placed[0] > 0);
	assert_true(i < LAYERS * EXPERTS);
	assert_int_equal(g[0].info.pool, 1);
	assert_int_equal(engine_get_pool_stats(e, 0, &p0), 0);
	assert_int_equal(engine_get_pool_stats(e, 1, &p1), 0);
	assert_int_equal(p1.served_local, placed[1]);
	assert_int_equal(p1.served_remote, placed[0]);
	assert_int_equal(p0.served_local + p0.served_remote, 0);
	assert_int_equal(p0.evictions + p1.evictions, 0);
	check_pool_sums(e);
	while (i--) {
		struct tierd_key k = { 0, fx->experts[i].layer, fx->experts[i].expert };

		assert_int_equal(engine_release(e, &k), 0);
	}
	engine_destroy(e);
}

/* A pool too small for one expert is refused, naming its node. */
static void test_numa_small_pool(void **state)
{
	struct fixture *fx = *state;
	struct tierd_conf conf;
	struct engine *e = NULL;
	struct topo t;
	char err[512] = "";
	struct catalog_expert *big = &fx->experts[0];
	uint64_t saved = fx->cat.slot_bytes;

	assert_int_equal(topo_parse(&t, "0:0;1:1", err, sizeof(err)), 0);
	assert_int_equal(conf_init(&conf), 0);
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	conf.pool_nodes_auto = true;
	conf.pool_size = 2 * MiB;
	assert_int_equal(engine_create_topo(&e, &conf, &t, err, sizeof(err)), 0);
	conf_free(&conf);
	(void)big;
	fx->cat.slot_bytes = 3 * MiB;
	assert_int_equal(engine_add_model(e, "hand", &fx->cat, false, 0, err, sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "NUMA node 0"));
	fx->cat.slot_bytes = saved;
	engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_byte),
		cmocka_unit_test(test_shared_and_hit),
		cmocka_unit_test(test_evict_and_pins),
		cmocka_unit_test(test_evict_across_models),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_prefetch_cancel),
		cmocka_unit_test(test_prefetch_ahead),
		cmocka_unit_test(test_prefetch_spares_pinned),
		cmocka_unit_test(test_prefetch_budget_moves_on),
		cmocka_unit_test(test_fetch_owner),
		cmocka_unit_test(test_bad_layout),
		cmocka_unit_test(test_fetch_error),
		cmocka_unit_test(test_stale_in_place),
		cmocka_unit_test(test_stale_in_flight),
		cmocka_unit_test(test_change_during_fetch),
		cmocka_unit_test(test_numa_pools),
		cmocka_unit_test(test_numa_full_pool),
		cmocka_unit_test(test_numa_small_pool),
	};

	log_init("test-engine", LOG_CRIT);
	return cmocka_run_group_tests(tests, setup, teardown);
}
