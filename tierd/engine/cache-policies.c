/* SPDX-License-Identifier: MIT */
/*
 * Eviction policies beyond LRU (cache.h says what each does).  Each keeps its
 * resident entries on a list in insertion-or-touch order, most recent at
 * the head, so that ties go to the least recently used; victims are found by
 * a scan, which costs a few microseconds per eviction at the pool sizes
 * served (thousands of slots) and needs no second index.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "predict.h"

struct plist {
	struct cache_plist list;	/* most recent first */
	uint64_t n;			/* entries */
	uint64_t clock;			/* accesses (inserts and touches) */
	uint64_t age;			/* LFU-DA: the priority of the last victim */
	struct predict *pred;
	unsigned mask;			/* PREDICT_* estimates used */
};

static int plist_create(void **state, struct predict *pred, unsigned mask)
{
	struct plist *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	TAILQ_INIT(&l->list);
	l->pred = pred;
	l->mask = mask;
	*state = l;
	return 0;
}

static void plist_destroy(void *state)
{
	free(state);
}

static void plist_unlink(struct plist *l, struct cache_entry *e)
{
	TAILQ_REMOVE(&l->list, e, plink);
	l->n--;
}

/* An insert or a touch: at the head, and one access more on the clock. */
static void plist_push(struct plist *l, struct cache_entry *e)
{
	TAILQ_INSERT_HEAD(&l->list, e, plink);
	l->n++;
	l->clock++;
}

static void plist_remove(void *state, struct cache_entry *e)
{
	plist_unlink(state, e);
}

/*
 * The entry with the lowest score among the unpinned ones ok accepts; ties
 * go to the least recently used (the scan starts at the tail and only a
 * strictly lower score replaces the best).
 */
static struct cache_entry *plist_min(struct plist *l, double (*score)(struct plist *l, const struct cache_entry *e),
				     bool (*ok)(const struct cache_entry *e, void *arg), void *arg)
{
	struct cache_entry *best = NULL, *e;
	double bs = 0;

	TAILQ_FOREACH_REVERSE(e, &l->list, cache_plist, plink) {
		double s;

		if (e->pins || !ok(e, arg))
			continue;
		s = score(l, e);
		if (!best || s < bs) {
			best = e;
			bs = s;
		}
	}
	return best;
}

/* LFU-DA: pdata is the priority, use count plus the age when last used. */
static int lfu_create(void **state, struct predict *pred)
{
	return plist_create(state, pred, 0);
}

static void lfu_insert(void *state, struct cache_entry *e)
{
	struct plist *l = state;

	e->pdata = l->age + 1;
	plist_push(l, e);
}

static void lfu_touch(void *state, struct cache_entry *e)
{
	struct plist *l = state;

	/* Ageing: a touch lifts the priority to at least the current age, so
	 * the count an entry earned before others were evicted weighs less. */
	e->pdata = (e->pdata > l->age ? e->pdata : l->age) + 1;
	plist_unlink(l, e);
	plist_push(l, e);
}

static double lfu_score(struct plist *l, const struct cache_entry *e)
{
	return (double)e->pdata;
}

static struct cache_entry *lfu_victim(void *state, bool (*ok)(const struct cache_entry *e, void *arg),
				      void *arg)
{
	struct plist *l = state;
	struct cache_entry *v = plist_min(l, lfu_score, ok, arg);

	if (v && v->pdata > l->age)
		l->age = v->pdata;
	return v;
}

const struct cache_policy cache_policy_lfu = {
	.name = "lfu",
	.create = lfu_create,
	.destroy = plist_destroy,
	.insert = lfu_insert,
	.touch = lfu_touch,
	.remove = plist_remove,
	.victim = lfu_victim,
};

/*
 * LFRU: pdata holds a decayed use count (a float, high word) and the clock
 * of its last update (low word; differences taken modulo 2^32).  The count
 * halves every n accesses, n the entries resident: an expert that is not
 * used again within one turnover of the cache loses half its weight.
 */
static double lfru_decayed(const struct plist *l, uint64_t pdata)
{
	float c;
	uint32_t bits = (uint32_t)(pdata >> 32);
	uint32_t dt = (uint32_t)l->clock - (uint32_t)pdata;

	memcpy(&c, &bits, sizeof(c));
	return c * exp2(-(double)dt / (double)(l->n ? l->n : 1));
}

static uint64_t lfru_pack(const struct plist *l, double c)
{
	float f = (float)c;
	uint32_t bits;

	memcpy(&bits, &f, sizeof(bits));
	return (uint64_t)bits << 32 | (uint32_t)l->clock;
}

static void lfru_insert(void *state, struct cache_entry *e)
{
	struct plist *l = state;

	plist_push(l, e);
	e->pdata = lfru_pack(l, 1);
}

static void lfru_touch(void *state, struct cache_entry *e)
{
	struct plist *l = state;
	double c = lfru_decayed(l, e->pdata);

	plist_unlink(l, e);
	plist_push(l, e);
	e->pdata = lfru_pack(l, c + 1);
}

static double lfru_score(struct plist *l, const struct cache_entry *e)
{
	return lfru_decayed(l, e->pdata);
}

static struct cache_entry *lfru_victim(void *state, bool (*ok)(const struct cache_entry *e, void *arg),
				       void *arg)
{
	return plist_min(state, lfru_score, ok, arg);
}

const struct cache_policy cache_policy_lfru = {
	.name = "lfru",
	.create = lfu_create,
	.destroy = plist_destroy,
	.insert = lfru_insert,
	.touch = lfru_touch,
	.remove = plist_remove,
	.victim = lfru_victim,
};

/*
 * Activation-aware and predictive: the victim is the entry whose expected
 * next use (predict_next_use: layer distance plus expected misses) is
 * furthest; the lowest score is the negated distance.
 */
static void recency_insert(void *state, struct cache_entry *e)
{
	plist_push(state, e);
}

static void recency_touch(void *state, struct cache_entry *e)
{
	plist_unlink(state, e);
	plist_push(state, e);
}

static double next_use_score(struct plist *l, const struct cache_entry *e)
{
	return -predict_next_use(l->pred, e->key.model, e->key.layer, e->key.expert, l->mask);
}

static struct cache_entry *next_use_victim(void *state, bool (*ok)(const struct cache_entry *e, void *arg),
					   void *arg)
{
	return plist_min(state, next_use_score, ok, arg);
}

static int activation_create(void **state, struct predict *pred)
{
	return plist_create(state, pred, PREDICT_ACTIVATION);
}

static int predictive_create(void **state, struct predict *pred)
{
	return plist_create(state, pred, PREDICT_ALL);
}

const struct cache_policy cache_policy_activation = {
	.name = "activation",
	.create = activation_create,
	.destroy = plist_destroy,
	.insert = recency_insert,
	.touch = recency_touch,
	.remove = plist_remove,
	.victim = next_use_victim,
	.predicts = true,
};

const struct cache_policy cache_policy_predictive = {
	.name = "predictive",
	.create = predictive_create,
	.destroy = plist_destroy,
	.insert = recency_insert,
	.touch = recency_touch,
	.remove = plist_remove,
	.victim = next_use_victim,
	.predicts = true,
};
