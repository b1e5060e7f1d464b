/* SPDX-License-Identifier: MIT */
/*
 * Pin sets: a multiset of experts (engine keys) with a count per key and a
 * total.  A client's pins, its prefetches in flight and the operator pins
 * are each one; linear search, as a set holds a client's working set at most.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pinset.h"

struct pin *pinset_find(struct pinset *ps, const struct tierd_key *k)
{
	for (size_t i = 0; i < ps->n; i++)
		if (ps->v[i].key.model == k->model && ps->v[i].key.layer == k->layer &&
		    ps->v[i].key.expert == k->expert)
			return &ps->v[i];
	return NULL;
}

int pinset_add(struct pinset *ps, const struct tierd_key *k)
{
	struct pin *p = pinset_find(ps, k);

	if (!p) {
		if (ps->n == ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 16;
			struct pin *v = realloc(ps->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			ps->v = v;
			ps->cap = cap;
		}
		p = &ps->v[ps->n++];
		p->key = *k;
		p->count = 0;
	}
	p->count++;
	ps->total++;
	return 0;
}

/* -ENOENT when the set holds no pin on k. */
int pinset_drop(struct pinset *ps, const struct tierd_key *k)
{
	struct pin *p = pinset_find(ps, k);

	if (!p)
		return -ENOENT;
	ps->total--;
	if (--p->count == 0)
		*p = ps->v[--ps->n];
	return 0;
}

int pinset_clone(struct pinset *dst, const struct pinset *src)
{
	*dst = *src;
	dst->v = NULL;
	if (!src->cap)
		return 0;
	dst->v = malloc(src->cap * sizeof(*dst->v));
	if (!dst->v)
		return -ENOMEM;
	memcpy(dst->v, src->v, src->n * sizeof(*dst->v));
	return 0;
}

void pinset_free(struct pinset *ps)
{
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

void pinset_release_all(struct pinset *ps, struct engine *e)
{
	for (size_t i = 0; i < ps->n; i++)
		for (uint32_t j = 0; j < ps->v[i].count; j++)
			engine_release(e, &ps->v[i].key);
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}
