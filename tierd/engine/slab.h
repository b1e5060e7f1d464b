/* SPDX-License-Identifier: MIT */
/*
 * Slot allocator for the DDR pool.
 *
 * The pool is carved into 2 MiB chunks.  Each class (one per model: its
 * experts share one slot size) takes spans of whole chunks: a span holds one
 * slot when slots are 2 MiB or larger, else as many slots as fit in a span
 * size picked to waste little.  Spans of small slots are taken from the bottom
 * of the pool and spans of large slots from the top, so that churn of one
 * kind does not break up the contiguous runs the other needs; an empty span
 * goes back to the free chunks at once.  Offsets are relative to the pool and
 * 4 KiB aligned (O_DIRECT).
 */
#ifndef TIERD_SLAB_H
#define TIERD_SLAB_H

#include <stdint.h>

#define SLAB_CHUNK	(2ULL << 20)
#define SLAB_ALIGN	4096ULL

struct slab;

struct slab_stats {
	uint64_t chunks_total;
	uint64_t chunks_free;
	uint64_t largest_free_run;	/* in chunks */
};

/* size is rounded down to whole chunks; -EINVAL if less than one. */
int slab_create(struct slab **out, uint64_t size);
void slab_destroy(struct slab *s);

/*
 * Adds a class of slot_bytes slots (rounded up to SLAB_ALIGN) that may hold
 * at most quota_bytes (0: no limit).  Returns the class index or -EINVAL.
 */
int slab_class_add(struct slab *s, uint64_t slot_bytes, uint64_t quota_bytes);
uint64_t slab_class_slot_bytes(const struct slab *s, int cls);
/* Bytes of slots the class holds now (what its quota is charged). */
uint64_t slab_class_used(const struct slab *s, int cls);

/* -EDQUOT over the class quota, -ENOSPC no room in the pool. */
int slab_alloc(struct slab *s, int cls, uint64_t *offset);
/* -EINVAL if offset is not a slot of cls that is allocated. */
int slab_free(struct slab *s, int cls, uint64_t offset);

void slab_get_stats(const struct slab *s, struct slab_stats *st);

/* The span holding offset: its bytes [*start, *end) and the slots in use in
 * it.  -ENOENT if offset is in a free chunk. */
int slab_span_of(const struct slab *s, uint64_t offset, uint64_t *start, uint64_t *end,
		 uint32_t *used);

#endif
