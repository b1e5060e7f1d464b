/* SPDX-License-Identifier: MIT */
/*
 * Models for `tierctl plan`: the built-in shapes of the SSD-offloading paper, and
 * any model described by a Hugging Face config.json (parsed with json-c).
 */
#ifndef TIERD_PLAN_MODEL_H
#define TIERD_PLAN_MODEL_H

#include <stddef.h>

#include "plan.h"

/* Names of the built-in models, NULL-terminated. */
const char *const *plan_model_builtin_names(void);
/*
 * Fills m with a built-in model and, if non-NULL, *nodes and *gpus_per_node with
 * the system the paper ran it on.  -ENOENT (err lists the names) if unknown.
 */
int plan_model_builtin(const char *name, struct plan_model *m, unsigned *nodes,
		       unsigned *gpus_per_node, char *err, size_t errlen);
/*
 * Parses a config.json text (Mixtral, Qwen-MoE, DeepSeek-V2/V3, Llama 4, OLMoE,
 * dense Llama keys).  source names the file in messages.  -EINVAL with err naming
 * the key and what is wrong with it.
 */
int plan_model_from_json(const char *text, const char *source, struct plan_model *m,
			 char *err, size_t errlen);
int plan_model_from_file(const char *path, struct plan_model *m, char *err, size_t errlen);

#endif
