/* SPDX-License-Identifier: MIT */
/*
 * Catalog: the experts of a checkpoint, from its safetensors headers.
 *
 * An expert is the list of byte ranges (file, offset, length) of its tensors,
 * each with name, dtype and shape, so that a client can rebuild the tensors
 * from a pool slot.  Built from one .safetensors file or a sharded checkpoint
 * with model.safetensors.index.json; tensors are mapped to (layer, expert) by
 * a preset (built-in or [preset NAME] in the config).
 */
#ifndef TIERD_CATALOG_H
#define TIERD_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define CATALOG_MAX_DIMS 8

enum st_dtype {
	ST_BOOL, ST_U8, ST_I8, ST_F8_E4M3, ST_F8_E5M2, ST_I16, ST_U16, ST_F16,
	ST_BF16, ST_I32, ST_U32, ST_F32, ST_I64, ST_U64, ST_F64,
	ST_DTYPE_COUNT,
};

struct catalog_tensor {
	char *name;			/* full tensor name in the checkpoint */
	enum st_dtype dtype;
	uint32_t ndim;
	uint64_t shape[CATALOG_MAX_DIMS];	/* of this expert's part (a slice for fused layouts) */
	uint32_t file;			/* index into catalog.files */
	uint64_t offset;		/* absolute byte offset in the file */
	uint64_t length;		/* bytes */
	uint64_t slot_offset;		/* where the tensor starts in a slot (see below) */
};

struct catalog_expert {
	uint32_t layer;
	uint32_t expert;
	uint32_t ntensors;
	struct catalog_tensor *tensors;
	uint64_t bytes;			/* sum of tensor lengths */
};

struct catalog_file {
	char *path;			/* absolute or relative to the cwd */
	uint64_t size;
};

struct catalog {
	char *dir;
	char *preset;			/* name of the preset that matched */
	uint32_t nfiles;
	struct catalog_file *files;
	uint32_t nexperts;
	struct catalog_expert *experts;	/* sorted by (layer, expert) */
	uint32_t nlayers;		/* number of distinct MoE layers */
	uint32_t experts_per_layer;	/* max over layers */
	uint32_t top_k;			/* from config.json, 0 if unknown */
	/* Bytes a slot needs for any expert of this model, with the O_DIRECT
	 * alignment slack of each tensor (set by catalog_layout_slots). */
	uint64_t slot_bytes;
};

/*
 * Opens and validates the checkpoint in dir.  preset may be NULL (detect).
 * conf may be NULL (built-in presets only).  On failure returns a negative
 * errno and writes a message naming the file and the fault into err.
 */
int catalog_open(struct catalog **out, const char *dir, const char *preset,
		 const struct tierd_conf *conf, char *err, size_t errlen);
void catalog_free(struct catalog *cat);

/* NULL when (layer, expert) is not in the checkpoint. */
const struct catalog_expert *catalog_find(const struct catalog *cat, uint32_t layer, uint32_t expert);

/*
 * Lays tensors out in a slot for reads aligned to 'align' bytes (O_DIRECT):
 * each tensor's aligned superset lands in the slot, slot_offset records where
 * the tensor's first byte is.  Sets slot_bytes.
 */
int catalog_layout_slots(struct catalog *cat, uint64_t align);

const char *st_dtype_name(enum st_dtype t);
size_t st_dtype_size(enum st_dtype t);

#endif
