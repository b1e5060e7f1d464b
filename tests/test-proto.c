/* SPDX-License-Identifier: MIT */
/* The wire protocol: every message round-trips, every malformed kind is
 * rejected with a reason. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tierd-proto.h"

static alignas(8) uint8_t buf[TIERD_PROTO_MAX_MSG];

#define PAYLOAD (buf + sizeof(struct tierd_msg_hdr))

static size_t payload_len(long n)
{
	assert_true(n >= (long)sizeof(struct tierd_msg_hdr));
	return (size_t)n - sizeof(struct tierd_msg_hdr);
}

/* The message must be rejected, with a reason containing 'want'. */
static void expect_bad(long n, const char *want)
{
	const char *why = NULL;
	int r = tierd_proto_validate(buf, (size_t)n, &why);

	assert_true(r == -EBADMSG || r == -EPROTO);
	assert_non_null(why);
	if (!strstr(why, want))
		fail_msg("reason \"%s\" does not mention \"%s\"", why, want);
}

static void expect_good(long n)
{
	const char *why = NULL;

	if (tierd_proto_validate(buf, (size_t)n, &why))
		fail_msg("valid message rejected: %s", why);
}

static void set_u32(size_t off, uint32_t v)
{
	memcpy(buf + off, &v, 4);
}

static void test_header(void **state)
{
	struct tierd_msg_hdr h;
	const char *why;
	long n = tierd_proto_encode_u64(buf, sizeof(buf), TIERD_MSG_OK, 7, 42);

	expect_good(n);
	assert_int_equal(tierd_proto_decode_hdr(buf, (size_t)n, &h, &why), 0);
	assert_int_equal(h.type, TIERD_MSG_OK);
	assert_int_equal(h.request_id, 7);
	assert_int_equal(h.length, 8);

	expect_bad(10, "shorter than a message header");
	buf[0] ^= 1;
	expect_bad(n, "magic");
	buf[0] ^= 1;
	h.major = TIERD_PROTO_MAJOR + 1;
	memcpy(buf, &h, sizeof(h));
	assert_int_equal(tierd_proto_decode_hdr(buf, (size_t)n, &h, &why), -EPROTO);
	assert_non_null(strstr(why, "major"));
	n = tierd_proto_encode_u64(buf, sizeof(buf), TIERD_MSG_OK, 7, 42);
	expect_bad(n - 1, "length");
	expect_bad(n + 4, "length");
	set_u32(offsetof(struct tierd_msg_hdr, length), 0xffffffff);
	expect_bad(n, "length");
	n = tierd_proto_encode_u64(buf, sizeof(buf), 99, 7, 42);
	expect_bad(n, "unknown message type");
	n = tierd_proto_encode_u64(buf, sizeof(buf), 0, 7, 42);
	expect_bad(n, "unknown message type");
	n = tierd_proto_encode_u64(buf, sizeof(buf), TIERD_MSG_OK, 7, 42);
	buf[offsetof(struct tierd_msg_hdr, flags)] = 0x80;
	expect_bad(n, "flags");
	expect_bad(TIERD_PROTO_MAX_MSG + 1, "larger");
	/* An OK with a short payload. */
	n = tierd_proto_encode_u64(buf, sizeof(buf), TIERD_MSG_OK, 7, 42);
	set_u32(offsetof(struct tierd_msg_hdr, length), 4);
	expect_bad(n - 4, "truncated");
}

static void test_hello(void **state)
{
	struct tierd_msg_hello m;
	const char *why;
	long n = tierd_proto_encode_hello(buf, sizeof(buf), 1, 1234, "bench");

	expect_good(n);
	assert_int_equal(tierd_proto_decode_hello(PAYLOAD, payload_len(n), &m, &why), 0);
	assert_int_equal(m.pid, 1234);
	assert_string_equal(m.name, "bench");
	assert_int_equal(m.numa_node, TIERD_NODE_UNSAID);
	/* The client's NUMA node, appended; unsaid, the HELLO is as before. */
	assert_int_equal(tierd_proto_encode_hello_node(buf, sizeof(buf), 1, 1234, "bench", TIERD_NODE_UNSAID), n);
	n = tierd_proto_encode_hello_node(buf, sizeof(buf), 1, 1234, "bench", 3);
	expect_good(n);
	assert_int_equal(tierd_proto_decode_hello(PAYLOAD, payload_len(n), &m, &why), 0);
	assert_int_equal(m.numa_node, 3);
	set_u32((size_t)n - 4, TIERD_NODE_MAX + 1);
	expect_bad(n, "NUMA node");
	n = tierd_proto_encode_hello(buf, sizeof(buf), 1, 1234, "bench");
	/* The name's length runs past the end. */
	set_u32(sizeof(struct tierd_msg_hdr) + 4, 1000);
	expect_bad(n, "string");
	/* A control character in the name. */
	n = tierd_proto_encode_hello(buf, sizeof(buf), 1, 1234, "be\x01nch");
	expect_bad(n, "control");
	/* Not NUL-terminated: overwrite the terminator. */
	n = tierd_proto_encode_hello(buf, sizeof(buf), 1, 1234, "abc");
	buf[sizeof(struct tierd_msg_hdr) + 8 + 3] = 'x';
	expect_bad(n, "NUL");
	/* Name longer than 64 bytes. */
	{
		char longname[100];

		memset(longname, 'a', 99);
		longname[99] = 0;
		n = tierd_proto_encode_hello(buf, sizeof(buf), 1, 1, longname);
		expect_bad(n, "longer");
	}
}

static void test_keys(void **state)
{
	struct tierd_key keys[3] = { { 0, 1, 2 }, { 0, 1, 3 }, { 1, 0, 0 } };
	const struct tierd_key *k;
	uint32_t count;
	const char *why;
	long n = tierd_proto_encode_keys(buf, sizeof(buf), TIERD_MSG_ACQUIRE, 0, 5, keys, 3);

	expect_good(n);
	assert_int_equal(tierd_proto_decode_keys(PAYLOAD, payload_len(n), &k, &count, &why), 0);
	assert_int_equal(count, 3);
	assert_int_equal(k[1].expert, 3);
	assert_int_equal(k[2].model, 1);
	/* Count larger than the keys that follow. */
	set_u32(sizeof(struct tierd_msg_hdr), 4);
	expect_bad(n, "fewer keys");
	/* Count smaller: trailing bytes. */
	set_u32(sizeof(struct tierd_msg_hdr), 2);
	expect_bad(n, "trailing");
	/* Zero and too many. */
	set_u32(sizeof(struct tierd_msg_hdr), 0);
	expect_bad(n, "count is 0");
	set_u32(sizeof(struct tierd_msg_hdr), TIERD_PROTO_MAX_BATCH + 1);
	expect_bad(n, "batch limit");
	set_u32(sizeof(struct tierd_msg_hdr), 3);
	set_u32(sizeof(struct tierd_msg_hdr) + 4, 1);
	expect_bad(n, "reserved");
	/* Encoder refuses empty and oversized batches itself. */
	assert_int_equal(tierd_proto_encode_keys(buf, sizeof(buf), TIERD_MSG_ACQUIRE, 0, 5, keys, 0), -EINVAL);
	for (int t = TIERD_MSG_PREFETCH; t <= TIERD_MSG_UNPIN; t++) {
		if (t == TIERD_MSG_ACQUIRED || t == TIERD_MSG_ROUTING_HINT || t == TIERD_MSG_TOKEN_REPORT ||
		    t == TIERD_MSG_STATS || t == TIERD_MSG_STATS_REPLY)
			continue;
		n = tierd_proto_encode_keys(buf, sizeof(buf), (uint16_t)t, 0, 5, keys, 3);
		expect_good(n);
		expect_bad(n - 2, "length");
	}
}

static long make_welcome(const char *name2)
{
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	struct tierd_proto_buf b;
	long n;

	w->instance = 99;
	w->npools = 2;
	w->pool_size[0] = 1 << 20;
	w->pool_size[1] = 2 << 20;
	w->nmodels = 2;
	w->models[0] = (struct tierd_proto_model){ "mixtral", TIERD_MODEL_F_ALLOWED, 32, 8, 2, 256, 4096 };
	w->models[1] = (struct tierd_proto_model){ name2, 0, 16, 64, 8, 1024, 8192 };
	tierd_proto_begin(&b, buf, sizeof(buf), TIERD_MSG_WELCOME, 0, 1);
	tierd_proto_put_welcome(&b, w);
	n = tierd_proto_end(&b);
	free(w);
	return n;
}

static void test_welcome(void **state)
{
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	const char *why;
	long n = make_welcome("olmoe");

	expect_good(n);
	assert_int_equal(tierd_proto_decode_welcome(PAYLOAD, payload_len(n), w, &why), 0);
	assert_int_equal(w->npools, 2);
	assert_int_equal(w->pool_size[1], 2 << 20);
	assert_string_equal(w->models[1].name, "olmoe");
	assert_int_equal(w->models[1].experts_per_layer, 64);
	assert_int_equal(w->models[0].flags, TIERD_MODEL_F_ALLOWED);
	free(w);

	n = make_welcome("mixtral");
	expect_bad(n, "two models with one name");
	n = make_welcome("");
	expect_bad(n, "empty name");
	n = make_welcome("olmoe");
	set_u32(sizeof(struct tierd_msg_hdr) + 8, TIERD_PROTO_MAX_POOLS + 1);
	expect_bad(n, "too many pools");
	n = make_welcome("olmoe");
	set_u32(sizeof(struct tierd_msg_hdr) + 12, TIERD_PROTO_MAX_MODELS + 1);
	expect_bad(n, "too many models");
	n = make_welcome("olmoe");
	set_u32(sizeof(struct tierd_msg_hdr) + 16, 12345);
	expect_bad(n, "pool size");
	n = make_welcome("olmoe");
	expect_bad(n - 8, "length");
}

/* 1.3: the fast path's fields after the models, to 1.3 clients only. */
static void test_welcome_fast(void **state)
{
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	struct tierd_proto_buf b;
	const char *why;
	size_t end;
	long n;

	w->instance = 7;
	w->nmodels = 1;
	w->models[0] = (struct tierd_proto_model){ "mixtral", TIERD_MODEL_F_ALLOWED, 32, 8, 2, 256, 4096 };
	w->fast = TIERD_WELCOME_F_FAST;
	w->fast_table_size = 3 * 4096;
	w->fast_area_size = 4096;
	tierd_proto_begin(&b, buf, sizeof(buf), TIERD_MSG_WELCOME, 0, 1);
	tierd_proto_put_welcome(&b, w);
	n = tierd_proto_end(&b);
	expect_good(n);
	memset(w, 0xff, sizeof(*w));
	assert_int_equal(tierd_proto_decode_welcome(PAYLOAD, payload_len(n), w, &why), 0);
	assert_int_equal(w->fast, TIERD_WELCOME_F_FAST);
	assert_int_equal(w->fast_table_size, 3 * 4096);
	assert_int_equal(w->fast_area_size, 4096);
	end = (size_t)n - 24;
	set_u32(end, 0x2);
	expect_bad(n, "reserved bits");
	set_u32(end, TIERD_WELCOME_F_FAST);
	set_u32(end + 4, 33);	/* max_pins */
	assert_int_equal(tierd_proto_decode_welcome(PAYLOAD, payload_len(n), w, &why), 0);
	assert_int_equal(w->fast_max_pins, 33);
	set_u32(end + 4, 0);
	set_u32(end + 8, 4097);
	expect_bad(n, "multiple of 4096");
	set_u32(end + 8, 4096);
	set_u32(end + 16, 0);
	expect_bad(n, "multiple of 4096");
	/* Without the fields (a 1.2 daemon, a 1.2 client): no fast path. */
	n = make_welcome("olmoe");
	assert_int_equal(tierd_proto_decode_welcome(PAYLOAD, payload_len(n), w, &why), 0);
	assert_int_equal(w->fast, 0);
	free(w);
}

static void test_error(void **state)
{
	struct tierd_msg_error m;
	const char *why;
	long n = tierd_proto_encode_error(buf, sizeof(buf), 3, -EACCES, "no\nway");

	expect_good(n);
	assert_int_equal(tierd_proto_decode_error(PAYLOAD, payload_len(n), &m, &why), 0);
	assert_int_equal(m.err, -EACCES);
	/* Control characters are replaced by the encoder. */
	assert_string_equal(m.reason, "no?way");
	set_u32(sizeof(struct tierd_msg_hdr), 5);
	expect_bad(n, "negative errno");
	set_u32(sizeof(struct tierd_msg_hdr), (uint32_t)-5000);
	expect_bad(n, "negative errno");
}

static long make_acquired(uint32_t ntensors, uint32_t ndim, uint32_t pool, uint64_t length)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, buf, sizeof(buf), TIERD_MSG_ACQUIRED, 0, 9);
	tierd_proto_put_u32(&b, 1);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_u32(&b, 0);
	tierd_proto_put_u32(&b, 3);
	tierd_proto_put_u32(&b, 5);
	tierd_proto_put_u32(&b, ntensors);
	for (uint32_t t = 0; t < (ntensors ? ntensors : 0) && t < 2; t++) {
		tierd_proto_put_u32(&b, pool);
		tierd_proto_put_u32(&b, 8);
		tierd_proto_put_u64(&b, 4096 * (t + 1));
		tierd_proto_put_u64(&b, length);
		tierd_proto_put_u32(&b, ndim);
		for (uint32_t d = 0; d < ndim && d < 9; d++)
			tierd_proto_put_u64(&b, 16);
		tierd_proto_put_str(&b, t ? "w2" : "w1");
	}
	return tierd_proto_end(&b);
}

static void test_acquired(void **state)
{
	struct tierd_msg_acquired *a;
	const char *why;
	long n = make_acquired(2, 2, 0, 512);

	expect_good(n);
	assert_int_equal(tierd_proto_decode_acquired(PAYLOAD, payload_len(n), &a, &why), 0);
	assert_int_equal(a->count, 1);
	assert_int_equal(a->experts[0].key.layer, 3);
	assert_int_equal(a->experts[0].ntensors, 2);
	assert_string_equal(a->experts[0].tensors[1].name, "w2");
	assert_int_equal(a->experts[0].tensors[1].offset, 8192);
	assert_int_equal(a->experts[0].tensors[0].shape[1], 16);
	free(a);

	expect_bad(make_acquired(0, 2, 0, 512), "tensor count");
	expect_bad(make_acquired(2, 9, 0, 512), "dimensions");
	expect_bad(make_acquired(2, 2, TIERD_PROTO_MAX_POOLS, 512), "pool index");
	expect_bad(make_acquired(2, 2, 0, 0), "empty");
	expect_bad(make_acquired(2, 2, 0, UINT64_MAX), "wraps");
	/* Says 3 tensors, carries 2. */
	expect_bad(make_acquired(3, 2, 0, 512), "truncated");
	n = make_acquired(2, 2, 0, 512);
	set_u32(sizeof(struct tierd_msg_hdr), 0);
	expect_bad(n, "expert count");
}

static void test_hint_tokens(void **state)
{
	struct tierd_proto_hint h[2] = { { 3, 0.7f }, { 9, 0.3f } };
	struct tierd_msg_hint m;
	struct tierd_msg_tokens t;
	const char *why;
	long n = tierd_proto_encode_hint(buf, sizeof(buf), 0, 1, 0, 4, h, 2);

	expect_good(n);
	assert_int_equal(tierd_proto_decode_hint(PAYLOAD, payload_len(n), &m, &why), 0);
	assert_int_equal(m.count, 2);
	assert_int_equal(m.hints[1].expert, 9);
	h[1].weight = NAN;
	expect_bad(tierd_proto_encode_hint(buf, sizeof(buf), 0, 1, 0, 4, h, 2), "weight");
	h[1].weight = 2.0f;
	expect_bad(tierd_proto_encode_hint(buf, sizeof(buf), 0, 1, 0, 4, h, 2), "weight");
	h[1].weight = 0.5f;
	n = tierd_proto_encode_hint(buf, sizeof(buf), 0, 1, 0, 4, h, 2);
	set_u32(sizeof(struct tierd_msg_hdr) + 8, 3);
	expect_bad(n, "fewer hints");

	n = tierd_proto_encode_tokens(buf, sizeof(buf), TIERD_PROTO_F_NOREPLY, 1, 2, 1000);
	expect_good(n);
	assert_int_equal(tierd_proto_decode_tokens(PAYLOAD, payload_len(n), &t, &why), 0);
	assert_int_equal(t.tokens, 1000);
	set_u32(sizeof(struct tierd_msg_hdr) + 4, 7);
	expect_bad(n, "reserved");
}

static void test_stats_warm_progress(void **state)
{
	uint64_t v[TIERD_STAT_COUNT + 2];
	struct tierd_msg_stats st;
	struct tierd_msg_warm w = { 0, 2, 5 };
	const char *why;
	long n;

	for (size_t i = 0; i < TIERD_STAT_COUNT + 2; i++)
		v[i] = i * 10;
	/* A newer daemon's extra counters are skipped, not refused. */
	n = tierd_proto_encode_stats(buf, sizeof(buf), 4, v, TIERD_STAT_COUNT + 2);
	expect_good(n);
	assert_int_equal(tierd_proto_decode_stats(PAYLOAD, payload_len(n), &st, &why), 0);
	assert_int_equal(st.value[TIERD_STAT_BYTES_READ], TIERD_STAT_BYTES_READ * 10);
	set_u32(sizeof(struct tierd_msg_hdr), TIERD_PROTO_MAX_STATS + 1);
	expect_bad(n, "too many counters");
	for (unsigned i = 0; i < TIERD_STAT_COUNT; i++)
		assert_non_null(tierd_proto_stat_name(i));
	assert_null(tierd_proto_stat_name(TIERD_STAT_COUNT));

	n = tierd_proto_encode_warm(buf, sizeof(buf), 1, &w);
	expect_good(n);
	w.first_layer = 6;
	expect_bad(tierd_proto_encode_warm(buf, sizeof(buf), 1, &w), "last layer");
	n = tierd_proto_encode_progress(buf, sizeof(buf), 1, 5, 10);
	expect_good(n);
	expect_bad(tierd_proto_encode_progress(buf, sizeof(buf), 1, 11, 10), "past the total");
	/* STATS request carries nothing. */
	n = tierd_proto_encode_u64(buf, sizeof(buf), TIERD_MSG_STATS, 1, 0);
	expect_bad(n, "no payload");
}

/* METRICS and its chunked answer: chunks reassemble to the text; counts
 * past the total, NULs and bad reserved fields are refused. */
static void test_metrics(void **state)
{
	static char text[300000];
	static char back[sizeof(text)];
	struct tierd_msg_metrics m;
	struct tierd_msg_metrics_data d;
	const char *why;
	uint64_t off = 0;
	unsigned chunks = 0;
	size_t got;
	long n;

	n = tierd_proto_encode_metrics(buf, sizeof(buf), 3, TIERD_METRICS_PROMETHEUS);
	expect_good(n);
	assert_int_equal(tierd_proto_decode_metrics(PAYLOAD, payload_len(n), &m, &why), 0);
	assert_int_equal(m.format, TIERD_METRICS_PROMETHEUS);
	set_u32(sizeof(struct tierd_msg_hdr) + 4, 1);
	expect_bad(n, "reserved");

	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 26);
	do {
		n = tierd_proto_encode_metrics_data(buf, sizeof(buf), 3, text, sizeof(text), off, &got);
		expect_good(n);
		assert_int_equal(tierd_proto_decode_metrics_data(PAYLOAD, payload_len(n), &d, &why), 0);
		assert_int_equal(d.offset, off);
		assert_int_equal(d.length, got);
		memcpy(back + off, d.data, d.length);
		off += got;
		chunks++;
	} while (off < sizeof(text));
	assert_true(chunks >= 3);
	assert_memory_equal(back, text, sizeof(text));
	/* Empty text: one empty chunk. */
	n = tierd_proto_encode_metrics_data(buf, sizeof(buf), 3, "", 0, 0, &got);
	expect_good(n);
	assert_int_equal(got, 0);

	n = tierd_proto_encode_metrics_data(buf, sizeof(buf), 3, "abc", 3, 0, &got);
	buf[n - 2] = 0;
	expect_bad(n, "NUL");
	n = tierd_proto_encode_metrics_data(buf, sizeof(buf), 3, "abc", 3, 0, &got);
	memcpy(PAYLOAD, &(uint64_t){ 2 }, 8);		/* total below what came */
	expect_bad(n, "past the total");
	memcpy(PAYLOAD, &(uint64_t){ (uint64_t)TIERD_PROTO_MAX_METRICS + 1 }, 8);
	expect_bad(n, "larger");
	n = tierd_proto_encode_metrics_data(buf, sizeof(buf), 3, "abc", 3, 3, &got);
	memcpy(PAYLOAD + 8, &(uint64_t){ 1 }, 8);	/* empty, but not at the end */
	expect_bad(n, "empty metrics chunk");
	set_u32(offsetof(struct tierd_msg_hdr, length), 4);	/* cut inside the offset */
	expect_bad((long)sizeof(struct tierd_msg_hdr) + 4, "truncated");
}

static void test_encoder_overflow(void **state)
{
	struct tierd_proto_buf b;
	char name[200];

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	tierd_proto_begin(&b, buf, 64, TIERD_MSG_HELLO, 0, 1);
	tierd_proto_put_u32(&b, 1);
	tierd_proto_put_str(&b, name);
	assert_int_equal(tierd_proto_end(&b), -EMSGSIZE);
}

/* Random corruption of valid messages never crashes the decoder (ASan
 * watches) and a corrupted message is either still valid or refused. */
static void test_corruption(void **state)
{
	struct tierd_key keys[2] = { { 0, 1, 2 }, { 0, 1, 3 } };
	unsigned seed = 1, refused = 0, valid = 0;

	for (int round = 0; round < 20000; round++) {
		long n;
		int r;
		const char *why = NULL;

		switch (round % 4) {
		case 0: n = make_welcome("olmoe"); break;
		case 1: n = make_acquired(2, 2, 0, 512); break;
		case 2: n = tierd_proto_encode_keys(buf, sizeof(buf), TIERD_MSG_RELEASE, 0, 5, keys, 2); break;
		default: n = tierd_proto_encode_error(buf, sizeof(buf), 3, -EIO, "reason"); break;
		}
		seed = seed * 1103515245u + 12345u;
		buf[sizeof(struct tierd_msg_hdr) + (seed >> 8) % payload_len(n)] ^= (uint8_t)(1u << (seed % 8));
		r = tierd_proto_validate(buf, (size_t)n, &why);
		/* Refused with a negative errno and a reason, or still valid. */
		if (r) {
			assert_true(r < 0);
			assert_non_null(why);
			assert_true(why[0] != '\0');
			refused++;
		} else {
			valid++;
		}
	}
	/* Both outcomes happen: a validator that accepted (or refused)
	 * everything would fail here. */
	assert_true(refused > 1000);
	assert_true(valid > 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_welcome),
		cmocka_unit_test(test_welcome_fast),
		cmocka_unit_test(test_error),
		cmocka_unit_test(test_acquired),
		cmocka_unit_test(test_hint_tokens),
		cmocka_unit_test(test_stats_warm_progress),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_encoder_overflow),
		cmocka_unit_test(test_corruption),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
