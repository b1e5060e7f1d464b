/* SPDX-License-Identifier: MIT */
/*
 * Cache: the residency table of experts, keyed by (model, layer, expert), with
 * pin counts and an eviction policy behind a small interface.
 *
 * The cache does not own pool memory: it records which slot an entry holds and
 * picks victims; the engine frees slots.  An entry is FETCHING until its read
 * completes, then RESIDENT.  Only RESIDENT entries with no pins are ever
 * offered as victims.
 */
#ifndef TIERD_CACHE_H
#define TIERD_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "tierd-types.h"

struct cache;
struct predict;

enum cache_state {
	CACHE_FETCHING,
	CACHE_RESIDENT,
};

struct cache_entry {
	struct tierd_key key;
	enum cache_state state;
	uint32_t pins;
	uint64_t slot;			/* offset of the slot in the pool */
	uint64_t resident_ns;		/* CLOCK_MONOTONIC when it became resident */
	uint32_t pool;			/* which pool (engine.h); the engine sets it */
	uint32_t flags;			/* CACHE_F_*: the engine's and the lab's */
	void *owner;			/* the engine's per-entry data */
	/* Policy-private links and a spare word. */
	TAILQ_ENTRY(cache_entry) plink;
	uint64_t pdata;
	/* Hash chain. */
	struct cache_entry *hnext;
};

/* Fetched by a prefetch and not yet acquired: counted as used at its first
 * acquire, as wasted if it leaves before. */
#define CACHE_F_PREFETCHED	1u

/* The list a policy keeps its entries on (most recent first), by plink. */
TAILQ_HEAD(cache_plist, cache_entry);

/*
 * An eviction policy.  The cache calls insert when an entry becomes resident,
 * touch on every hit, remove when it leaves; victim returns the entry the
 * policy would evict first among those accepted by ok (NULL if none).
 * Policies that rank by what sequences will need read the cache's predictor
 * (given at create), which cache_observe() feeds.
 */
/* Sequence contexts the predictor keeps (least recently active dropped). */
#define CACHE_PREDICT_SEQS	64

struct cache_policy {
	const char *name;
	int (*create)(void **state, struct predict *pred);
	void (*destroy)(void *state);
	void (*insert)(void *state, struct cache_entry *e);
	void (*touch)(void *state, struct cache_entry *e);
	void (*remove)(void *state, struct cache_entry *e);
	struct cache_entry *(*victim)(void *state, bool (*ok)(const struct cache_entry *e, void *arg),
				      void *arg);
	/* Ranks by the predictor: cache_observe() must feed it. */
	bool predicts;
};

/*
 * The policies ([cache] policy = NAME):
 * - lru: least recently used.
 * - lfu: least frequently used, with dynamic ageing (LFU-DA: an entry's
 *   priority is its use count plus the priority of the last victim, so that
 *   counts earned long ago do not keep an entry forever).
 * - lfru: uses counted with exponential decay, halving over as many
 *   accesses as there are resident entries (one turnover of the cache).
 * - activation: per-sequence activation counts (prompt hints and decode so
 *   far) and layer distance: evicts the expert whose expected next use by the
 *   active sequence is furthest (early layers of the next token are soonest).
 * - predictive: the same ranking from the predictor's mixed estimate
 *   (global, sequence, cross-token, cross-layer statistics learned online).
 */
extern const struct cache_policy cache_policy_lru, cache_policy_lfu, cache_policy_lfru,
	cache_policy_activation, cache_policy_predictive;

/* Looks a policy up by name ("lru"); NULL if unknown. */
const struct cache_policy *cache_policy_find(const char *name);
/* The names of every policy, comma separated (help, errors). */
const char *cache_policy_names(void);

/* -EINVAL for an unknown policy name. */
int cache_create(struct cache **out, const char *policy);
/* Frees every entry (their owner data is the caller's). */
void cache_destroy(struct cache *c);
const char *cache_policy_name(const struct cache *c);

/* The predictor the cache's policies read (and the engine's prefetch). */
struct predict *cache_predictor(const struct cache *c);
/* Whether the policy reads the predictor (else observing costs for nothing
 * unless something else, the daemon's prefetch, reads it). */
bool cache_predicts(const struct cache *c);
/* What a sequence acquired (hint false) or says it will need (hint true)
 * at one layer: feeds the predictor.  -ERANGE for a model the predictor was
 * not told the shape of (predict_model), or keys outside it. */
int cache_observe(struct cache *c, uint32_t model, uint64_t seq, uint32_t layer,
		  const uint32_t *experts, uint32_t n, bool hint);

struct cache_entry *cache_lookup(const struct cache *c, const struct tierd_key *k);
/* A new FETCHING entry with no pins; -EEXIST if the key is there. */
int cache_add(struct cache *c, const struct tierd_key *k, uint64_t slot, struct cache_entry **out);
/* FETCHING -> RESIDENT: from now on the policy tracks it. */
void cache_set_resident(struct cache *c, struct cache_entry *e);
/* Removes and frees the entry (pins are dropped with it). */
void cache_remove(struct cache *c, struct cache_entry *e);
/* A hit: tells the policy. */
void cache_touch(struct cache *c, struct cache_entry *e);

void cache_pin(struct cache *c, struct cache_entry *e);
/* -EINVAL when the entry has no pin. */
int cache_unpin(struct cache *c, struct cache_entry *e);

/*
 * The policy's victim among RESIDENT, unpinned entries accepted by ok (NULL:
 * any).  -ENOSPC when there is none (everything pinned or fetching).
 */
int cache_victim(struct cache *c, bool (*ok)(const struct cache_entry *e, void *arg), void *arg,
		 struct cache_entry **out);

uint64_t cache_count(const struct cache *c);
uint64_t cache_pins(const struct cache *c);
/* Calls fn for each entry; fn must not add or remove entries. */
void cache_foreach(const struct cache *c, void (*fn)(struct cache_entry *e, void *arg), void *arg);

#endif
