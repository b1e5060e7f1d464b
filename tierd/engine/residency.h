/* SPDX-License-Identifier: MIT */
/*
 * The residency table clients read to acquire a resident expert without a
 * system call, and the pin areas they write (layout and memory ordering:
 * tierd/proto/tierd-fastpath.h).  The engine publishes an expert when it
 * becomes resident and claims it back before its slot is freed: a claim
 * fails while any live client's area pins the expert.
 *
 * Areas are read defensively: they live in memfds the daemon made and
 * sealed against shrinking, so reading never faults; only the entries of
 * models the area's client may use count, and a value is only ever compared
 * with zero or subtracted from the last one seen.
 */
#ifndef TIERD_RESIDENCY_H
#define TIERD_RESIDENCY_H

#include <stdbool.h>
#include <stdint.h>

#include "tierd-types.h"

struct residency;
struct residency_area;

struct residency_model {
	uint32_t nlayers;
	uint32_t experts_per_layer;
};

/* The table for n models; a model too large for the entries left gets none
 * (its acquires go through the socket). */
int residency_create(struct residency **out, const struct residency_model *models, unsigned n,
		     char *err, size_t errlen);
void residency_destroy(struct residency *r);
/* A read-only descriptor of the table, and its size, for clients. */
int residency_table_fd(const struct residency *r);
uint64_t residency_table_size(const struct residency *r);

/* The entry of a key, or -ENOENT (no entries for its model, out of range). */
int residency_index(const struct residency *r, const struct tierd_key *k);
/* The expert is resident at (pool, offset), tensors laid out as version layout. */
void residency_publish(struct residency *r, uint32_t idx, uint32_t pool, uint64_t offset, uint32_t layout);
/* No new fast acquire of it (pins already taken stay). */
void residency_unpublish(struct residency *r, uint32_t idx);
/* Whether an area of a client allowed the model pins the entry now. */
bool residency_pinned(const struct residency *r, uint32_t idx, uint32_t model);
/*
 * Unpublishes the entry unless a pin is found after that: true when the
 * slot may be freed.  On false the entry is published again (new
 * generation) as it was.
 */
bool residency_claim(struct residency *r, uint32_t idx, uint32_t model);

/* A pin area for a client; allowed (one bool per model, the client's,
 * updated in place by reauthorisation) must outlive the area. */
int residency_area_new(struct residency *r, const bool *allowed, struct residency_area **out);
void residency_area_free(struct residency *r, struct residency_area *a);
/* Its read-write descriptor (owned by the area) and size. */
int residency_area_fd(const struct residency_area *a);
/* Closes the descriptor once the client has it: the mapping stays. */
void residency_area_close_fd(struct residency_area *a);
uint64_t residency_area_size(const struct residency *r);

/* What a sweep of an area found (models the client may use only). */
struct residency_sweep {
	uint64_t pinned;		/* entries it pins now */
	uint64_t uses;			/* fast acquires since the last sweep */
	uint64_t releases;		/* fast releases since the last sweep */
};

/* Reads an area's counters: fn(arg, key, uses since the last sweep) for each
 * entry used.  Releases are the uses less the growth of the pins held. */
void residency_area_sweep(struct residency *r, struct residency_area *a,
			  void (*fn)(void *arg, const struct tierd_key *key, uint32_t uses), void *arg,
			  struct residency_sweep *out);

#endif
