/* SPDX-License-Identifier: MIT */
/* Unit tests of the planner's inputs: config.json, hardware files, batch lists, bad
 * values, and plan_select's constraints. */
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
#include "plan_hw.h"
#include "plan_model.h"

#include "plan-test-util.h"

static const char mixtral_json[] =
	"{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 4096,"
	" \"intermediate_size\": 14336, \"model_type\": \"mixtral\", \"num_attention_heads\": 32,"
	" \"num_experts_per_tok\": 2, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
	" \"num_local_experts\": 8, \"rope_theta\": 1e6, \"torch_dtype\": \"bfloat16\","
	" \"vocab_size\": 32000}";

static const char deepseek_json[] =
	"{\"model_type\": \"deepseek_v3\", \"hidden_size\": 7168, \"intermediate_size\": 18432,"
	" \"moe_intermediate_size\": 2048, \"n_routed_experts\": 256, \"n_shared_experts\": 1,"
	" \"num_experts_per_tok\": 8, \"first_k_dense_replace\": 3, \"moe_layer_freq\": 1,"
	" \"num_hidden_layers\": 61, \"num_attention_heads\": 128, \"num_key_value_heads\": 128,"
	" \"kv_lora_rank\": 512, \"q_lora_rank\": 1536, \"qk_rope_head_dim\": 64,"
	" \"qk_nope_head_dim\": 128, \"v_head_dim\": 128, \"vocab_size\": 129280,"
	" \"torch_dtype\": \"bfloat16\", \"quantization_config\": {\"quant_method\": \"fp8\"}}";

static const char llama4_json[] =
	"{\"model_type\": \"llama4\", \"text_config\": {\"model_type\": \"llama4_text\","
	" \"hidden_size\": 5120, \"intermediate_size\": 8192, \"intermediate_size_mlp\": 16384,"
	" \"num_local_experts\": 128, \"num_experts_per_tok\": 1, \"interleave_moe_layer_step\": 2,"
	" \"num_hidden_layers\": 48, \"num_attention_heads\": 40, \"num_key_value_heads\": 8,"
	" \"head_dim\": 128, \"vocab_size\": 202048, \"torch_dtype\": \"bfloat16\"},"
	" \"vision_config\": {\"hidden_size\": 1408}}";

static void assert_same_shape(const struct plan_model *a, const struct plan_model *b)
{
	struct plan_params p;
	struct plan_sizes x, y;

	plan_params_default(&p);
	plan_sizes_get(a, &p, &x);
	plan_sizes_get(b, &p, &y);
	assert_close(x.params, y.params);
	assert_close(x.routed_bytes, y.routed_bytes);
	assert_close(x.kv_bytes_per_token, y.kv_bytes_per_token);
	assert_int_equal(x.moe_layers, y.moe_layers);
	assert_int_equal(a->top_k, b->top_k);
	assert_int_equal(a->attn, b->attn);
}

static void test_config_json(void **state)
{
	struct plan_model m, b;
	char err[256];

	assert_int_equal(plan_model_from_json(mixtral_json, "mixtral/config.json", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.head_dim, 128);	/* 4096 / 32, no head_dim key */

	assert_int_equal(plan_model_from_json(deepseek_json, "ds", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("deepseek-r1", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.attn, PLAN_ATTN_MLA);
	assert_int_equal(m.shared_experts, 1);

	assert_int_equal(plan_model_from_json(llama4_json, "l4", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("llama4-maverick", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
	assert_int_equal(m.shared_experts, 1);

	/* OLMoE: intermediate_size is the expert size; no shared experts. */
	assert_int_equal(plan_model_from_json(
		"{\"model_type\":\"olmoe\",\"hidden_size\":2048,\"intermediate_size\":1024,"
		"\"num_experts\":64,\"num_experts_per_tok\":8,\"num_hidden_layers\":16,"
		"\"num_attention_heads\":16,\"num_key_value_heads\":16,\"vocab_size\":50304}",
		"olmoe", &m, err, sizeof(err)), 0);
	assert_int_equal(m.experts, 64);
	assert_int_equal(m.expert_ffn, 1024);
	assert_int_equal(m.shared_experts, 0);

	/* Qwen2-MoE: one shared expert of its own size, q_lora null is "none". */
	assert_int_equal(plan_model_from_json(
		"{\"model_type\":\"qwen2_moe\",\"hidden_size\":2048,\"intermediate_size\":5632,"
		"\"moe_intermediate_size\":1408,\"shared_expert_intermediate_size\":5632,"
		"\"num_experts\":60,\"num_experts_per_tok\":4,\"decoder_sparse_step\":1,"
		"\"mlp_only_layers\":[],\"num_hidden_layers\":24,\"num_attention_heads\":16,"
		"\"num_key_value_heads\":16,\"vocab_size\":151936,\"torch_dtype\":\"bfloat16\"}",
		"qwen", &m, err, sizeof(err)), 0);
	assert_int_equal(m.shared_experts, 1);
	assert_int_equal(m.shared_ffn, 5632);
	assert_int_equal(m.expert_ffn, 1408);

	/* A dense Llama. */
	assert_int_equal(plan_model_from_json(
		"{\"hidden_size\":8192,\"intermediate_size\":28672,\"num_hidden_layers\":80,"
		"\"num_attention_heads\":64,\"num_key_value_heads\":8,\"vocab_size\":128256}",
		"llama", &m, err, sizeof(err)), 0);
	assert_int_equal(plan_model_builtin("llama3.3-70b", &b, NULL, NULL, NULL, 0), 0);
	assert_same_shape(&m, &b);
}

struct bad_case {
	const char *json;
	const char *needle;	/* the error must say this */
};

static void test_config_json_bad(void **state)
{
	static const struct bad_case cases[] = {
		{ "{\"hidden_size\": 4096,,}", "malformed JSON" },
		{ "{\"hidden_size\": 40", "malformed JSON" },
		{ "", "malformed JSON" },
		{ "[1, 2]", "top level must be a JSON object" },
		{ "{\"hidden_size\":\"4096\",\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"hidden_size\" must be an integer" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":-3,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"num_hidden_layers\" must not be negative" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2.5,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "\"num_hidden_layers\" must be an integer" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"intermediate_size\":8}", "missing required key \"vocab_size\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10}", "missing required key \"intermediate_size\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"num_local_experts\":8}",
		  "missing required key \"num_experts_per_tok\"" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"num_local_experts\":8,"
		  "\"num_experts_per_tok\":9}", "exceeds" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":3,"
		  "\"num_key_value_heads\":2,\"head_dim\":8,\"vocab_size\":10,\"intermediate_size\":8}",
		  "not a multiple" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"torch_dtype\":\"float7\"}",
		  "not a known type" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":99999999999}", "too large" },
		{ "{\"hidden_size\":0,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8}", "must be positive" },
		{ "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
		  "\"vocab_size\":10,\"intermediate_size\":8,\"kv_lora_rank\":16}",
		  "missing required key \"qk_rope_head_dim\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct plan_model m;
		char err[256] = "";
		int r = plan_model_from_json(cases[i].json, "config.json", &m, err, sizeof(err));

		if (r != -EINVAL || !strstr(err, cases[i].needle))
			fail_msg("case %zu: r=%d err=\"%s\", wanted \"%s\"", i, r, err, cases[i].needle);
		assert_non_null(strstr(err, "config.json"));
	}
}

static void test_bad_inputs(void **state)
{
	struct plan_model m;
	struct plan_params p;
	struct plan_result r;
	struct plan_place pl;
	char err[256];

	assert_int_equal(plan_model_builtin("gpt-7", &m, NULL, NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "unknown model \"gpt-7\""));
	assert_int_equal(plan_model_from_file("/nonexistent/config.json", &m, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/config.json"));

	plan_params_default(&p);
	assert_int_equal(plan_set(&p, "hbm_gbps", "-1", err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "hbm_gbps"));
	assert_int_equal(plan_set(&p, "hbm_gib", "0", err, sizeof(err)), -ERANGE);
	assert_int_equal(plan_set(&p, "pj_flash", "lots", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "pj_flash", "nan", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "nodes", "1.5", err, sizeof(err)), -EINVAL);
	assert_int_equal(plan_set(&p, "warp_drive", "1", err, sizeof(err)), -ENOENT);
	assert_int_equal(plan_set(&p, "pj_flash", "51.2", err, sizeof(err)), 0);
	assert_close(p.en.pj_flash, 51.2);

	/* Negative or impossible values that reach the model directly. */
	tiny(&m, &p);
	plan_place_all(PLAN_TIER_HBM, &pl);
	p.en.pj_hbm = -1;
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "negative"));
	tiny(&m, &p);
	assert_int_equal(plan_eval(&m, &p, &pl, 0, &r, err, sizeof(err)), -EINVAL);
	p.top_k = 2;
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "top-k 2 exceeds"));
	tiny(&m, &p);
	pl.frac[PLAN_TIER_DDR] = 0.5;	/* sums to 1.5 */
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "sum"));
	m.layers = 0;
	plan_place_all(PLAN_TIER_HBM, &pl);
	assert_int_equal(plan_eval(&m, &p, &pl, 1, &r, err, sizeof(err)), -EINVAL);
}

static void test_select(void **state)
{
	static const unsigned batches[] = { 1, 16, 256 };
	struct plan_model m;
	struct plan_params p;
	struct plan_select_req req = { .batches = batches, .nbatches = 3 };
	struct plan_candidate *c = NULL;
	size_t n;
	char err[512];
	const double gib = 1024.0 * 1024 * 1024;

	plan_params_default(&p);
	assert_int_equal(plan_model_builtin("mixtral-8x7b", &m, &p.hw.nodes, &p.hw.gpus_per_node, NULL, 0), 0);

	/* 48 GiB of HBM: part of the experts fit, the rest in DDR and on SSD. */
	req.hbm_bytes = 48 * gib;
	req.ddr_bytes = 24 * gib;
	req.objective = PLAN_OBJ_ENERGY;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	assert_true(n > 3);
	for (size_t i = 0; i < n; i++) {
		double sum = c[i].place.frac[0] + c[i].place.frac[1] + c[i].place.frac[2];

		assert_true(fabs(sum - 1) < 1e-9);
		assert_true(c[i].r.hbm_need_bytes <= req.hbm_bytes * (1 + 1e-9));
		assert_true(c[i].r.ddr_need_bytes <= req.ddr_bytes * (1 + 1e-9));
		/* Part of the experts in HBM: exactly as many as leave room for the fetch buffers. */
		if (c[i].place.frac[PLAN_TIER_HBM] > 0 && c[i].place.frac[PLAN_TIER_HBM] < 1)
			assert_true(fabs(c[i].r.hbm_need_bytes - req.hbm_bytes) < 1e-9 * req.hbm_bytes);
		if (i)
			assert_true(c[i - 1].r.energy_per_token_j <= c[i].r.energy_per_token_j);
	}
	free(c);

	/* Latency objective: sorted by latency; a ceiling drops the slow ones. */
	req.objective = PLAN_OBJ_LATENCY;
	req.max_latency_s = 0.030;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), 0);
	for (size_t i = 0; i < n; i++) {
		assert_true(c[i].r.latency_per_token_s <= 0.030);
		if (i)
			assert_true(c[i - 1].r.latency_per_token_s <= c[i].r.latency_per_token_s);
	}
	free(c);

	/* Impossible: HBM too small for the resident weights. */
	req.hbm_bytes = 1 * gib;
	req.max_latency_s = 0;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "cannot hold"));
	assert_null(c);
	/* Impossible: a ceiling no placement meets. */
	req.hbm_bytes = 320 * gib;
	req.max_latency_s = 1e-6;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "no placement meets"));
	req.max_latency_s = 0;
	req.max_energy_j = 1e-9;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -ERANGE);
	req.max_energy_j = -1;
	assert_int_equal(plan_select(&m, &p, &req, &c, &n, err, sizeof(err)), -EINVAL);
}

static void test_batches(void **state)
{
	unsigned b[64];
	size_t n;

	assert_int_equal(plan_parse_batches("1-1024", b, 64, &n), 0);
	assert_int_equal(n, 11);
	assert_int_equal(b[10], 1024);
	assert_int_equal(plan_parse_batches("3,5,1-4", b, 64, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(b[4], 4);
	assert_true(plan_parse_batches("0", b, 64, &n) < 0);
	assert_true(plan_parse_batches("a", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1,,2", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1,", b, 64, &n) < 0);
	assert_true(plan_parse_batches("4-2", b, 64, &n) < 0);
	assert_true(plan_parse_batches("-3", b, 64, &n) < 0);
	assert_true(plan_parse_batches("1-1024", b, 4, &n) < 0);
}

static void test_hardware_file(void **state)
{
	struct plan_params p;
	char path[] = "/tmp/test-plan-hw-XXXXXX";
	char err[512];
	struct plan_hw hw;
	FILE *f;
	int fd;

	assert_int_equal(plan_hw_builtin("dgx-h100-nvl4", &hw, err, sizeof(err)), 0);
	assert_close(hw.link_gbps, 450);
	assert_int_equal(plan_hw_builtin("dgx-h100", &hw, err, sizeof(err)), 0);
	assert_close(hw.link_gbps, 900);
	assert_int_equal(plan_hw_builtin("cray-1", &hw, err, sizeof(err)), -ENOENT);

	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("; a PCIe box\n[hardware]\nname = pcie-box\nnodes = 1\ngpus_per_node = 2\n"
	      "link_gbps = 48\nssd_gbps = 1.5\n[energy]\npj_flash = 80\n[model]\ncontext = 2048\n", f);
	fclose(f);
	plan_params_default(&p);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), 0);
	assert_string_equal(p.hw.name, "pcie-box");
	assert_int_equal(p.hw.gpus_per_node, 2);
	assert_close(p.hw.link_gbps, 48);
	assert_close(p.hw.ssd_gbps, 1.5);
	assert_close(p.en.pj_flash, 80);
	assert_int_equal(p.context, 2048);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[hardware]\nnodes = 1\nhbm_gbps = -5\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, ":3: [hardware] hbm_gbps"));

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[energy]\nlink_gbps = 5\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "belongs in [hardware]"));

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[hardware]\nthis is not ini\n", f);
	fclose(f);
	assert_int_equal(plan_hw_load_file(&p, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":2:"));
	unlink(path);
}


int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_json),
		cmocka_unit_test(test_config_json_bad),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_select),
		cmocka_unit_test(test_batches),
		cmocka_unit_test(test_hardware_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
