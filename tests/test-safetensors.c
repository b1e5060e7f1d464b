/* SPDX-License-Identifier: MIT */
/* safetensors header parser: good headers, and malformed ones of every kind. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
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
	assert_int_equal(t->dtype, TIERD_DTYPE_BF16);
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

	expect_fault("", 0, "not valid JSON: unexpected end");
	expect_fault("{", 0, "not valid JSON: unexpected end");
}

static void test_json_faults(void **state)
{
	struct st_header *h;
	char err[256];

	expect_fault("{abc}", 0, "not valid JSON");
	expect_fault("{\"a\":", 0, "not valid JSON");
	expect_fault("[1,2]", 0, "header is not a JSON object");
	expect_fault("\v{}", 0, "not valid JSON");
	expect_fault("{} x", 0, "not valid JSON");
	expect_fault("{}\f", 0, "not valid JSON");
	expect_fault("{}{}", 0, "not valid JSON");
	expect_fault("{\"a\":{\"dtype\":'U8',\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON");
	/* json-c takes single-quoted keys even when strict; JSON does not. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		     "'b':{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "expected a double-quoted key at byte 53");
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
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
		     "tensor 'a': duplicate key 'dtype'");
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
		     "more than 8 dimensions");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[-0],\"data_offsets\":[0,0]}}", 0, "shape[0] is negative");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[1e0],\"data_offsets\":[0,1]}}", 1,
		     "shape[0] is not an integer");
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
		     "data_offsets[0] is negative");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,\"2\"]}}", 2,
		     "data_offsets[1] is not an integer");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,0]}}", 2, "end before begin");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 2,
		     "data_offsets [1,3) beyond the data area (2 bytes)");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[18446744073709551614,18446744073709551616]}}",
		     2, "data_offsets[1] is too large");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12,
		     "tensor 'b': data_offsets [4,12) overlap 'a' [0,8)");
	/* Containment is an overlap too, even behind a smaller neighbour. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[100],\"data_offsets\":[0,100]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[10,20]},"
		     "\"c\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[50,60]}}", 100, "overlap 'a'");
	/* A name given twice: the last entry counts (as for the reference), and
	 * the bytes the first described are then a gap. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}", 16,
		     "tensor 'a': data_offsets [8,16) leave bytes [0,8) of the data area to no tensor");
	expect_fault("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		     "\"a\\u0062\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
		     "\"ab\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3, "leave bytes [1,2)");
	/* The earlier entry must still be a well-formed one. */
	expect_fault("{\"a\":{\"dtype\":\"F128\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8,
		     "tensor 'a' (an earlier entry of that name): unknown dtype 'F128'");
	/* Gaps, a late start, bytes after the last tensor. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[12,20]}}", 20,
		     "tensor 'b': data_offsets [12,20) leave bytes [8,12) of the data area to no tensor");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12,
		     "tensor 'a': data_offsets [4,12) leave bytes [0,4)");
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 9,
		     "1 bytes after the last tensor (data ends at 8 of a 9-byte data area)");
	expect_fault("{}", 4096, "4096 bytes after the last tensor");
	/* A zero-sized tensor inside another one's bytes. */
	expect_fault("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		     "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8,
		     "tensor 'z': data_offsets [4,4) overlap 'a' [0,8)");
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

/*
 * The reference reader's verdicts (the safetensors crate, whose reader the
 * Python binding uses too): first the cases its own tests check
 * (safetensors/src/tensor.rs, bindings/python/tests), then cases they leave
 * out, each run through the crate's SafeTensors::deserialize to learn its
 * verdict.  'differs' marks the deliberate differences, with the reason;
 * doc/README-catalog.md has the same table.  With ST_CASES_DIR set, each case
 * is also written there as NNN-accept.safetensors / NNN-reject[-differs]...,
 * to be fed to the reference reader again.
 */
struct ref_case {
	const char *source;
	const char *hdr;	/* the JSON header, its length prefix added */
	size_t hdr_len;
	uint64_t data;		/* zero bytes after it */
	const char *raw;	/* or the whole file */
	size_t raw_len;
	bool accept;
	const char *fault;	/* in our message when refused */
	const char *differs;	/* why the reference's verdict is the other one */
};

#define HDR(s) .hdr = s, .hdr_len = sizeof(s) - 1
#define RAW(s) .raw = s, .raw_len = sizeof(s) - 1
#define A8 "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}"
#define T16 "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"

static const struct ref_case ref_cases[] = {
	/* Rust crate tests, safetensors/src/tensor.rs */
	{ "test_deserialization (and the Python test of that name)", HDR(T16), .data = 16, .accept = true },
	{ "test_serialization", HDR("{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}"),
	  .data = 24, .accept = true },
	{ "test_serialization_forced_alignement",
	  HDR("{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       "), .data = 24,
	  .accept = true },
	{ "test_serialization_fp4", HDR("{\"attn.0\":{\"dtype\":\"F4\",\"shape\":[1,2],\"data_offsets\":[0,1]}}    "),
	  .data = 1, .fault = "unknown dtype 'F4'",
	  .differs = "sub-byte dtypes (F4, F6_E2M3, F6_E3M2) have no byte size for the catalog and the client API" },
	{ "test_serialization_fp4_misaligned (as a header)",
	  HDR("{\"a\":{\"dtype\":\"F4\",\"shape\":[1,3],\"data_offsets\":[0,2]}}"), .data = 2,
	  .fault = "unknown dtype 'F4'" },
	{ "test_empty", HDR("{}      "), .accept = true },
	{ "test_empty, with metadata", HDR("{\"__metadata__\":{\"framework\":\"pt\"}}     "), .accept = true },
	{ "test_empty_shapes_allowed", HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}"),
	  .data = 4, .accept = true },
	{ "test_json_attack: ten tensors on the same bytes",
	  HDR("{\"w0\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w1\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w2\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w3\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w4\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w5\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w6\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w7\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w8\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	      "\"w9\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"), .data = 16,
	  .fault = "overlap" },
	{ "test_metadata_incomplete_buffer: bytes after the last tensor",
	  RAW("<\0\0\0\0\0\0\0" T16 "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0extra_bogus_data_for_polyglot_file"),
	  .fault = "34 bytes after the last tensor" },
	{ "test_metadata_incomplete_buffer: 2 bytes missing", HDR(T16), .data = 14,
	  .fault = "beyond the data area (14 bytes)" },
	{ "test_header_too_large", RAW("<\0\0\0\0\xff\xff\xff" T16), .fault = "exceeds the limit" },
	{ "test_header_too_small", RAW(""), .fault = "truncated" },
	{ "test_invalid_header_length", RAW("<\0\0\0\0\0\0\0"), .fault = "runs past the end of the file" },
	{ "test_invalid_header_non_utf8", RAW("\x01\0\0\0\0\0\0\0\xff"), .fault = "not valid UTF-8 at byte 0" },
	{ "test_invalid_header_not_json", RAW("\x01\0\0\0\0\0\0\0{"), .fault = "not valid JSON" },
	{ "test_whitespace_padded_header", HDR("{}\r \t\n"), .accept = true },
	{ "test_whitespace_leading_padded_header", HDR("\t\n{}\r "), .accept = true },
	{ "test_zero_sized_tensor", HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[0, 0]}}"),
	  .accept = true },
	{ "test_invalid_info", HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0, 4]}}"),
	  .fault = "beyond the data area (0 bytes)" },
	{ "test_invalid_info, with the 4 bytes present",
	  HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0, 4]}}"), .data = 4,
	  .fault = "shape x I32 size is 16 bytes but data_offsets [0,4) hold 4" },
	{ "test_validation_overflow: the shape",
	  HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,18446744073709551614],\"data_offsets\":[0,16]}}"),
	  .data = 16, .fault = "shape overflows 64 bits" },
	{ "test_validation_overflow: shape x dtype size",
	  HDR("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,16]}}"),
	  .data = 16, .fault = "shape x dtype size overflows 64 bits" },
	/* Python binding tests, bindings/python/tests */
	{ "test_simple.py test_deserialization_metadata",
	  HDR("{\"__metadata__\":{\"framework\":\"pt\"},\"test1\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}       "),
	  .data = 16, .accept = true },
	{ "test_pread_backend.py test_truncated_header_is_rejected",
	  RAW("<\0\0\0\0\0\0\0{\"test\":{\"dtype\":\"I32\",\"shape\":"), .fault = "runs past the end of the file" },
	{ "test_pread_backend.py test_data_offset_overflow_is_rejected",
	  HDR("{\"liar\":{\"dtype\":\"F32\",\"shape\":[1024,1024],\"data_offsets\":[0,4194304]}}"), .data = 1,
	  .fault = "beyond the data area (1 bytes)" },
	{ "test_pt_comparison.py test_zero_sized",
	  HDR("{\"test\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]}}"), .accept = true },
	{ "test_pt_comparison.py test_multiple_zero_sized",
	  HDR("{\"test\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]},"
	      "\"test2\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]}}"), .accept = true },
	{ "test_simple.py test_exception (an unknown dtype)",
	  HDR("{\"a\":{\"dtype\":\"nonsense\",\"shape\":[1],\"data_offsets\":[0,1]}}"), .data = 1,
	  .fault = "unknown dtype 'nonsense'" },
	/* Left out by those tests: the reference reader's verdicts. */
	{ "gap between tensors", HDR("{" A8 ",\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[9,17]}}"),
	  .data = 17, .fault = "leave bytes [8,9)" },
	{ "data not starting at 0", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[1,9]}}"), .data = 9,
	  .fault = "leave bytes [0,1)" },
	{ "overlap", HDR("{" A8 ",\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}"), .data = 12,
	  .fault = "overlap 'a'" },
	{ "tensors listed out of offset order",
	  HDR("{\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}," A8 "}"), .data = 16, .accept = true },
	{ "empty header, one byte after it", HDR("{}"), .data = 1, .fault = "1 bytes after the last tensor" },
	{ "zero-sized tensors at the boundaries",
	  HDR("{" A8 ",\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]},"
	      "\"y\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}"), .data = 8, .accept = true },
	{ "zero-sized tensor inside another",
	  HDR("{" A8 ",\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}"), .data = 8,
	  .fault = "overlap 'a'" },
	{ "zero-sized tensor past the end", HDR("{" A8 ",\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]}}"),
	  .data = 8, .fault = "beyond the data area" },
	{ "zero in a shape with huge dimensions",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[0,18446744073709551615,18446744073709551615],\"data_offsets\":[0,0]}}"),
	  .accept = true },
	{ "dimension 2^64 - 1", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "shape x dtype size overflows" },
	{ "dimension 2^64", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "shape[0] is too large" },
	{ "element count x bits overflows, x bytes does not",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "shape x dtype size overflows" },
	{ "-0 in a shape", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8,-0],\"data_offsets\":[0,0]}}"),
	  .fault = "shape[1] is negative" },
	{ "-0 in data_offsets", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[-0,0]}}"),
	  .fault = "data_offsets[0] is negative" },
	{ "8.0 in a shape", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8.0],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "shape[0] is not an integer" },
	{ "8e0 in a shape", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8e0],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "shape[0] is not an integer" },
	{ "\"8\" in a shape", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[\"8\"],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "shape[0] is not an integer" },
	{ "leading zero", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[08],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "not valid JSON" },
	{ "three data_offsets", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8,8]}}"), .data = 8,
	  .fault = "not an array of two integers" },
	{ "data_offsets as an object", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":{\"0\":0,\"1\":8}}}"),
	  .data = 8, .fault = "not an array of two integers" },
	{ "end before begin", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}"), .data = 8,
	  .fault = "end before begin" },
	{ "nine dimensions", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "more than 8 dimensions",
	  .differs = "the catalog and the client protocol carry at most 8 dimensions" },
	{ "dtype C64", HDR("{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "unknown dtype 'C64'",
	  .differs = "C64, F8_E4M3FNUZ, F8_E5M2FNUZ are not in the client API's dtype list" },
	{ "dtype in lower case", HDR("{\"a\":{\"dtype\":\"u8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "unknown dtype 'u8'" },
	{ "dtype null", HDR("{\"a\":{\"dtype\":null,\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "dtype is not a string" },
	{ "shape null", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":null,\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "shape is not an array" },
	{ "shape missing", HDR("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,8]}}"), .data = 8, .fault = "missing shape" },
	{ "tensor entry an array", HDR("{\"a\":[1]}"), .fault = "tensor 'a': not a JSON object" },
	{ "tensor entry true", HDR("{\"a\":true}"), .fault = "tensor 'a': not a JSON object" },
	{ "unknown key in a tensor entry (ignored)",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":{\"k\":-0,\"k\":[]}}}"), .data = 8,
	  .accept = true },
	{ "a key of the entry given twice", HDR("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "tensor 'a': duplicate key 'dtype'" },
	{ "the same key, escaped", HDR("{\"a\":{\"d\\u0074ype\":\"U8\",\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "duplicate key 'dtype'" },
	{ "an escaped key", HDR("{\"a\":{\"d\\u0074ype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .accept = true },
	{ "tensor name given twice, same entry (the last counts)", HDR("{" A8 "," A8 "}"), .data = 8, .accept = true },
	{ "tensor name given twice, the first leaving a gap",
	  HDR("{" A8 ",\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]}}"), .data = 16,
	  .fault = "leave bytes [0,8)" },
	{ "tensor name given twice, the first malformed",
	  HDR("{\"a\":{\"dtype\":\"XX\",\"shape\":[8],\"data_offsets\":[0,8]}," A8 "}"), .data = 8,
	  .fault = "(an earlier entry of that name): unknown dtype 'XX'" },
	{ "tensor name given twice, the first not an object", HDR("{\"a\":1," A8 "}"), .data = 8,
	  .fault = "(an earlier entry of that name): not a JSON object" },
	{ "tensor name given twice, the first with a key twice",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}," A8 "}"), .data = 8,
	  .fault = "duplicate key 'dtype'" },
	{ "tensor name given twice, the first with bad offsets",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[5,1]}," A8 "}"), .data = 8, .accept = true },
	{ "tensor name given twice, the first with nine dimensions",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}," A8 "}"), .data = 8,
	  .accept = true },
	{ "empty tensor name", HDR("{\"\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .accept = true },
	{ "UTF-8 tensor name", HDR("{\"\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .accept = true },
	{ "tensor name from a surrogate pair",
	  HDR("{\"\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .accept = true },
	{ "tensor name with \\u0000", HDR("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "holds a NUL character",
	  .differs = "names are C strings in the catalog and on the wire" },
	{ "a key of a tensor entry with \\u0000 after a known name",
	  HDR("{\"a\":{\"dtype\\u0000\":\"F4\",\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "key 'dtype\\u0000...' holds a NUL character", .differs = "keys are C strings in json-c's tree" },
	{ "the survivor's dtype key with \\u0000 after it",
	  HDR("{" A8 ",\"a\":{\"dtype\\u0000\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "holds a NUL character" },
	{ "unpaired surrogate", HDR("{\"a\\ud800\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "unpaired surrogate" },
	{ "invalid escape", HDR("{\"a\\x\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "not valid JSON" },
	{ "raw tab in a string", HDR("{\"a\tb\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "control character in a string" },
	{ "invalid UTF-8 in a name", HDR("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "not valid UTF-8 at byte 3" },
	{ "overlong UTF-8", HDR("{\"a\xc0\x80\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"), .data = 8,
	  .fault = "not valid UTF-8 at byte 3" },
	{ "a surrogate in UTF-8", HDR("{\"a\xed\xa0\x80\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "not valid UTF-8 at byte 3" },
	{ "byte order mark", HDR("\xef\xbb\xbf{" A8 "}"), .data = 8, .fault = "not valid JSON" },
	{ "NUL after the object", HDR("{" A8 "}\0"), .data = 8, .fault = "NUL byte" },
	{ "vertical tab after the object", HDR("{" A8 "}\v"), .data = 8, .fault = "not valid JSON" },
	{ "vertical tab before the object", HDR("\v{" A8 "}"), .data = 8, .fault = "not valid JSON" },
	{ "form feed between tokens", HDR("{\f" A8 "}"), .data = 8, .fault = "not valid JSON" },
	{ "JSON whitespace between tokens", HDR("{ " A8 " , \"__metadata__\" :\r\n{ } }"), .data = 8, .accept = true },
	{ "a comment", HDR("{/*c*/" A8 "}"), .data = 8, .fault = "not valid JSON" },
	{ "a trailing comma", HDR("{" A8 ",}"), .data = 8, .fault = "not valid JSON" },
	{ "NaN", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":NaN}}"), .data = 8,
	  .fault = "not valid JSON" },
	{ "1e400", HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":1e400}}"), .data = 8,
	  .fault = "number out of range" },
	{ "an integer past 64 bits where any value goes",
	  HDR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":99999999999999999999999}}"),
	  .data = 8, .accept = true },
	{ "empty header", RAW("\0\0\0\0\0\0\0\0"), .fault = "not valid JSON" },
	{ "top level an array", HDR("[]"), .fault = "not a JSON object" },
	{ "__metadata__ null", HDR("{\"__metadata__\":null," A8 "}"), .data = 8, .accept = true },
	{ "__metadata__ an array", HDR("{\"__metadata__\":[]," A8 "}"), .data = 8, .fault = "__metadata__ is not a JSON object" },
	{ "__metadata__ value a number", HDR("{\"__metadata__\":{\"x\":1}," A8 "}"), .data = 8,
	  .fault = "__metadata__ 'x' is not a string" },
	{ "__metadata__ value null", HDR("{\"__metadata__\":{\"x\":null}," A8 "}"), .data = 8,
	  .fault = "__metadata__ 'x' is not a string" },
	{ "__metadata__ shaped like a tensor", HDR("{\"__metadata__\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}"),
	  .data = 8, .fault = "__metadata__ 'shape' is not a string" },
	{ "__metadata__ with a key twice (the last counts)", HDR("{\"__metadata__\":{\"x\":\"1\",\"x\":\"2\"}," A8 "}"),
	  .data = 8, .accept = true },
	{ "__metadata__ with an empty key", HDR("{\"__metadata__\":{\"\":\"\"}," A8 "}"), .data = 8, .accept = true },
	{ "__metadata__ given twice", HDR("{\"__metadata__\":{\"x\":\"1\"},\"__metadata__\":{\"y\":\"2\"}," A8 "}"),
	  .data = 8, .fault = "duplicate key '__metadata__'" },
	{ "__metadata__ given twice, once escaped", HDR("{\"__metadata__\":{},\"__meta\\u0064ata__\":{}," A8 "}"),
	  .data = 8, .fault = "duplicate key '__metadata__'" },
};

/* 127 levels of nesting pass the reference, 128 do not. */
static char *nested(unsigned levels)
{
	const char *pre = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":";
	size_t n = strlen(pre), arrays = levels - 2;
	char *s = malloc(n + 2 * arrays + 3);

	assert_non_null(s);
	memcpy(s, pre, n);
	memset(s + n, '[', arrays);
	memset(s + n + arrays, ']', arrays);
	strcpy(s + n + 2 * arrays, "}}");
	return s;
}

static void check_case(unsigned i, const char *source, const uint8_t *file, size_t len, bool accept,
		       const char *fault, const char *differs)
{
	const char *dir = getenv("ST_CASES_DIR");
	struct st_header *h = NULL;
	char err[512] = "";
	int r;

	if (dir) {
		char path[4096];
		FILE *f;

		snprintf(path, sizeof(path), "%s/%03u-%s%s.safetensors", dir, i, accept ? "accept" : "reject",
			 differs ? "-differs" : "");
		f = fopen(path, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(file, 1, len, f), len);
		assert_int_equal(fclose(f), 0);
	}
	r = st_header_parse(&h, NAME, file, len, len, err, sizeof(err));
	if (accept && r)
		fail_msg("case %u (%s): refused: %s", i, source, err);
	if (!accept && r != -EINVAL)
		fail_msg("case %u (%s): %s, the reference %s", i, source, r ? strerror(-r) : "accepted",
			 differs ? "accepts it (a deliberate difference)" : "refuses it");
	if (!accept && !strstr(err, fault))
		fail_msg("case %u (%s): expected '%s' in '%s'", i, source, fault, err);
	st_header_free(h);
}

static void test_reference_cases(void **state)
{
	unsigned i;

	for (i = 0; i < sizeof(ref_cases) / sizeof(ref_cases[0]); i++) {
		const struct ref_case *c = &ref_cases[i];
		size_t len = c->hdr ? 8 + c->hdr_len + c->data : c->raw_len;
		uint8_t *file = calloc(1, len + 1);
		uint64_t le = htole64(c->hdr_len);

		assert_non_null(file);
		if (c->hdr) {
			memcpy(file, &le, 8);
			memcpy(file + 8, c->hdr, c->hdr_len);
		} else {
			memcpy(file, c->raw, c->raw_len);
		}
		check_case(i, c->source, file, len, c->accept, c->fault, c->differs);
		free(file);
	}
	for (unsigned levels = 127; levels <= 128; levels++, i++) {
		char *json = nested(levels);
		size_t jl = strlen(json), len = 8 + jl + 8;
		uint8_t *file = calloc(1, len);
		uint64_t le = htole64(jl);

		assert_non_null(file);
		memcpy(file, &le, 8);
		memcpy(file + 8, json, jl);
		check_case(i, levels == 127 ? "127 levels of nesting" : "128 levels of nesting", file, len,
			   levels == 127, "nesting too deep", NULL);
		free(file);
		free(json);
	}
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
	enum tierd_dtype t;

	for (unsigned i = 0; i < TIERD_DTYPE_COUNT; i++) {
		assert_int_equal(st_dtype_parse(tierd_dtype_name((enum tierd_dtype)i), &t), 0);
		assert_int_equal(t, i);
		assert_true(tierd_dtype_size(t) >= 1 && tierd_dtype_size(t) <= 8);
	}
	assert_int_equal(tierd_dtype_size(TIERD_DTYPE_BF16), 2);
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
		cmocka_unit_test(test_reference_cases),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
