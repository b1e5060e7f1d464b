/* SPDX-License-Identifier: MIT */
/*
 * Catalog: the experts of a checkpoint, from its safetensors headers.
 *
 * An expert is the list of byte ranges (file, offset, length) of its tensors,
 * each with name, dtype and shape, so that a client can rebuild the tensors
 * from a pool slot.  Built from one .safetensors file or a sharded checkpoint
 * with model.safetensors.index.json; tensors are mapped to (layer, expert) by
 * a preset (built-in or [preset NAME] in the config).
 *
 * Presets are patterns over tensor names: {L} matches the layer number, {E}
 * the expert number, '*' the rest of a name (never starting with a digit, so
 * a fused pattern does not swallow per-expert names).  Keys of a preset:
 *   tensor = PATTERN   per-expert tensors; needs {L} and {E}
 *   fused = PATTERN    one tensor holds every expert of layer {L}: expert E is
 *                      the E-th slice along the first dimension (contiguous)
 * Both may repeat.  Built-ins (in this order): mixtral, qwen-moe (Qwen-MoE,
 * DeepSeek-V2/V3 with FP8 weight_scale_inv, OLMoE), llama4, gpt-oss.
 */
#ifndef TIERD_CATALOG_H
#define TIERD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "tierd-types.h"

#define CATALOG_MAX_DIMS TIERD_MAX_DIMS
/* Side files of a checkpoint directory that the catalog reads besides the
 * shards (the engine watches them too: they shape the catalog). */
#define CATALOG_INDEX_NAME	"model.safetensors.index.json"
#define CATALOG_CONFIG_NAME	"config.json"
/* catalog_open lays slots out for this alignment; call catalog_layout_slots for another. */
#define CATALOG_DEFAULT_ALIGN 4096


struct catalog_tensor {
	char *name;			/* full tensor name in the checkpoint */
	enum tierd_dtype dtype;
	uint32_t ndim;
	uint64_t shape[CATALOG_MAX_DIMS];	/* of this expert's part (a slice for fused layouts) */
	uint32_t file;			/* index into catalog.files */
	uint64_t offset;		/* absolute byte offset in the file */
	uint64_t length;		/* bytes */
	uint64_t slot_offset;		/* where the tensor starts in a slot (see below) */
};

/*
 * One aligned read of an expert: [offset, offset + length) of files[file]
 * lands at slot + slot_offset.  offset, length and slot_offset are multiples
 * of the layout alignment.  The read may extend past the end of the file
 * (the last tensor's end rounded up); such a read comes back short at EOF,
 * and no tensor byte lies beyond EOF.
 */
struct catalog_extent {
	uint32_t file;
	uint64_t offset;
	uint64_t length;
	uint64_t slot_offset;
};

struct catalog_expert {
	uint32_t layer;
	uint32_t expert;
	uint32_t ntensors;
	struct catalog_tensor *tensors;	/* sorted by name */
	uint64_t bytes;			/* sum of tensor lengths */
	uint32_t nextents;
	struct catalog_extent *extents;	/* reads that fill the slot, in slot order */
	uint64_t slot_bytes;		/* sum of extent lengths (<= catalog.slot_bytes) */
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
	uint64_t align;			/* alignment of the current layout */
	uint64_t dense_tensors;		/* tensors that belong to no expert (ignored) */
};

/*
 * Opens and validates the checkpoint in dir.  preset may be NULL (detect).
 * conf may be NULL (built-in presets only).  On failure returns a negative
 * errno and writes a message naming the file and the fault into err.
 * The slots are laid out for CATALOG_DEFAULT_ALIGN.
 */
int catalog_open(struct catalog **out, const char *dir, const char *preset,
		 const struct tierd_conf *conf, char *err, size_t errlen);
void catalog_free(struct catalog *cat);

/* NULL when (layer, expert) is not in the checkpoint. */
const struct catalog_expert *catalog_find(const struct catalog *cat, uint32_t layer, uint32_t expert);

/*
 * Lays tensors out in a slot for reads aligned to 'align' bytes (a power of
 * two; O_DIRECT wants the device's logical block size, usually 4096).
 *
 * For each expert, its tensors are taken in order (by name); each tensor needs
 * the aligned superset [offset rounded down, offset + length rounded up).  A
 * superset that starts inside or right at the end of the current extent (same
 * file, not before its start) extends it: tensors stored back to back become
 * one read and a block they share is read once.  Otherwise a new extent
 * starts at the next free slot byte, so extents never overlap in the slot
 * (a block shared with a tensor further away is then read twice).  slot_offset of a tensor = its extent's slot_offset + (tensor offset -
 * extent offset), i.e. where the tensor's first byte lands.  expert.slot_bytes
 * is the sum of its extents, catalog.slot_bytes the maximum over experts.
 * The slot base itself must be aligned to 'align'.  Returns -EINVAL if align
 * is not a power of two.
 */
int catalog_layout_slots(struct catalog *cat, uint64_t align);

/*
 * Checks a [preset] section's keys and patterns ("file:line: [preset X] key:
 * reason" in err).  catalog_open checks every configured preset this way.
 */
int catalog_preset_check(const char *file, const struct conf_preset *p, char *err, size_t errlen);

/*
 * Whether b holds the experts a does: the same shard files (by path), top_k,
 * (layer, expert) list and, for each expert, tensors of the same names,
 * dtypes and shapes.  Where they are in the files may differ.  false with the
 * first difference in why.
 */
bool catalog_same_experts(const struct catalog *a, const struct catalog *b, char *why, size_t len);
/* Whether, on top of that, every tensor and read is where it was (file
 * sizes included): a reload then keeps the catalog it has. */
bool catalog_same_layout(const struct catalog *a, const struct catalog *b);


#endif
