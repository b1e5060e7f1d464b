/* SPDX-License-Identifier: MIT */
/*
 * Demo checkpoints: small or large, but real.  demostore_write produces valid
 * safetensors shards, model.safetensors.index.json and config.json in one of
 * the MoE namings the catalog knows, plus dense tensors (embeddings,
 * attention, router, norms, shared experts) that the catalog must ignore.
 * Every byte of an expert tensor is a function of (layer, expert, tensor
 * index, offset), so tests and benchmarks can check every byte they fetch;
 * the bytes are also finite floats of modest size in every float dtype and
 * config.json has what a decoder needs (heads, norms, routing), so a model
 * built from the checkpoint decodes (client/python/tierd/decoder.py).
 */
#ifndef TIERD_DEMOSTORE_H
#define TIERD_DEMOSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"

enum demostore_layout {
	DEMOSTORE_MIXTRAL,	/* block_sparse_moe.experts.E.w1/w2/w3.weight */
	DEMOSTORE_QWEN,		/* mlp.experts.E.gate/up/down_proj.weight (+ weight_scale_inv with F8) */
	DEMOSTORE_FUSED,	/* Llama 4: feed_forward.experts.gate_up_proj / down_proj */
	DEMOSTORE_OLMOE,	/* mlp.experts.E.gate/up/down_proj, q_norm / k_norm, no shared expert */
	DEMOSTORE_DEEPSEEK,	/* DeepSeekMoE: layer 0 dense, mlp.experts.E.* + mlp.shared_experts */
};

struct demostore_opts {
	uint32_t layers;
	uint32_t experts;	/* per layer */
	uint32_t hidden;
	uint32_t ffn;		/* per expert */
	uint32_t shards;	/* 1: a single model.safetensors without index */
	uint32_t top_k;
	enum tierd_dtype dtype;	/* of expert weights; F8_E4M3 adds FP8 block scales (qwen) */
	enum demostore_layout layout;
};

/* Tiny defaults, fit for unit tests. */
void demostore_opts_default(struct demostore_opts *o);
/* "mixtral", "qwen" (or "qwen-moe"), "fused" (or "llama4"), "olmoe", "deepseek". */
int demostore_layout_parse(const char *s, enum demostore_layout *out);
const char *demostore_layout_name(enum demostore_layout l);

/* Layers with experts (DeepSeek's first layer has a dense MLP). */
uint32_t demostore_moe_layers(const struct demostore_opts *o);
/* Bytes per expert the options produce (as the catalog will count them). */
uint64_t demostore_expert_bytes(const struct demostore_opts *o);

/*
 * Writes the checkpoint into dir (created if missing; existing files of the
 * same names are replaced).  Returns 0 or negative errno with a message in err.
 */
int demostore_write(const char *dir, const struct demostore_opts *o, char *err, size_t errlen);

/*
 * Content of expert tensors.  tensor_index is the tensor's index in the
 * catalog expert (tensors sorted by name); offset is within this expert's
 * part of the tensor (its slice, for fused layouts).
 */
uint8_t demostore_byte(uint32_t layer, uint32_t expert, uint32_t tensor_index, uint64_t offset);
/* The same for len bytes from offset, at memory speed. */
void demostore_fill(uint32_t layer, uint32_t expert, uint32_t tensor_index, uint64_t offset,
		    void *buf, size_t len);

/*
 * Checks every tensor byte of an expert in a slot laid out by
 * catalog_layout_slots.  0 when all match, -EBADMSG (and a log line naming
 * the tensor and offset) at the first difference.
 */
int demostore_verify_expert(const struct catalog_expert *ex, const void *slot);

#endif
