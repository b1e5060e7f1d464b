/* SPDX-License-Identifier: MIT */
/*
 * The catalog's parts share these: catalog.c reads a checkpoint (shards,
 * index, config.json) and lays out slots; catalog-experts.c maps its
 * tensors to experts through a preset's patterns.  Not for other modules:
 * they use catalog.h.
 */
#ifndef TIERD_CATALOG_INT_H
#define TIERD_CATALOG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "catalog.h"
#include "conf.h"
#include "safetensors.h"

#define CATALOG_MAX_NUMBER	(1U << 20)	/* layer and expert numbers */
#define CATALOG_MAX_PARTS	(1U << 24)	/* expert tensors (fused slices count each) */

struct match {
	uint32_t layer;
	uint32_t expert;
	bool has_expert;
	const char *star;	/* what '*' matched */
	size_t star_len;
};

struct shard {
	char *name;			/* relative to the checkpoint directory */
	struct st_header *h;
};

struct loader {
	const char *dir;
	char *realdir;
	struct shard *shards;
	size_t nshards;
	struct json_object *weight_map;	/* NULL for a single file */
	struct json_object *config;	/* NULL without config.json */
	char *err;
	size_t errlen;
};

/* One tensor (or one expert's slice of a fused tensor) of one expert. */
struct part {
	uint32_t layer;
	uint32_t expert;
	const struct st_tensor *t;
	char *role;		/* pattern and '*' text: the same for this tensor in every expert */
	uint32_t file;
	uint64_t offset;	/* absolute */
	uint64_t length;
	uint32_t ndim;
	uint64_t shape[CATALOG_MAX_DIMS];
};

struct parts {
	struct part *v;
	size_t n, cap;
};

/* Formats err and returns r. */
int catalog_errf(char *err, size_t errlen, int r, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
const struct conf_kv *catalog_preset_match(const struct conf_preset *p, const char *name, struct match *m);
bool catalog_tensor_listed(const struct loader *l, const struct shard *s, const char *name);

/* catalog-experts.c */
void catalog_parts_free(struct parts *ps);
/* How many of the checkpoint's tensors the preset's patterns match. */
size_t catalog_preset_score(const struct loader *l, const struct conf_preset *p);
int catalog_collect_parts(struct loader *l, const struct conf_preset *p, struct parts *ps, uint64_t *dense);
int catalog_build_experts(struct catalog *cat, struct loader *l, struct parts *ps);

#endif
