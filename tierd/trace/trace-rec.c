/* SPDX-License-Identifier: MIT */
/*
 * The daemon's recorder (trace-rec.h): records encoded straight into one of
 * REC_NBUF buffers, each the payload of a tierd-trace-v1 block; full
 * buffers queued to a writer thread, which writes them and gives them back.
 * The loop takes the mutex only to swap buffers (once a megabyte), the
 * writer only to take and give back one: neither waits on the other's I/O.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trace-int.h"
#include "trace-rec.h"
#include "trace-v1.h"

#define REC_BUF		(1u << 20)	/* payload bytes of one block */
#define REC_NBUF	4

struct rec_buf {
	uint8_t *data;		/* TRACE_V1_BLOCK_HDR, then the payload */
	size_t used;		/* payload bytes */
	uint32_t nevents;
	uint32_t dropped;	/* events lost before this block's first */
	uint64_t t0, tprev;
};

struct trace_rec {
	int fd;
	char *path;
	struct trace_model_desc *models;
	uint32_t nmodels;
	struct timespec start;
	uint64_t max_bytes;

	/* The loop's side. */
	struct rec_buf *cur;		/* NULL: none free at the last try */
	uint64_t events, dropped;
	uint64_t pending_drops;		/* for the next block's header */
	uint64_t committed;		/* bytes of the header and of blocks handed over */
	bool full;

	/* Shared with the writer, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rec_buf *freelist[REC_NBUF];
	unsigned nfree;
	struct rec_buf *queue[REC_NBUF];
	unsigned qhead, qlen;
	bool stopping;
	int werr;
	uint64_t written;		/* bytes */
	uint64_t events_written;
	uint64_t dropped_written;	/* in the headers of blocks written */
	uint64_t lost;			/* events of blocks a write error lost */

	struct rec_buf bufs[REC_NBUF];
	pthread_t thread;
};

static void *rec_writer(void *arg)
{
	struct trace_rec *r = arg;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		struct rec_buf *b;
		int err = 0;

		while (!r->qlen && !r->stopping)
			pthread_cond_wait(&r->cv, &r->mu);
		if (!r->qlen)
			break;
		b = r->queue[r->qhead];
		r->qhead = (r->qhead + 1) % REC_NBUF;
		r->qlen--;
		if (!r->werr) {
			pthread_mutex_unlock(&r->mu);
			tv1_block_seal(b->data, (uint32_t)b->used, b->nevents, b->dropped, b->t0);
			err = tv1_write_full(r->fd, b->data, TRACE_V1_BLOCK_HDR + b->used);
			pthread_mutex_lock(&r->mu);
		} else {
			err = r->werr;
		}
		if (err) {
			if (!r->werr)
				r->werr = err;
			r->lost += b->nevents;
		} else {
			r->written += TRACE_V1_BLOCK_HDR + b->used;
			r->events_written += b->nevents;
			r->dropped_written += b->dropped;
		}
		b->used = 0;
		b->nevents = 0;
		b->dropped = 0;
		r->freelist[r->nfree++] = b;
		/* trace_rec_stop() may wait for a free buffer. */
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Queues the current buffer, if it holds anything, for the writer. */
static void rec_handoff(struct trace_rec *r)
{
	struct rec_buf *b = r->cur;

	if (!b || (!b->nevents && !b->dropped))
		return;
	r->committed += TRACE_V1_BLOCK_HDR + b->used;
	r->cur = NULL;
	pthread_mutex_lock(&r->mu);
	r->queue[(r->qhead + r->qlen) % REC_NBUF] = b;
	r->qlen++;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* A buffer with room for one more record, or NULL (the event is dropped). */
static struct rec_buf *rec_room(struct trace_rec *r)
{
	struct rec_buf *b = r->cur;

	if (b && REC_BUF - b->used >= TRACE_V1_MAX_RECORD)
		return b;
	rec_handoff(r);
	pthread_mutex_lock(&r->mu);
	b = r->nfree ? r->freelist[--r->nfree] : NULL;
	pthread_mutex_unlock(&r->mu);
	if (!b)
		return NULL;
	/* The drops before it travel in its header (at most 2^32-1 a block). */
	b->dropped = r->pending_drops > UINT32_MAX ? UINT32_MAX : (uint32_t)r->pending_drops;
	r->pending_drops -= b->dropped;
	r->cur = b;
	return b;
}

static uint64_t rec_now(const struct trace_rec *r)
{
	struct timespec now;
	int64_t ns;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (int64_t)(now.tv_sec - r->start.tv_sec) * 1000000000 + (now.tv_nsec - r->start.tv_nsec);
	return ns > 0 ? (uint64_t)ns : 0;
}

static void rec_event(struct trace_rec *r, uint64_t t, uint32_t client, uint32_t token, enum trace_kind kind,
		      uint32_t model, uint32_t layer, const uint32_t *ids, uint32_t n)
{
	struct rec_buf *b;

	if (!n)
		return;
	/* Room kept for this block's header, an empty block that carries the
	 * last drops, and the end record. */
	if (r->full || (r->max_bytes && r->committed + 2 * TRACE_V1_BLOCK_HDR + TRACE_V1_END_LEN +
			(r->cur ? r->cur->used : 0) + TRACE_V1_MAX_RECORD > r->max_bytes)) {
		r->full = true;
		goto drop;
	}
	b = rec_room(r);
	if (!b)
		goto drop;
	if (!b->nevents) {
		b->t0 = t;
		b->tprev = t;
	}
	/* The protocol carries no sequence id: 0. */
	b->used += tv1_put_event(b->data + TRACE_V1_BLOCK_HDR + b->used, t - b->tprev, client, 0, token, kind,
				 model, layer, ids, n);
	b->tprev = t;
	b->nevents++;
	r->events++;
	return;
drop:
	r->dropped++;
	r->pending_drops++;
}

void trace_rec_acquire(struct trace_rec *r, uint32_t client, uint32_t token, const struct tierd_key *keys,
		       uint32_t n)
{
	uint32_t ids[TRACE_MAX_EXPERTS];
	uint64_t t = rec_now(r);
	uint32_t m = 0;

	for (uint32_t i = 0; i < n; i++) {
		bool again = false;

		if (m && (keys[i].model != keys[i - 1].model || keys[i].layer != keys[i - 1].layer ||
			  m == TRACE_MAX_EXPERTS)) {
			rec_event(r, t, client, token, TRACE_ACQUIRE, keys[i - 1].model, keys[i - 1].layer, ids, m);
			m = 0;
		}
		/* A key named twice in a run (the client pins it twice) is one
		 * expert of the layer's selection. */
		for (uint32_t k = 0; k < m && !again; k++)
			again = ids[k] == keys[i].expert;
		if (!again)
			ids[m++] = keys[i].expert;
	}
	if (m)
		rec_event(r, t, client, token, TRACE_ACQUIRE, keys[n - 1].model, keys[n - 1].layer, ids, m);
}

void trace_rec_hint(struct trace_rec *r, uint32_t client, uint32_t token, uint32_t model, uint32_t layer,
		    const struct tierd_proto_hint *h, uint32_t n)
{
	uint32_t ids[TRACE_MAX_EXPERTS];
	const struct trace_model_desc *md;
	uint32_t m = 0;

	/* Hints reach the service unchecked beyond their model: what the
	 * trace cannot hold is left out, so that the recording reads back. */
	if (model >= r->nmodels)
		return;
	md = &r->models[model];
	if (md->nlayers && layer >= md->nlayers)
		return;
	for (uint32_t i = 0; i < n && m < TRACE_MAX_EXPERTS; i++) {
		bool again = false;

		if (md->nexperts && h[i].expert >= md->nexperts)
			continue;
		for (uint32_t k = 0; k < m && !again; k++)
			again = ids[k] == h[i].expert;
		if (!again)
			ids[m++] = h[i].expert;
	}
	rec_event(r, rec_now(r), client, token, TRACE_HINT, model, layer, ids, m);
}

void trace_rec_flush(struct trace_rec *r)
{
	rec_handoff(r);
}

void trace_rec_get_stats(const struct trace_rec *r, struct trace_rec_stats *st)
{
	struct trace_rec *w = (struct trace_rec *)r;

	pthread_mutex_lock(&w->mu);
	st->events = r->events - r->lost;
	st->dropped = r->dropped + r->lost;
	st->bytes = r->written;
	st->error = r->werr;
	pthread_mutex_unlock(&w->mu);
	st->full = r->full;
}

const char *trace_rec_path(const struct trace_rec *r)
{
	return r->path;
}

static void rec_free(struct trace_rec *r)
{
	if (r->fd >= 0)
		close(r->fd);
	for (unsigned i = 0; i < REC_NBUF; i++)
		free(r->bufs[i].data);
	for (uint32_t i = 0; r->models && i < r->nmodels; i++)
		free((char *)r->models[i].name);
	free(r->models);
	free(r->path);
	free(r);
}

int trace_rec_start(struct trace_rec **out, int fd, const char *path, const struct trace_model_desc *models,
		    uint32_t nmodels, uint64_t max_bytes, char *err, size_t errlen)
{
	struct trace_rec *r = calloc(1, sizeof(*r));
	uint8_t *hdr = NULL;
	struct timespec rt;
	size_t hlen;
	int ret;

	*out = NULL;
	if (!r) {
		close(fd);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	r->fd = fd;
	r->max_bytes = max_bytes;
	r->path = strdup(path);
	r->models = calloc(nmodels ? nmodels : 1, sizeof(*r->models));
	if (!r->path || !r->models)
		goto nomem;
	for (uint32_t i = 0; i < nmodels; i++) {
		r->models[i] = models[i];
		r->models[i].name = strdup(models[i].name);
		if (!r->models[i].name)
			goto nomem;
		r->nmodels = i + 1;
	}
	for (unsigned i = 0; i < REC_NBUF; i++) {
		r->bufs[i].data = malloc(TRACE_V1_BLOCK_HDR + REC_BUF);
		if (!r->bufs[i].data)
			goto nomem;
		r->freelist[r->nfree++] = &r->bufs[i];
	}
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	ret = tv1_header(&hdr, &hlen, (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec, models, nmodels,
			 NULL, 0);
	if (ret == -ENOMEM)
		goto nomem;
	if (ret == -EFBIG) {
		snprintf(err, errlen, "%s: a header of %zu bytes (the served models' names): readers take at most %u "
			 "bytes (64 MiB)", path, hlen, TRACE_V1_MAX_HEADER);
		goto fail;
	}
	if (ret) {
		snprintf(err, errlen, "%s: a model name longer than 65535 bytes, or too many models", path);
		goto fail;
	}
	/* The header is small: written here, on the caller's thread. */
	ret = tv1_write_full(fd, hdr, hlen);
	free(hdr);
	if (ret) {
		snprintf(err, errlen, "%s: writing: %s", path, strerror(-ret));
		goto fail;
	}
	r->committed = hlen;
	r->written = hlen;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	ret = -pthread_create(&r->thread, NULL, rec_writer, r);
	if (ret) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		snprintf(err, errlen, "%s: starting the writer thread: %s", path, strerror(-ret));
		goto fail;
	}
	*out = r;
	return 0;
nomem:
	ret = -ENOMEM;
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	rec_free(r);
	return ret;
}

int trace_rec_stop(struct trace_rec *r, struct trace_rec_stats *st, char *err, size_t errlen)
{
	uint8_t end[TRACE_V1_END_LEN];
	int ret;

	/* Drops after the last block travel in an empty one, so that the end
	 * record's count agrees with the blocks'. */
	if (r->pending_drops) {
		rec_handoff(r);
		while (!rec_room(r)) {
			/* Every buffer is queued: the writer frees one soon. */
			pthread_mutex_lock(&r->mu);
			while (!r->nfree)
				pthread_cond_wait(&r->cv, &r->mu);
			pthread_mutex_unlock(&r->mu);
		}
	}
	rec_handoff(r);
	pthread_mutex_lock(&r->mu);
	r->stopping = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	ret = r->werr;
	if (!ret) {
		tv1_end(end, r->events_written, r->dropped_written);
		ret = tv1_write_full(r->fd, end, sizeof(end));
		if (!ret)
			r->written += sizeof(end);
	}
	if (!ret && close(r->fd))
		ret = -errno;
	else if (ret)
		close(r->fd);
	r->fd = -1;
	if (ret)
		snprintf(err, errlen, "%s: writing: %s", r->path, strerror(-ret));
	if (st) {
		st->events = r->events - r->lost;
		st->dropped = r->dropped + r->lost;
		st->bytes = r->written;
		st->error = ret;
		st->full = r->full;
	}
	rec_free(r);
	return ret;
}
