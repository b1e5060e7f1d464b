/* SPDX-License-Identifier: MIT */
/*
 * A pin set: experts (engine keys), each with how many times it is held,
 * and the total of those counts.  The service keeps one per client (its
 * pins, its prefetches in flight) and one of operator pins.  Internal to
 * tierd/service.
 */
#ifndef TIERD_PINSET_H
#define TIERD_PINSET_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct pin {
	struct tierd_key key;
	uint32_t count;
};

/* Zeroed: empty.  v[0..n) in no particular order, for iteration; idx is
 * private to pinset.c. */
struct pinset {
	struct pin *v;
	size_t n, cap;
	uint64_t total;
	uint32_t *idx;		/* open addressing: position in v + 1, 0 empty */
	size_t nidx;		/* slots in idx: a power of two, 2 * cap */
};

/* The entry of k, or NULL; valid until the set changes. */
struct pin *pinset_find(struct pinset *ps, const struct tierd_key *k);
/* One more hold on k.  0 or -ENOMEM (the set unchanged). */
int pinset_add(struct pinset *ps, const struct tierd_key *k);
/* One hold on k fewer; its entry goes with the last.  -ENOENT when the set
 * holds no pin on k. */
int pinset_drop(struct pinset *ps, const struct tierd_key *k);
/* dst becomes a copy of src (dst's old contents are not freed).  0 or
 * -ENOMEM (dst then holds nothing to free). */
int pinset_clone(struct pinset *dst, const struct pinset *src);
/* Empties the set, releasing nothing. */
void pinset_free(struct pinset *ps);
/* Empties the set, calling engine_release() once per hold. */
void pinset_release_all(struct pinset *ps, struct engine *e);

#endif
