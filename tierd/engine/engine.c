/* SPDX-License-Identifier: MIT */
/*
 * The engine: a pool, its slot allocator, the fetch ring and the residency
 * cache, and the models of the configuration.  See engine.h; engine-slots.c
 * and engine-checkpoint.c hold the rest (engine-int.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cache.h"
#include "ckwatch.h"
#include "engine-int.h"
#include "fetch.h"
#include "log.h"
#include "pool.h"
#include "residency.h"
#include "slab.h"
#include "topo.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t engine_now_ns(void)
{
	return mono_ns();
}

/* Decimal bounds, so that alerting rules can name a bucket (le="10"). */
const double engine_evict_age_le[ENGINE_EVICT_AGE_BUCKETS] = { 1, 10, 60, 600, 3600 };

static unsigned lat_slot(uint64_t ns)
{
	unsigned s = ns < 2 ? 0 : 63u - (unsigned)__builtin_clzll(ns);

	return s < ENGINE_LAT_SLOTS ? s : ENGINE_LAT_SLOTS - 1;
}

int engine_add_model(struct engine *e, const char *name, struct catalog *cat, bool owned,
		     uint64_t quota, char *err, size_t errlen)
{
	struct engine_model *m;
	int *fmap = NULL;
	int r;

	if (!cat->slot_bytes || !cat->nexperts) {
		snprintf(err, errlen, "model %s: no experts (or slot layout not done)", name);
		return -EINVAL;
	}
	/* Every pool must hold any expert: a client's node picks the pool. */
	for (unsigned p = 0; p < e->npools; p++) {
		if (cat->slot_bytes > pool_size(e->pools[p].pool)) {
			snprintf(err, errlen, "model %s: an expert slot needs %llu bytes, more than the "
				 "%llu-byte pool of NUMA node %d", name, (unsigned long long)cat->slot_bytes,
				 (unsigned long long)pool_size(e->pools[p].pool), pool_node(e->pools[p].pool));
			return -ENOSPC;
		}
	}
	m = realloc(e->models, (e->nmodels + 1) * sizeof(*m));
	if (!m)
		return -ENOMEM;
	e->models = m;
	m = &e->models[e->nmodels];
	memset(m, 0, sizeof(*m));
	m->cat = cat;
	m->name = strdup(name);
	fmap = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*fmap));
	m->ids = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*m->ids));
	m->names = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*m->names));
	m->targets = calloc(cat->nfiles ? cat->nfiles : 1, sizeof(*m->targets));
	if (!m->name || !fmap || !m->ids || !m->names || !m->targets) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < cat->nfiles; i++) {
		r = fetch_file_open(e->fetch, cat->files[i].path, err, errlen);
		if (r < 0)
			goto fail;
		fmap[i] = r;
	}
	m->fmap = fmap;
	r = engine_model_record(e, m);
	if (r < 0) {
		snprintf(err, errlen, "model %s: %s: %s", name, cat->dir, strerror(-r));
		goto fail;
	}
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		r = engine_check_expert(name, cat, &cat->experts[i], err, errlen);
		if (r < 0)
			goto fail;
	}
	/* Classes are added to every pool's slab in one order: one index.
	 * The quota holds in each pool. */
	for (unsigned p = 0; p < e->npools; p++) {
		r = slab_class_add(e->pools[p].slab, cat->slot_bytes, quota);
		if (r < 0) {
			snprintf(err, errlen, "model %s: slot class: %s", name, strerror(-r));
			goto fail;
		}
		if (p && r != m->cls) {
			snprintf(err, errlen, "model %s: slot class %d in pool %u, %d in pool 0", name, r, p,
				 m->cls);
			r = -EPROTO;
			goto fail;
		}
		m->cls = r;
	}
	m->class_bytes = cat->slot_bytes;
	m->owned = owned;
	log_info("engine: model %s: %u experts in %u layers, %llu-byte slots, quota %llu",
		 name, cat->nexperts, cat->nlayers, (unsigned long long)cat->slot_bytes,
		 (unsigned long long)quota);
	r = engine_model_size_mismatch(m, cat);
	e->nmodels++;
	/* Without a shape the predictor ignores the model: served, not predicted. */
	if (engine_predict_model(e, e->nmodels - 1) < 0)
		log_warn("engine: model %s: no memory for its predictor", name);
	/* A file written while the catalog was read: what was read of it may
	 * be neither version. */
	if (r >= 0)
		engine_model_go_stale(e, e->nmodels - 1, cat->files[r].path, "changed size while its header was read");
	return (int)e->nmodels - 1;
fail:
	/* Files opened stay registered until the engine goes: harmless. */
	for (uint32_t i = 0; i < cat->nfiles && m->names && m->targets; i++) {
		free(m->names[i]);
		free(m->targets[i]);
	}
	free(m->name);
	free(m->ids);
	free(m->names);
	free(m->targets);
	free(fmap);
	return r;
}

int engine_create(struct engine **out, const struct tierd_conf *conf, char *err, size_t errlen)
{
	return engine_create_topo(out, conf, NULL, err, errlen);
}

/* Every pool as fixed buffers of one table: reads into any pool use them. */
static int register_pools(struct engine *e)
{
	struct iovec *all = NULL;
	unsigned n = 0;
	int r;

	for (unsigned p = 0; p < e->npools; p++) {
		unsigned niov;
		const struct iovec *iov = pool_iovecs(e->pools[p].pool, &niov);
		struct iovec *grown = realloc(all, (n + niov) * sizeof(*all));

		if (!grown) {
			free(all);
			return -ENOMEM;
		}
		all = grown;
		memcpy(all + n, iov, niov * sizeof(*iov));
		n += niov;
	}
	r = fetch_register_buffers(e->fetch, all, n);
	free(all);
	return r;
}

static int pools_create(struct engine *e, const struct tierd_conf *conf, const struct topo *given,
			char *err, size_t errlen)
{
	const struct topo *t = &e->topo;
	struct pool_plan plan;
	int r;

	if (given)
		e->topo = *given;
	else {
		r = topo_read(&e->topo, NULL, err, errlen);
		if (r < 0)
			return r;
	}
	r = pool_plan(&plan, conf, t, err, errlen);
	if (r < 0)
		goto out;
	for (unsigned i = 0; i < plan.n; i++) {
		struct pool_opts po = {
			.size = plan.size[i], .numa_node = plan.node[i],
			.hugepages = conf->hugepages, .lock = conf->pool_lock,
			.unbound = t->synthetic,
		};
		struct engine_pool *ep = &e->pools[i];

		r = pool_create(&ep->pool, &po, err, errlen);
		if (r < 0)
			goto out;
		e->npools++;
		r = slab_create(&ep->slab, pool_size(ep->pool));
		if (r < 0) {
			snprintf(err, errlen, "engine: slot allocator of the pool on NUMA node %d: %s",
				 pool_node(ep->pool), strerror(-r));
			goto out;
		}
	}
out:
	return r;
}

int engine_create_topo(struct engine **out, const struct tierd_conf *conf, const struct topo *topo,
		       char *err, size_t errlen)
{
	struct fetch_opts fo = { .queue_depth = conf->queue_depth, .request_size = conf->request_size };
	struct engine *e;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	LIST_INIT(&e->detached);
	r = pools_create(e, conf, topo, err, errlen);
	if (r < 0)
		goto fail;
	r = fetch_create(&e->fetch, &fo, err, errlen);
	if (r < 0)
		goto fail;
	r = register_pools(e);
	if (r < 0) {
		/* Still correct without: reads then pin pages each time (slower). */
		log_warn("engine: registering the pool with io_uring failed (%s)%s; reading without "
			 "registered buffers", strerror(-r),
			 r == -ENOMEM ? ": registered buffers count against RLIMIT_MEMLOCK" : "");
	}
	e->max_evict_prefetch = conf->max_evict_per_alloc;
	e->ahead_on = conf->prefetch;
	e->ahead_conf = (struct prefetch_conf){
		.depth = conf->prefetch_depth, .min_prob = conf->prefetch_min_prob,
		.max_slots = conf->prefetch_max_slots, .max_bytes = conf->prefetch_max_bytes,
	};
	r = cache_create(&e->cache, conf->policy);
	if (r < 0) {
		snprintf(err, errlen, "engine: [cache] policy \"%s\": unknown", conf->policy ? conf->policy : "");
		goto fail;
	}
	for (size_t i = 0; i < conf->nmodels; i++) {
		const struct conf_model *cm = &conf->models[i];
		struct catalog *cat = NULL;

		r = catalog_open(&cat, cm->path, cm->preset, conf, err, errlen);
		if (r < 0)
			goto fail;
		r = catalog_layout_slots(cat, FETCH_ALIGN);
		if (r < 0) {
			snprintf(err, errlen, "model %s: slot layout: %s", cm->name, strerror(-r));
			catalog_free(cat);
			goto fail;
		}
		r = engine_add_model(e, cm->name, cat, true, cm->quota_bytes, err, errlen);
		if (r < 0) {
			catalog_free(cat);
			goto fail;
		}
	}
	*out = e;
	return 0;
fail:
	engine_destroy(e);
	return r;
}

static void free_inflight(struct cache_entry *ce, void *arg)
{
	struct engine_inflight *fl = ce->owner;

	if (fl) {
		free(fl->w);
		free(fl);
		ce->owner = NULL;
	}
}

static void model_free(struct engine_model *m)
{
	for (uint32_t f = 0; f < m->cat->nfiles; f++) {
		free(m->names[f]);
		free(m->targets[f]);
	}
	free(m->names);
	free(m->targets);
	free(m->ids);
	if (m->owned)
		catalog_free(m->cat);
	for (unsigned r = 0; r < m->nretired; r++)
		catalog_free(m->retired[r]);
	free(m->retired);
	free(m->reason);
	free(m->fmap);
	free(m->name);
}

void engine_destroy(struct engine *e)
{
	struct engine_inflight *fl;

	if (!e)
		return;
	ckwatch_destroy(e->watch);
	/* Reads still in flight write into the pool: wait for them first. */
	fetch_destroy(e->fetch);
	while ((fl = LIST_FIRST(&e->detached))) {
		LIST_REMOVE(fl, link);
		free(fl->w);
		free(fl);
	}
	if (e->cache) {
		cache_foreach(e->cache, free_inflight, NULL);
		cache_destroy(e->cache);
	}
	for (unsigned i = 0; i < e->nmodels; i++)
		model_free(&e->models[i]);
	free(e->models);
	free(e->zombies);
	engine_ahead_free(e);
	residency_destroy(e->res);
	for (unsigned p = 0; p < e->npools; p++) {
		slab_destroy(e->pools[p].slab);
		pool_destroy(e->pools[p].pool);
	}
	free(e);
}

int engine_fd(const struct engine *e)
{
	return fetch_fd(e->fetch);
}

int engine_process(struct engine *e)
{
	int r = fetch_process(e->fetch);

	return r < 0 ? r : 0;
}

int engine_drain(struct engine *e)
{
	while (fetch_pending(e->fetch)) {
		int r = fetch_wait(e->fetch);

		if (r < 0)
			return r;
	}
	return 0;
}

int engine_model_count(const struct engine *e)
{
	return (int)e->nmodels;
}

int engine_model_index(const struct engine *e, const char *name)
{
	for (unsigned i = 0; i < e->nmodels; i++)
		if (!strcmp(e->models[i].name, name))
			return (int)i;
	return -ENOENT;
}

const struct catalog *engine_model_catalog(const struct engine *e, uint32_t model)
{
	const struct engine_model *m = engine_model_get(e, model);

	return m ? m->cat : NULL;
}

const char *engine_model_name(const struct engine *e, uint32_t model)
{
	const struct engine_model *m = engine_model_get(e, model);

	return m ? m->name : NULL;
}


static void fetch_done(void *arg, int err, uint64_t bytes)
{
	struct engine_inflight *fl = arg;
	struct engine *e = fl->e;
	struct cache_entry *ce = fl->ce;
	struct engine_model *m = &e->models[fl->key.model];
	struct tierd_key key = { fl->key.model, fl->key.layer, fl->key.expert };
	int xi = engine_expert_index(m->cat, key.layer, key.expert);
	const char *changed = NULL;
	struct engine_slot_info info;
	uint64_t ns = mono_ns() - fl->start_ns;
	uint32_t cfile = 0;

	e->st.bytes_read += bytes;
	if (ce)
		ce->owner = NULL;
	else
		LIST_REMOVE(fl, link);	/* on e->detached */
	/* Read before or across a change of the checkpoint: never served. */
	if (!err && (!ce || m->stale || xi < 0))
		err = -ESTALE;
	if (!err) {
		changed = engine_expert_files_changed(e, m, &m->cat->experts[xi], &cfile);
		if (changed)
			err = -ESTALE;
	}
	if (!err) {
		e->st.fetch_ns_hist[lat_slot(ns)]++;
		e->st.fetch_ns_sum += ns;
	}
	/* Before the waiters: the bytes are accounted when they hear. */
	if (e->observer)
		e->observer(e->observer_arg, &key, fl->owner, err, bytes);
	if (err) {
		/* Nothing partly read is ever resident: the slot goes back. */
		if (err == -ESTALE) {
			log_debug("engine: model %s layer %u expert %u: read across a change of its "
				  "checkpoint: not served", m->name, key.layer, key.expert);
		} else {
			e->st.fetch_errors++;
			log_err("engine: model %s layer %u expert %u: fetch failed: %s", m->name, key.layer,
				key.expert, strerror(-err));
		}
		slab_free(engine_slab(e, fl->pool), m->cls, fl->slot);
		if (ce)
			cache_remove(e->cache, ce);
	} else {
		cache_set_resident(e->cache, ce);
		ce->resident_ns = mono_ns();
		engine_account(e, fl->pool, m->cat->experts[xi].bytes, 1);
		engine_fast_publish(e, ce);
		engine_slot_info(e, ce, &info);
	}
	if (changed)
		engine_model_go_stale(e, key.model, m->cat->files[cfile].path, changed);
	/* The entry is settled before anyone hears: callbacks may re-enter. */
	for (unsigned i = 0; i < fl->nw; i++)
		fl->w[i].fn(fl->w[i].arg, err, err ? NULL : &info);
	free(fl->w);
	free(fl);
}

static int waiter_add(struct engine_inflight *fl, engine_done_fn fn, void *arg)
{
	if (fl->nw == fl->capw) {
		unsigned cap = fl->capw ? fl->capw * 2 : 2;
		struct engine_waiter *w = realloc(fl->w, cap * sizeof(*w));

		if (!w)
			return -ENOMEM;
		fl->w = w;
		fl->capw = cap;
	}
	fl->w[fl->nw++] = (struct engine_waiter){ fn, arg };
	return 0;
}

/* Starts fetching an expert that is not in the cache. */
static int start_fetch(struct engine *e, const struct tierd_key *key, int xi, enum engine_prio prio,
		       unsigned max_evict, uint32_t owner, uint32_t pool, struct cache_entry **out)
{
	const struct engine_model *m = &e->models[key->model];
	const struct catalog_expert *x = &m->cat->experts[xi];
	struct tierd_key ck = *key;
	struct engine_inflight *fl;
	struct cache_entry *ce = NULL;
	uint8_t *slot;
	uint64_t off;
	int r;

	r = engine_slot_get(e, key->model, pool, max_evict, &off);
	/* The asker's pool is full of pinned experts: free room on another
	 * node serves it, remotely, rather than a refusal; nothing there is
	 * evicted for it. */
	for (uint32_t p = 0; r == -ENOSPC && p < e->npools; p++) {
		if (p == pool)
			continue;
		r = engine_slot_get(e, key->model, p, 0, &off);
		if (!r)
			pool = p;
	}
	if (r < 0)
		return r;
	fl = calloc(1, sizeof(*fl));
	if (!fl) {
		r = -ENOMEM;
		goto fail;
	}
	r = cache_add(e->cache, &ck, off, &ce);
	if (r < 0)
		goto fail;
	ce->pool = pool;
	r = fetch_job_create(e->fetch, prio == ENGINE_DEMAND ? FETCH_DEMAND : FETCH_PREFETCH,
			     fetch_done, fl, &fl->job);
	if (r < 0)
		goto fail;
	slot = pool_base(e->pools[pool].pool) + off;
	for (uint32_t i = 0; i < x->nextents; i++) {
		const struct catalog_extent *ext = &x->extents[i];

		r = fetch_job_add(fl->job, (unsigned)m->fmap[ext->file], ext->offset, ext->length,
				  slot + ext->slot_offset);
		if (r < 0)
			goto fail;
	}
	fl->e = e;
	fl->ce = ce;
	fl->key = ck;
	fl->slot = off;
	fl->pool = pool;
	fl->owner = owner;
	fl->start_ns = mono_ns();
	ce->owner = fl;
	if (prio == ENGINE_PREFETCH) {
		ce->flags |= CACHE_F_PREFETCHED;
		e->models[key->model].pl.prefetch_issued++;
	}
	/* Queued: a submission the kernel refuses is retried or fails the
	 * job through its callback, from engine_process (fetch.c). */
	fetch_job_submit(fl->job);
	e->st.fetches++;
	e->pools[pool].st.fetches++;
	*out = ce;
	return 0;
fail:
	if (fl) {
		fetch_job_free(fl->job);
		free(fl);
	}
	if (ce)
		cache_remove(e->cache, ce);
	slab_free(engine_slab(e, pool), m->cls, off);
	return r;
}

/* The pool of the node of whoever asks (engine_set_owner_pool). */
static uint32_t owner_pool(const struct engine *e, uint32_t owner)
{
	int p;

	if (e->npools < 2 || !e->owner_pool || owner == ENGINE_OWNER_NONE)
		return 0;
	p = e->owner_pool(e->owner_pool_arg, owner);
	return p >= 0 && (unsigned)p < e->npools ? (uint32_t)p : 0;
}

static void count_served(struct engine *e, uint32_t want, const struct cache_entry *ce)
{
	if (ce->pool == want)
		e->pools[want].st.served_local++;
	else
		e->pools[want].st.served_remote++;
}

static int lookup_expert(const struct engine *e, const struct tierd_key *key)
{
	const struct engine_model *m = engine_model_get(e, key->model);

	return m ? engine_expert_index(m->cat, key->layer, key->expert) : -ENOENT;
}

int engine_acquire(struct engine *e, const struct tierd_key *key, enum engine_prio prio,
		   engine_done_fn fn, void *arg)
{
	return engine_acquire_for(e, key, prio, ENGINE_OWNER_NONE, fn, arg);
}

int engine_acquire_for(struct engine *e, const struct tierd_key *key, enum engine_prio prio,
		       uint32_t owner, engine_done_fn fn, void *arg)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce;
	struct engine_inflight *fl;
	int xi = lookup_expert(e, key), r;
	uint32_t want;

	if (xi < 0)
		return xi;
	if (e->models[key->model].stale)
		return -ESTALE;
	want = owner_pool(e, owner);
	ce = cache_lookup(e->cache, &ck);
	if (ce && ce->state == CACHE_RESIDENT) {
		struct engine_slot_info info;

		e->st.hits++;
		count_served(e, want, ce);
		e->models[key->model].pl.hits++;
		engine_prefetch_used(e, ce);
		cache_pin(e->cache, ce);
		cache_touch(e->cache, ce);
		engine_slot_info(e, ce, &info);
		fn(arg, 0, &info);
		return 0;
	}
	/* A miss is an acquire that waits for a fetch: one refused up front
	 * (st.refused) is not. */
	if (!ce) {
		r = start_fetch(e, key, xi, prio, UINT_MAX, owner, want, &ce);
		if (r < 0) {
			e->st.refused++;
			return r;
		}
	}
	e->st.misses++;
	count_served(e, want, ce);
	e->models[key->model].pl.misses++;
	engine_prefetch_used(e, ce);
	/* Fetching already (perhaps as a prefetch): share it. */
	fl = ce->owner;
	if (fl->owner == ENGINE_OWNER_NONE && prio == ENGINE_DEMAND)
		fl->owner = owner;
	r = waiter_add(fl, fn, arg);
	if (r < 0)
		return r;
	cache_pin(e->cache, ce);
	if (prio == ENGINE_DEMAND)
		fetch_job_promote(fl->job);
	return 0;
}

int engine_prefetch(struct engine *e, const struct tierd_key *key)
{
	return engine_prefetch_for(e, key, ENGINE_OWNER_NONE);
}

int engine_prefetch_for(struct engine *e, const struct tierd_key *key, uint32_t owner)
{
	bool started;

	return engine_prefetch_started(e, key, owner, &started);
}

int engine_prefetch_started(struct engine *e, const struct tierd_key *key, uint32_t owner,
			    bool *started)
{
	return engine_prefetch_near(e, key, owner, owner, started);
}

int engine_pool_near(const struct engine *e, uint32_t near)
{
	return (int)owner_pool(e, near);
}

int engine_prefetch_near(struct engine *e, const struct tierd_key *key, uint32_t owner, uint32_t near,
			 bool *started)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce;
	int xi = lookup_expert(e, key), r;

	*started = false;
	if (xi < 0)
		return xi;
	if (e->models[key->model].stale)
		return -ESTALE;
	ce = cache_lookup(e->cache, &ck);
	if (ce) {
		/* Wanted soon: keep it away from the eviction end. */
		cache_touch(e->cache, ce);
		return 0;
	}
	r = start_fetch(e, key, xi, ENGINE_PREFETCH, e->max_evict_prefetch, owner, owner_pool(e, near), &ce);
	*started = r == 0;
	return r;
}

void engine_set_fetch_observer(struct engine *e, engine_fetch_fn fn, void *arg)
{
	e->observer = fn;
	e->observer_arg = arg;
}

int engine_cancel_prefetch(struct engine *e, const struct tierd_key *key)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce = cache_lookup(e->cache, &ck);
	struct engine_inflight *fl;
	int r;

	if (!ce)
		return -ENOENT;
	if (ce->state == CACHE_RESIDENT)
		return -EALREADY;
	fl = ce->owner;
	/* Someone waits for it, or the reads are out: too late. */
	if (fl->nw)
		return -EBUSY;
	r = fetch_job_cancel(fl->job);
	if (r < 0)
		return r;
	slab_free(engine_slab(e, ce->pool), e->models[key->model].cls, ce->slot);
	cache_remove(e->cache, ce);
	free(fl->w);
	free(fl);
	e->st.cancelled++;
	return 0;
}

static bool same_key(const struct tierd_key *a, const struct tierd_key *b)
{
	return a->model == b->model && a->layer == b->layer && a->expert == b->expert;
}

/* Frees the old slots of a key once no pin is left on it anywhere. */
static void zombies_settle(struct engine *e, const struct tierd_key *k, const struct cache_entry *ce)
{
	uint64_t pins = ce ? ce->pins : 0;
	size_t i = 0, j = 0;

	for (i = 0; i < e->nzombies; i++)
		if (same_key(&e->zombies[i].key, k))
			pins += e->zombies[i].pins;
	if (pins || engine_fast_key_pinned(e, k))
		return;
	for (i = 0; i < e->nzombies; i++) {
		struct engine_zombie *z = &e->zombies[i];

		if (same_key(&z->key, k)) {
			slab_free(engine_slab(e, z->pool), z->cls, z->slot);
			engine_account(e, z->pool, z->bytes, -1);
			continue;
		}
		e->zombies[j++] = *z;
	}
	e->nzombies = j;
}

int engine_release(struct engine *e, const struct tierd_key *key)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce = cache_lookup(e->cache, &ck);
	int r;

	/* Pins on old slots first (see struct engine_zombie). */
	for (size_t i = 0; i < e->nzombies; i++) {
		struct engine_zombie *z = &e->zombies[i];

		if (z->pins && same_key(&z->key, &ck)) {
			z->pins--;
			zombies_settle(e, &ck, ce);
			return 0;
		}
	}
	if (!ce)
		return -ENOENT;
	if (ce->state != CACHE_RESIDENT)
		return -EBUSY;
	r = cache_unpin(e->cache, ce);
	if (!r && e->nzombies)
		zombies_settle(e, &ck, ce);
	return r;
}

int engine_evict_check(const struct engine *e, const struct tierd_key *key)
{
	struct tierd_key ck = *key;
	struct cache_entry *ce = cache_lookup(e->cache, &ck);

	if (!ce)
		return -ENOENT;
	if (ce->state != CACHE_RESIDENT || ce->pins || engine_fast_pinned(e, ce))
		return -EBUSY;
	return 0;
}

int engine_evict(struct engine *e, const struct tierd_key *key)
{
	struct tierd_key ck = *key;
	int r = engine_evict_check(e, key);

	if (!r) {
		struct cache_entry *ce = cache_lookup(e->cache, &ck);

		if (!engine_fast_claim(e, ce))
			return -EBUSY;
		engine_evict_entry(e, ce);
	}
	return r;
}

int engine_evict_batch(struct engine *e, const struct tierd_key *keys, uint32_t n, uint32_t *busy)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		int r = engine_evict_check(e, &keys[i]);

		if (r) {
			*busy = i;
			return r;
		}
	}
	/* Claimed all first: a client that pins one through the residency
	 * table meanwhile leaves the whole batch as it was. */
	for (i = 0; i < n; i++) {
		struct tierd_key ck = keys[i];

		if (!engine_fast_claim(e, cache_lookup(e->cache, &ck)))
			break;
	}
	if (i < n) {
		*busy = i;
		while (i--) {
			struct tierd_key ck = keys[i];

			engine_fast_publish(e, cache_lookup(e->cache, &ck));
		}
		return -EBUSY;
	}
	for (i = 0; i < n; i++) {
		struct tierd_key ck = keys[i];

		engine_evict_entry(e, cache_lookup(e->cache, &ck));
	}
	return 0;
}

int engine_pool_count(const struct engine *e)
{
	return (int)e->npools;
}

int engine_pool_fd(const struct engine *e, uint32_t pool)
{
	return pool < e->npools ? pool_fd_ro(e->pools[pool].pool) : -ENOENT;
}

uint64_t engine_pool_size(const struct engine *e, uint32_t pool)
{
	return pool < e->npools ? pool_size(e->pools[pool].pool) : 0;
}

bool engine_pool_hugetlb(const struct engine *e, uint32_t pool)
{
	return pool < e->npools && pool_hugetlb(e->pools[pool].pool);
}

const void *engine_pool_base(const struct engine *e, uint32_t pool)
{
	return pool < e->npools ? pool_base(e->pools[pool].pool) : NULL;
}

int engine_pool_node(const struct engine *e, uint32_t pool)
{
	return pool < e->npools ? pool_node(e->pools[pool].pool) : -ENOENT;
}

int engine_pool_of_node(const struct engine *e, int node)
{
	for (unsigned p = 0; p < e->npools; p++)
		if (pool_node(e->pools[p].pool) == node)
			return (int)p;
	return -ENOENT;
}

const struct topo *engine_topology(const struct engine *e)
{
	return &e->topo;
}

void engine_set_owner_pool(struct engine *e, engine_owner_pool_fn fn, void *arg)
{
	e->owner_pool = fn;
	e->owner_pool_arg = arg;
}

int engine_get_pool_stats(const struct engine *e, uint32_t pool, struct engine_pool_stats *st)
{
	if (pool >= e->npools)
		return -ENOENT;
	*st = e->pools[pool].st;
	return 0;
}

void engine_get_stats(const struct engine *e, struct engine_stats *st)
{
	struct fetch_stats fs;

	*st = e->st;
	st->pins = cache_pins(e->cache);
	for (size_t i = 0; i < e->nzombies; i++)
		st->pins += e->zombies[i].pins;
	fetch_get_stats(e->fetch, &fs);
	st->submit_errors = fs.submit_errors;
}

int engine_fetch_stats(const struct engine *e, struct fetch_stats *st)
{
	fetch_get_stats(e->fetch, st);
	return 0;
}

int engine_file_fd(const struct engine *e, uint32_t model, uint32_t file)
{
	const struct engine_model *m = engine_model_get(e, model);

	if (!m || file >= m->cat->nfiles)
		return -ENOENT;
	return fetch_file_fd(e->fetch, (unsigned)m->fmap[file]);
}
