/* SPDX-License-Identifier: MIT */
/*
 * Integration: demo checkpoints in each naming (per-expert tensors, FP8 with
 * scales, fused experts), opened by the catalog, every expert fetched through
 * the engine, every byte checked against the demo-store contents.  Once with
 * a pool that holds everything, once with a pool of a few slots so that
 * experts are evicted and fetched again into reused slots.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog.h"
#include "demostore.h"
#include "engine.h"
#include "fetch.h"
#include "log.h"

struct got {
	int calls, err;
	struct engine_slot_info info;
};

static void on_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct got *g = arg;

	g->calls++;
	g->err = err;
	if (info)
		g->info = *info;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[4096 + 512];

	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

/* Every expert through the engine, 'batch' acquires at a time. */
static void fetch_all(const struct demostore_opts *dopts, uint64_t pool_slots, uint32_t batch)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	struct tierd_conf conf;
	struct catalog *cat;
	struct engine *e;
	struct engine_stats st;
	struct got *g;
	char dir[4096], err[1024] = "";
	uint64_t total = 0;

	snprintf(dir, sizeof(dir), "%s/test-engine-demo.XXXXXX", tmp);
	assert_non_null(mkdtemp(dir));
	if (demostore_write(dir, dopts, err, sizeof(err)) < 0)
		fail_msg("demostore_write: %s", err);
	assert_int_equal(conf_init(&conf), 0);
	if (catalog_open(&cat, dir, NULL, &conf, err, sizeof(err)) < 0)
		fail_msg("catalog_open: %s", err);
	assert_int_equal(cat->nexperts, dopts->layers * dopts->experts);
	/* The pool is whole 2 MiB chunks; small slots share a chunk. */
	conf.pool_size = (pool_slots * cat->slot_bytes + (2 << 20) - 1) & ~((2ULL << 20) - 1);
	conf.pool_lock = geteuid() == 0;
	conf.hugepages = CONF_HUGEPAGES_NO;	/* test-pool may be borrowing hugetlb pages */
	conf.queue_depth = 8;
	conf.request_size = 64 << 10;
	if (engine_create(&e, &conf, err, sizeof(err)) < 0)
		fail_msg("engine_create: %s", err);
	if (engine_add_model(e, "demo", cat, true, 0, err, sizeof(err)) < 0)
		fail_msg("engine_add_model: %s", err);
	g = calloc(cat->nexperts, sizeof(*g));
	assert_non_null(g);
	for (uint32_t first = 0; first < cat->nexperts; first += batch) {
		uint32_t n = cat->nexperts - first < batch ? cat->nexperts - first : batch;

		for (uint32_t i = first; i < first + n; i++) {
			struct tierd_key k = { 0, cat->experts[i].layer, cat->experts[i].expert };

			assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, &g[i]), 0);
		}
		assert_int_equal(engine_drain(e), 0);
		for (uint32_t i = first; i < first + n; i++) {
			struct tierd_key k = { 0, cat->experts[i].layer, cat->experts[i].expert };
			const uint8_t *slot = (const uint8_t *)engine_pool_base(e, 0) + g[i].info.offset;

			assert_int_equal(g[i].calls, 1);
			assert_int_equal(g[i].err, 0);
			assert_ptr_equal(g[i].info.expert, &cat->experts[i]);
			assert_true(g[i].info.offset + cat->slot_bytes <= engine_pool_size(e, 0));
			assert_int_equal(demostore_verify_expert(g[i].info.expert, slot), 0);
			total += cat->experts[i].bytes;
			assert_int_equal(engine_release(e, &k), 0);
		}
	}
	engine_get_stats(e, &st);
	/* As root the pool is registered with io_uring: no read without it. */
	if (geteuid() == 0) {
		struct fetch_stats fs;

		engine_fetch_stats(e, &fs);
		assert_true(fs.requests > 0);
		assert_int_equal(fs.requests_fixed, fs.requests);
	}
	assert_int_equal(st.fetch_errors, 0);
	assert_int_equal(st.fetches, cat->nexperts);
	assert_int_equal(st.pins, 0);
	assert_true(st.bytes_read >= total);
	/* Every expert is either still resident or was evicted. */
	{
		uint64_t resident = 0;

		for (uint32_t i = 0; i < cat->nexperts; i++)
			resident += engine_evict(e, &(struct tierd_key){ 0, cat->experts[i].layer,
									  cat->experts[i].expert }) == 0;
		assert_int_equal(resident + st.evictions, cat->nexperts);
		/* The small pools below really are too small for the store. */
		if (pool_slots < cat->nexperts)
			assert_true(st.evictions > 0);
	}
	free(g);
	engine_destroy(e);
	conf_free(&conf);
	rm_dir(dir);
}

static void test_mixtral(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	o.layers = 3;
	o.experts = 6;
	o.hidden = 250;		/* tensors of odd sizes: unaligned offsets everywhere */
	o.ffn = 201;
	o.shards = 2;
	o.layout = DEMOSTORE_MIXTRAL;
	fetch_all(&o, 64, 18);
	fetch_all(&o, 3, 3);
}

static void test_qwen_fp8(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	o.layers = 2;
	o.experts = 8;
	o.hidden = 256;
	o.ffn = 384;
	o.shards = 2;
	o.dtype = TIERD_DTYPE_F8_E4M3;	/* weights plus block scales */
	o.layout = DEMOSTORE_QWEN;
	fetch_all(&o, 64, 16);
	fetch_all(&o, 2, 2);
}

static void test_fused(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	o.layers = 2;
	o.experts = 5;
	o.hidden = 200;
	o.ffn = 333;
	o.shards = 1;
	o.layout = DEMOSTORE_FUSED;
	fetch_all(&o, 64, 10);
	fetch_all(&o, 2, 1);
}

/* A bigger expert (several requests each, slots over 2 MiB). */
static void test_large_experts(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	o.layers = 2;
	o.experts = 4;
	o.hidden = 1024;
	o.ffn = 1100;
	o.shards = 2;
	o.layout = DEMOSTORE_MIXTRAL;
	fetch_all(&o, 3, 2);
}

static void acquire_one(struct engine *e, uint32_t layer, uint32_t expert, struct got *g)
{
	struct tierd_key k = { 0, layer, expert };

	memset(g, 0, sizeof(*g));
	assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_done, g), 0);
	assert_int_equal(engine_drain(e), 0);
	assert_int_equal(g->calls, 1);
	assert_int_equal(g->err, 0);
	assert_int_equal(demostore_verify_expert(g->info.expert,
						 (const uint8_t *)engine_pool_base(e, 0) + g->info.offset), 0);
}

/*
 * A checkpoint rewritten while served: inotify stops the model, a pinned
 * expert keeps its old slot, a reload serves the files anew from a new slot,
 * and the old slot goes back with the last pin on that expert.  A reload to a
 * checkpoint of another shape is refused and the model stays stopped.
 */
static void test_reload(void **state)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	struct tierd_key x = { 0, 0, 0 }, y = { 0, 0, 1 };
	struct demostore_opts o;
	struct engine_model_status ms;
	struct engine_stats st;
	struct tierd_conf conf;
	struct catalog *cat;
	struct engine *e;
	struct got gx, gy, gx2;
	char dir[4096], err[1024] = "";
	uint64_t xbytes;

	demostore_opts_default(&o);
	o.layers = 2;
	o.experts = 4;
	o.shards = 2;
	snprintf(dir, sizeof(dir), "%s/test-engine-demo.XXXXXX", tmp);
	assert_non_null(mkdtemp(dir));
	if (demostore_write(dir, &o, err, sizeof(err)) < 0)
		fail_msg("demostore_write: %s", err);
	assert_int_equal(conf_init(&conf), 0);
	if (catalog_open(&cat, dir, NULL, &conf, err, sizeof(err)) < 0)
		fail_msg("catalog_open: %s", err);
	conf.pool_size = 8 << 20;
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	if (engine_create(&e, &conf, err, sizeof(err)) < 0)
		fail_msg("engine_create: %s", err);
	if (engine_add_model(e, "demo", cat, true, 0, err, sizeof(err)) < 0)
		fail_msg("engine_add_model: %s", err);
	if (engine_watch_start(e) < 0)
		skip();		/* no inotify here: test-engine covers the checks without it */
	acquire_one(e, 0, 0, &gx);
	xbytes = gx.info.expert->bytes;
	acquire_one(e, 0, 1, &gy);
	assert_int_equal(engine_release(e, &y), 0);
	assert_int_equal(engine_model_reload(e, 0, &conf, err, sizeof(err)), -EALREADY);

	/* The same bytes written again in place: still a change. */
	if (demostore_write(dir, &o, err, sizeof(err)) < 0)
		fail_msg("demostore_write: %s", err);
	assert_int_equal(engine_watch_process(e), 0);
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_true(ms.stale);
	assert_int_equal(engine_acquire(e, &x, ENGINE_DEMAND, on_done, &gx2), -ESTALE);

	if (engine_model_reload(e, 0, &conf, err, sizeof(err)) < 0)
		fail_msg("engine_model_reload: %s", err);
	assert_int_equal(engine_model_reload(e, 0, &conf, err, sizeof(err)), -EALREADY);
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_false(ms.stale);
	assert_int_equal(ms.reloads, 1);
	/* A new slot: the old one is still the first holder's. */
	acquire_one(e, 0, 0, &gx2);
	assert_true(gx2.info.offset != gx.info.offset);
	assert_int_equal(demostore_verify_expert(gx.info.expert,
						 (const uint8_t *)engine_pool_base(e, 0) + gx.info.offset), 0);
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 2);
	assert_int_equal(st.bytes_resident, 2 * xbytes);
	assert_int_equal(engine_release(e, &x), 0);
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 1);
	assert_int_equal(st.bytes_resident, 2 * xbytes);	/* who released is not known */
	assert_int_equal(engine_release(e, &x), 0);
	engine_get_stats(e, &st);
	assert_int_equal(st.pins, 0);
	assert_int_equal(st.bytes_resident, xbytes);		/* the new one, unpinned */
	assert_int_equal(engine_release(e, &x), -EINVAL);

	/* Another shape: refused, still stopped. */
	o.experts = 6;
	if (demostore_write(dir, &o, err, sizeof(err)) < 0)
		fail_msg("demostore_write: %s", err);
	assert_int_equal(engine_watch_process(e), 0);
	assert_int_equal(engine_model_status(e, 0, &ms), 0);
	assert_true(ms.stale);
	assert_int_equal(ms.changes, 2);
	assert_int_equal(engine_model_reload(e, 0, &conf, err, sizeof(err)), -EXDEV);
	assert_non_null(strstr(err, "restart"));
	assert_int_equal(engine_acquire(e, &y, ENGINE_DEMAND, on_done, &gy), -ESTALE);
	engine_get_stats(e, &st);
	assert_int_equal(st.bytes_resident, 0);
	engine_destroy(e);
	conf_free(&conf);
	rm_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixtral),
		cmocka_unit_test(test_qwen_fp8),
		cmocka_unit_test(test_fused),
		cmocka_unit_test(test_large_experts),
		cmocka_unit_test(test_reload),
	};

	log_init("test-engine-demo", LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
