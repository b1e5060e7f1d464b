/* SPDX-License-Identifier: MIT */
/* safetensors header parser: good headers, and malformed ones of every kind. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "safetensors.h"

#define NAME "t.safetensors"

/* Parses 8-byte length + json; the file holds data_len bytes of data after it. */
static int parse_json_len(const char *json, size_t jl, uint64_t data_len, struct st_header **h,
			  char *err, size_t errlen)
{
	uint64_t le = htole64(jl);
	char *buf = malloc(8 + jl + 1);
	int r;

	assert_non_null(buf);
	memcpy(buf, &le, 8);
	memcpy(buf + 8, json, jl);
	r = st_header_parse(h, NAME, buf, 8 + jl, 8 + jl + data_len, err, errlen);
	free(buf);
	return r;
}

static int parse_json(const char *json, uint64_t data_len, struct st_header **h, char *err, size_t errlen)
{
	return parse_json_len(json, strlen(json), data_len, h, err, errlen);
}

/* The header must be refused with a message that names the file and contains 'fault'. */
static void expect_fault(const char *json, uint64_t data_len, const char *fault)
{
	struct st_header *h = (void *)1;
	char err[512] = "";

	assert_int_equal(parse_json(json, data_len, &h, err, sizeof(err)), -EINVAL);
	assert_null(h);
	if (strncmp(err, NAME ": ", strlen(NAME) + 2) || !strstr(err, fault))
		fail_msg("header %s: expected '%s' in the error, got '%s'", json, fault, err);
}

static void test_good_header(void **state)
{
	const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
		"\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
		"\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
		"\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[28,36]},"
		"\"z\":{\"dtype\":\"F8_E4M3\",\"shape\":[0,7],\"data_offsets\":[16,16]}}      ";
	struct st_header *h;
	const struct st_tensor *t;
	char err[256];

	assert_int_equal(parse_json(json, 36, &h, err, sizeof(err)), 0);
	assert_int_equal(h->ntensors, 4);
	assert_int_equal(h->data_start, 8 + strlen(json));
	assert_string_equal(h->tensors[0].name, "a");
	assert_string_equal(h->tensors[3].name, "z");
	t = st_header_find(h, "b");
	assert_non_null(t);
	assert_int_equal(t->dtype, ST_BF16);
	assert_int_equal(t->ndim, 2);
	assert_int_equal(t->shape[1], 3);
	assert_int_equal(t->begin, 16);
	assert_int_equal(t->end, 28);
	t = st_header_find(h, "s");
	assert_int_equal(t->ndim, 0);
	assert_null(st_header_find(h, "__metadata__"));
	assert_null(st_header_find(h, "c"));
	st_header_free(h);

	/* Empty checkpoint: valid, no tensors. */
	assert_int_equal(parse_json("{}", 0, &h, err, sizeof(err)), 0);
	assert_int_equal(h->ntensors, 0);
	st_header_free(h);
}

static void test_length_faults(void **state)
{
	struct st_header *h;
	char err[256];
	uint64_t le;
	unsigned char buf[16] = "{}";

	assert_int_equal(st_header_parse(&h, NAME, "abc", 3, 3, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "truncated"));

	le = htole64(200ULL << 20);
	memcpy(buf, &le, 8);
	assert_int_equal(st_header_parse(&h, NAME, buf, 16, 1ULL << 40, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "exceeds the limit"));

	le = htole64(UINT64_MAX);
	memcpy(buf, &le, 8);
	assert_int_equal(st_header_parse(&h, NAME, buf, 16, 16, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "exceeds the limit"));

	le = htole64(100);
	memcpy(buf, &le, 8);
	assert_int_equal(st_header_parse(&h, NAME, buf, 16, 50, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "past the end of the file"));

	/* The caller handed fewer bytes than the length says (file claims more). */
	le = htole64(100);
	memcpy(buf, &le, 8);
	assert_int_equal(st_header_parse(&h, NAME, buf, 16, 1000, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "truncated"));

	expect_fault("", 0, "not a JSON object");
	expect_fault("{", 0, "not a JSON object");
}

static void test_json_faults(void **state)
{
	struct st_header *h;
	char err[256];

	expect_fault("{abc}", 0, "not valid JSON");
	expect_fault("{\"a\":", 0, "not valid JSON");
	expect_fault("[1,2]", 0, "must start with '{'");
	expect_fault(" {}", 0, "must start with '{'");
	expect_fault("{} x", 0, "not valid JSON");
	expect_fault("{}{}", 0, "not valid JSON");
	expect_fault("{\"a\":{\"dtype\":'U8',\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON");
	/* json-c takes single-quoted keys even when strict; JSON does not (and they could hide a duplicate). */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		     "'a':{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "single-quoted");
	assert_int_equal(parse_json_len("{\"a\0\":1}", 8, 0, &h, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL"));
}

static void test_tensor_faults(void **state)
{
	expect_fault("{\"a\":1}", 0, "tensor 'a': not a JSON object");
	expect_fault("{\"a\":[]}", 0, "tensor 'a': not a JSON object");
	expect_fault("{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a': missing dtype");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor 'a': missing shape");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'a': missing data_offsets");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":2}}", 1,
		     "tensor 'a': unexpected key 'x'");
	expect_fault("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "empty tensor name");
}

static void test_dtype_faults(void **state)
{
	expect_fault("{\"a\":{\"dtype\":\"BF17\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
		     "tensor 'a': unknown dtype 'BF17'");
	expect_fault("{\"a\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "unknown dtype 'bf16'");
	expect_fault("{\"a\":{\"dtype\":16,\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "dtype is not a string");
	expect_fault("{\"a\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "dtype is not a string");
}

static void test_shape_faults(void **state)
{
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]}}", 3, "shape is not an array");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":null,\"data_offsets\":[0,3]}}", 3, "shape is not an array");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[null],\"data_offsets\":[0,3]}}", 3,
		     "shape[0] is not an integer");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[-3],\"data_offsets\":[0,3]}}", 3, "shape[0] is negative");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,3]}}", 3,
		     "shape[0] is not an integer");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,\"2\"],\"data_offsets\":[0,3]}}", 3,
		     "shape[1] is not an integer");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
		     "9 dimensions");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,1]}}", 1,
		     "shape overflows");
	expect_fault("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,1]}}", 1,
		     "dtype size overflows");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,1]}}", 1,
		     "shape[0] is too large");
	expect_fault("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 10,
		     "shape x BF16 size is 12 bytes but data_offsets [0,10) hold 10");
	/* Zero in a shape: zero bytes, whatever the other dimensions. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,1]}}", 1,
		     "hold 1");
}

static void test_offset_faults(void **state)
{
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}}", 2,
		     "data_offsets is not an array of two");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":{\"b\":0}}}", 2,
		     "data_offsets is not an array of two");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[-2,0]}}", 2,
		     "data_offsets begin is negative");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,\"2\"]}}", 2,
		     "data_offsets end is not an integer");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,0]}}", 2, "end before begin");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 2,
		     "data_offsets [1,3) beyond the data area (2 bytes)");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[18446744073709551614,18446744073709551616]}}",
		     2, "too large");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12,
		     "tensor 'b': data_offsets [4,12) overlap 'a' [0,8)");
	/* Containment is an overlap too, even behind a smaller neighbour. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[100],\"data_offsets\":[0,100]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[10,20]},"
		     "\"c\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[50,60]}}", 100, "overlap 'a'");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}", 16, "duplicate tensor name 'a'");
	expect_fault("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		     "\"a\\u0062\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
		     "\"ab\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3, "duplicate tensor name 'ab'");
}

static void test_metadata_faults(void **state)
{
	struct st_header *h;
	char err[256];

	expect_fault("{\"__metadata__\":[]}", 0, "__metadata__ is not a JSON object");
	expect_fault("{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ 'format' is not a string");
	/* Nested keys named like tensors are not duplicates. */
	assert_int_equal(parse_json("{\"__metadata__\":{\"a\":\"x\"},"
				    "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
				    &h, err, sizeof(err)), 0);
	assert_int_equal(h->ntensors, 1);
	st_header_free(h);
}

static void test_read_file(void **state)
{
	char path[] = "/tmp/test-safetensors-XXXXXX";
	const char *json = "{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
	uint64_t le = htole64(strlen(json));
	struct st_header *h;
	char err[256];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	/* Truncated: fewer than 8 bytes. */
	assert_int_equal(write(fd, "\1\2\3", 3), 3);
	assert_int_equal(st_header_read(&h, NAME, fd, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "truncated"));
	/* Header present but the data area is missing. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, &le, 8, 0), 8);
	assert_int_equal(pwrite(fd, json, strlen(json), 8), (ssize_t)strlen(json));
	assert_int_equal(st_header_read(&h, NAME, fd, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "beyond the data area (0 bytes)"));
	assert_int_equal(pwrite(fd, "abcd", 4, 8 + strlen(json)), 4);
	assert_int_equal(st_header_read(&h, NAME, fd, err, sizeof(err)), 0);
	assert_int_equal(h->ntensors, 1);
	assert_int_equal(h->file_size, 12 + strlen(json));
	st_header_free(h);
	close(fd);
}

static void test_dtypes(void **state)
{
	enum st_dtype t;

	for (unsigned i = 0; i < ST_DTYPE_COUNT; i++) {
		assert_int_equal(st_dtype_parse(st_dtype_name((enum st_dtype)i), &t), 0);
		assert_int_equal(t, i);
		assert_true(st_dtype_size(t) >= 1 && st_dtype_size(t) <= 8);
	}
	assert_int_equal(st_dtype_size(ST_BF16), 2);
	assert_int_equal(st_dtype_parse("F128", &t), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_header),
		cmocka_unit_test(test_length_faults),
		cmocka_unit_test(test_json_faults),
		cmocka_unit_test(test_tensor_faults),
		cmocka_unit_test(test_dtype_faults),
		cmocka_unit_test(test_shape_faults),
		cmocka_unit_test(test_offset_faults),
		cmocka_unit_test(test_metadata_faults),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_dtypes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
