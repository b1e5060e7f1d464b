/* SPDX-License-Identifier: MIT */
/*
 * The planner's measured routing (client/plan/plan_trace.c): distinct
 * experts per batch and the busiest GPU from small traces counted by hand
 * (the shared JSON layout and a recording in tierd's own format),
 * the shared routing trace (read from ../shared beside the source tree: its
 * absence is a failure), hit-rate curves through the replay lab against the
 * trace's LRU reference, malformed traces refused with the reader's message,
 * and plan_select following a measured hit-rate curve.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "plan.h"
#include "plan_model.h"
#include "plan_trace.h"
#include "trace.h"

#define SHARED_TRACE	"/traces/granite-3.0-1b-a400m.json"

static char tmpdir[] = "/tmp/test-plan-trace-XXXXXX";

/* $TIERD_SHARED_DIR (set by make check, distcheck included), else ../shared
 * beside the sources. */
static void shared_path(char *buf, size_t len)
{
	const char *shared = getenv("TIERD_SHARED_DIR"), *top = getenv("top_srcdir");

	if (shared && *shared)
		snprintf(buf, len, "%s" SHARED_TRACE, shared);
	else
		snprintf(buf, len, "%s/../shared" SHARED_TRACE, top ? top : "..");
}

static const char *write_tmp(const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	return path;
}

static struct plan_trace *load_ok(const char *path)
{
	struct plan_trace *t = NULL;
	char err[512] = "";

	if (plan_trace_load(&t, path, err, sizeof(err)) < 0)
		fail_msg("%s: %s", path, err);
	return t;
}

/*
 * 4 experts, top-2, 2 layers; decode rows (layer 0, layer 1):
 *   a: {0,1} {0,1} | {2,3} {0,1}
 *   b: {0,1} {2,3} | {0,2} {1,3}
 */
static const char hand[] =
	"{\"model\": \"hand\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 2, \"prompts\": {"
	"\"a\": {\"prompt_len\": 1, \"prefill\": [[[3,2],[3,2]]], "
	"        \"decode\": [[[0,1],[1,0]], [[2,3],[0,1]]]},"
	"\"b\": {\"prompt_len\": 1, \"prefill\": [[[3,2],[3,2]]], "
	"        \"decode\": [[[0,1],[2,3]], [[0,2],[1,3]]]}}}";

static void test_hand_histogram(void **state)
{
	struct plan_trace *t = load_ok(write_tmp("hand.json", hand));
	const struct plan_trace_shape *sh = plan_trace_shape(t);
	struct plan_trace_batch info;
	double freq[5];
	char err[256];

	assert_int_equal(sh->nseqs, 2);
	assert_int_equal(sh->nrows, 4);
	assert_int_equal(sh->nlayers, 2);
	assert_int_equal(sh->nexperts, 4);
	assert_int_equal(sh->top_k, 2);
	assert_string_equal(sh->model, "hand");

	/* Batch 1: every row of both sequences, 2 each per layer: all d = 2.
	 * On 2 GPUs ({0,1}, {2,3}) the busiest holds 2 except b's second row. */
	assert_int_equal(plan_trace_distinct(t, 1, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[2] == 8 && freq[0] + freq[1] + freq[3] + freq[4] == 0);
	assert_int_equal(info.samples, 8);
	assert_false(info.repeats);
	assert_true(fabs(info.ep_max - 14.0 / 8) < 1e-12);

	/* Batch 2: a and b side by side.  Step 0: layer 0 {0,1} (2), layer 1
	 * {0,1,2,3} (4); step 1: {0,2,3} (3), {0,1,3} (3); both rotations alike. */
	assert_int_equal(plan_trace_distinct(t, 2, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[0] == 0 && freq[1] == 0 && freq[2] == 2 && freq[3] == 4 && freq[4] == 2);
	assert_true(fabs(info.ep_max - 2) < 1e-12);

	/* Batch 4: two streams per sequence, at rows 0 and 1: every row at once. */
	assert_int_equal(plan_trace_distinct(t, 4, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[4] == 8);
	assert_false(info.repeats);
	/* Batch 8: four streams on two rows: rows repeat. */
	assert_int_equal(plan_trace_distinct(t, 8, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[4] == 8);
	assert_true(info.repeats);

	/* Too few bins for the experts. */
	assert_int_equal(plan_trace_distinct(t, 1, 2, freq, 4, &info, err, sizeof(err)), -EINVAL);
	plan_trace_free(t);
}

/*
 * The same routing as `hand`, recorded by the daemon (tierd-trace-v1): two
 * clients interleaved in time, token indices as reported, one layer's set
 * split over two acquires, and a second model that is not counted.
 */
static void test_recording(void **state)
{
	static const struct trace_model_desc models[] = {
		{ .name = "hand", .nlayers = 2, .nexperts = 4, .top_k = 2 },
		{ .name = "other", .nlayers = 1, .nexperts = 2, .top_k = 1 },
	};
	/* client, seq, token, model, layer, experts */
	static const struct { uint32_t c, s, tok, m, l, n, e[2]; } rec[] = {
		{ 1, 7, 5, 0, 0, 1, { 0 } }, { 1, 7, 5, 0, 0, 1, { 1 } }, { 2, 9, 0, 0, 0, 2, { 0, 1 } },
		{ 1, 7, 5, 0, 1, 2, { 1, 0 } }, { 2, 9, 0, 0, 1, 2, { 2, 3 } }, { 3, 1, 0, 1, 0, 1, { 1 } },
		{ 2, 9, 1, 0, 0, 2, { 0, 2 } }, { 1, 7, 6, 0, 0, 2, { 2, 3 } }, { 1, 7, 6, 0, 1, 2, { 0, 1 } },
		{ 2, 9, 1, 0, 1, 2, { 1, 3 } },
	};
	char path[512], err[512] = "";
	struct trace_writer *w = NULL;
	struct plan_trace *t;
	struct plan_trace_batch info;
	double freq[5];

	snprintf(path, sizeof(path), "%s/rec.trace", tmpdir);
	if (trace_writer_create(&w, path, models, 2, NULL, 0, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < sizeof(rec) / sizeof(rec[0]); i++) {
		struct trace_event ev = {
			.t_ns = 1000 * i, .client = rec[i].c, .seq = rec[i].s, .token = rec[i].tok,
			.kind = TRACE_ACQUIRE, .model = rec[i].m, .layer = rec[i].l, .nexperts = rec[i].n,
		};

		memcpy(ev.experts, rec[i].e, sizeof(rec[i].e));
		if (trace_writer_add(w, &ev, err, sizeof(err)) < 0)
			fail_msg("%s", err);
	}
	if (trace_writer_close(w, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	t = load_ok(path);
	assert_string_equal(plan_trace_shape(t)->format, "tierd-trace-v1");
	assert_int_equal(plan_trace_shape(t)->nseqs, 2);
	assert_int_equal(plan_trace_shape(t)->nrows, 4);
	assert_int_equal(plan_trace_distinct(t, 1, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[2] == 8 && fabs(info.ep_max - 14.0 / 8) < 1e-12);
	assert_int_equal(plan_trace_distinct(t, 2, 2, freq, 5, &info, err, sizeof(err)), 0);
	assert_true(freq[0] == 0 && freq[1] == 0 && freq[2] == 2 && freq[3] == 4 && freq[4] == 2);
	plan_trace_free(t);
	unlink(path);
}

/*
 * One layer, 4 experts, top-1: decode 0 1 0 1.  LRU with 2 slots (half the
 * keys) misses the first two and hits the last two; with 1 slot it never
 * hits; with 4 it does as with 2.
 */
static void test_hand_hit_curve(void **state)
{
	static const char text[] =
		"{\"model\": \"m\", \"num_layers\": 1, \"num_experts\": 4, \"top_k\": 1, \"prompts\": {"
		"\"a\": {\"prompt_len\": 0, \"prefill\": [], \"decode\": [[[0]], [[1]], [[0]], [[1]]]}}}";
	static const double pool[] = { 0.25, 0.5, 1 };
	struct plan_trace *t = load_ok(write_tmp("lru.json", text));
	double hit[3];
	char err[256];

	assert_int_equal(plan_trace_hit_curve(t, 1, "lru", pool, 3, hit, err, sizeof(err)), 0);
	assert_true(hit[0] == 0 && hit[1] == 0.5 && hit[2] == 0.5);
	/* Batch 2: streams at rows 0 and 2 read the same expert each step. */
	assert_int_equal(plan_trace_hit_curve(t, 2, "lru", pool, 3, hit, err, sizeof(err)), 0);
	assert_true(hit[0] == 0 && hit[1] == 0.5 && hit[2] == 0.5);
	/* An unknown policy is the replay lab's error. */
	assert_int_equal(plan_trace_hit_curve(t, 1, "fifo", pool, 3, hit, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "fifo"));
	plan_trace_free(t);
}

/* A pool smaller than a layer's set cannot serve it: NaN, not a number. */
static void test_hit_curve_too_small(void **state)
{
	static const double pool[] = { 0.25, 0.5 };
	struct plan_trace *t = load_ok(write_tmp("hand.json", hand));
	double hit[2];
	char err[256];

	/* 8 keys; batch 2 needs all 4 of a layer at once: 2 slots cannot, 4 can. */
	assert_int_equal(plan_trace_hit_curve(t, 2, "lru", pool, 2, hit, err, sizeof(err)), 0);
	assert_true(isnan(hit[0]));
	assert_false(isnan(hit[1]));
	plan_trace_free(t);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"{\"model\": \"m\", \"num_layers\": 1, \"num_experts\": 4, \"top_k\": 2, \"prompts\": {"
		"\"a\": {\"prefill\": [], \"decode\": [[[0, 9]]]}}}",
		"{\"model\": \"m\", \"num_layers\": 1,",
		"{\"model\": \"m\", \"num_layers\": 1, \"num_experts\": 4, \"top_k\": 1, \"prompts\": {"
		"\"a\": {\"prefill\": [[[1]]], \"decode\": []}}}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *path = write_tmp("bad.json", bad[i]);
		struct trace_reader *rd = NULL;
		struct plan_trace *t = NULL;
		char err[512] = "", want[512] = "";
		int r = trace_open(&rd, path, want, sizeof(want));

		trace_close(rd);
		assert_int_equal(plan_trace_load(&t, path, err, sizeof(err)), -EINVAL);
		assert_null(t);
		if (r < 0)	/* the reader's own message, untouched */
			assert_string_equal(err, want);
		else		/* read fine, but no decode row to measure */
			assert_non_null(strstr(err, "no decode rows"));
	}
}

static void test_shared_trace(void **state)
{
	char path[1024], err[512];
	struct plan_trace *t;
	const struct plan_trace_shape *sh;
	struct plan_trace_batch info;
	static const double pool[] = { 0.25 };
	double freq[33], hit, total = 0, mean = 0, emax;

	shared_path(path, sizeof(path));
	/* CI has ../shared beside the clone: its absence is a failure. */
	if (access(path, R_OK))
		fail_msg("%s: the shared routing trace is missing", path);
	t = load_ok(path);
	sh = plan_trace_shape(t);
	assert_int_equal(sh->nseqs, 2);
	assert_int_equal(sh->nrows, 128);
	assert_int_equal(sh->nlayers, 24);
	assert_int_equal(sh->nexperts, 32);
	assert_int_equal(sh->top_k, 8);

	/* Batch 1: one token's 8 experts, every time. */
	assert_int_equal(plan_trace_distinct(t, 1, 8, freq, 33, &info, err, sizeof(err)), 0);
	assert_true(freq[8] == 2 * 64 * 24);
	assert_int_equal(info.samples, 2 * 64 * 24);
	/* Batch 8: trained routers share experts between tokens: fewer distinct
	 * than uniform routing, but more than one token's. */
	assert_int_equal(plan_trace_distinct(t, 8, 8, freq, 33, &info, err, sizeof(err)), 0);
	for (int d = 0; d <= 32; d++) {
		total += freq[d];
		mean += d * freq[d];
	}
	mean /= total;
	assert_true(total == info.samples);
	assert_true(mean > 8 && mean < plan_distinct_experts(32, 8, 8) - 1);
	{
		struct plan_routing rt = { .freq = freq, .n = 33, .ep_max = info.ep_max };
		double md;

		assert_int_equal(plan_routing_stats(&rt, 32, 8, &md, &emax, err, sizeof(err)), 0);
		assert_true(fabs(md - mean) < 1e-9);
		assert_true(emax == info.ep_max && emax <= 4 && emax > 2);
	}

	/* LRU, batch 1, a quarter of the 768 keys: the trace's reference
	 * misses (6590 and 7949 of 12288 accesses each). */
	assert_int_equal(plan_trace_hit_curve(t, 1, "lru", pool, 1, &hit, err, sizeof(err)), 0);
	assert_true(fabs(hit - (1 - (6590.0 + 7949.0) / 24576)) < 1e-12);
	plan_trace_free(t);
}

/* plan --trace: the measured routing moves fewer experts than uniform. */
static void test_eval_routed_shared(void **state)
{
	char path[1024], err[512];
	struct plan_trace *t;
	struct plan_trace_batch info;
	struct plan_model m;
	struct plan_params p;
	struct plan_place pl;
	struct plan_result uni, meas;
	double freq[33];

	shared_path(path, sizeof(path));
	t = load_ok(path);
	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("granite-3.0-1b-a400m", &m, &p.hw.nodes,
					    &p.hw.gpus_per_node, NULL, 0), 0);
	plan_place_all(PLAN_TIER_SSD, &pl);
	assert_int_equal(plan_trace_distinct(t, 8, 8, freq, 33, &info, err, sizeof(err)), 0);
	assert_int_equal(plan_eval(&m, &p, &pl, 8, &uni, err, sizeof(err)), 0);
	assert_int_equal(plan_eval_routed(&m, &p, &pl, 8,
					  &(struct plan_routing){ freq, 33, info.ep_max }, &meas,
					  err, sizeof(err)), 0);
	assert_true(meas.distinct_experts < uni.distinct_experts);
	assert_true(meas.bytes_read[PLAN_TIER_SSD] < uni.bytes_read[PLAN_TIER_SSD]);
	assert_true(meas.energy_j[PLAN_PART_EXPERT_SSD] < uni.energy_j[PLAN_PART_EXPERT_SSD]);
	assert_true(meas.ep_max_experts == info.ep_max);
	/* A busiest GPU above what a GPU holds is refused. */
	assert_int_equal(plan_eval_routed(&m, &p, &pl, 8, &(struct plan_routing){ freq, 33, 5 },
					  &meas, err, sizeof(err)), -EINVAL);
	plan_trace_free(t);
}

/*
 * plan_select with a measured curve: a pool below half the experts never
 * hits (a cycle longer than the cache), half or more hits 90%.  The smallest
 * pool wins without a ceiling; an energy ceiling only a hitting pool meets
 * picks half.
 */
static void test_select_curve(void **state)
{
	static const double pool[] = { 0.25, 0.5, 0.75, 1 }, hit[] = { 0, 0.9, 0.9, 0.9 };
	static const unsigned batch[] = { 1 };
	struct plan_hit_curve cv = { .policy = "lru", .pool = pool, .hit = hit, .n = 4 };
	struct plan_select_req req = {
		.hbm_bytes = 0, .ddr_bytes = 1e15, .objective = PLAN_OBJ_POOL, .batches = batch,
		.nbatches = 1, .ddr_steps = 4, .curves = &cv, .ncurves = 1,
	};
	struct plan_candidate *c = NULL;
	struct plan_model m;
	struct plan_params p;
	struct plan_sizes sz;
	size_t n;
	double e_none = 0, e_half = 0;
	char err[512];

	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &m, &p.hw.nodes, &p.hw.gpus_per_node,
					    NULL, 0), 0);
	plan_sizes_get(&m, &p, &sz);
	/* HBM for the resident weights, the KV cache (one copy: 8 KV heads over
	 * 4 GPUs) and the buffers of two layers' 2 experts, a byte for experts. */
	req.hbm_bytes = sz.resident_bytes + sz.kv_bytes_per_token * p.context +
			2 * 2 * sz.expert_bytes + 1;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	assert_true(n >= 4);
	assert_true(c[0].place.frac[PLAN_TIER_HBM] < 1e-9);
	assert_true(c[0].place.ddr_pool == 0 && c[0].place.frac[PLAN_TIER_DDR] == 0);
	for (size_t i = 0; i < n; i++) {
		double rest = 1 - c[i].place.frac[PLAN_TIER_HBM];

		assert_string_equal(c[i].policy, "lru");
		if (c[i].place.ddr_pool == 0)
			e_none = c[i].r.energy_per_token_j;
		if (fabs(c[i].place.ddr_pool - 0.5) < 1e-9) {
			e_half = c[i].r.energy_per_token_j;
			assert_true(fabs(c[i].place.frac[PLAN_TIER_DDR] - 0.9 * rest) < 1e-9);
			assert_true(fabs(c[i].r.ddr_need_bytes - 0.5 * sz.routed_bytes) < 1);
		}
		if (fabs(c[i].place.ddr_pool - 0.25) < 1e-9)	/* holds a quarter, serves none */
			assert_true(c[i].place.frac[PLAN_TIER_DDR] < 1e-6);
	}
	assert_true(e_half < e_none);
	free(c);

	req.max_energy_j = (e_half + e_none) / 2;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	assert_true(fabs(c[0].place.ddr_pool - 0.5) < 1e-9);
	free(c);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	static const char *const names[] = { "hand.json", "lru.json", "bad.json" };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
		unlink(path);
	}
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hand_histogram),
		cmocka_unit_test(test_recording),
		cmocka_unit_test(test_hand_hit_curve),
		cmocka_unit_test(test_hit_curve_too_small),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_shared_trace),
		cmocka_unit_test(test_eval_routed_shared),
		cmocka_unit_test(test_select_curve),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
