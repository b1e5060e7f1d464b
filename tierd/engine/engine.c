/* SPDX-License-Identifier: MIT */
/*
 * The engine: a pool, its slot allocator, the fetch ring and the residency
 * cache, and the models of the configuration.  See engine.h.
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
#include "engine.h"
#include "fetch.h"
#include "log.h"
#include "pool.h"
#include "slab.h"

/* What a file was when the model opened it; present false: it did not exist. */
struct engine_file_id {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

/* The side files a catalog is built from besides its shards. */
static const char *const side_names[] = { CATALOG_INDEX_NAME, CATALOG_CONFIG_NAME };
#define NSIDE	(sizeof(side_names) / sizeof(side_names[0]))

/* What one expert reads: aligned file ranges and where they land in its slot. */
struct engine_model {
	char *name;
	struct catalog *cat;
	bool owned;
	int cls;			/* slab class */
	uint64_t class_bytes;		/* its slot size: a reload must fit it */
	int *fmap;			/* catalog file index -> fetch file index */
	/* Identity of the files as opened, and the names under which the
	 * directory watch reports them (the shard, and the file a symlink
	 * points to, in the same directory). */
	struct engine_file_id *ids;
	char **names, **targets;
	struct engine_file_id side[NSIDE];
	bool stale;
	char *reason;			/* while stale */
	uint64_t changes, reloads;
	/* Catalogs replaced by reloads: the service may still hold pointers
	 * into them (acquires being answered, warms), so they live as long as
	 * the engine. */
	struct catalog **retired;
	unsigned nretired;
};

struct engine_waiter {
	engine_done_fn fn;
	void *arg;
};

/* An expert being fetched: who waits for it.  ce is NULL once the model went
 * stale: the entry is gone, the slot waits for the reads to end. */
struct engine_inflight {
	struct engine *e;
	struct cache_entry *ce;
	struct tierd_key key;
	uint64_t slot;
	struct fetch_job *job;
	struct engine_waiter *w;
	unsigned nw, capw;
	uint32_t owner;
	uint64_t start_ns;
	struct engine_inflight *next;	/* on engine.detached, or cancelled until told */
};

/*
 * A slot that held an expert pinned when its model went stale: out of the
 * cache, so never handed out again, but kept for the holders of the pins.
 * Pins are counted per key, not per holder, so a release of a key takes a pin
 * of its oldest slot first and the slots of a key are freed together once no
 * pin at all is left on it (cached entry included): a holder's slot is
 * never freed under it, at the price of keeping old slots longer.
 */
struct engine_zombie {
	struct tierd_key key;
	uint64_t slot;
	uint64_t bytes;
	uint32_t pins;
	int cls;
};

struct engine {
	struct pool *pool;
	struct slab *slab;
	struct fetch *fetch;
	struct cache *cache;
	struct engine_model *models;
	unsigned nmodels;
	struct engine_stats st;
	unsigned max_evict_prefetch;	/* [pool] max_evict_per_alloc */
	engine_fetch_fn observer;
	void *observer_arg;
	struct engine_zombie *zombies;	/* oldest first */
	size_t nzombies, capzombies;
	struct engine_inflight *detached;	/* fetches of stale models, still reading */
	struct ckwatch *watch;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Decimal bounds, so that alerting rules can name a bucket (le="10"). */
const double engine_evict_age_le[ENGINE_EVICT_AGE_BUCKETS] = { 1, 10, 60, 600, 3600 };

static unsigned lat_slot(uint64_t ns)
{
	unsigned s = ns < 2 ? 0 : 63u - (unsigned)__builtin_clzll(ns);

	return s < ENGINE_LAT_SLOTS ? s : ENGINE_LAT_SLOTS - 1;
}

static const struct engine_model *model_get(const struct engine *e, uint32_t model)
{
	return model < e->nmodels ? &e->models[model] : NULL;
}

/*
 * The catalog lays out each expert's reads (aligned extents, merged, in slot
 * order).  Checked once more here because a bad layout must be refused, never
 * served: every read inside the slot, aligned, and no two overlapping.
 */
static int check_expert(const char *name, const struct catalog *cat, const struct catalog_expert *x,
			char *err, size_t errlen)
{
	uint64_t slot = cat->slot_bytes;

	for (uint32_t i = 0; i < x->nextents; i++) {
		const struct catalog_extent *u = &x->extents[i];

		if (u->file >= cat->nfiles || u->offset % FETCH_ALIGN || u->length % FETCH_ALIGN ||
		    u->slot_offset % FETCH_ALIGN || u->slot_offset > slot || u->length > slot - u->slot_offset) {
			snprintf(err, errlen, "model %s: layer %u expert %u: read %u does not fit a %llu-byte "
				 "slot with 4 KiB aligned reads", name, x->layer, x->expert, i,
				 (unsigned long long)slot);
			return -EINVAL;
		}
		for (uint32_t k = i + 1; k < x->nextents; k++) {
			const struct catalog_extent *v = &x->extents[k];

			if (u->slot_offset < v->slot_offset + v->length &&
			    v->slot_offset < u->slot_offset + u->length) {
				snprintf(err, errlen, "model %s: layer %u expert %u: reads overlap in the slot",
					 name, x->layer, x->expert);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* ---- checkpoint identity ---- */

static void model_go_stale(struct engine *e, uint32_t mi, const char *file, const char *what);

static void id_from_stat(struct engine_file_id *id, const struct stat *sb)
{
	*id = (struct engine_file_id){ .present = true, .dev = sb->st_dev, .ino = sb->st_ino,
				       .size = sb->st_size, .mtime = sb->st_mtim, .ctime = sb->st_ctim };
}

static bool ts_equal(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* How a file differs from what it was, in words; NULL when it does not.
 * ctime counts: a write followed by a reset of mtime (rsync -t, wget -N)
 * still moves it. */
static const char *id_diff(const struct engine_file_id *was, const struct engine_file_id *now)
{
	if (was->present != now->present)
		return now->present ? "was created" : "was deleted";
	if (!now->present)
		return NULL;
	if (was->dev != now->dev || was->ino != now->ino)
		return "was replaced";
	if (was->size != now->size)
		return "changed size";
	if (!ts_equal(was->mtime, now->mtime))
		return "was modified";
	if (!ts_equal(was->ctime, now->ctime))
		return "changed (ctime: written, truncated, chmod or touch)";
	return NULL;
}

/* A missing file has an identity too: absent. */
static int id_of_path(const char *path, struct engine_file_id *id)
{
	struct stat sb;

	if (stat(path, &sb)) {
		/* Visibly never 0 (the analyzer cannot know errno is set). */
		if (errno != ENOENT)
			return errno ? -errno : -EIO;
		memset(id, 0, sizeof(*id));
		return 0;
	}
	id_from_stat(id, &sb);
	return 0;
}

static void side_path(const struct engine_model *m, unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", m->cat->dir, side_names[i]);
}

/*
 * Whether catalog file i still is what the model opened: the open
 * descriptor (rewritten in place, unlinked) and the path (replaced by a
 * rename, a symlink moved).  An error counts as a change: never serve what
 * cannot be checked.
 */
static const char *file_changed(const struct engine *e, const struct engine_model *m, uint32_t i)
{
	struct engine_file_id now;
	struct stat sb;
	const char *what;

	if (fstat(fetch_file_fd(e->fetch, (unsigned)m->fmap[i]), &sb))
		return "cannot be checked (fstat failed)";
	if (sb.st_nlink == 0)
		return "was deleted or replaced";
	id_from_stat(&now, &sb);
	what = id_diff(&m->ids[i], &now);
	if (what)
		return what;
	if (id_of_path(m->cat->files[i].path, &now) < 0)
		return "cannot be checked (stat failed)";
	return id_diff(&m->ids[i], &now);
}

/* Records the identity of the model's open files and side files, and the
 * names the directory watch reports them by. */
static int model_record(struct engine *e, struct engine_model *m)
{
	for (uint32_t i = 0; i < m->cat->nfiles; i++) {
		const char *path = m->cat->files[i].path, *base = strrchr(path, '/');
		char *real = realpath(path, NULL);
		const char *rbase = real ? strrchr(real, '/') : NULL;
		struct stat sb;

		if (fstat(fetch_file_fd(e->fetch, (unsigned)m->fmap[i]), &sb)) {
			int r = errno ? -errno : -EIO;

			free(real);
			return r;
		}
		id_from_stat(&m->ids[i], &sb);
		base = base ? base + 1 : path;
		rbase = rbase ? rbase + 1 : NULL;
		free(m->names[i]);
		free(m->targets[i]);
		m->names[i] = strdup(base);
		m->targets[i] = rbase && strcmp(rbase, base) ? strdup(rbase) : NULL;
		free(real);
		if (!m->names[i])
			return -ENOMEM;
	}
	for (unsigned i = 0; i < NSIDE; i++) {
		char path[PATH_MAX];
		int r;

		side_path(m, i, path, sizeof(path));
		r = id_of_path(path, &m->side[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The first file whose identity moved since the catalog was read (its size
 * then is in the catalog), or -1. */
static int model_size_mismatch(const struct engine_model *m, const struct catalog *cat)
{
	for (uint32_t i = 0; i < cat->nfiles; i++)
		if ((uint64_t)m->ids[i].size != cat->files[i].size)
			return (int)i;
	return -1;
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
	if (cat->slot_bytes > pool_size(e->pool)) {
		snprintf(err, errlen, "model %s: an expert slot needs %llu bytes, more than the %llu-byte pool",
			 name, (unsigned long long)cat->slot_bytes, (unsigned long long)pool_size(e->pool));
		return -ENOSPC;
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
	r = model_record(e, m);
	if (r < 0) {
		snprintf(err, errlen, "model %s: %s: %s", name, cat->dir, strerror(-r));
		goto fail;
	}
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		r = check_expert(name, cat, &cat->experts[i], err, errlen);
		if (r < 0)
			goto fail;
	}
	r = slab_class_add(e->slab, cat->slot_bytes, quota);
	if (r < 0) {
		snprintf(err, errlen, "model %s: slot class: %s", name, strerror(-r));
		goto fail;
	}
	m->cls = r;
	m->class_bytes = cat->slot_bytes;
	m->owned = owned;
	log_info("engine: model %s: %u experts in %u layers, %llu-byte slots, quota %llu",
		 name, cat->nexperts, cat->nlayers, (unsigned long long)cat->slot_bytes,
		 (unsigned long long)quota);
	r = model_size_mismatch(m, cat);
	e->nmodels++;
	/* A file written while the catalog was read: what was read of it may
	 * be neither version. */
	if (r >= 0)
		model_go_stale(e, e->nmodels - 1, cat->files[r].path, "changed size while its header was read");
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
	struct pool_opts po = {
		.size = conf->pool_size, .numa_node = conf->numa_node,
		.hugepages = conf->hugepages, .lock = conf->pool_lock,
	};
	struct fetch_opts fo = { .queue_depth = conf->queue_depth, .request_size = conf->request_size };
	const struct iovec *iov;
	struct engine *e;
	unsigned niov;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = pool_create(&e->pool, &po, err, errlen);
	if (r < 0)
		goto fail;
	r = slab_create(&e->slab, pool_size(e->pool));
	if (r < 0) {
		snprintf(err, errlen, "engine: slot allocator: %s", strerror(-r));
		goto fail;
	}
	r = fetch_create(&e->fetch, &fo, err, errlen);
	if (r < 0)
		goto fail;
	iov = pool_iovecs(e->pool, &niov);
	r = fetch_register_buffers(e->fetch, iov, niov);
	if (r < 0) {
		/* Still correct without: reads then pin pages each time (slower). */
		log_warn("engine: registering the pool with io_uring failed (%s)%s; reading without "
			 "registered buffers", strerror(-r),
			 r == -ENOMEM ? ": registered buffers count against RLIMIT_MEMLOCK" : "");
	}
	e->max_evict_prefetch = conf->max_evict_per_alloc;
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
	if (!e)
		return;
	ckwatch_destroy(e->watch);
	/* Reads still in flight write into the pool: wait for them first. */
	fetch_destroy(e->fetch);
	while (e->detached) {
		struct engine_inflight *fl = e->detached;

		e->detached = fl->next;
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
	slab_destroy(e->slab);
	pool_destroy(e->pool);
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
	const struct engine_model *m = model_get(e, model);

	return m ? m->cat : NULL;
}

const char *engine_model_name(const struct engine *e, uint32_t model)
{
	const struct engine_model *m = model_get(e, model);

	return m ? m->name : NULL;
}

/* The catalog's experts are sorted by (layer, expert). */
static int expert_index(const struct catalog *cat, uint32_t layer, uint32_t expert)
{
	uint32_t lo = 0, hi = cat->nexperts;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct catalog_expert *x = &cat->experts[mid];

		if (x->layer == layer && x->expert == expert)
			return (int)mid;
		if (x->layer < layer || (x->layer == layer && x->expert < expert))
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

static void evict(struct engine *e, struct cache_entry *ce)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = expert_index(m->cat, ce->key.layer, ce->key.expert);
	uint64_t age = mono_ns() - ce->resident_ns;
	unsigned b = 0;

	while (b < ENGINE_EVICT_AGE_BUCKETS && (double)age > engine_evict_age_le[b] * 1e9)
		b++;
	e->st.evict_age_hist[b]++;
	e->st.evict_age_ns_sum += age;
	slab_free(e->slab, m->cls, ce->slot);
	if (xi >= 0)
		e->st.bytes_resident -= m->cat->experts[xi].bytes;
	cache_remove(e->cache, ce);
	e->st.evictions++;
}

static bool same_model(const struct cache_entry *ce, void *arg)
{
	return ce->key.model == *(const uint32_t *)arg;
}

/*
 * Another model's span: its slots can only serve this model once the whole
 * span is free, so it is emptied whole or not touched.  Spans found holding a
 * pinned or fetching slot are remembered for the rest of the search.
 */
#define ENGINE_MAX_BLOCKED	64

struct span_search {
	struct engine *e;
	uint32_t model;			/* the model that needs a slot */
	uint64_t blocked[ENGINE_MAX_BLOCKED];	/* span starts */
	unsigned nblocked;
	/* The span being counted. */
	uint32_t span_model;
	uint64_t start, end;
	uint32_t evictable;
};

static bool other_unblocked(const struct cache_entry *ce, void *arg)
{
	const struct span_search *ss = arg;
	uint64_t start, end;
	uint32_t used;

	if (ce->key.model == ss->model)
		return false;
	if (slab_span_of(ss->e->slab, ce->slot, &start, &end, &used))
		return false;
	for (unsigned i = 0; i < ss->nblocked; i++)
		if (ss->blocked[i] == start)
			return false;
	return true;
}

static void count_evictable(struct cache_entry *ce, void *arg)
{
	struct span_search *ss = arg;

	if (ce->key.model == ss->span_model && ce->slot >= ss->start && ce->slot < ss->end &&
	    ce->state == CACHE_RESIDENT && !ce->pins)
		ss->evictable++;
}

struct span_evict {
	struct engine *e;
	uint32_t model;
	uint64_t start, end;
	struct cache_entry *v[64];
	unsigned n;
};

static void collect_span(struct cache_entry *ce, void *arg)
{
	struct span_evict *se = arg;

	if (se->n < 64 && ce->key.model == se->model && ce->slot >= se->start && ce->slot < se->end &&
	    ce->state == CACHE_RESIDENT && !ce->pins)
		se->v[se->n++] = ce;
}

/*
 * Frees the least valuable span of another model whose every slot is
 * evictable.  Returns the experts evicted, 0 when no span can be freed.
 */
static unsigned evict_other_span(struct engine *e, uint32_t model, unsigned max_evict)
{
	struct span_search ss = { .e = e, .model = model };
	struct cache_entry *v;

	while (!cache_victim(e->cache, other_unblocked, &ss, &v)) {
		uint32_t used;
		unsigned n = 0;

		if (slab_span_of(e->slab, v->slot, &ss.start, &ss.end, &used))
			return 0;
		ss.span_model = v->key.model;
		ss.evictable = 0;
		cache_foreach(e->cache, count_evictable, &ss);
		if (ss.evictable == used && used <= max_evict) {
			/* Collected in rounds of 64: evicting changes the walk. */
			while (n < used) {
				struct span_evict se = { e, ss.span_model, ss.start, ss.end, { 0 }, 0 };

				cache_foreach(e->cache, collect_span, &se);
				if (!se.n)
					break;
				for (unsigned i = 0; i < se.n; i++)
					evict(e, se.v[i]);
				n += se.n;
			}
			return n;
		}
		if (ss.nblocked == ENGINE_MAX_BLOCKED)
			return 0;
		ss.blocked[ss.nblocked++] = ss.start;
	}
	return 0;
}

/*
 * A slot for the model: evicts the model's own least valuable expert when it
 * is over quota or the pool is full, then anyone's when the pool is full.
 * At most max_evict experts: a client's prefetch (engine_prefetch_started)
 * may evict max_evict_prefetch, so that a guess cannot empty the pool of what
 * clients are using; an acquire (warm included) evicts what it needs.
 */
static int slot_get(struct engine *e, uint32_t model, unsigned max_evict, uint64_t *off)
{
	const struct engine_model *m = &e->models[model];
	unsigned evicted = 0;

	for (;;) {
		struct cache_entry *v;
		unsigned n;
		int r = slab_alloc(e->slab, m->cls, off);

		if (r != -ENOSPC && r != -EDQUOT)
			return r;
		if (evicted >= max_evict)
			return r;
		/* The model's own expert: its slot serves at once. */
		if (!cache_victim(e->cache, same_model, &model, &v)) {
			evict(e, v);
			evicted++;
			continue;
		}
		if (r == -EDQUOT)
			return r;
		/* Another model's: only a whole span it can give back helps, so
		 * nothing is evicted for an allocation that would fail anyway. */
		n = evict_other_span(e, model, max_evict - evicted);
		if (!n)
			return r;
		evicted += n;
	}
}

static void slot_info(const struct engine *e, const struct cache_entry *ce, struct engine_slot_info *info)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = expert_index(m->cat, ce->key.layer, ce->key.expert);

	info->pool = 0;
	info->offset = ce->slot;
	info->expert = xi >= 0 ? &m->cat->experts[xi] : NULL;
}

/*
 * Whether the files an expert was read from still are what the model opened.
 * Checked once the reads are done: a write updates mtime and ctime before it
 * changes data, so a write that reached these reads shows here, and one that
 * comes later changed nothing they returned.
 */
static const char *expert_files_changed(const struct engine *e, const struct engine_model *m,
					const struct catalog_expert *x, uint32_t *file)
{
	for (uint32_t i = 0; i < x->nextents; i++) {
		const char *what;

		if (i && x->extents[i].file == x->extents[i - 1].file)
			continue;
		what = file_changed(e, m, x->extents[i].file);
		if (what) {
			*file = x->extents[i].file;
			return what;
		}
	}
	return NULL;
}

static void detached_unlink(struct engine *e, struct engine_inflight *fl)
{
	for (struct engine_inflight **p = &e->detached; *p; p = &(*p)->next) {
		if (*p == fl) {
			*p = fl->next;
			return;
		}
	}
}

static void fetch_done(void *arg, int err, uint64_t bytes)
{
	struct engine_inflight *fl = arg;
	struct engine *e = fl->e;
	struct cache_entry *ce = fl->ce;
	struct engine_model *m = &e->models[fl->key.model];
	struct tierd_key key = { fl->key.model, fl->key.layer, fl->key.expert };
	int xi = expert_index(m->cat, key.layer, key.expert);
	const char *changed = NULL;
	struct engine_slot_info info;
	uint64_t ns = mono_ns() - fl->start_ns;
	uint32_t cfile = 0;

	e->st.bytes_read += bytes;
	if (ce)
		ce->owner = NULL;
	else
		detached_unlink(e, fl);
	/* Read before or across a change of the checkpoint: never served. */
	if (!err && (!ce || m->stale || xi < 0))
		err = -ESTALE;
	if (!err) {
		changed = expert_files_changed(e, m, &m->cat->experts[xi], &cfile);
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
		slab_free(e->slab, m->cls, fl->slot);
		if (ce)
			cache_remove(e->cache, ce);
	} else {
		cache_set_resident(e->cache, ce);
		ce->resident_ns = mono_ns();
		e->st.bytes_resident += m->cat->experts[xi].bytes;
		slot_info(e, ce, &info);
	}
	if (changed)
		model_go_stale(e, key.model, m->cat->files[cfile].path, changed);
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
		       unsigned max_evict, uint32_t owner, struct cache_entry **out)
{
	const struct engine_model *m = &e->models[key->model];
	const struct catalog_expert *x = &m->cat->experts[xi];
	struct tierd_key ck = *key;
	struct engine_inflight *fl;
	struct cache_entry *ce = NULL;
	uint8_t *slot;
	uint64_t off;
	int r;

	r = slot_get(e, key->model, max_evict, &off);
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
	r = fetch_job_create(e->fetch, prio == ENGINE_DEMAND ? FETCH_DEMAND : FETCH_PREFETCH,
			     fetch_done, fl, &fl->job);
	if (r < 0)
		goto fail;
	slot = pool_base(e->pool) + off;
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
	fl->owner = owner;
	fl->start_ns = mono_ns();
	ce->owner = fl;
	/* Queued: a submission the kernel refuses is retried or fails the
	 * job through its callback, from engine_process (fetch.c). */
	fetch_job_submit(fl->job);
	e->st.fetches++;
	*out = ce;
	return 0;
fail:
	if (fl) {
		fetch_job_free(fl->job);
		free(fl);
	}
	if (ce)
		cache_remove(e->cache, ce);
	slab_free(e->slab, m->cls, off);
	return r;
}

static int lookup_expert(const struct engine *e, const struct tierd_key *key)
{
	const struct engine_model *m = model_get(e, key->model);

	return m ? expert_index(m->cat, key->layer, key->expert) : -ENOENT;
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

	if (xi < 0)
		return xi;
	if (e->models[key->model].stale)
		return -ESTALE;
	ce = cache_lookup(e->cache, &ck);
	if (ce && ce->state == CACHE_RESIDENT) {
		struct engine_slot_info info;

		e->st.hits++;
		cache_pin(e->cache, ce);
		cache_touch(e->cache, ce);
		slot_info(e, ce, &info);
		fn(arg, 0, &info);
		return 0;
	}
	/* A miss is an acquire that waits for a fetch: one refused up front
	 * (st.refused) is not. */
	if (!ce) {
		r = start_fetch(e, key, xi, prio, UINT_MAX, owner, &ce);
		if (r < 0) {
			e->st.refused++;
			return r;
		}
	}
	e->st.misses++;
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
	r = start_fetch(e, key, xi, ENGINE_PREFETCH, e->max_evict_prefetch, owner, &ce);
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
	slab_free(e->slab, e->models[key->model].cls, ce->slot);
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
	if (pins)
		return;
	for (i = 0; i < e->nzombies; i++) {
		struct engine_zombie *z = &e->zombies[i];

		if (same_key(&z->key, k)) {
			slab_free(e->slab, z->cls, z->slot);
			e->st.bytes_resident -= z->bytes;
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
	if (ce->state != CACHE_RESIDENT || ce->pins)
		return -EBUSY;
	return 0;
}

int engine_evict(struct engine *e, const struct tierd_key *key)
{
	struct tierd_key ck = *key;
	int r = engine_evict_check(e, key);

	if (!r)
		evict(e, cache_lookup(e->cache, &ck));
	return r;
}

/* ---- checkpoint changes ---- */

struct purge {
	uint32_t model;
	struct tierd_key *keys;
	size_t n, cap;
	bool nomem;
	unsigned dropped, kept, failed;	/* experts evicted, kept for pins, fetches lost */
};

static void purge_collect(struct cache_entry *ce, void *arg)
{
	struct purge *p = arg;

	if (ce->key.model != p->model || p->nomem)
		return;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct tierd_key *k = realloc(p->keys, cap * sizeof(*k));

		if (!k) {
			p->nomem = true;
			return;
		}
		p->keys = k;
		p->cap = cap;
	}
	p->keys[p->n++] = ce->key;
}

static int zombie_add(struct engine *e, const struct cache_entry *ce)
{
	const struct engine_model *m = &e->models[ce->key.model];
	int xi = expert_index(m->cat, ce->key.layer, ce->key.expert);

	if (e->nzombies == e->capzombies) {
		size_t cap = e->capzombies ? e->capzombies * 2 : 16;
		struct engine_zombie *z = realloc(e->zombies, cap * sizeof(*z));

		if (!z)
			return -ENOMEM;
		e->zombies = z;
		e->capzombies = cap;
	}
	e->zombies[e->nzombies++] = (struct engine_zombie){
		.key = ce->key, .slot = ce->slot, .pins = ce->pins, .cls = m->cls,
		.bytes = xi >= 0 ? m->cat->experts[xi].bytes : 0,
	};
	return 0;
}

/*
 * Takes every expert of a model out of the cache: unpinned ones are evicted,
 * pinned ones become zombies, fetches not started are cancelled (on
 * *cancelled, to be told -ESTALE by the caller once this is done), fetches
 * started are detached and end in -ESTALE.  -ENOMEM leaves some in the
 * cache: acquires are refused anyway while stale, and a reload purges again.
 */
static int model_purge(struct engine *e, uint32_t mi, struct purge *p, struct engine_inflight **cancelled)
{
	const struct engine_model *m = &e->models[mi];
	bool failed = false;

	p->model = mi;
	cache_foreach(e->cache, purge_collect, p);
	for (size_t i = 0; i < p->n; i++) {
		struct cache_entry *ce = cache_lookup(e->cache, &p->keys[i]);
		struct engine_inflight *fl;

		if (!ce)
			continue;
		if (ce->state == CACHE_RESIDENT) {
			if (!ce->pins) {
				evict(e, ce);
				p->dropped++;
			} else if (zombie_add(e, ce) == 0) {
				cache_remove(e->cache, ce);
				p->kept++;
			} else {
				failed = true;
			}
			continue;
		}
		fl = ce->owner;
		p->failed++;
		if (fetch_job_cancel(fl->job) == 0) {
			slab_free(e->slab, m->cls, fl->slot);
			fl->next = *cancelled;
			*cancelled = fl;
		} else {
			/* Reading into the slot now: it goes back when the reads end. */
			fl->next = e->detached;
			e->detached = fl;
		}
		fl->ce = NULL;
		cache_remove(e->cache, ce);
	}
	free(p->keys);
	p->keys = NULL;
	return failed || p->nomem ? -ENOMEM : 0;
}

static void tell_cancelled(struct engine_inflight *fl)
{
	while (fl) {
		struct engine_inflight *next = fl->next;

		for (unsigned i = 0; i < fl->nw; i++)
			fl->w[i].fn(fl->w[i].arg, -ESTALE, NULL);
		free(fl->w);
		free(fl);
		fl = next;
	}
}

static void model_go_stale(struct engine *e, uint32_t mi, const char *file, const char *what)
{
	struct engine_model *m = &e->models[mi];
	struct engine_inflight *cancelled = NULL;
	struct purge p = { 0 };
	time_t now = time(NULL);
	char when[32] = "";
	struct tm tm;
	int r;

	if (m->stale)
		return;
	m->stale = true;
	m->changes++;
	if (gmtime_r(&now, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	free(m->reason);
	if (asprintf(&m->reason, "model %s: checkpoint file %s %s on disk at %s; not served until tierd "
		     "reloads it (SIGHUP, systemctl reload tierd)", m->name, file, what, when) < 0)
		m->reason = NULL;
	r = model_purge(e, mi, &p, &cancelled);
	log_warn("model %s: checkpoint file %s %s on disk: not served until a reload (SIGHUP, "
		 "systemctl reload tierd); %u experts dropped from the pool, %u kept for the clients "
		 "that pin them, %u fetches not served%s", m->name, file, what, p.dropped, p.kept,
		 p.failed, r ? " (out of memory: the rest are dropped at the reload)" : "");
	tell_cancelled(cancelled);
}

int engine_model_set_stale(struct engine *e, uint32_t model, const char *file, const char *what)
{
	if (model >= e->nmodels)
		return -ENOENT;
	model_go_stale(e, model, file, what);
	return 0;
}

int engine_model_status(const struct engine *e, uint32_t model, struct engine_model_status *st)
{
	const struct engine_model *m = model_get(e, model);

	if (!m)
		return -ENOENT;
	*st = (struct engine_model_status){ .stale = m->stale, .changes = m->changes, .reloads = m->reloads };
	return 0;
}

const char *engine_model_stale_reason(const struct engine *e, uint32_t model)
{
	const struct engine_model *m = model_get(e, model);

	if (!m || !m->stale)
		return NULL;
	return m->reason ? m->reason : "the model's checkpoint changed on disk: not served until tierd reloads it";
}

/* Checks one model's files and side files; 1 if it went stale. */
static int model_check(struct engine *e, uint32_t mi)
{
	struct engine_model *m = &e->models[mi];
	char path[PATH_MAX];

	if (m->stale)
		return 0;
	for (uint32_t i = 0; i < m->cat->nfiles; i++) {
		const char *what = file_changed(e, m, i);

		if (what) {
			model_go_stale(e, mi, m->cat->files[i].path, what);
			return 1;
		}
	}
	for (unsigned i = 0; i < NSIDE; i++) {
		struct engine_file_id now;
		const char *what;

		side_path(m, i, path, sizeof(path));
		what = id_of_path(path, &now) < 0 ? "cannot be checked (stat failed)" : id_diff(&m->side[i], &now);
		if (what) {
			model_go_stale(e, mi, path, what);
			return 1;
		}
	}
	return 0;
}

int engine_check_files(struct engine *e)
{
	int n = 0;

	for (uint32_t i = 0; i < e->nmodels; i++)
		n += model_check(e, i);
	return n;
}

/* The model's file that a directory entry name stands for, or NULL. */
static const char *model_file_named(const struct engine_model *m, const char *name, char *buf, size_t len)
{
	for (uint32_t i = 0; i < m->cat->nfiles; i++)
		if (!strcmp(m->names[i], name) || (m->targets[i] && !strcmp(m->targets[i], name)))
			return m->cat->files[i].path;
	for (unsigned i = 0; i < NSIDE; i++) {
		if (!strcmp(side_names[i], name)) {
			side_path(m, i, buf, len);
			return buf;
		}
	}
	return NULL;
}

static void on_watch(void *arg, uint32_t id, const char *path, const char *name, uint32_t mask)
{
	struct engine *e = arg;
	char buf[PATH_MAX];
	const char *file = path;

	if (id == CKWATCH_ALL) {
		log_warn("engine: inotify lost events (queue overflow): checking every model's files");
		engine_check_files(e);
		return;
	}
	if (id >= e->nmodels || e->models[id].stale)
		return;
	if (name) {
		file = model_file_named(&e->models[id], name, buf, sizeof(buf));
		if (!file)
			return;
	}
	/* Data or names changed: stale at once, whatever the timestamps say.
	 * Metadata, or a writer closing: stale if the identity moved. */
	if (mask & IN_MODIFY)
		model_go_stale(e, id, file, "was written");
	else if (mask & IN_MOVED_TO)
		model_go_stale(e, id, file, "was replaced (renamed over)");
	else if (mask & (IN_MOVED_FROM | IN_MOVE_SELF))
		model_go_stale(e, id, file, "was renamed away");
	else if (mask & (IN_DELETE | IN_DELETE_SELF))
		model_go_stale(e, id, file, "was deleted");
	else if (mask & IN_CREATE)
		model_go_stale(e, id, file, "was created");
	else
		model_check(e, id);
}

/* Watches a model's directory (with dir) and files; failures are logged once. */
static void model_watch(struct engine *e, uint32_t mi, bool dir)
{
	const struct engine_model *m = &e->models[mi];
	const char *failed = NULL;
	int r = 0, fr;

	if (dir) {
		r = ckwatch_add(e->watch, m->cat->dir, mi);
		if (r < 0)
			failed = m->cat->dir;
	}
	for (uint32_t i = 0; i < m->cat->nfiles; i++) {
		fr = ckwatch_add(e->watch, m->cat->files[i].path, mi);
		if (fr < 0 && !failed) {
			failed = m->cat->files[i].path;
			r = fr;
		}
	}
	if (failed)
		log_warn("model %s: cannot watch %s with inotify: %s%s; changes are found by the check "
			 "every %d s and at the end of each fetch", m->name, failed, strerror(-r),
			 r == -ENOSPC ? " (the inotify watch limit, fs.inotify.max_user_watches)" : "",
			 ENGINE_CHECK_FILES_MS / 1000);
}

int engine_watch_start(struct engine *e)
{
	int r;

	if (!e->watch) {
		r = ckwatch_create(&e->watch, on_watch, e);
		if (r < 0)
			return r;
	}
	for (uint32_t i = 0; i < e->nmodels; i++)
		model_watch(e, i, true);
	/* What changed between opening the files and watching them. */
	engine_check_files(e);
	return ckwatch_fd(e->watch);
}

int engine_watch_process(struct engine *e)
{
	return e->watch ? ckwatch_process(e->watch) : 0;
}

int engine_model_reload(struct engine *e, uint32_t model, const struct tierd_conf *conf,
			char *err, size_t errlen)
{
	struct engine_inflight *cancelled = NULL;
	struct engine_model *m;
	struct catalog *cat = NULL;
	struct purge p = { 0 };
	char why[256];
	bool moved;
	int r;

	if (model >= e->nmodels) {
		snprintf(err, errlen, "model index %u: no such model", model);
		return -ENOENT;
	}
	m = &e->models[model];
	/* Events already queued are about the files as they were until now. */
	engine_watch_process(e);
	if (!m->stale) {
		snprintf(err, errlen, "model %s: not stale", m->name);
		return -EALREADY;
	}
	r = model_purge(e, model, &p, &cancelled);
	tell_cancelled(cancelled);
	if (r < 0) {
		snprintf(err, errlen, "model %s: out of memory", m->name);
		return r;
	}
	/* Watch the directory before reading it: a change from here on is
	 * reported after the reload and stops the model again. */
	if (e->watch) {
		ckwatch_remove_id(e->watch, model);
		if (ckwatch_add(e->watch, m->cat->dir, model) < 0)
			log_warn("model %s: cannot watch %s with inotify", m->name, m->cat->dir);
	}
	r = catalog_open(&cat, m->cat->dir, m->cat->preset, conf, err, errlen);
	if (r < 0)
		goto fail;
	r = catalog_layout_slots(cat, FETCH_ALIGN);
	if (r < 0) {
		snprintf(err, errlen, "model %s: slot layout: %s", m->name, strerror(-r));
		goto fail;
	}
	/* The service sized its tables and told its clients by the experts
	 * and the slot size: those stay. */
	if (!catalog_same_experts(m->cat, cat, why, sizeof(why))) {
		snprintf(err, errlen, "model %s: %s: restart tierd to serve the new checkpoint", m->name, why);
		r = -EXDEV;
		goto fail;
	}
	if (cat->slot_bytes > m->class_bytes) {
		snprintf(err, errlen, "model %s: an expert now needs a %llu-byte slot, the running layout has "
			 "%llu: restart tierd to serve the new checkpoint", m->name,
			 (unsigned long long)cat->slot_bytes, (unsigned long long)m->class_bytes);
		r = -EXDEV;
		goto fail;
	}
	cat->slot_bytes = m->class_bytes;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		r = check_expert(m->name, cat, &cat->experts[i], err, errlen);
		if (r < 0)
			goto fail;
	}
	for (uint32_t i = 0; i < cat->nfiles; i++) {
		r = fetch_file_reopen(e->fetch, (unsigned)m->fmap[i], err, errlen);
		if (r < 0)
			goto fail;
	}
	moved = !catalog_same_layout(m->cat, cat);
	if (moved) {
		struct catalog **v = realloc(m->retired, (m->nretired + 1) * sizeof(*v));

		if (!v) {
			snprintf(err, errlen, "model %s: out of memory", m->name);
			r = -ENOMEM;
			goto fail;
		}
		m->retired = v;
		/* Not ours to free: the caller's catalog stays the caller's. */
		if (m->owned)
			m->retired[m->nretired++] = m->cat;
		m->cat = cat;
		m->owned = true;
		cat = NULL;
	}
	r = model_record(e, m);
	if (r < 0) {
		snprintf(err, errlen, "model %s: %s: %s", m->name, m->cat->dir, strerror(-r));
		goto fail;
	}
	r = model_size_mismatch(m, cat ? cat : m->cat);
	if (r >= 0) {
		snprintf(err, errlen, "model %s: %s changed again while it was read: reload again once it "
			 "is complete", m->name, m->cat->files[r].path);
		r = -EAGAIN;
		goto fail;
	}
	catalog_free(cat);
	cat = NULL;
	if (e->watch)
		model_watch(e, model, false);
	m->stale = false;
	/* A write while the catalog was read is queued by now: hear it before
	 * anything is served from what may mix two versions. */
	engine_watch_process(e);
	if (m->stale) {
		snprintf(err, errlen, "model %s: its checkpoint changed again while it was read: reload "
			 "again once it is complete", m->name);
		r = -EAGAIN;
		goto fail;
	}
	m->reloads++;
	free(m->reason);
	m->reason = NULL;
	log_notice("model %s: reloaded from %s (%s): served again", m->name, m->cat->dir,
		   moved ? "tensors moved, new layout" : "same layout");
	return 0;
fail:
	catalog_free(cat);
	return r;
}

int engine_pool_count(const struct engine *e)
{
	return 1;
}

int engine_pool_fd(const struct engine *e, uint32_t pool)
{
	return pool == 0 ? pool_fd_ro(e->pool) : -ENOENT;
}

uint64_t engine_pool_size(const struct engine *e, uint32_t pool)
{
	return pool == 0 ? pool_size(e->pool) : 0;
}

bool engine_pool_hugetlb(const struct engine *e, uint32_t pool)
{
	return pool == 0 && pool_hugetlb(e->pool);
}

const void *engine_pool_base(const struct engine *e, uint32_t pool)
{
	return pool == 0 ? pool_base(e->pool) : NULL;
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
	const struct engine_model *m = model_get(e, model);

	if (!m || file >= m->cat->nfiles)
		return -ENOENT;
	return fetch_file_fd(e->fetch, (unsigned)m->fmap[file]);
}
