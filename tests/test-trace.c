/* SPDX-License-Identifier: MIT */
/*
 * Trace readers: the shared routing trace (read from ../shared beside the
 * source tree, never copied into it), malformed JSON traces written here,
 * and tierd-trace-v1 written, read back, truncated and corrupted.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include <xxhash.h>

#include "conf.h"
#include "tierd-proto.h"
#include "trace.h"
#include "trace-rec.h"
#include "trace-v1.h"

#define SHARED_TRACE	"/traces/granite-3.0-1b-a400m.json"

static char tmpdir[] = "/tmp/test-trace-XXXXXX";

/* $TIERD_SHARED_DIR (set by make check), else ../shared beside the sources. */
static void shared_path(char *buf, size_t len)
{
	const char *shared = getenv("TIERD_SHARED_DIR");
	const char *top = getenv("top_srcdir");

	if (shared)
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


/* Every event of a reader, for comparisons. */
struct evlist {
	struct trace_event *ev;
	size_t n;
};

static void read_all_events(const char *path, struct evlist *l)
{
	struct trace_reader *r = NULL;
	size_t cap = 1024;
	char err[512];
	int ret;

	if (trace_open(&r, path, err, sizeof(err)))
		fail_msg("%s", err);

	l->ev = malloc(cap * sizeof(*l->ev));
	l->n = 0;
	for (;;) {
		if (l->n == cap) {
			cap *= 2;
			l->ev = realloc(l->ev, cap * sizeof(*l->ev));
		}
		assert_non_null(l->ev);
		ret = trace_next(r, &l->ev[l->n], err, sizeof(err));
		if (ret < 0)
			fail_msg("%s", err);
		if (!ret)
			break;
		l->n++;
	}
	trace_close(r);
}

static void assert_same_events(const struct evlist *a, const struct evlist *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		const struct trace_event *x = &a->ev[i], *y = &b->ev[i];

		assert_int_equal(x->t_ns, y->t_ns);
		assert_int_equal(x->client, y->client);
		assert_int_equal(x->seq, y->seq);
		assert_int_equal(x->token, y->token);
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->model, y->model);
		assert_int_equal(x->layer, y->layer);
		assert_int_equal(x->nexperts, y->nexperts);
		assert_memory_equal(x->experts, y->experts, x->nexperts * sizeof(uint32_t));
	}
}

/* Converts the trace at in into tierd-trace-v1 at out (as tierctl trace
 * convert does). */
static void convert(const char *in, const char *out)
{
	struct trace_reader *r = NULL;
	struct trace_writer *w = NULL;
	struct trace_event ev;
	const struct trace_info *i;
	char err[512];
	int ret;

	if (trace_open(&r, in, err, sizeof(err)))
		fail_msg("%s", err);
	i = trace_info(r);
	if (trace_writer_create(&w, out, i->model_desc, i->nmodels, i->sequences, i->nsequences, err, sizeof(err)))
		fail_msg("%s", err);
	while ((ret = trace_next(r, &ev, err, sizeof(err))) == 1)
		if (trace_writer_add(w, &ev, err, sizeof(err)))
			fail_msg("%s", err);
	if (ret)
		fail_msg("%s", err);
	trace_close(r);
	if (trace_writer_close(w, err, sizeof(err)))
		fail_msg("%s", err);
}

static char v1_shared[600];

/* The shared trace through tierd-trace-v1 and back: the same events, the
 * same model and prompts, in a smaller file. */
static void test_v1_roundtrip_shared(void **state)
{
	struct trace_reader *r = NULL;
	struct evlist a, b;
	char path[4096], err[512];
	struct stat sa, sb;

	(void)state;
	shared_path(path, sizeof(path));
	snprintf(v1_shared, sizeof(v1_shared), "%s/shared.tdt", tmpdir);
	unlink(v1_shared);
	convert(path, v1_shared);
	read_all_events(path, &a);
	read_all_events(v1_shared, &b);
	assert_int_equal(b.n, 5064);
	assert_same_events(&a, &b);
	if (trace_open(&r, v1_shared, err, sizeof(err)))
		fail_msg("%s", err);
	assert_string_equal(trace_info(r)->format, "tierd-trace-v1");
	assert_string_equal(trace_info(r)->models[0], "granite-3.0-1b-a400m-instruct (f16 dense Mobius)");
	assert_int_equal(trace_info(r)->nlayers, 24);
	assert_int_equal(trace_info(r)->nexperts, 32);
	assert_int_equal(trace_info(r)->top_k, 8);
	assert_int_equal(trace_info(r)->nsequences, 2);
	assert_string_equal(trace_info(r)->sequence_names[1], "code");
	assert_int_equal(trace_info(r)->sequences[1].client, 1);
	assert_int_equal(trace_info(r)->sequences[1].seq, 2);
	trace_close(r);
	assert_int_equal(stat(path, &sa), 0);
	assert_int_equal(stat(v1_shared, &sb), 0);
	/* 16 bytes a top-8 event of 32 experts: some 2/3 of the JSON. */
	assert_true(sb.st_size < sa.st_size * 3 / 4);
	free(a.ev);
	free(b.ev);
}

/* Synthetic events: several models, large ids and times, clients, many
 * blocks: what is written is what is read. */
static void test_v1_roundtrip_synthetic(void **state)
{
	static const struct trace_model_desc models[] = {
		{ "small", 4, 8, 2 }, { "deepseek-like", 61, 256, 8 }, { "unknown-shape", 0, 0, 0 },
	};
	struct trace_writer *w = NULL;
	struct trace_event ev;
	struct evlist want = { NULL, 0 }, got;
	char path[600], err[512];
	uint64_t t = 0, x = 12345;

	(void)state;
	snprintf(path, sizeof(path), "%s/synthetic.tdt", tmpdir);
	unlink(path);
	if (trace_writer_create(&w, path, models, 3, NULL, 0, err, sizeof(err)))
		fail_msg("%s", err);
	want.ev = calloc(20000, sizeof(*want.ev));
	assert_non_null(want.ev);
	for (size_t i = 0; i < 20000; i++) {
		memset(&ev, 0, sizeof(ev));
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		t += (x >> 40) % 20000;
		ev.t_ns = t;
		ev.model = (uint32_t)(i % 3);
		ev.client = (uint32_t)(x >> 33) % 7 + (i % 100 == 0 ? UINT32_MAX - 7 : 0);
		ev.seq = i % 5 == 0 ? UINT64_MAX - i : 0;
		ev.token = (uint32_t)(i / 61);
		ev.kind = i % 4 ? TRACE_ACQUIRE : TRACE_HINT;
		ev.layer = ev.model == 0 ? (uint32_t)i % 4 : ev.model == 1 ? (uint32_t)i % 61 : (uint32_t)i * 977;
		ev.nexperts = ev.model == 0 ? 2 : ev.model == 1 ? 8 : TRACE_MAX_EXPERTS;
		for (uint32_t k = 0; k < ev.nexperts; k++)
			ev.experts[k] = ev.model == 0 ? (k + (uint32_t)i) % 8 :
					ev.model == 1 ? (k * 31 + (uint32_t)i) % 256 : UINT32_MAX - k;
		want.ev[want.n++] = ev;
		if (trace_writer_add(w, &ev, err, sizeof(err)))
			fail_msg("%s", err);
	}
	if (trace_writer_close(w, err, sizeof(err)))
		fail_msg("%s", err);
	read_all_events(path, &got);
	assert_same_events(&want, &got);
	free(want.ev);
	free(got.ev);
}

/* The writer refuses bad events, naming them, and never replaces a file or
 * follows a link. */
static void test_v1_writer_refusals(void **state)
{
	static const struct trace_model_desc models[] = { { "m", 2, 4, 2 } };
	struct trace_writer *w = NULL;
	struct trace_event ev = { .kind = TRACE_ACQUIRE, .nexperts = 2, .experts = { 0, 1 }, .t_ns = 10 };
	char path[600], link[600], err[512];

	(void)state;
	snprintf(path, sizeof(path), "%s/w.tdt", tmpdir);
	snprintf(link, sizeof(link), "%s/w-link.tdt", tmpdir);
	unlink(path);
	unlink(link);
	if (trace_writer_create(&w, path, models, 1, NULL, 0, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), 0);
	ev.experts[1] = 4;
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "model m layer 0 expert 4"));
	ev.experts[1] = 0;
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "named twice"));
	ev.experts[1] = 1;
	ev.layer = 2;
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "layer 2"));
	ev.layer = 0;
	ev.model = 1;
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), -EINVAL);
	ev.model = 0;
	ev.t_ns = 9;
	assert_int_equal(trace_writer_add(w, &ev, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "time order"));
	if (trace_writer_close(w, err, sizeof(err)))
		fail_msg("%s", err);
	/* An existing file stays as it is. */
	assert_int_equal(trace_writer_create(&w, path, models, 1, NULL, 0, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, path));
	assert_int_equal(symlink("elsewhere", link), 0);
	assert_int_equal(trace_writer_create(&w, link, models, 1, NULL, 0, err, sizeof(err)), -EEXIST);
	assert_null(w);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Reads the whole trace at path: 0, or the first error (in err). */
static int read_through(const char *path, char *err, size_t errlen)
{
	struct trace_reader *r = NULL;
	struct trace_event ev;
	int ret = trace_open(&r, path, err, errlen);

	if (ret)
		return ret;
	while ((ret = trace_next(r, &ev, err, errlen)) == 1)
		;
	trace_close(r);
	return ret;
}

/*
 * The header's limit is the reader's: a header of exactly
 * TRACE_V1_MAX_HEADER bytes is written and reads back, one byte more is
 * refused by trace_writer and by the daemon's recorder before any byte is
 * written, with an error naming the limit (a recording the reader would
 * refuse at open is never made).
 */
static void test_v1_header_limit(void **state)
{
	static const struct trace_model_desc one[] = { { "m", 2, 4, 2 } };
	const size_t per = 14 + UINT16_MAX;	/* a table entry with the longest name */
	/* 40 fixed bytes, model "m" (15), whole entries, then one shorter. */
	const size_t room = TRACE_V1_MAX_HEADER - 40 - 15;
	const uint32_t nseqs = (uint32_t)(room / per) + 1;
	const size_t last = room % per - 14;
	struct trace_model_desc *models;
	struct trace_seq_desc *seqs;
	struct trace_writer *w = NULL;
	struct trace_rec *r = NULL;
	struct stat sb;
	char path[600], err[512], *name, *lastname;
	int fd;

	(void)state;
	assert_true(room % per >= 14);
	name = malloc(UINT16_MAX + 1);
	lastname = malloc(last + 1);
	seqs = calloc(nseqs, sizeof(*seqs));
	models = calloc(nseqs, sizeof(*models));
	assert_non_null(name);
	assert_non_null(lastname);
	assert_non_null(seqs);
	assert_non_null(models);
	memset(name, 'n', UINT16_MAX);
	name[UINT16_MAX] = '\0';
	memset(lastname, 'l', last);
	lastname[last] = '\0';
	for (uint32_t i = 0; i < nseqs; i++)
		seqs[i] = (struct trace_seq_desc){ 1, i, i + 1 < nseqs ? name : lastname };

	snprintf(path, sizeof(path), "%s/header-max.tdt", tmpdir);
	unlink(path);
	if (trace_writer_create(&w, path, one, 1, seqs, nseqs, err, sizeof(err)) ||
	    trace_writer_close(w, err, sizeof(err)))
		fail_msg("%s", err);
	if (read_through(path, err, sizeof(err)))
		fail_msg("a header of %u bytes: %s", TRACE_V1_MAX_HEADER, err);
	unlink(path);

	/* One byte more. */
	lastname[last] = 'l';
	lastname = realloc(lastname, last + 2);
	assert_non_null(lastname);
	lastname[last + 1] = '\0';
	seqs[nseqs - 1].name = lastname;
	w = NULL;
	assert_int_equal(trace_writer_create(&w, path, one, 1, seqs, nseqs, err, sizeof(err)), -EFBIG);
	assert_null(w);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "67108865 bytes"));
	assert_non_null(strstr(err, "67108864"));
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);

	/* The recorder: models only, as many names as the header above. */
	for (uint32_t i = 0; i < nseqs; i++)
		models[i] = (struct trace_model_desc){ name, 2, 4, 2 };
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(trace_rec_start(&r, fd, path, models, nseqs, 0, err, sizeof(err)), -EFBIG);
	assert_null(r);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "67108864"));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, 0);
	unlink(path);
	free(models);
	free(seqs);
	free(lastname);
	free(name);
}

/*
 * A header whose checksum is right but whose model is larger than any reader
 * sizes tables for (4294967233 experts: a word count that wraps to 0 in the
 * planner) is refused at open, naming the model.
 */
static void test_v1_model_bounds(void **state)
{
	static const struct trace_model_desc models[] = { { "m", 2, 4, 2 } };
	static const uint8_t name_rec[] = { 1, 0, 'm' };
	struct trace_writer *w = NULL;
	char path[600], err[512];
	uint8_t *b, *at = NULL;
	uint32_t hlen;
	uint64_t sum;
	size_t len;

	(void)state;
	snprintf(path, sizeof(path), "%s/bounds.tdt", tmpdir);
	unlink(path);
	if (trace_writer_create(&w, path, models, 1, NULL, 0, err, sizeof(err)) ||
	    trace_writer_close(w, err, sizeof(err)))
		fail_msg("%s", err);
	b = slurp(path, &len);
	hlen = (uint32_t)b[12] | (uint32_t)b[13] << 8 | (uint32_t)b[14] << 16 | (uint32_t)b[15] << 24;
	assert_true(hlen <= len);
	for (size_t i = 0; i + sizeof(name_rec) <= hlen && !at; i++)
		if (!memcmp(b + i, name_rec, sizeof(name_rec)))
			at = b + i - 12;	/* layers, experts, top-k, then the name */
	assert_non_null(at);
	at[4] = 0xc1;
	at[5] = at[6] = at[7] = 0xff;
	sum = XXH64(b, hlen - 8, 0);
	for (int i = 0; i < 8; i++)
		b[hlen - 8 + i] = (uint8_t)(sum >> (8 * i));
	spit(path, b, len);
	free(b);
	assert_int_equal(read_through(path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "model 0: 2 layers, 4294967233 experts"));
}

/* Cut anywhere, or one byte changed anywhere: refused with an error that
 * names a byte offset, never read as a shorter or different trace. */
static void test_v1_truncated_corrupt(void **state)
{
	char path[600], err[512], want[64];
	size_t len;
	uint8_t *b;

	(void)state;
	if (!v1_shared[0])
		test_v1_roundtrip_shared(state);
	b = slurp(v1_shared, &len);
	snprintf(path, sizeof(path), "%s/cut.tdt", tmpdir);
	for (size_t cut = 0; cut < len; cut += cut < 200 ? 1 : 97) {
		int ret;

		spit(path, b, cut);
		ret = read_through(path, err, sizeof(err));
		if (ret != -EINVAL)
			fail_msg("cut at %zu: %d %s", cut, ret, err);
		if (cut >= 8 && !strstr(err, "byte offset"))
			fail_msg("cut at %zu: \"%s\" names no offset", cut, err);
	}
	/* Cut at the end record: the message says so, with its offset. */
	spit(path, b, len - 32);
	assert_int_equal(read_through(path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "byte offset %zu without its end record", len - 32);
	if (!strstr(err, want))
		fail_msg("\"%s\" lacks \"%s\"", err, want);
	for (size_t at = 0; at < len; at += at < 300 ? 1 : 89) {
		int ret;

		b[at] ^= 0x10;
		spit(path, b, len);
		b[at] ^= 0x10;
		ret = read_through(path, err, sizeof(err));
		if (ret != -EINVAL)
			fail_msg("byte %zu changed: %d %s", at, ret, err);
		/* A changed magic makes it no trace at all. */
		if (!strstr(err, at < 8 ? "unknown format" : "byte offset"))
			fail_msg("byte %zu changed: \"%s\" names no offset", at, err);
	}
	/* Bytes after the end, a version from the future. */
	spit(path, b, len);
	{
		FILE *f = fopen(path, "ab");

		assert_non_null(f);
		fputc('x', f);
		fclose(f);
	}
	assert_int_equal(read_through(path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "after the end record"));
	b[8] = 2;
	spit(path, b, len);
	assert_int_equal(read_through(path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "byte offset 8: tierd-trace version 2"));
	free(b);
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

/* [trace] in the configuration: its keys, and what validation refuses. */
static void test_conf_trace(void **state)
{
	struct tierd_conf c;
	char err[256];

	(void)state;
	assert_int_equal(conf_init(&c), 0);
	assert_false(c.trace_record);
	assert_null(c.trace_file);
	assert_int_equal(c.trace_max_size, 1ull << 30);
	assert_int_equal(conf_load_string(&c, "t.conf", "[trace]\nrecord = yes\nfile = /var/lib/tierd/t-%t.tdt\n"
					  "max_size = 64M\n[metrics]\ntextfile = off\n", err, sizeof(err)), 0);
	assert_true(c.trace_record);
	assert_string_equal(c.trace_file, "/var/lib/tierd/t-%t.tdt");
	assert_int_equal(c.trace_max_size, 64ull << 20);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "trace.file=rel.tdt", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[trace] file: \"rel.tdt\": must be an absolute path"));
	assert_int_equal(conf_set(&c, "trace.file=", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[trace] record = yes needs [trace] file"));
	assert_int_equal(conf_set(&c, "trace.records=yes", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown key"));
	conf_free(&c);
}

/* Copies a pipe into a file until the pipe's writer closes it. */
struct drain {
	int in, out;
};

static void *drain_pipe(void *arg)
{
	struct drain *d = arg;
	char buf[65536];
	ssize_t n;

	while ((n = read(d->in, buf, sizeof(buf))) > 0)
		if (write(d->out, buf, (size_t)n) != n)
			break;
	return NULL;
}

static const struct trace_model_desc rec_models[] = { { "m", 24, 32, 8 } };

static void record_some(struct trace_rec *r, uint32_t nevents)
{
	for (uint32_t i = 0; i < nevents; i++) {
		struct tierd_key keys[8];

		for (uint32_t k = 0; k < 8; k++)
			keys[k] = (struct tierd_key){ 0, i % 24, (i + k * 3) % 32 };
		trace_rec_acquire(r, 1 + i % 3, i / 24, keys, 8);
	}
}

/* The recorder's writer stuck on a pipe nobody reads: the loop's side
 * never waits, drops and counts; once the pipe drains, the recording reads
 * back with as many events and drops as counted. */
static void test_rec_never_blocks(void **state)
{
	struct trace_rec *r = NULL;
	struct trace_rec_stats st, fin;
	struct trace_reader *rd = NULL;
	struct trace_event ev;
	struct drain d;
	pthread_t th;
	char path[600], err[512];
	uint64_t n = 0;
	int p[2], ret;

	(void)state;
	assert_int_equal(pipe(p), 0);
	snprintf(path, sizeof(path), "%s/piped.tdt", tmpdir);
	unlink(path);
	d.in = p[0];
	d.out = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(d.out >= 0);
	if (trace_rec_start(&r, p[1], "pipe", rec_models, 1, 0, err, sizeof(err)))
		fail_msg("%s", err);
	/* 16 bytes an event: 6 MB, more than the buffers and the pipe hold. */
	record_some(r, 400000);
	trace_rec_get_stats(r, &st);
	assert_true(st.dropped > 0);
	assert_int_equal(st.events + st.dropped, 400000);
	assert_int_equal(pthread_create(&th, NULL, drain_pipe, &d), 0);
	if (trace_rec_stop(r, &fin, err, sizeof(err)))
		fail_msg("%s", err);
	pthread_join(th, NULL);
	close(p[0]);
	close(d.out);
	assert_int_equal(fin.events, st.events);
	assert_int_equal(fin.dropped, st.dropped);
	if (trace_open(&rd, path, err, sizeof(err)))
		fail_msg("%s", err);
	while ((ret = trace_next(rd, &ev, err, sizeof(err))) == 1) {
		assert_int_equal(ev.kind, TRACE_ACQUIRE);
		assert_int_equal(ev.nexperts, 8);
		assert_int_equal(ev.seq, 0);
		n++;
	}
	if (ret)
		fail_msg("%s", err);
	assert_int_equal(n, fin.events);
	assert_int_equal(trace_dropped(rd), fin.dropped);
	trace_close(rd);
}

/* max_size: the file stops short of it, the rest counted as dropped; a
 * batch's runs of layers become events, a repeated key one expert, hints
 * out of range are left out. */
static void test_rec_limit_and_shapes(void **state)
{
	struct trace_rec *r = NULL;
	struct trace_rec_stats fin;
	struct trace_reader *rd = NULL;
	struct trace_event ev;
	struct stat sb;
	char path[600], err[512];
	const struct tierd_key batch[] = { { 0, 3, 1 }, { 0, 3, 2 }, { 0, 3, 1 }, { 0, 4, 7 }, { 0, 3, 5 } };
	const struct tierd_proto_hint hints[] = { { 31, 0.5f }, { 32, 0.1f }, { 31, 0.2f }, { 0, 0.2f } };
	uint64_t n = 0;
	int fd, ret;

	(void)state;
	snprintf(path, sizeof(path), "%s/limited.tdt", tmpdir);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	if (trace_rec_start(&r, fd, path, rec_models, 1, 100000, err, sizeof(err)))
		fail_msg("%s", err);
	trace_rec_acquire(r, 7, 2, batch, 5);
	trace_rec_hint(r, 7, 3, 0, 5, hints, 4);
	trace_rec_hint(r, 7, 3, 0, 24, hints, 4);	/* no such layer */
	trace_rec_hint(r, 7, 3, 1, 0, hints, 4);	/* no such model */
	record_some(r, 20000);
	if (trace_rec_stop(r, &fin, err, sizeof(err)))
		fail_msg("%s", err);
	assert_true(fin.full);
	assert_true(fin.dropped > 0);
	assert_int_equal(fin.events + fin.dropped, 4 + 20000);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size <= 100000);
	assert_int_equal((uint64_t)sb.st_size, fin.bytes);
	if (trace_open(&rd, path, err, sizeof(err)))
		fail_msg("%s", err);
	/* layer 3 {1, 2}, layer 4 {7}, layer 3 {5}, the hint {31, 0}. */
	assert_int_equal(trace_next(rd, &ev, err, sizeof(err)), 1);
	assert_int_equal(ev.layer, 3);
	assert_int_equal(ev.nexperts, 2);
	assert_int_equal(ev.experts[1], 2);
	assert_int_equal(ev.client, 7);
	assert_int_equal(ev.token, 2);
	assert_int_equal(trace_next(rd, &ev, err, sizeof(err)), 1);
	assert_int_equal(ev.layer, 4);
	assert_int_equal(ev.nexperts, 1);
	assert_int_equal(trace_next(rd, &ev, err, sizeof(err)), 1);
	assert_int_equal(ev.layer, 3);
	assert_int_equal(ev.experts[0], 5);
	assert_int_equal(trace_next(rd, &ev, err, sizeof(err)), 1);
	assert_int_equal(ev.kind, TRACE_HINT);
	assert_int_equal(ev.layer, 5);
	assert_int_equal(ev.token, 3);
	assert_int_equal(ev.nexperts, 2);
	assert_int_equal(ev.experts[0], 31);
	assert_int_equal(ev.experts[1], 0);
	n = 4;
	while ((ret = trace_next(rd, &ev, err, sizeof(err))) == 1)
		n++;
	if (ret)
		fail_msg("%s", err);
	/* The two hints out of range were never events. */
	assert_int_equal(n, fin.events);
	assert_int_equal(trace_dropped(rd), fin.dropped);
	assert_int_equal(fin.events + fin.dropped, 4 + 20000);
	trace_close(rd);
}

/* TRACE on the wire: start names a file, stop none, other operations are
 * malformed. */
static void test_proto_trace(void **state)
{
	static uint8_t buf[TIERD_PROTO_MAX_MSG];
	struct tierd_msg_trace m;
	const char *why = NULL;
	long n;

	(void)state;
	n = tierd_proto_encode_trace(buf, sizeof(buf), 9, TIERD_TRACE_START, "/var/tmp/t.tdt");
	assert_true(n > 0);
	assert_int_equal(tierd_proto_validate(buf, (size_t)n, &why), 0);
	assert_int_equal(tierd_proto_decode_trace(buf + sizeof(struct tierd_msg_hdr), (size_t)n - sizeof(struct tierd_msg_hdr),
						  &m, &why), 0);
	assert_int_equal(m.op, TIERD_TRACE_START);
	assert_string_equal(m.path, "/var/tmp/t.tdt");
	n = tierd_proto_encode_trace(buf, sizeof(buf), 9, TIERD_TRACE_STOP, "");
	assert_int_equal(tierd_proto_validate(buf, (size_t)n, &why), 0);
	n = tierd_proto_encode_trace(buf, sizeof(buf), 9, TIERD_TRACE_STOP, "/x");
	assert_int_equal(tierd_proto_validate(buf, (size_t)n, &why), -EBADMSG);
	n = tierd_proto_encode_trace(buf, sizeof(buf), 9, TIERD_TRACE_START, "");
	assert_int_equal(tierd_proto_validate(buf, (size_t)n, &why), -EBADMSG);
	n = tierd_proto_encode_trace(buf, sizeof(buf), 9, 3, "/x");
	assert_int_equal(tierd_proto_validate(buf, (size_t)n, &why), -EBADMSG);
	assert_string_equal(why, "unknown trace operation");
	assert_string_equal(tierd_proto_type_name(TIERD_MSG_TRACE), "TRACE");
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
		cmocka_unit_test(test_v1_roundtrip_shared),
		cmocka_unit_test(test_v1_roundtrip_synthetic),
		cmocka_unit_test(test_v1_writer_refusals),
		cmocka_unit_test(test_v1_header_limit),
		cmocka_unit_test(test_v1_truncated_corrupt),
		cmocka_unit_test(test_v1_model_bounds),
		cmocka_unit_test(test_conf_trace),
		cmocka_unit_test(test_rec_never_blocks),
		cmocka_unit_test(test_rec_limit_and_shapes),
		cmocka_unit_test(test_proto_trace),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
