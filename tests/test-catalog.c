/* SPDX-License-Identifier: MIT */
/* Catalog: every preset, sharded checkpoints, bad indexes, slot layout, demo store round trip. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
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

#include <json-c/json.h>

#include "catalog.h"
#include "conf.h"
#include "demostore.h"
#include "safetensors.h"

/* ---- helpers ---------------------------------------------------------------------------- */

struct tdef {
	const char *name;
	const char *dtype;
	unsigned ndim;
	uint64_t shape[4];
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int setup_dir(void **state)
{
	char *dir = strdup("/tmp/test-catalog-XXXXXX");

	if (!dir || !mkdtemp(dir))
		return -1;
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* A safetensors file holding the tensors packed in order, contents zero. */
static void write_st(const char *dir, const char *name, const struct tdef *ts, size_t n)
{
	struct json_object *h = json_object_new_object();
	char path[PATH_MAX];
	const char *js;
	uint64_t pos = 0, le;
	size_t sz;
	int fd;

	for (size_t i = 0; i < n; i++) {
		struct json_object *t = json_object_new_object(), *sh = json_object_new_array(),
				   *of = json_object_new_array();
		enum tierd_dtype dt;
		uint64_t bytes;

		assert_int_equal(st_dtype_parse(ts[i].dtype, &dt), 0);
		bytes = tierd_dtype_size(dt);
		for (unsigned d = 0; d < ts[i].ndim; d++) {
			json_object_array_add(sh, json_object_new_int64((int64_t)ts[i].shape[d]));
			bytes *= ts[i].shape[d];
		}
		json_object_array_add(of, json_object_new_int64((int64_t)pos));
		json_object_array_add(of, json_object_new_int64((int64_t)(pos + bytes)));
		pos += bytes;
		json_object_object_add(t, "dtype", json_object_new_string(ts[i].dtype));
		json_object_object_add(t, "shape", sh);
		json_object_object_add(t, "data_offsets", of);
		json_object_object_add(h, ts[i].name, t);
	}
	js = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
	sz = strlen(js);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	le = htole64(sz);
	assert_int_equal(write(fd, &le, 8), 8);
	assert_int_equal(write(fd, js, sz), (ssize_t)sz);
	assert_int_equal(ftruncate(fd, (off_t)(8 + sz + pos)), 0);
	close(fd);
	json_object_put(h);
}

/* Opens dir expecting failure with 'fault' in the message. */
static void expect_fault(const char *dir, const char *preset, const struct tierd_conf *conf, const char *fault)
{
	struct catalog *cat = NULL;
	char err[512] = "";
	int r = catalog_open(&cat, dir, preset, conf, err, sizeof(err));

	if (r >= 0 || cat || !strstr(err, fault))
		fail_msg("expected failure with '%s', got %d '%s'", fault, r, err);
}

static struct catalog *open_ok(const char *dir, const char *preset, const struct tierd_conf *conf)
{
	struct catalog *cat = NULL;
	char err[512] = "";

	if (catalog_open(&cat, dir, preset, conf, err, sizeof(err)))
		fail_msg("catalog_open %s: %s", dir, err);
	return cat;
}

/* Reads every extent of every expert into an aligned slot and checks every tensor byte. */
static void verify_all(const struct catalog *cat)
{
	void *slot = NULL;
	int fds[16];

	assert_true(cat->nfiles <= 16);
	for (uint32_t f = 0; f < cat->nfiles; f++) {
		fds[f] = open(cat->files[f].path, O_RDONLY);
		assert_true(fds[f] >= 0);
	}
	assert_int_equal(posix_memalign(&slot, cat->align, cat->slot_bytes), 0);
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		const struct catalog_expert *ex = &cat->experts[i];

		assert_ptr_equal(catalog_find(cat, ex->layer, ex->expert), ex);
		/* Extents never overlap in the slot. */
		for (uint32_t x = 0; x < ex->nextents; x++)
			for (uint32_t y = x + 1; y < ex->nextents; y++)
				assert_true(ex->extents[x].slot_offset + ex->extents[x].length <= ex->extents[y].slot_offset ||
					    ex->extents[y].slot_offset + ex->extents[y].length <= ex->extents[x].slot_offset);
		assert_true(ex->slot_bytes <= cat->slot_bytes);
		memset(slot, 0xee, cat->slot_bytes);
		for (uint32_t x = 0; x < ex->nextents; x++) {
			const struct catalog_extent *e = &ex->extents[x];
			ssize_t n;

			assert_int_equal(e->offset % cat->align, 0);
			assert_int_equal(e->length % cat->align, 0);
			assert_int_equal(e->slot_offset % cat->align, 0);
			assert_true(e->slot_offset + e->length <= ex->slot_bytes);
			n = pread(fds[e->file], (char *)slot + e->slot_offset, e->length, (off_t)e->offset);
			/* Short only at the end of the file. */
			assert_true(n == (ssize_t)e->length ||
				    (n >= 0 && e->offset + (uint64_t)n == cat->files[e->file].size));
		}
		assert_int_equal(demostore_verify_expert(ex, slot), 0);
	}
	/* And the check can fail: one flipped byte of the last tensor is found. */
	{
		const struct catalog_expert *ex = &cat->experts[cat->nexperts - 1];
		const struct catalog_tensor *t = &ex->tensors[ex->ntensors - 1];

		((unsigned char *)slot)[t->slot_offset + t->length - 1] ^= 0x40;
		assert_int_equal(demostore_verify_expert(ex, slot), -EBADMSG);
	}
	free(slot);
	for (uint32_t f = 0; f < cat->nfiles; f++)
		close(fds[f]);
}

/* ---- demo store round trips --------------------------------------------------------------- */

static void round_trip(const char *dir, const struct demostore_opts *o, const char *preset, uint32_t ntensors)
{
	struct catalog *cat;
	char err[512];

	assert_int_equal(demostore_write(dir, o, err, sizeof(err)), 0);
	cat = open_ok(dir, NULL, NULL);
	assert_string_equal(cat->preset, preset);
	assert_int_equal(cat->nlayers, o->layers);
	assert_int_equal(cat->experts_per_layer, o->experts);
	assert_int_equal(cat->nexperts, o->layers * o->experts);
	assert_int_equal(cat->top_k, o->top_k);
	assert_int_equal(cat->nfiles, o->shards);
	assert_int_equal(cat->experts[0].ntensors, ntensors);
	assert_int_equal(cat->experts[0].bytes, demostore_expert_bytes(o));
	assert_true(cat->dense_tensors > 0);
	assert_null(catalog_find(cat, o->layers, 0));
	assert_null(catalog_find(cat, 0, o->experts));
	verify_all(cat);
	/* Another alignment: the same bytes land where the new layout says. */
	assert_int_equal(catalog_layout_slots(cat, 512), 0);
	verify_all(cat);
	catalog_free(cat);
}

static void test_demo_mixtral(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	round_trip(*state, &o, "mixtral", 3);
}

static void test_demo_mixtral_single_file(void **state)
{
	struct demostore_opts o;
	char path[PATH_MAX];

	demostore_opts_default(&o);
	o.shards = 1;
	o.layers = 3;
	o.experts = 5;
	o.hidden = 40;
	o.ffn = 17;	/* odd sizes: nothing lands aligned */
	round_trip(*state, &o, "mixtral", 3);
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", (char *)*state);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_demo_qwen_sharded(void **state)
{
	struct demostore_opts o;

	demostore_opts_default(&o);
	o.layout = DEMOSTORE_QWEN;
	o.layers = 4;
	o.shards = 3;
	o.experts = 8;
	o.top_k = 4;
	round_trip(*state, &o, "qwen-moe", 3);
}

static void test_demo_qwen_fp8(void **state)
{
	struct demostore_opts o;
	struct catalog *cat;

	demostore_opts_default(&o);
	o.layout = DEMOSTORE_QWEN;
	o.dtype = TIERD_DTYPE_F8_E4M3;
	o.hidden = 256;
	o.ffn = 200;
	round_trip(*state, &o, "qwen-moe", 6);
	cat = open_ok(*state, "qwen-moe", NULL);
	assert_string_equal(cat->experts[0].tensors[1].name, "model.layers.0.mlp.experts.0.down_proj.weight_scale_inv");
	assert_int_equal(cat->experts[0].tensors[1].dtype, TIERD_DTYPE_F32);
	assert_int_equal(cat->experts[0].tensors[1].shape[0], 2);
	assert_int_equal(cat->experts[0].tensors[1].shape[1], 2);
	assert_int_equal(cat->experts[0].tensors[0].dtype, TIERD_DTYPE_F8_E4M3);
	catalog_free(cat);
}

static void test_demo_fused(void **state)
{
	struct demostore_opts o;
	struct catalog *cat;
	const struct catalog_tensor *t0, *t1;

	demostore_opts_default(&o);
	o.layout = DEMOSTORE_FUSED;
	o.experts = 6;
	o.hidden = 24;
	o.ffn = 40;
	round_trip(*state, &o, "llama4", 2);
	cat = open_ok(*state, NULL, NULL);
	/* Expert E is the E-th slice: offset advances by one slice per expert. */
	t0 = &catalog_find(cat, 1, 0)->tensors[1];
	t1 = &catalog_find(cat, 1, 5)->tensors[1];
	assert_string_equal(t0->name, "model.layers.1.feed_forward.experts.gate_up_proj");
	assert_int_equal(t0->ndim, 2);
	assert_int_equal(t0->shape[0], 24);
	assert_int_equal(t0->shape[1], 80);
	assert_int_equal(t0->length, 24 * 80 * 2);
	assert_int_equal(t1->offset - t0->offset, 5 * t0->length);
	catalog_free(cat);
}

static void test_demo_bad_opts(void **state)
{
	struct demostore_opts o;
	char err[256];

	demostore_opts_default(&o);
	o.shards = 5;	/* more shards than layers */
	assert_int_equal(demostore_write(*state, &o, err, sizeof(err)), -EINVAL);
	demostore_opts_default(&o);
	o.top_k = 9;
	assert_int_equal(demostore_write(*state, &o, err, sizeof(err)), -EINVAL);
}

static void test_demostore_byte(void **state)
{
	unsigned char buf[100];

	/* fill() and byte() agree at any starting offset, and contents depend on every coordinate. */
	demostore_fill(3, 4, 1, 13, buf, sizeof(buf));
	for (unsigned i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], demostore_byte(3, 4, 1, 13 + i));
	demostore_fill(3, 4, 1, 0, buf, 64);
	assert_memory_not_equal(buf, buf + 8, 8);
	demostore_fill(3, 4, 2, 0, buf + 64, 8);
	assert_memory_not_equal(buf, buf + 64, 8);
	demostore_fill(3, 5, 1, 0, buf + 64, 8);
	assert_memory_not_equal(buf, buf + 64, 8);
	demostore_fill(2, 4, 1, 0, buf + 64, 8);
	assert_memory_not_equal(buf, buf + 64, 8);
}

/* ---- presets over hand-written checkpoints --------------------------------------------------- */

static void test_deepseek_fp8(void **state)
{
	/* DeepSeek-V3 shape: dense first layers, shared experts, FP8 weights with block scales. */
	const struct tdef ts[] = {
		{ "model.embed_tokens.weight", "BF16", 2, { 16, 8 } },
		{ "model.layers.0.mlp.gate_proj.weight", "F8_E4M3", 2, { 32, 8 } },
		{ "model.layers.0.mlp.gate_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.gate.weight", "BF16", 2, { 2, 8 } },
		{ "model.layers.1.mlp.gate.e_score_correction_bias", "F32", 1, { 2 } },
		{ "model.layers.1.mlp.shared_experts.up_proj.weight", "F8_E4M3", 2, { 4, 8 } },
		{ "model.layers.1.mlp.experts.0.gate_proj.weight", "F8_E4M3", 2, { 4, 8 } },
		{ "model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.experts.0.up_proj.weight", "F8_E4M3", 2, { 4, 8 } },
		{ "model.layers.1.mlp.experts.0.up_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.experts.0.down_proj.weight", "F8_E4M3", 2, { 8, 4 } },
		{ "model.layers.1.mlp.experts.0.down_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.experts.1.down_proj.weight", "F8_E4M3", 2, { 8, 4 } },
		{ "model.layers.1.mlp.experts.1.down_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.experts.1.gate_proj.weight", "F8_E4M3", 2, { 4, 8 } },
		{ "model.layers.1.mlp.experts.1.gate_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
		{ "model.layers.1.mlp.experts.1.up_proj.weight", "F8_E4M3", 2, { 4, 8 } },
		{ "model.layers.1.mlp.experts.1.up_proj.weight_scale_inv", "F32", 2, { 1, 1 } },
	};
	struct catalog *cat;
	const struct catalog_expert *ex;

	write_st(*state, "model.safetensors", ts, sizeof(ts) / sizeof(ts[0]));
	write_file(*state, "config.json", "{\"model_type\":\"deepseek_v3\",\"n_routed_experts\":2,"
		   "\"num_experts_per_tok\":1,\"first_k_dense_replace\":1}");
	cat = open_ok(*state, NULL, NULL);
	assert_string_equal(cat->preset, "qwen-moe");
	assert_int_equal(cat->nlayers, 1);
	assert_int_equal(cat->experts_per_layer, 2);
	assert_int_equal(cat->top_k, 1);
	assert_int_equal(cat->dense_tensors, 6);
	assert_null(catalog_find(cat, 0, 0));
	ex = catalog_find(cat, 1, 1);
	assert_non_null(ex);
	assert_int_equal(ex->ntensors, 6);
	assert_int_equal(ex->bytes, 3 * 32 + 3 * 4);
	/* All six tensors are adjacent in the file: one read. */
	assert_int_equal(ex->nextents, 1);
	assert_string_equal(ex->tensors[0].name, "model.layers.1.mlp.experts.1.down_proj.weight");
	catalog_free(cat);

	write_file(*state, "config.json", "{\"n_routed_experts\":3}");
	expect_fault(*state, NULL, NULL, "config.json says 3 experts per layer, the tensors (preset qwen-moe) have 2");
	write_file(*state, "config.json", "{\"num_experts_per_tok\":4}");
	expect_fault(*state, NULL, NULL, "top-k 4 exceeds 2");
	write_file(*state, "config.json", "{\"num_experts_per_tok\":\"2\"}");
	expect_fault(*state, NULL, NULL, "num_experts_per_tok is not a positive integer");
	write_file(*state, "config.json", "{\"num_experts_per_tok\":");
	expect_fault(*state, NULL, NULL, "config.json: not a JSON object");
	{
		/* json-c would stop at the NUL and take the object before it. */
		static const char text[] = "{}\0{\"n_routed_experts\":3}";
		char path[PATH_MAX];
		FILE *f;

		snprintf(path, sizeof(path), "%s/config.json", (const char *)*state);
		f = fopen(path, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(text, 1, sizeof(text) - 1, f), sizeof(text) - 1);
		assert_int_equal(fclose(f), 0);
		expect_fault(*state, NULL, NULL, "config.json: contains a NUL byte");
	}
}

static void test_gpt_oss(void **state)
{
	/* gpt-oss: fused experts with MXFP4 blocks/scales and biases; E is the first dimension. */
	const struct tdef ts[] = {
		{ "model.layers.0.mlp.router.weight", "BF16", 2, { 4, 16 } },
		{ "model.layers.0.mlp.router.bias", "BF16", 1, { 4 } },
		{ "model.layers.0.mlp.experts.gate_up_proj_blocks", "U8", 4, { 4, 6, 1, 16 } },
		{ "model.layers.0.mlp.experts.gate_up_proj_scales", "U8", 3, { 4, 6, 1 } },
		{ "model.layers.0.mlp.experts.gate_up_proj_bias", "BF16", 2, { 4, 6 } },
		{ "model.layers.0.mlp.experts.down_proj_blocks", "U8", 4, { 4, 16, 1, 16 } },
		{ "model.layers.0.mlp.experts.down_proj_scales", "U8", 3, { 4, 16, 1 } },
		{ "model.layers.0.mlp.experts.down_proj_bias", "BF16", 2, { 4, 16 } },
		{ "model.layers.1.mlp.experts.gate_up_proj_blocks", "U8", 4, { 4, 6, 1, 16 } },
		{ "model.layers.1.mlp.experts.gate_up_proj_scales", "U8", 3, { 4, 6, 1 } },
		{ "model.layers.1.mlp.experts.gate_up_proj_bias", "BF16", 2, { 4, 6 } },
		{ "model.layers.1.mlp.experts.down_proj_blocks", "U8", 4, { 4, 16, 1, 16 } },
		{ "model.layers.1.mlp.experts.down_proj_scales", "U8", 3, { 4, 16, 1 } },
		{ "model.layers.1.mlp.experts.down_proj_bias", "BF16", 2, { 4, 16 } },
	};
	struct catalog *cat;
	const struct catalog_expert *e0, *e3;

	write_st(*state, "model.safetensors", ts, sizeof(ts) / sizeof(ts[0]));
	write_file(*state, "config.json", "{\"num_local_experts\":4,\"experts_per_token\":2}");
	cat = open_ok(*state, NULL, NULL);
	assert_string_equal(cat->preset, "gpt-oss");
	assert_int_equal(cat->nlayers, 2);
	assert_int_equal(cat->experts_per_layer, 4);
	assert_int_equal(cat->top_k, 2);
	assert_int_equal(cat->dense_tensors, 2);
	e0 = catalog_find(cat, 1, 0);
	e3 = catalog_find(cat, 1, 3);
	assert_int_equal(e0->ntensors, 6);
	assert_string_equal(e0->tensors[0].name, "model.layers.1.mlp.experts.down_proj_bias");
	assert_int_equal(e0->tensors[0].ndim, 1);
	assert_int_equal(e0->tensors[0].shape[0], 16);
	assert_int_equal(e0->tensors[0].length, 32);
	assert_int_equal(e3->tensors[0].offset, e0->tensors[0].offset + 3 * 32);
	assert_string_equal(e0->tensors[1].name, "model.layers.1.mlp.experts.down_proj_blocks");
	assert_int_equal(e0->tensors[1].ndim, 3);
	assert_int_equal(e0->tensors[1].length, 16 * 16);
	assert_int_equal(e0->bytes, 6 * 16 + 6 + 12 + 256 + 16 + 32);
	catalog_free(cat);
	/* An explicit preset that does not fit is refused, not guessed around. */
	expect_fault(*state, "mixtral", NULL, "preset mixtral matches no tensor");
	expect_fault(*state, "nope", NULL, "preset 'nope' is neither built in nor configured");
}

static void test_llama4_multimodal(void **state)
{
	const struct tdef ts[] = {
		{ "language_model.model.layers.0.feed_forward.experts.down_proj", "BF16", 3, { 3, 4, 2 } },
		{ "language_model.model.layers.0.feed_forward.experts.gate_up_proj", "BF16", 3, { 3, 2, 8 } },
		{ "language_model.model.layers.0.feed_forward.router.weight", "BF16", 2, { 3, 2 } },
		{ "vision_model.layers.0.mlp.fc1.weight", "BF16", 2, { 2, 2 } },
	};
	struct catalog *cat;

	write_st(*state, "model.safetensors", ts, 4);
	write_file(*state, "config.json", "{\"text_config\":{\"num_local_experts\":3,\"num_experts_per_tok\":1}}");
	cat = open_ok(*state, NULL, NULL);
	assert_string_equal(cat->preset, "llama4");
	assert_int_equal(cat->experts_per_layer, 3);
	assert_int_equal(cat->top_k, 1);
	assert_int_equal(cat->experts[2].tensors[0].offset, cat->experts[0].tensors[0].offset + 2 * 16);
	catalog_free(cat);
}

static void test_llama4_per_expert(void **state)
{
	const struct tdef ts[] = {
		{ "language_model.model.layers.1.feed_forward.experts.0.gate_proj.weight", "F8_E4M3", 2, { 4, 2 } },
		{ "language_model.model.layers.1.feed_forward.experts.0.gate_proj.weight_scale", "F32", 2, { 4, 1 } },
		{ "language_model.model.layers.1.feed_forward.experts.1.gate_proj.weight", "F8_E4M3", 2, { 4, 2 } },
		{ "language_model.model.layers.1.feed_forward.experts.1.gate_proj.weight_scale", "F32", 2, { 4, 1 } },
		{ "language_model.model.layers.1.feed_forward.shared_expert.gate_proj.weight", "BF16", 2, { 4, 2 } },
	};
	struct catalog *cat;

	write_st(*state, "model.safetensors", ts, 5);
	cat = open_ok(*state, NULL, NULL);
	assert_string_equal(cat->preset, "llama4");
	assert_int_equal(cat->nexperts, 2);
	assert_int_equal(cat->experts[1].ntensors, 2);
	assert_int_equal(cat->experts[1].bytes, 8 + 16);
	assert_int_equal(cat->dense_tensors, 1);
	catalog_free(cat);
}

static void test_user_preset(void **state)
{
	const struct tdef ts[] = {
		{ "blocks.0.moe.0.fc_in", "F16", 2, { 4, 4 } },
		{ "blocks.0.moe.0.fc_out", "F16", 2, { 4, 4 } },
		{ "blocks.0.moe.1.fc_in", "F16", 2, { 4, 4 } },
		{ "blocks.0.moe.1.fc_out", "F16", 2, { 4, 4 } },
		{ "blocks.0.attn", "F16", 1, { 4 } },
	};
	struct tierd_conf c;
	struct catalog *cat;
	char err[256];

	write_st(*state, "model.safetensors", ts, 5);
	expect_fault(*state, NULL, NULL, "no preset matches any tensor name");
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "t.conf", "[preset mine]\ntensor = blocks.{L}.moe.{E}.*\n",
					  err, sizeof(err)), 0);
	cat = open_ok(*state, NULL, &c);
	assert_string_equal(cat->preset, "mine");
	assert_int_equal(cat->nexperts, 2);
	assert_int_equal(cat->experts[1].ntensors, 2);
	assert_int_equal(cat->top_k, 0);
	catalog_free(cat);
	cat = open_ok(*state, "mine", &c);
	catalog_free(cat);
	conf_free(&c);

	/* Patterns are checked: {E} is needed by 'tensor', forbidden in 'fused'; unknown keys refused. */
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "t.conf", "[preset bad]\ntensor = blocks.{L}.moe.*\n",
					  err, sizeof(err)), 0);
	expect_fault(*state, NULL, &c, "[preset bad] tensor = blocks.{L}.moe.*: needs one {L}, one {E}");
	conf_free(&c);
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "t.conf", "[preset bad]\nfused = a.{L}.{E}\n", err, sizeof(err)), 0);
	expect_fault(*state, NULL, &c, "needs one {L}, no {E}");
	conf_free(&c);
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "t.conf", "[preset bad]\npattern = a.{L}.{E}\n", err, sizeof(err)), 0);
	expect_fault(*state, NULL, &c, "t.conf:2: [preset bad] pattern: unknown key");
	conf_free(&c);
}

static void test_inconsistent_experts(void **state)
{
	const struct tdef missing[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.3.w1.weight", "BF16", 1, { 4 } },
	};
	const struct tdef shape[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 5 } },
	};
	const struct tdef dtype[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "F16", 1, { 4 } },
	};
	const struct tdef set[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.0.w2.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w3.weight", "BF16", 1, { 4 } },
	};
	const struct tdef count[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.0.w2.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
	};
	const struct tdef fused_scalar[] = {
		{ "model.layers.0.feed_forward.experts.down_proj", "BF16", 0, { 0 } },
	};
	const struct tdef short_layer[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.1.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.2.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.2.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
	};
	const struct tdef leading_zero[] = {
		{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
		{ "model.layers.0.block_sparse_moe.experts.01.w1.weight", "BF16", 1, { 4 } },
	};
	struct catalog *cat;

	write_st(*state, "model.safetensors", missing, 3);
	expect_fault(*state, NULL, NULL, "layer 0: expert 2 missing (next is 3)");
	write_st(*state, "model.safetensors", short_layer, 5);
	expect_fault(*state, NULL, NULL, "layer 1 has 1 experts, other layers 2");
	write_st(*state, "model.safetensors", shape, 2);
	expect_fault(*state, NULL, NULL, "is BF16[5] but 'model.layers.0.block_sparse_moe.experts.0.w1.weight' "
		     "of expert 0 is BF16[4]");
	write_st(*state, "model.safetensors", dtype, 2);
	expect_fault(*state, NULL, NULL, "is F16[4] but");
	write_st(*state, "model.safetensors", set, 4);
	expect_fault(*state, NULL, NULL, "expert 1 has no tensor like 'model.layers.0.block_sparse_moe.experts.0.w2.weight'");
	write_st(*state, "model.safetensors", count, 3);
	expect_fault(*state, NULL, NULL, "expert 1 has 1 tensors, expert 0 has 2");
	write_st(*state, "model.safetensors", fused_scalar, 1);
	expect_fault(*state, NULL, NULL, "fused tensor 'model.layers.0.feed_forward.experts.down_proj' has no experts");
	/* "01" is not an expert number: that tensor is dense, and one expert remains. */
	write_st(*state, "model.safetensors", leading_zero, 2);
	cat = open_ok(*state, NULL, NULL);
	assert_int_equal(cat->nexperts, 1);
	assert_int_equal(cat->dense_tensors, 1);
	catalog_free(cat);
}

/* ---- sharded indexes ---------------------------------------------------------------------- */

static const struct tdef shard_a[] = {
	{ "model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
	{ "model.layers.0.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
};
static const struct tdef shard_b[] = {
	{ "model.layers.1.block_sparse_moe.experts.0.w1.weight", "BF16", 1, { 4 } },
	{ "model.layers.1.block_sparse_moe.experts.1.w1.weight", "BF16", 1, { 4 } },
};

static void write_index(const char *dir, const char *file_b)
{
	char text[1024];

	snprintf(text, sizeof(text), "{\"metadata\":{\"total_size\":32},\"weight_map\":{"
		 "\"model.layers.0.block_sparse_moe.experts.0.w1.weight\":\"a.safetensors\","
		 "\"model.layers.0.block_sparse_moe.experts.1.w1.weight\":\"a.safetensors\","
		 "\"model.layers.1.block_sparse_moe.experts.0.w1.weight\":\"%s\","
		 "\"model.layers.1.block_sparse_moe.experts.1.w1.weight\":\"%s\"}}", file_b, file_b);
	write_file(dir, "model.safetensors.index.json", text);
}

static void test_sharded(void **state)
{
	char path[PATH_MAX], target[PATH_MAX];
	struct catalog *cat;

	write_st(*state, "a.safetensors", shard_a, 2);
	write_st(*state, "b.safetensors", shard_b, 2);
	write_index(*state, "b.safetensors");
	cat = open_ok(*state, NULL, NULL);
	assert_int_equal(cat->nfiles, 2);
	assert_int_equal(cat->nlayers, 2);
	assert_int_equal(catalog_find(cat, 1, 1)->tensors[0].file, 1);
	snprintf(path, sizeof(path), "%s/b.safetensors", (char *)*state);
	assert_string_equal(cat->files[1].path, path);
	catalog_free(cat);

	/* A symlink that stays inside the directory is fine. */
	snprintf(path, sizeof(path), "%s/c.safetensors", (char *)*state);
	assert_int_equal(symlink("b.safetensors", path), 0);
	write_index(*state, "c.safetensors");
	cat = open_ok(*state, NULL, NULL);
	catalog_free(cat);

	write_index(*state, "../b.safetensors");
	expect_fault(*state, NULL, NULL, "'../b.safetensors': file names must stay in the checkpoint directory");
	write_index(*state, "/etc/passwd");
	expect_fault(*state, NULL, NULL, "'/etc/passwd': file names must stay");
	write_index(*state, "..");
	expect_fault(*state, NULL, NULL, "file names must stay");
	write_index(*state, "");
	expect_fault(*state, NULL, NULL, "file names must stay");
	write_index(*state, "sub/b.safetensors");
	expect_fault(*state, NULL, NULL, "file names must stay");
	/* A name from the checkpoint reaches the message without its control bytes. */
	write_index(*state, "x\\u001b[31m\\n/b.safetensors");
	expect_fault(*state, NULL, NULL, "'x?[31m?/b.safetensors': file names must stay");
	write_index(*state, "missing.safetensors");
	expect_fault(*state, NULL, NULL, "missing.safetensors: No such file or directory");
	/* The index names a shard that does not hold the tensor. */
	write_index(*state, "a.safetensors");
	expect_fault(*state, NULL, NULL, "tensor 'model.layers.1.block_sparse_moe.experts.0.w1.weight' is mapped to "
		     "a.safetensors, which does not contain it");

	/* A symlink out of the directory is refused even though the file is a valid shard. */
	snprintf(target, sizeof(target), "%s.outside", (char *)*state);
	write_st("/", target + 1, shard_b, 2);
	snprintf(path, sizeof(path), "%s/d.safetensors", (char *)*state);
	assert_int_equal(symlink(target, path), 0);
	write_index(*state, "d.safetensors");
	expect_fault(*state, NULL, NULL, "d.safetensors: resolves outside the checkpoint directory");
	unlink(target);

	write_file(*state, "model.safetensors.index.json", "{\"weight_map\":[]}");
	expect_fault(*state, NULL, NULL, "no weight_map object");
	write_file(*state, "model.safetensors.index.json", "{\"weight_map\":{\"x\":1}}");
	expect_fault(*state, NULL, NULL, "weight_map['x'] is not a string");
	write_file(*state, "model.safetensors.index.json", "{\"weight_map\":{}}");
	expect_fault(*state, NULL, NULL, "weight_map is empty");
	write_file(*state, "model.safetensors.index.json", "not json");
	expect_fault(*state, NULL, NULL, "model.safetensors.index.json: not a JSON object");
}

static void test_bad_shard(void **state)
{
	char path[PATH_MAX];
	struct stat st;
	FILE *f;

	write_st(*state, "a.safetensors", shard_a, 2);
	write_st(*state, "b.safetensors", shard_b, 2);
	write_index(*state, "b.safetensors");
	/* Cut the last shard short: its last tensor now runs past the end. */
	snprintf(path, sizeof(path), "%s/b.safetensors", (char *)*state);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 4), 0);
	expect_fault(*state, NULL, NULL, "b.safetensors: tensor 'model.layers.1.block_sparse_moe.experts.1.w1.weight': "
		     "data_offsets [8,16) beyond the data area (12 bytes)");
	f = fopen(path, "w");
	fputs("garbage", f);
	fclose(f);
	expect_fault(*state, NULL, NULL, "b.safetensors: truncated");
	expect_fault("/nonexistent-dir", NULL, NULL, "/nonexistent-dir: No such file or directory");
	unlink(path);
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", (char *)*state);
	unlink(path);
	expect_fault(*state, NULL, NULL, "neither model.safetensors.index.json nor model.safetensors found");
}

/* ---- slot layout ---------------------------------------------------------------------------- */

static void test_layout_slots(void **state)
{
	struct catalog_tensor ts[4] = {
		{ .name = "a", .file = 0, .offset = 100, .length = 50 },
		{ .name = "b", .file = 0, .offset = 150, .length = 4000 },	/* adjacent to a: same extent */
		{ .name = "c", .file = 0, .offset = 13000, .length = 100 },	/* far: own extent */
		{ .name = "d", .file = 1, .offset = 8192, .length = 4096 },	/* aligned, another file */
	};
	struct catalog_expert ex = { .ntensors = 4, .tensors = ts };
	struct catalog cat = { .nexperts = 1, .experts = &ex };

	assert_int_equal(catalog_layout_slots(&cat, 4096), 0);
	assert_int_equal(ex.nextents, 3);
	assert_int_equal(ex.extents[0].file, 0);
	assert_int_equal(ex.extents[0].offset, 0);
	assert_int_equal(ex.extents[0].length, 8192);	/* [0, 4150) rounded up */
	assert_int_equal(ex.extents[0].slot_offset, 0);
	assert_int_equal(ts[0].slot_offset, 100);
	assert_int_equal(ts[1].slot_offset, 150);
	assert_int_equal(ex.extents[1].offset, 12288);	/* [13000, 13100) -> [12288, 16384) */
	assert_int_equal(ex.extents[1].length, 4096);
	assert_int_equal(ex.extents[1].slot_offset, 8192);
	assert_int_equal(ts[2].slot_offset, 8192 + 13000 - 12288);
	assert_int_equal(ex.extents[2].file, 1);
	assert_int_equal(ex.extents[2].offset, 8192);
	assert_int_equal(ex.extents[2].length, 4096);
	assert_int_equal(ts[3].slot_offset, 12288);
	assert_int_equal(ex.slot_bytes, 16384);
	assert_int_equal(cat.slot_bytes, 16384);
	assert_int_equal(cat.align, 4096);

	/* 512-byte alignment: a/b need [0, 4608), c [12800, 13312). */
	assert_int_equal(catalog_layout_slots(&cat, 512), 0);
	assert_int_equal(ex.nextents, 3);
	assert_int_equal(ex.extents[0].length, 4608);
	assert_int_equal(ex.extents[1].offset, 12800);
	assert_int_equal(ex.extents[1].length, 512);
	assert_int_equal(ts[2].slot_offset, 4608 + 13000 - 12800);
	assert_int_equal(ex.slot_bytes, 4608 + 512 + 4096);

	/* Alignment 1: the slot is exactly the tensors, merged where adjacent. */
	assert_int_equal(catalog_layout_slots(&cat, 1), 0);
	assert_int_equal(ex.slot_bytes, 50 + 4000 + 100 + 4096);
	assert_int_equal(ts[0].slot_offset, 0);
	assert_int_equal(ts[1].slot_offset, 50);

	/* Two tensors sharing one block: read once. */
	ts[2].offset = 4200;	/* block [4096, 8192) is inside a/b's extent */
	assert_int_equal(catalog_layout_slots(&cat, 4096), 0);
	assert_int_equal(ex.nextents, 2);
	assert_int_equal(ex.extents[0].length, 8192);
	assert_int_equal(ts[2].slot_offset, 4200);

	/* A tensor stored before the extent (scales grouped apart, as the reference writer does):
	 * its own extent, and the block it shares with a is read twice, never placed twice. */
	ts[0].offset = 8300;	/* a, b: [8192, 16384) */
	ts[1].offset = 8350;
	ts[2].offset = 8000;	/* c: [4096, 12288), before a's extent, sharing its first block */
	ts[2].length = 300;
	assert_int_equal(catalog_layout_slots(&cat, 4096), 0);
	assert_int_equal(ex.nextents, 3);
	assert_int_equal(ex.extents[0].offset, 8192);
	assert_int_equal(ex.extents[0].length, 8192);
	assert_int_equal(ex.extents[1].offset, 4096);
	assert_int_equal(ex.extents[1].length, 8192);
	assert_int_equal(ex.extents[1].slot_offset, 8192);
	assert_int_equal(ts[2].slot_offset, 8192 + 8000 - 4096);
	assert_int_equal(ex.extents[2].slot_offset, 16384);
	assert_int_equal(ex.slot_bytes, 8192 + 8192 + 4096);

	assert_int_equal(catalog_layout_slots(&cat, 3000), -EINVAL);
	assert_int_equal(catalog_layout_slots(&cat, 0), -EINVAL);
	free(ex.extents);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_demostore_byte),
		cmocka_unit_test(test_layout_slots),
		cmocka_unit_test_setup_teardown(test_demo_mixtral, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_demo_mixtral_single_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_demo_qwen_sharded, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_demo_qwen_fp8, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_demo_fused, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_demo_bad_opts, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_deepseek_fp8, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_gpt_oss, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_llama4_multimodal, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_llama4_per_expert, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_user_preset, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_inconsistent_experts, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_sharded, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_bad_shard, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
