/* SPDX-License-Identifier: MIT */
/* Built-in model shapes and Hugging Face config.json parsing for `tierctl plan`. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "plan_model.h"
#include "smallfile.h"

/* Largest config.json we read: real ones are a few KiB. */
#define CONFIG_MAX_BYTES (4 << 20)
/* Largest dimension accepted: bigger is a typo, and keeps products finite. */
#define DIM_MAX (1u << 30)

struct builtin {
	struct plan_model m;
	unsigned nodes, gpus_per_node;	/* the paper's system for this model */
};

/* Shapes from the models' published configs (see the reference table in tierctl-plan(8)). */
static const struct builtin builtins[] = {
	{ .m = { .name = "mixtral-8x7b", .layers = 32, .hidden = 4096, .vocab = 32000,
		 .bytes_per_param = 2, .attn = PLAN_ATTN_GQA, .heads = 32, .kv_heads = 8,
		 .head_dim = 128, .experts = 8, .top_k = 2, .expert_ffn = 14336,
		 .moe_step = 1 },
	  .nodes = 1, .gpus_per_node = 4 },
	{ .m = { .name = "deepseek-r1", .layers = 61, .hidden = 7168, .vocab = 129280,
		 .bytes_per_param = 2, .attn = PLAN_ATTN_MLA, .heads = 128, .q_lora = 1536,
		 .kv_lora = 512, .rope_dim = 64, .nope_dim = 128, .v_dim = 128,
		 .dense_ffn = 18432, .experts = 256, .top_k = 8, .expert_ffn = 2048,
		 .shared_experts = 1, .shared_ffn = 2048, .first_dense = 3, .moe_step = 1 },
	  .nodes = 4, .gpus_per_node = 8 },
	{ .m = { .name = "llama4-maverick", .layers = 48, .hidden = 5120, .vocab = 202048,
		 .bytes_per_param = 2, .attn = PLAN_ATTN_GQA, .heads = 40, .kv_heads = 8,
		 .head_dim = 128, .dense_ffn = 16384, .experts = 128, .top_k = 1,
		 .expert_ffn = 8192, .shared_experts = 1, .shared_ffn = 8192, .moe_step = 2,
		 .moe_phase = 1 },
	  .nodes = 1, .gpus_per_node = 8 },
	{ .m = { .name = "llama3.3-70b", .layers = 80, .hidden = 8192, .vocab = 128256,
		 .bytes_per_param = 2, .attn = PLAN_ATTN_GQA, .heads = 64, .kv_heads = 8,
		 .head_dim = 128, .dense_ffn = 28672, .moe_step = 1 },
	  .nodes = 1, .gpus_per_node = 8 },
	/* The shared routing trace's model (plan --trace): one node of 8 GPUs, so
	 * that expert parallelism spreads its 32 experts 4 to a GPU. */
	{ .m = { .name = "granite-3.0-1b-a400m", .layers = 24, .hidden = 1024, .vocab = 49155,
		 .bytes_per_param = 2, .attn = PLAN_ATTN_GQA, .heads = 16, .kv_heads = 8,
		 .head_dim = 64, .experts = 32, .top_k = 8, .expert_ffn = 512, .moe_step = 1 },
	  .nodes = 1, .gpus_per_node = 8 },
};

#define NBUILTINS (sizeof(builtins) / sizeof(builtins[0]))

static const char *const builtin_names[] = {
	"mixtral-8x7b", "deepseek-r1", "llama4-maverick", "llama3.3-70b", "granite-3.0-1b-a400m", NULL,
};

const char *const *plan_model_builtin_names(void)
{
	return builtin_names;
}

int plan_model_builtin(const char *name, struct plan_model *m, unsigned *nodes,
		       unsigned *gpus_per_node, char *err, size_t errlen)
{
	for (size_t i = 0; i < NBUILTINS; i++) {
		if (strcmp(builtins[i].m.name, name))
			continue;
		*m = builtins[i].m;
		if (nodes)
			*nodes = builtins[i].nodes;
		if (gpus_per_node)
			*gpus_per_node = builtins[i].gpus_per_node;
		return 0;
	}
	return plan_fail(err, errlen, -ENOENT,
		    "unknown model \"%s\" (built-in: mixtral-8x7b, deepseek-r1, llama4-maverick, "
		    "llama3.3-70b, granite-3.0-1b-a400m; or --model-config config.json)", name);
}

struct jctx {
	struct json_object *root;
	const char *source;
	char *err;
	size_t errlen;
};

/* The key's value, or NULL when absent or JSON null (HF writes null for "unset"). */
static struct json_object *jget(const struct jctx *j, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(j->root, key, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return v;
}

/*
 * A non-negative integer dimension.  Absent: *out = dflt, or an error when
 * required.  Positive unless allow_zero.
 */
static int jdim(const struct jctx *j, const char *key, bool required, bool allow_zero,
		unsigned dflt, unsigned *out)
{
	struct json_object *v = jget(j, key);
	int64_t x;

	if (!v) {
		if (required)
			return plan_fail(j->err, j->errlen, -EINVAL, "%s: missing required key \"%s\"",
				    j->source, key);
		*out = dflt;
		return 0;
	}
	if (!json_object_is_type(v, json_type_int))
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"%s\" must be an integer, got %s",
			    j->source, key, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	errno = 0;
	x = json_object_get_int64(v);
	if (errno == ERANGE || x > DIM_MAX)
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"%s\" = %s is too large",
			    j->source, key, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	if (x < 0)
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"%s\" must not be negative, got %lld",
			    j->source, key, (long long)x);
	if (!x && !allow_zero)
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"%s\" must be positive, got 0",
			    j->source, key);
	*out = (unsigned)x;
	return 0;
}

static int jdtype(const struct jctx *j, double *bpp)
{
	static const struct { const char *name; double bytes; } types[] = {
		{ "bfloat16", 2 }, { "float16", 2 }, { "float32", 4 }, { "float", 4 },
		{ "float8_e4m3fn", 1 }, { "float8_e5m2", 1 }, { "int8", 1 }, { "uint8", 1 },
	};
	struct json_object *v = jget(j, "torch_dtype");
	const char *key = "torch_dtype", *s;

	if (!v) {
		key = "dtype";	/* newer transformers write "dtype" */
		v = jget(j, key);
	}
	if (!v) {
		*bpp = 2;	/* BF16, as the paper */
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"%s\" must be a string", j->source, key);
	s = json_object_get_string(v);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (!strcmp(s, types[i].name)) {
			*bpp = types[i].bytes;
			return 0;
		}
	}
	return plan_fail(j->err, j->errlen, -EINVAL,
		    "%s: \"%s\" = \"%s\" is not a known type (bfloat16, float16, float32, float8_e4m3fn, int8)",
		    j->source, key, s);
}

/* The first of several synonymous keys that is present. */
static const char *jfirst(const struct jctx *j, const char *const *keys)
{
	for (; *keys; keys++)
		if (jget(j, *keys))
			return *keys;
	return NULL;
}

static int parse_root(struct jctx *j, struct plan_model *m)
{
	static const char *const expert_keys[] = {
		"num_local_experts", "n_routed_experts", "num_experts", NULL,
	};
	struct json_object *text, *v;
	const char *ek, *type = "";
	unsigned moe_ffn = 0, shared_ffn = 0, inter = 0, x = 0;
	int r;

	if (!json_object_is_type(j->root, json_type_object))
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: top level must be a JSON object", j->source);
	/* Multimodal configs (Llama 4) keep the language model under text_config. */
	if (json_object_object_get_ex(j->root, "text_config", &text) &&
	    json_object_is_type(text, json_type_object))
		j->root = text;
	v = jget(j, "model_type");
	if (v && json_object_is_type(v, json_type_string))
		type = json_object_get_string(v);

	if ((r = jdim(j, "hidden_size", true, false, 0, &m->hidden)) < 0 ||
	    (r = jdim(j, "num_hidden_layers", true, false, 0, &m->layers)) < 0 ||
	    (r = jdim(j, "vocab_size", true, true, 0, &m->vocab)) < 0 ||
	    (r = jdim(j, "num_attention_heads", true, false, 0, &m->heads)) < 0 ||
	    (r = jdtype(j, &m->bytes_per_param)) < 0)
		return r;

	/* Routed experts. */
	ek = jfirst(j, expert_keys);
	if (ek && (r = jdim(j, ek, false, true, 0, &m->experts)) < 0)
		return r;
	if ((r = jdim(j, "intermediate_size", !m->experts, true, 0, &inter)) < 0 ||
	    (r = jdim(j, "moe_intermediate_size", false, true, 0, &moe_ffn)) < 0)
		return r;
	if (m->experts) {
		if ((r = jdim(j, "num_experts_per_tok", true, false, 0, &m->top_k)) < 0)
			return r;
		if (m->top_k > m->experts)
			return plan_fail(j->err, j->errlen, -EINVAL,
				    "%s: \"num_experts_per_tok\" = %u exceeds \"%s\" = %u",
				    j->source, m->top_k, ek, m->experts);
		m->expert_ffn = moe_ffn ? moe_ffn : inter;
		if (!m->expert_ffn)
			return plan_fail(j->err, j->errlen, -EINVAL,
				    "%s: an MoE model needs \"moe_intermediate_size\" or \"intermediate_size\"",
				    j->source);
	}
	/* Dense FFN: Llama 4 names it intermediate_size_mlp. */
	if ((r = jdim(j, "intermediate_size_mlp", false, true, inter, &m->dense_ffn)) < 0)
		return r;
	if (!m->experts && !m->dense_ffn)
		return plan_fail(j->err, j->errlen, -EINVAL, "%s: \"intermediate_size\" must be positive",
			    j->source);

	/* Which layers are MoE. */
	m->moe_step = 1;
	m->moe_phase = 0;
	if ((r = jdim(j, "first_k_dense_replace", false, true, 0, &m->first_dense)) < 0)
		return r;
	if (jget(j, "moe_layer_freq")) {		/* DeepSeek: i % freq == 0 */
		if ((r = jdim(j, "moe_layer_freq", false, false, 1, &m->moe_step)) < 0)
			return r;
	} else if (jget(j, "interleave_moe_layer_step")) {	/* Llama 4: (i + 1) % step == 0 */
		if ((r = jdim(j, "interleave_moe_layer_step", false, false, 1, &m->moe_step)) < 0)
			return r;
		m->moe_phase = 1;
	} else if (jget(j, "decoder_sparse_step")) {	/* Qwen-MoE: (i + 1) % step == 0 */
		if ((r = jdim(j, "decoder_sparse_step", false, false, 1, &m->moe_step)) < 0)
			return r;
		m->moe_phase = 1;
	}
	v = jget(j, "mlp_only_layers");
	if (v && (!json_object_is_type(v, json_type_array) || json_object_array_length(v)))
		return plan_fail(j->err, j->errlen, -EINVAL,
			    "%s: \"mlp_only_layers\" with entries is not supported", j->source);
	if (m->first_dense > m->layers)
		return plan_fail(j->err, j->errlen, -EINVAL,
			    "%s: \"first_k_dense_replace\" = %u exceeds \"num_hidden_layers\" = %u",
			    j->source, m->first_dense, m->layers);

	/* Shared experts. */
	if ((r = jdim(j, "n_shared_experts", false, true, 0, &x)) < 0)
		return r;
	if (x) {		/* DeepSeek: n shared experts of the routed size */
		m->shared_experts = x;
		m->shared_ffn = m->expert_ffn;
	}
	if ((r = jdim(j, "shared_expert_intermediate_size", false, true, 0, &shared_ffn)) < 0)
		return r;
	if (shared_ffn) {	/* Qwen2-MoE: one shared expert of its own size */
		m->shared_experts = 1;
		m->shared_ffn = shared_ffn;
	}
	if (m->experts && !strncmp(type, "llama4", 6)) {	/* Llama 4: always one */
		m->shared_experts = 1;
		m->shared_ffn = m->expert_ffn;
	}

	/* Attention. */
	if (jget(j, "kv_lora_rank")) {
		m->attn = PLAN_ATTN_MLA;
		if ((r = jdim(j, "kv_lora_rank", true, false, 0, &m->kv_lora)) < 0 ||
		    (r = jdim(j, "q_lora_rank", false, true, 0, &m->q_lora)) < 0 ||
		    (r = jdim(j, "qk_rope_head_dim", true, false, 0, &m->rope_dim)) < 0 ||
		    (r = jdim(j, "qk_nope_head_dim", false, true, 128, &m->nope_dim)) < 0 ||
		    (r = jdim(j, "v_head_dim", false, false, 128, &m->v_dim)) < 0)
			return r;
	} else {
		m->attn = PLAN_ATTN_GQA;
		if ((r = jdim(j, "num_key_value_heads", false, false, m->heads, &m->kv_heads)) < 0 ||
		    (r = jdim(j, "head_dim", false, false, 0, &m->head_dim)) < 0)
			return r;
		if (!m->head_dim) {
			if (m->hidden % m->heads)
				return plan_fail(j->err, j->errlen, -EINVAL,
					    "%s: no \"head_dim\" and \"hidden_size\" %u is not a multiple of "
					    "\"num_attention_heads\" %u", j->source, m->hidden, m->heads);
			m->head_dim = m->hidden / m->heads;
		}
		if (m->kv_heads > m->heads || m->heads % m->kv_heads)
			return plan_fail(j->err, j->errlen, -EINVAL,
				    "%s: \"num_attention_heads\" %u is not a multiple of "
				    "\"num_key_value_heads\" %u", j->source, m->heads, m->kv_heads);
	}
	return plan_model_check(m, j->err, j->errlen);
}

int plan_model_from_json(const char *text, const char *source, struct plan_model *m,
			 char *err, size_t errlen)
{
	struct json_tokener *tok = NULL;
	struct jctx j = { .source = source, .err = err, .errlen = errlen };
	const char *base;
	int r;

	memset(m, 0, sizeof(*m));
	base = strrchr(source, '/');
	snprintf(m->name, sizeof(m->name), "%s", base ? base + 1 : source);
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	j.root = json_tokener_parse_ex(tok, text, (int)strlen(text) + 1);
	if (!j.root) {
		r = plan_fail(err, errlen, -EINVAL, "%s: malformed JSON at offset %zu: %s", source,
			 json_tokener_get_parse_end(tok),
			 json_tokener_error_desc(json_tokener_get_error(tok)));
		goto out;
	}
	{
		struct json_object *root = j.root;

		r = parse_root(&j, m);
		json_object_put(root);
	}
out:
	json_tokener_free(tok);
	return r;
}

int plan_model_from_file(const char *path, struct plan_model *m, char *err, size_t errlen)
{
	char *text = NULL;
	const char *dir_end;
	size_t len;
	int r;

	r = smallfile_read(path, CONFIG_MAX_BYTES, &text, &len, err, errlen);
	if (r < 0)
		return r;
	r = plan_model_from_json(text, path, m, err, errlen);
	if (r < 0)
		goto out;
	/* Name the model after its checkpoint directory when the file is config.json. */
	dir_end = strrchr(path, '/');
	if (dir_end && !strcmp(dir_end + 1, "config.json") && dir_end > path) {
		const char *dir = dir_end;

		while (dir > path && dir[-1] != '/')
			dir--;
		snprintf(m->name, sizeof(m->name), "%.*s", (int)(dir_end - dir), dir);
	}
out:
	free(text);
	return r;
}
