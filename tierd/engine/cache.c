/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
/* Inlined, and the key hashed in place (struct tierd_key is three packed
 * uint32_t): every acquire looks its key up (as in service/pinset.c). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache.h"
#include "predict.h"

struct cache {
	const struct cache_policy *policy;
	void *pstate;
	struct predict *pred;
	struct cache_entry **buckets;
	uint64_t nbuckets;		/* power of two */
	uint64_t count;
	uint64_t pins;
};

/* LRU: a list, most recently used at the head; victims from the tail. */
struct lru {
	struct cache_plist list;	/* most recent first */
};

static int lru_create(void **state, struct predict *pred)
{
	struct lru *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	TAILQ_INIT(&l->list);
	*state = l;
	return 0;
}

static void lru_destroy(void *state)
{
	free(state);
}

static void lru_insert(void *state, struct cache_entry *e)
{
	struct lru *l = state;

	TAILQ_INSERT_HEAD(&l->list, e, plink);
}

static void lru_touch(void *state, struct cache_entry *e)
{
	struct lru *l = state;

	TAILQ_REMOVE(&l->list, e, plink);
	TAILQ_INSERT_HEAD(&l->list, e, plink);
}

static void lru_remove(void *state, struct cache_entry *e)
{
	struct lru *l = state;

	TAILQ_REMOVE(&l->list, e, plink);
}

static struct cache_entry *lru_victim(void *state, bool (*ok)(const struct cache_entry *e, void *arg),
				      void *arg)
{
	struct lru *l = state;

	/* Pinned entries stay in the list; skipping them keeps pin and unpin O(1). */
	struct cache_entry *e;

	TAILQ_FOREACH_REVERSE(e, &l->list, cache_plist, plink)
		if (!e->pins && ok(e, arg))
			return e;
	return NULL;
}

const struct cache_policy cache_policy_lru = {
	.name = "lru",
	.create = lru_create,
	.destroy = lru_destroy,
	.insert = lru_insert,
	.touch = lru_touch,
	.remove = lru_remove,
	.victim = lru_victim,
};

static const struct cache_policy *const policies[] = {
	&cache_policy_lru, &cache_policy_lfu, &cache_policy_lfru, &cache_policy_activation,
	&cache_policy_predictive,
};

const char *cache_policy_names(void)
{
	return "lru,lfu,lfru,activation,predictive";
}

const struct cache_policy *cache_policy_find(const char *name)
{
	for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
		if (!strcasecmp(policies[i]->name, name))
			return policies[i];
	return NULL;
}

int cache_create(struct cache **out, const char *policy)
{
	const struct cache_policy *p = cache_policy_find(policy ? policy : "lru");
	struct cache *c;
	int e;

	if (!p)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->policy = p;
	c->nbuckets = 256;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	/* Sequence contexts: one per client sequence recently active. */
	e = predict_create(&c->pred, CACHE_PREDICT_SEQS);
	if (e < 0) {
		free(c->buckets);
		free(c);
		return e;
	}
	e = p->create(&c->pstate, c->pred);
	if (e < 0) {
		predict_destroy(c->pred);
		free(c->buckets);
		free(c);
		return e;
	}
	*out = c;
	return 0;
}

void cache_destroy(struct cache *c)
{
	if (!c)
		return;
	for (uint64_t b = 0; b < c->nbuckets; b++)
		for (struct cache_entry *e = c->buckets[b], *n; e; e = n) {
			n = e->hnext;
			free(e);
		}
	c->policy->destroy(c->pstate);
	predict_destroy(c->pred);
	free(c->buckets);
	free(c);
}

const char *cache_policy_name(const struct cache *c)
{
	return c->policy->name;
}

struct predict *cache_predictor(const struct cache *c)
{
	return c->pred;
}

bool cache_predicts(const struct cache *c)
{
	return c->policy->predicts;
}

int cache_observe(struct cache *c, uint32_t model, uint64_t seq, uint32_t layer,
		  const uint32_t *experts, uint32_t n, bool hint)
{
	return predict_observe(c->pred, model, seq, layer, experts, n, hint);
}

static uint64_t bucket_of(const struct cache *c, const struct tierd_key *k)
{
	_Static_assert(sizeof(*k) == 3 * sizeof(uint32_t), "a key is three packed words");
	return XXH3_64bits(k, sizeof(*k)) & (c->nbuckets - 1);
}

static bool key_eq(const struct tierd_key *a, const struct tierd_key *b)
{
	return a->model == b->model && a->layer == b->layer && a->expert == b->expert;
}

struct cache_entry *cache_lookup(const struct cache *c, const struct tierd_key *k)
{
	for (struct cache_entry *e = c->buckets[bucket_of(c, k)]; e; e = e->hnext)
		if (key_eq(&e->key, k))
			return e;
	return NULL;
}

/* Doubles the table when it averages more than one entry per bucket. */
static void grow(struct cache *c)
{
	uint64_t n = c->nbuckets * 2;
	struct cache_entry **nb = calloc(n, sizeof(*nb));
	struct cache_entry **old = c->buckets;
	uint64_t oldn = c->nbuckets;

	if (!nb)
		return;		/* longer chains, still correct */
	c->buckets = nb;
	c->nbuckets = n;
	for (uint64_t b = 0; b < oldn; b++)
		for (struct cache_entry *e = old[b], *nx; e; e = nx) {
			uint64_t i = bucket_of(c, &e->key);

			nx = e->hnext;
			e->hnext = nb[i];
			nb[i] = e;
		}
	free(old);
}

int cache_add(struct cache *c, const struct tierd_key *k, uint64_t slot, struct cache_entry **out)
{
	struct cache_entry *e;
	uint64_t b;

	if (cache_lookup(c, k))
		return -EEXIST;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->key = *k;
	e->state = CACHE_FETCHING;
	e->slot = slot;
	if (c->count + 1 > c->nbuckets)
		grow(c);
	b = bucket_of(c, k);
	e->hnext = c->buckets[b];
	c->buckets[b] = e;
	c->count++;
	*out = e;
	return 0;
}

void cache_set_resident(struct cache *c, struct cache_entry *e)
{
	if (e->state == CACHE_RESIDENT)
		return;
	e->state = CACHE_RESIDENT;
	c->policy->insert(c->pstate, e);
}

void cache_remove(struct cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[bucket_of(c, &e->key)];

	if (e->state == CACHE_RESIDENT)
		c->policy->remove(c->pstate, e);
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	c->count--;
	c->pins -= e->pins;
	free(e);
}

void cache_touch(struct cache *c, struct cache_entry *e)
{
	if (e->state == CACHE_RESIDENT)
		c->policy->touch(c->pstate, e);
}

void cache_pin(struct cache *c, struct cache_entry *e)
{
	e->pins++;
	c->pins++;
}

int cache_unpin(struct cache *c, struct cache_entry *e)
{
	if (!e->pins)
		return -EINVAL;
	e->pins--;
	c->pins--;
	return 0;
}

static bool any(const struct cache_entry *e, void *arg)
{
	return true;
}

int cache_victim(struct cache *c, bool (*ok)(const struct cache_entry *e, void *arg), void *arg,
		 struct cache_entry **out)
{
	struct cache_entry *e = c->policy->victim(c->pstate, ok ? ok : any, arg);

	/* Belt and braces: a policy must never hand out a pinned entry. */
	if (!e || e->pins || e->state != CACHE_RESIDENT)
		return -ENOSPC;
	*out = e;
	return 0;
}

uint64_t cache_count(const struct cache *c)
{
	return c->count;
}

uint64_t cache_pins(const struct cache *c)
{
	return c->pins;
}

void cache_foreach(const struct cache *c, void (*fn)(struct cache_entry *e, void *arg), void *arg)
{
	for (uint64_t b = 0; b < c->nbuckets; b++)
		for (struct cache_entry *e = c->buckets[b]; e; e = e->hnext)
			fn(e, arg);
}
