/* SPDX-License-Identifier: MIT */
/*
 * Pin sets: a multiset of experts (engine keys) with a count per key and a
 * total.  A client's pins, its prefetches in flight and the operator pins
 * are each one, and every ACQUIRE, RELEASE and PREFETCH looks each of its
 * keys up: the entries sit in an array (iterated by opins.c and
 * release_all), found through an open-addressing index of their positions,
 * linear probing, at most half full, rebuilt when the array grows.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
/* Inlined: the call into libxxhash costs more than hashing 12 bytes, and
 * every key of every ACQUIRE, RELEASE and PREFETCH is hashed a few times. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pinset.h"

static bool key_eq(const struct tierd_key *a, const struct tierd_key *b)
{
	return a->model == b->model && a->layer == b->layer && a->expert == b->expert;
}

/* The key's three words, hashed where they lie: copying them into an array
 * first, as engine/cache.c does, stalls on store forwarding. */
_Static_assert(sizeof(struct tierd_key) == 3 * sizeof(uint32_t), "a key has no padding to hash");

static size_t slot_home(const struct pinset *ps, const struct tierd_key *k)
{
	return (size_t)XXH3_64bits(k, sizeof(*k)) & (ps->nidx - 1);
}

/* The slot holding k, or the empty slot where k would go: there is always
 * one, the index being at most half full. */
static size_t slot_find(const struct pinset *ps, const struct tierd_key *k)
{
	size_t i = slot_home(ps, k);

	while (ps->idx[i] && !key_eq(&ps->v[ps->idx[i] - 1].key, k))
		i = (i + 1) & (ps->nidx - 1);
	return i;
}

/* Empties slot i, moving back the entries after it that probed past it, so
 * that every entry stays reachable from its home slot without tombstones. */
static void slot_clear(struct pinset *ps, size_t i)
{
	size_t mask = ps->nidx - 1, j = i;

	ps->idx[i] = 0;
	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (!ps->idx[j])
			return;
		home = slot_home(ps, &ps->v[ps->idx[j] - 1].key);
		/* Movable to i when i lies on its probe path, home..j. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			ps->idx[i] = ps->idx[j];
			ps->idx[j] = 0;
			i = j;
		}
	}
}

struct pin *pinset_find(struct pinset *ps, const struct tierd_key *k)
{
	size_t i;

	if (!ps->n)
		return NULL;
	i = slot_find(ps, k);
	return ps->idx[i] ? &ps->v[ps->idx[i] - 1] : NULL;
}

/* Doubles the array and rebuilds the index for it; the set unchanged on
 * failure. */
static int pinset_grow(struct pinset *ps)
{
	size_t cap = ps->cap ? ps->cap * 2 : 16;
	uint32_t *idx;
	struct pin *v;

	/* Positions are stored as uint32_t + 1. */
	if (cap >= UINT32_MAX / 2)
		return -ENOMEM;
	idx = calloc(2 * cap, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	v = realloc(ps->v, cap * sizeof(*v));
	if (!v) {
		free(idx);
		return -ENOMEM;
	}
	free(ps->idx);
	ps->v = v;
	ps->cap = cap;
	ps->idx = idx;
	ps->nidx = 2 * cap;
	for (size_t p = 0; p < ps->n; p++)
		ps->idx[slot_find(ps, &ps->v[p].key)] = (uint32_t)p + 1;
	return 0;
}

int pinset_add(struct pinset *ps, const struct tierd_key *k)
{
	struct pin *p = pinset_find(ps, k);

	if (!p) {
		if (ps->n == ps->cap) {
			int err = pinset_grow(ps);

			if (err)
				return err;
		}
		p = &ps->v[ps->n++];
		p->key = *k;
		p->count = 0;
		ps->idx[slot_find(ps, k)] = (uint32_t)ps->n;
	}
	p->count++;
	ps->total++;
	return 0;
}

/* -ENOENT when the set holds no pin on k. */
int pinset_drop(struct pinset *ps, const struct tierd_key *k)
{
	size_t i, pos, last;

	if (!ps->n)
		return -ENOENT;
	i = slot_find(ps, k);
	if (!ps->idx[i])
		return -ENOENT;
	pos = ps->idx[i] - 1;
	ps->total--;
	if (--ps->v[pos].count)
		return 0;
	slot_clear(ps, i);
	/* The last entry fills the hole: its slot follows it. */
	last = --ps->n;
	if (pos != last) {
		ps->idx[slot_find(ps, &ps->v[last].key)] = (uint32_t)pos + 1;
		ps->v[pos] = ps->v[last];
	}
	return 0;
}

int pinset_clone(struct pinset *dst, const struct pinset *src)
{
	*dst = *src;
	dst->v = NULL;
	dst->idx = NULL;
	if (!src->cap)
		return 0;
	dst->v = malloc(src->cap * sizeof(*dst->v));
	dst->idx = malloc(src->nidx * sizeof(*dst->idx));
	if (!dst->v || !dst->idx) {
		pinset_free(dst);
		return -ENOMEM;
	}
	memcpy(dst->v, src->v, src->n * sizeof(*dst->v));
	memcpy(dst->idx, src->idx, src->nidx * sizeof(*dst->idx));
	return 0;
}

void pinset_free(struct pinset *ps)
{
	free(ps->v);
	free(ps->idx);
	memset(ps, 0, sizeof(*ps));
}

void pinset_release_all(struct pinset *ps, struct engine *e)
{
	for (size_t i = 0; i < ps->n; i++)
		for (uint32_t j = 0; j < ps->v[i].count; j++)
			engine_release(e, &ps->v[i].key);
	pinset_free(ps);
}
