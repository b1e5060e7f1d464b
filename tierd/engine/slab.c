/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "slab.h"

struct slab_span {
	uint32_t first;			/* first chunk */
	uint32_t nchunks;
	int cls;
	uint32_t nslots;
	uint32_t nfree;
	uint32_t *free;			/* stack of free slot indices */
	uint64_t *used;			/* bitmap, to refuse bad or double frees */
	LIST_ENTRY(slab_span) link;	/* on the class's partial list while it has a free slot */
	bool partial;
};

struct slab_class {
	uint64_t slot_bytes;
	uint64_t quota;
	uint64_t used;
	uint32_t span_chunks;
	uint32_t slots_per_span;	/* of a full-size span */
	bool small;			/* several slots per span: taken from the bottom */
	LIST_HEAD(, slab_span) partial;	/* spans with a free slot */
};

struct slab {
	uint32_t nchunks;
	uint32_t chunks_free;
	struct slab_span **chunk_span;	/* owner of each chunk, NULL when free */
	/* Each class allocated on its own: the partial list's head must not
	 * move when a class is added (its first span points back at it). */
	struct slab_class **classes;
	int nclasses;
};

int slab_create(struct slab **out, uint64_t size)
{
	struct slab *s;
	uint64_t n = size / SLAB_CHUNK;

	if (n < 1 || n > UINT32_MAX)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->chunk_span = calloc(n, sizeof(*s->chunk_span));
	if (!s->chunk_span) {
		free(s);
		return -ENOMEM;
	}
	s->nchunks = (uint32_t)n;
	s->chunks_free = (uint32_t)n;
	*out = s;
	return 0;
}

static void span_free(struct slab_span *sp)
{
	free(sp->free);
	free(sp->used);
	free(sp);
}

void slab_destroy(struct slab *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < s->nchunks;) {
		struct slab_span *sp = s->chunk_span[i];

		if (!sp) {
			i++;
			continue;
		}
		i = sp->first + sp->nchunks;
		span_free(sp);
	}
	free(s->chunk_span);
	for (int i = 0; i < s->nclasses; i++)
		free(s->classes[i]);
	free(s->classes);
	free(s);
}

/*
 * Span size for slots smaller than a chunk: the fewest chunks that waste at
 * most 3% of the span, else the least wasteful of up to 16 chunks.  Bigger
 * spans waste less at the tail but stay allocated while any slot is used.
 */
static uint32_t span_chunks_for(uint64_t slot)
{
	uint32_t best = 1;
	uint64_t best_waste = UINT64_MAX;

	for (uint32_t k = 1; k <= 16; k++) {
		uint64_t bytes = k * SLAB_CHUNK;
		uint64_t waste = bytes % slot;

		if (waste * 100 <= bytes * 3)
			return k;
		/* Compare waste as a fraction of the span: waste/bytes. */
		if (best_waste == UINT64_MAX || waste * (best * SLAB_CHUNK) < best_waste * bytes) {
			best = k;
			best_waste = waste;
		}
	}
	return best;
}

int slab_class_add(struct slab *s, uint64_t slot_bytes, uint64_t quota_bytes)
{
	struct slab_class *c, **v;
	uint64_t slot;

	if (slot_bytes == 0 || slot_bytes > (uint64_t)s->nchunks * SLAB_CHUNK)
		return -EINVAL;
	slot = (slot_bytes + SLAB_ALIGN - 1) & ~(SLAB_ALIGN - 1);
	v = realloc(s->classes, (s->nclasses + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->classes = v;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	s->classes[s->nclasses] = c;
	LIST_INIT(&c->partial);
	c->slot_bytes = slot;
	c->quota = quota_bytes;
	if (slot >= SLAB_CHUNK) {
		c->span_chunks = (uint32_t)((slot + SLAB_CHUNK - 1) / SLAB_CHUNK);
		c->slots_per_span = 1;
	} else {
		c->span_chunks = span_chunks_for(slot);
		c->slots_per_span = (uint32_t)(c->span_chunks * SLAB_CHUNK / slot);
		c->small = true;
	}
	return s->nclasses++;
}

static struct slab_class *class_get(const struct slab *s, int cls)
{
	if (cls < 0 || cls >= s->nclasses)
		return NULL;
	return s->classes[cls];
}

uint64_t slab_class_slot_bytes(const struct slab *s, int cls)
{
	const struct slab_class *c = class_get(s, cls);

	return c ? c->slot_bytes : 0;
}

uint64_t slab_class_used(const struct slab *s, int cls)
{
	const struct slab_class *c = class_get(s, cls);

	return c ? c->used : 0;
}

/* First fit of n free chunks, scanning up from the bottom or down from the top:
 * the first chunk's index, or -ENOSPC. */
static int64_t find_run(const struct slab *s, uint32_t n, bool from_top)
{
	uint32_t run = 0;

	if (n > s->chunks_free)
		return -ENOSPC;
	if (!from_top) {
		for (uint32_t i = 0; i < s->nchunks; i++) {
			run = s->chunk_span[i] ? 0 : run + 1;
			if (run == n)
				return (int64_t)i + 1 - n;
		}
	} else {
		for (uint32_t i = s->nchunks; i-- > 0;) {
			run = s->chunk_span[i] ? 0 : run + 1;
			if (run == n)
				return i;
		}
	}
	return -ENOSPC;
}

static void partial_push(struct slab_class *c, struct slab_span *sp)
{
	LIST_INSERT_HEAD(&c->partial, sp, link);
	sp->partial = true;
}

static void partial_remove(struct slab_span *sp)
{
	if (sp->partial)
		LIST_REMOVE(sp, link);
	sp->partial = false;
}

static int span_new(struct slab *s, int cls, struct slab_span **out)
{
	struct slab_class *c = s->classes[cls];
	struct slab_span *sp;
	uint32_t k = c->span_chunks, nslots;
	int64_t first = find_run(s, k, !c->small);

	/* When the pool is nearly full, a smaller span of small slots still
	 * uses the chunks that are left. */
	while (first < 0 && c->small && k > 1 && (--k) * SLAB_CHUNK >= c->slot_bytes)
		first = find_run(s, k, false);
	if (first < 0)
		return (int)first;
	/* Never zero: a small class's slot is under a chunk (slab_class_add) and
	 * k stops at one slot's worth; checked so the free stack is never empty. */
	nslots = c->small ? (uint32_t)(k * SLAB_CHUNK / c->slot_bytes) : 1;
	if (!nslots)
		return -EINVAL;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	sp->nslots = nslots;
	sp->free = malloc(sp->nslots * sizeof(*sp->free));
	sp->used = calloc((sp->nslots + 63) / 64, sizeof(*sp->used));
	if (!sp->free || !sp->used) {
		span_free(sp);
		return -ENOMEM;
	}
	sp->first = (uint32_t)first;
	sp->nchunks = k;
	sp->cls = cls;
	sp->nfree = sp->nslots;
	/* Lowest slot on top of the stack: slots fill a span in address order. */
	for (uint32_t i = 0; i < sp->nslots; i++)
		sp->free[i] = sp->nslots - 1 - i;
	for (uint32_t i = 0; i < sp->nchunks; i++)
		s->chunk_span[sp->first + i] = sp;
	s->chunks_free -= sp->nchunks;
	partial_push(c, sp);
	*out = sp;
	return 0;
}

int slab_alloc(struct slab *s, int cls, uint64_t *offset)
{
	struct slab_class *c = class_get(s, cls);
	struct slab_span *sp;
	uint32_t idx;
	int err;

	if (!c)
		return -EINVAL;
	if (c->quota && c->used + c->slot_bytes > c->quota)
		return -EDQUOT;
	sp = LIST_FIRST(&c->partial);
	if (!sp) {
		err = span_new(s, cls, &sp);
		if (err < 0)
			return err;
	}
	idx = sp->free[--sp->nfree];
	sp->used[idx / 64] |= 1ULL << (idx % 64);
	if (sp->nfree == 0)
		partial_remove(sp);
	c->used += c->slot_bytes;
	*offset = sp->first * SLAB_CHUNK + idx * c->slot_bytes;
	return 0;
}

int slab_free(struct slab *s, int cls, uint64_t offset)
{
	struct slab_class *c = class_get(s, cls);
	struct slab_span *sp;
	uint64_t rel, idx;

	if (!c || offset / SLAB_CHUNK >= s->nchunks)
		return -EINVAL;
	sp = s->chunk_span[offset / SLAB_CHUNK];
	if (!sp || sp->cls != cls)
		return -EINVAL;
	rel = offset - sp->first * SLAB_CHUNK;
	if (rel % c->slot_bytes)
		return -EINVAL;
	idx = rel / c->slot_bytes;
	if (idx >= sp->nslots || !(sp->used[idx / 64] & (1ULL << (idx % 64))))
		return -EINVAL;
	sp->used[idx / 64] &= ~(1ULL << (idx % 64));
	if (sp->nfree == 0)
		partial_push(c, sp);
	sp->free[sp->nfree++] = (uint32_t)idx;
	c->used -= c->slot_bytes;
	if (sp->nfree == sp->nslots) {
		partial_remove(sp);
		for (uint32_t i = 0; i < sp->nchunks; i++)
			s->chunk_span[sp->first + i] = NULL;
		s->chunks_free += sp->nchunks;
		span_free(sp);
	}
	return 0;
}

int slab_span_of(const struct slab *s, uint64_t offset, uint64_t *start, uint64_t *end,
		 uint32_t *used)
{
	const struct slab_span *sp;

	if (offset / SLAB_CHUNK >= s->nchunks)
		return -EINVAL;
	sp = s->chunk_span[offset / SLAB_CHUNK];
	if (!sp)
		return -ENOENT;
	*start = (uint64_t)sp->first * SLAB_CHUNK;
	*end = *start + (uint64_t)sp->nchunks * SLAB_CHUNK;
	*used = sp->nslots - sp->nfree;
	return 0;
}

void slab_get_stats(const struct slab *s, struct slab_stats *st)
{
	uint64_t run = 0;

	memset(st, 0, sizeof(*st));
	st->chunks_total = s->nchunks;
	st->chunks_free = s->chunks_free;
	for (uint32_t i = 0; i < s->nchunks; i++) {
		run = s->chunk_span[i] ? 0 : run + 1;
		if (run > st->largest_free_run)
			st->largest_free_run = run;
	}
}
