/* SPDX-License-Identifier: MIT */
/*
 * Trace readers: the shared routing trace (read from ../shared beside the
 * source tree, never copied into it), malformed JSON traces written here,
 * and tierd-trace-v1 written, read back, truncated and corrupted.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "trace.h"

#define SHARED_TRACE	"/../shared/traces/granite-3.0-1b-a400m.json"

static char tmpdir[] = "/tmp/test-trace-XXXXXX";

static void shared_path(char *buf, size_t len)
{
	const char *top = getenv("top_srcdir");

	snprintf(buf, len, "%s" SHARED_TRACE, top ? top : "..");
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

/* The shared trace: two prompts, each its prefill rows as hints then its
 * decode rows as acquires, every id as the file has it (a rolling hash of
 * the ids in order, computed from the file by a separate script). */
static void test_shared_trace(void **state)
{
	struct trace_reader *r = NULL;
	struct trace_event ev;
	const struct trace_info *in;
	char path[4096], err[512];
	uint64_t h = 0, n = 0, hints = 0, acquires = 0;
	uint32_t last_client = 0;
	int ret;

	(void)state;
	shared_path(path, sizeof(path));
	/* CI has ../shared beside the clone: its absence is a failure. */
	ret = trace_open(&r, path, err, sizeof(err));
	if (ret)
		fail_msg("%s", err);
	in = trace_info(r);
	assert_string_equal(in->format, "routing-json");
	assert_int_equal(in->nmodels, 1);
	assert_string_equal(in->models[0], "granite-3.0-1b-a400m-instruct (f16 dense Mobius)");
	assert_int_equal(in->nlayers, 24);
	assert_int_equal(in->nexperts, 32);
	assert_int_equal(in->top_k, 8);
	assert_int_equal(in->nsequences, 2);
	assert_string_equal(in->sequence_names[0], "english_prose");
	assert_string_equal(in->sequence_names[1], "code");
	while ((ret = trace_next(r, &ev, err, sizeof(err))) == 1) {
		uint64_t s = 0;

		assert_int_equal(ev.nexperts, 8);
		assert_int_equal(ev.model, 0);
		assert_int_equal(ev.seq, ev.client + 1);
		assert_true(ev.client >= last_client);
		if (ev.client != last_client) {
			/* A new prompt starts with its prefill, from token 0. */
			assert_int_equal(ev.kind, TRACE_HINT);
			assert_int_equal(ev.token, 0);
			assert_int_equal(ev.layer, 0);
		}
		last_client = ev.client;
		for (uint32_t k = 0; k < ev.nexperts; k++)
			s += (k + 1) * ev.experts[k];
		h = (h * 31 + s) % (1ull << 61);
		n++;
		if (ev.kind == TRACE_HINT) {
			hints++;
		} else {
			assert_int_equal(ev.kind, TRACE_ACQUIRE);
			acquires++;
		}
		if (ev.client == 0 && ev.kind == TRACE_HINT && ev.token == 0 && ev.layer == 0) {
			static const uint32_t first[8] = { 7, 28, 31, 21, 25, 6, 17, 0 };

			assert_memory_equal(ev.experts, first, sizeof(first));
		}
		if (ev.client == 1 && ev.kind == TRACE_ACQUIRE && ev.token == 63 && ev.layer == 23) {
			static const uint32_t last[8] = { 20, 9, 30, 3, 7, 8, 24, 27 };

			assert_memory_equal(ev.experts, last, sizeof(last));
		}
	}
	if (ret)
		fail_msg("%s", err);
	assert_int_equal(n, 5064);
	assert_int_equal(hints, (39 + 44) * 24);
	assert_int_equal(acquires, 2 * 64 * 24);
	assert_int_equal(h, 1850246786807338968ull);
	/* The end stays the end. */
	assert_int_equal(trace_next(r, &ev, err, sizeof(err)), 0);
	assert_int_equal(trace_dropped(r), 0);
	trace_close(r);
}

/* A malformed file is refused at open with -EINVAL and a message that
 * contains what. */
static void expect_bad(const char *text, const char *what)
{
	struct trace_reader *r = NULL;
	char err[512] = "";
	int ret = trace_open(&r, write_tmp("bad.json", text), err, sizeof(err));

	if (ret != -EINVAL) {
		trace_close(r);
		fail_msg("accepted or wrong error %d (%s) for: %.80s", ret, err, text);
	}
	assert_null(r);
	if (!strstr(err, what))
		fail_msg("error \"%s\" does not name \"%s\"", err, what);
}

#define HDR	"{\"model\": \"m\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 2, \"prompts\": "

static void test_json_malformed(void **state)
{
	(void)state;
	/* Syntax: json-c's offset and the line. */
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,3]]]", "unexpected end");
	expect_bad("{\n\"model\": \"m\",\n\"num_layers\": 2,,\n}", "bad.json:3:");
	expect_bad("{\n\"model\": \"m\",\n\"num_layers\": 2,,\n}", "byte offset 32");
	expect_bad(HDR "{}} trailing", "byte offset");
	expect_bad("{\"model\": \"m\" /* comment */}", "not valid JSON");
	/* Shape. */
	expect_bad("[1, 2]", "neither");
	expect_bad("", "unknown format");
	expect_bad("{\"model\": \"m\", \"num_experts\": 4, \"top_k\": 2, \"prompts\": {}}", "\"num_layers\" missing");
	expect_bad("{\"model\": \"m\", \"num_layers\": 0, \"num_experts\": 4, \"top_k\": 2, \"prompts\": {}}",
		   "\"num_layers\": expected a whole number");
	expect_bad("{\"model\": \"m\", \"num_layers\": 2, \"num_experts\": 4, \"top_k\": 5, \"prompts\": {}}",
		   "top_k 5 exceeds num_experts 4");
	expect_bad(HDR "[]}", "key \"prompts\"");
	expect_bad(HDR "{\"a\": []}}", "prompt \"a\": expected an object");
	expect_bad(HDR "{\"a\": {\"decode\": []}}}", "prompt \"a\": key \"prefill\"");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": 3}}}", "prompt \"a\": key \"decode\"");
	expect_bad(HDR "{\"a\": {\"prompt_len\": 2, \"prefill\": [[[0,1],[2,3]]], \"decode\": []}}}",
		   "prompt_len 2, but 1 prefill rows");
	/* Nesting: a row that is not a list of layers, a layer not a list. */
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,3]], 7]}}}",
		   "prompt \"a\": decode token 1: expected a list of 2 layers");
	expect_bad(HDR "{\"a\": {\"prefill\": [[[0,1], 3]], \"decode\": []}}}",
		   "prompt \"a\": prefill token 0 layer 1: expected a list of 2 expert ids");
	/* Layer count, expert count, ranges, duplicates. */
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1]]]}}}",
		   "prompt \"a\": decode token 0: 1 layers, num_layers is 2");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,3,1]]]}}}",
		   "decode token 0 layer 1: 3 experts, top_k is 2");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,3]],[[0,4],[2,3]]]}}}",
		   "prompt \"a\": decode token 1 layer 0: expert id 4: expected a whole number from 0 to 3");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,-1]]]}}}", "layer 1: expert id -1");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,\"3\"]]]}}}", "layer 1: expert id \"3\"");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": [[[0,1],[2,1.5]]]}}}", "layer 1: expert id 1.5");
	expect_bad(HDR "{\"a\": {\"prefill\": [[[0,1],[3,3]]], \"decode\": []}}}",
		   "prompt \"a\": prefill token 0 layer 1: expert 3 named twice");
	expect_bad(HDR "{\"a\": {\"prefill\": [], \"decode\": []}, \"b\": {\"prefill\": [], \"decode\": [[[1,1],[2,3]]]}}}",
		   "prompt \"b\": decode token 0 layer 0: expert 1 named twice");
}

/* A small valid file: the order of events and their fields. */
static void test_json_small(void **state)
{
	struct trace_reader *r = NULL;
	struct trace_event ev;
	char err[512];
	/* prompt "x": 1 prefill token, 2 decode tokens; prompt "y": 1 decode token. */
	const char *path = write_tmp("ok.json", HDR "{\"x\": {\"prompt_len\": 1, \"prefill\": [[[0,1],[2,3]]], "
				     "\"decode\": [[[3,2],[1,0]], [[1,2],[0,3]]]}, \"y\": {\"prefill\": [], "
				     "\"decode\": [[[2,0],[3,1]]]}}}\n");
	static const struct {
		uint32_t client, token, layer;
		enum trace_kind kind;
		uint32_t e0, e1;
	} want[] = {
		{ 0, 0, 0, TRACE_HINT, 0, 1 }, { 0, 0, 1, TRACE_HINT, 2, 3 },
		{ 0, 0, 0, TRACE_ACQUIRE, 3, 2 }, { 0, 0, 1, TRACE_ACQUIRE, 1, 0 },
		{ 0, 1, 0, TRACE_ACQUIRE, 1, 2 }, { 0, 1, 1, TRACE_ACQUIRE, 0, 3 },
		{ 1, 0, 0, TRACE_ACQUIRE, 2, 0 }, { 1, 0, 1, TRACE_ACQUIRE, 3, 1 },
	};

	(void)state;
	if (trace_open(&r, path, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(trace_info(r)->nsequences, 2);
	assert_string_equal(trace_info(r)->sequence_names[1], "y");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(trace_next(r, &ev, err, sizeof(err)), 1);
		assert_int_equal(ev.client, want[i].client);
		assert_int_equal(ev.seq, want[i].client + 1);
		assert_int_equal(ev.token, want[i].token);
		assert_int_equal(ev.layer, want[i].layer);
		assert_int_equal(ev.kind, want[i].kind);
		assert_int_equal(ev.nexperts, 2);
		assert_int_equal(ev.experts[0], want[i].e0);
		assert_int_equal(ev.experts[1], want[i].e1);
		assert_int_equal(ev.t_ns, 0);
	}
	assert_int_equal(trace_next(r, &ev, err, sizeof(err)), 0);
	trace_close(r);
}

static void test_open_errors(void **state)
{
	struct trace_reader *r = NULL;
	char err[512], path[600];

	(void)state;
	snprintf(path, sizeof(path), "%s/absent", tmpdir);
	assert_int_equal(trace_open(&r, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "absent"));
	/* A directory is not a trace. */
	assert_int_equal(trace_open(&r, tmpdir, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	assert_null(r);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) ? -1 : 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shared_trace),
		cmocka_unit_test(test_json_malformed),
		cmocka_unit_test(test_json_small),
		cmocka_unit_test(test_open_errors),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
