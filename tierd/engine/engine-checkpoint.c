/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint changes under the engine: the identity of each model's files
 * as opened, the checks that notice a change (inotify, a periodic check,
 * the end of each fetch), the stale state that stops serving a model, and
 * its reload.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckwatch.h"
#include "engine-int.h"
#include "fetch.h"
#include "log.h"
#include "slab.h"

static const char *const side_names[ENGINE_NSIDE] = { CATALOG_INDEX_NAME, CATALOG_CONFIG_NAME };

/*
 * The catalog lays out each expert's reads (aligned extents, merged, in slot
 * order).  Checked once more here because a bad layout must be refused, never
 * served: every read inside the slot, aligned, and no two overlapping.
 */
int engine_check_expert(const char *name, const struct catalog *cat, const struct catalog_expert *x,
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
int engine_model_record(struct engine *e, struct engine_model *m)
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
	for (unsigned i = 0; i < ENGINE_NSIDE; i++) {
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
int engine_model_size_mismatch(const struct engine_model *m, const struct catalog *cat)
{
	for (uint32_t i = 0; i < cat->nfiles; i++)
		if ((uint64_t)m->ids[i].size != cat->files[i].size)
			return (int)i;
	return -1;
}

/*
 * Whether the files an expert was read from still are what the model opened.
 * Checked once the reads are done: a write updates mtime and ctime before it
 * changes data, so a write that reached these reads shows here, and one that
 * comes later changed nothing they returned.
 */
const char *engine_expert_files_changed(const struct engine *e, const struct engine_model *m,
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
	int xi = engine_expert_index(m->cat, ce->key.layer, ce->key.expert);

	if (e->nzombies == e->capzombies) {
		size_t cap = e->capzombies ? e->capzombies * 2 : 16;
		struct engine_zombie *z = realloc(e->zombies, cap * sizeof(*z));

		if (!z)
			return -ENOMEM;
		e->zombies = z;
		e->capzombies = cap;
	}
	e->zombies[e->nzombies++] = (struct engine_zombie){
		.key = ce->key, .slot = ce->slot, .pool = ce->pool, .pins = ce->pins, .cls = m->cls,
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
static int model_purge(struct engine *e, uint32_t mi, struct purge *p, struct engine_inflight_list *cancelled)
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
			if (!ce->pins && engine_fast_claim(e, ce)) {
				engine_evict_entry(e, ce);
				p->dropped++;
			} else if (zombie_add(e, ce) == 0) {
				/* Never served again; clients' pins keep the slot
				 * as engine pins do (engine_fast_settle). */
				engine_fast_unpublish(e, &ce->key);
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
			slab_free(engine_slab(e, fl->pool), m->cls, fl->slot);
			LIST_INSERT_HEAD(cancelled, fl, link);
		} else {
			/* Reading into the slot now: it goes back when the reads end. */
			LIST_INSERT_HEAD(&e->detached, fl, link);
		}
		fl->ce = NULL;
		cache_remove(e->cache, ce);
	}
	free(p->keys);
	p->keys = NULL;
	return failed || p->nomem ? -ENOMEM : 0;
}

static void tell_cancelled(struct engine_inflight_list *cancelled)
{
	struct engine_inflight *fl;

	while ((fl = LIST_FIRST(cancelled))) {
		LIST_REMOVE(fl, link);
		for (unsigned i = 0; i < fl->nw; i++)
			fl->w[i].fn(fl->w[i].arg, -ESTALE, NULL);
		free(fl->w);
		free(fl);
	}
}

void engine_model_go_stale(struct engine *e, uint32_t mi, const char *file, const char *what)
{
	struct engine_model *m = &e->models[mi];
	struct engine_inflight_list cancelled = LIST_HEAD_INITIALIZER(cancelled);
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
	tell_cancelled(&cancelled);
}

int engine_model_set_stale(struct engine *e, uint32_t model, const char *file, const char *what)
{
	if (model >= e->nmodels)
		return -ENOENT;
	engine_model_go_stale(e, model, file, what);
	return 0;
}

int engine_model_status(const struct engine *e, uint32_t model, struct engine_model_status *st)
{
	const struct engine_model *m = engine_model_get(e, model);

	if (!m)
		return -ENOENT;
	*st = (struct engine_model_status){ .stale = m->stale, .changes = m->changes, .reloads = m->reloads };
	return 0;
}

const char *engine_model_stale_reason(const struct engine *e, uint32_t model)
{
	const struct engine_model *m = engine_model_get(e, model);

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
			engine_model_go_stale(e, mi, m->cat->files[i].path, what);
			return 1;
		}
	}
	for (unsigned i = 0; i < ENGINE_NSIDE; i++) {
		struct engine_file_id now;
		const char *what;

		side_path(m, i, path, sizeof(path));
		what = id_of_path(path, &now) < 0 ? "cannot be checked (stat failed)" : id_diff(&m->side[i], &now);
		if (what) {
			engine_model_go_stale(e, mi, path, what);
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
	for (unsigned i = 0; i < ENGINE_NSIDE; i++) {
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
		engine_model_go_stale(e, id, file, "was written");
	else if (mask & IN_MOVED_TO)
		engine_model_go_stale(e, id, file, "was replaced (renamed over)");
	else if (mask & (IN_MOVED_FROM | IN_MOVE_SELF))
		engine_model_go_stale(e, id, file, "was renamed away");
	else if (mask & (IN_DELETE | IN_DELETE_SELF))
		engine_model_go_stale(e, id, file, "was deleted");
	else if (mask & IN_CREATE)
		engine_model_go_stale(e, id, file, "was created");
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
	struct engine_inflight_list cancelled = LIST_HEAD_INITIALIZER(cancelled);
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
	tell_cancelled(&cancelled);
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
		r = engine_check_expert(m->name, cat, &cat->experts[i], err, errlen);
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
	r = engine_model_record(e, m);
	if (r < 0) {
		snprintf(err, errlen, "model %s: %s: %s", m->name, m->cat->dir, strerror(-r));
		goto fail;
	}
	r = engine_model_size_mismatch(m, cat ? cat : m->cat);
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
