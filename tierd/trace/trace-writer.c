/* SPDX-License-Identifier: MIT */
/*
 * tierd-trace-v1 written: the header, blocks and end record that the
 * daemon's recorder (trace-rec.c) shares, and trace_writer, which writes a
 * whole trace synchronously (tierctl trace convert, tests).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "trace-int.h"
#include "trace-v1.h"

/* Blocks of trace_writer: some 20,000 top-8 events each. */
#define WRITER_BLOCK	(256u << 10)

int tv1_header(uint8_t **out, size_t *len, uint64_t realtime_ns, const struct trace_model_desc *models,
	       uint32_t nmodels, const struct trace_seq_desc *seqs, uint32_t nseqs)
{
	size_t n = 32 + 8;
	uint8_t *b, *p;

	if (nmodels > TRACE_V1_MAX_MODELS || nseqs > TRACE_V1_MAX_SEQNAMES)
		return -EINVAL;
	for (uint32_t i = 0; i < nmodels; i++) {
		if (strlen(models[i].name) > UINT16_MAX)
			return -EINVAL;
		n += 14 + strlen(models[i].name);
	}
	for (uint32_t i = 0; i < nseqs; i++) {
		if (strlen(seqs[i].name) > UINT16_MAX)
			return -EINVAL;
		n += 14 + strlen(seqs[i].name);
	}
	/* The reader refuses a longer header at open: never write one. */
	if (n > TRACE_V1_MAX_HEADER) {
		*len = n;
		return -EFBIG;
	}
	b = malloc(n);
	if (!b)
		return -ENOMEM;
	memcpy(b, TRACE_V1_MAGIC, TRACE_V1_MAGIC_LEN);
	tv1_put16(b + 8, TRACE_V1_VERSION);
	tv1_put16(b + 10, 0);
	tv1_put32(b + 12, (uint32_t)n);
	tv1_put64(b + 16, realtime_ns);
	tv1_put32(b + 24, nmodels);
	tv1_put32(b + 28, nseqs);
	p = b + 32;
	for (uint32_t i = 0; i < nmodels; i++) {
		size_t l = strlen(models[i].name);

		tv1_put32(p, models[i].nlayers);
		tv1_put32(p + 4, models[i].nexperts);
		tv1_put32(p + 8, models[i].top_k);
		tv1_put16(p + 12, (uint16_t)l);
		memcpy(p + 14, models[i].name, l);
		p += 14 + l;
	}
	for (uint32_t i = 0; i < nseqs; i++) {
		size_t l = strlen(seqs[i].name);

		tv1_put32(p, seqs[i].client);
		tv1_put64(p + 4, seqs[i].seq);
		tv1_put16(p + 12, (uint16_t)l);
		memcpy(p + 14, seqs[i].name, l);
		p += 14 + l;
	}
	tv1_put64(p, XXH64(b, (size_t)(p - b), 0));
	*out = b;
	*len = n;
	return 0;
}

void tv1_block_seal(uint8_t *blk, uint32_t payload_len, uint32_t nevents, uint32_t dropped, uint64_t t0_ns)
{
	tv1_put32(blk, TRACE_V1_BLOCK_MAGIC);
	tv1_put32(blk + 4, payload_len);
	tv1_put32(blk + 8, nevents);
	tv1_put32(blk + 12, dropped);
	tv1_put64(blk + 16, t0_ns);
	/* The payload's hash seeded with the header's: one check covers both. */
	tv1_put64(blk + 24, XXH64(blk + TRACE_V1_BLOCK_HDR, payload_len, XXH64(blk, 24, 0)));
}

void tv1_end(uint8_t out[TRACE_V1_END_LEN], uint64_t events, uint64_t dropped)
{
	tv1_put32(out, TRACE_V1_END_MAGIC);
	tv1_put32(out + 4, 0);
	tv1_put64(out + 8, events);
	tv1_put64(out + 16, dropped);
	tv1_put64(out + 24, XXH64(out, 24, 0));
}

struct trace_writer {
	int fd;
	char *path;
	struct trace_model_desc *models;
	uint32_t nmodels;
	uint8_t *blk;		/* TRACE_V1_BLOCK_HDR, then the payload */
	size_t used;		/* payload bytes */
	uint32_t nevents;	/* in the block */
	uint64_t t0, tprev;
	uint64_t events;
	bool any;		/* an event written: tprev is set */
};

static int writer_flush(struct trace_writer *w, char *err, size_t errlen)
{
	int r;

	if (!w->nevents)
		return 0;
	tv1_block_seal(w->blk, (uint32_t)w->used, w->nevents, 0, w->t0);
	r = tv1_write_full(w->fd, w->blk, TRACE_V1_BLOCK_HDR + w->used);
	if (r) {
		snprintf(err, errlen, "%s: writing: %s", w->path, strerror(-r));
		return r;
	}
	w->used = 0;
	w->nevents = 0;
	return 0;
}

static void writer_free(struct trace_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	for (uint32_t i = 0; w->models && i < w->nmodels; i++)
		free((char *)w->models[i].name);
	free(w->models);
	free(w->blk);
	free(w->path);
	free(w);
}

int trace_writer_create(struct trace_writer **out, const char *path, const struct trace_model_desc *models,
			uint32_t nmodels, const struct trace_seq_desc *seqs, uint32_t nseqs, char *err,
			size_t errlen)
{
	struct trace_writer *w = calloc(1, sizeof(*w));
	uint8_t *hdr = NULL;
	struct timespec now;
	size_t hlen;
	int r;

	*out = NULL;
	if (!w)
		goto nomem;
	w->fd = -1;
	w->path = strdup(path);
	w->models = calloc(nmodels ? nmodels : 1, sizeof(*w->models));
	w->blk = malloc(TRACE_V1_BLOCK_HDR + WRITER_BLOCK + TRACE_V1_MAX_RECORD);
	if (!w->path || !w->models || !w->blk)
		goto nomem;
	for (uint32_t i = 0; i < nmodels; i++) {
		w->models[i] = models[i];
		w->models[i].name = strdup(models[i].name);
		if (!w->models[i].name)
			goto nomem;
		w->nmodels = i + 1;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	r = tv1_header(&hdr, &hlen, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec, models, nmodels,
		       seqs, nseqs);
	if (r == -EFBIG) {
		snprintf(err, errlen, "%s: a header of %zu bytes (its models' and sequences' names): readers take at "
			 "most %u bytes (64 MiB)", path, hlen, TRACE_V1_MAX_HEADER);
		goto fail;
	}
	if (r) {
		snprintf(err, errlen, "%s: %s", path, r == -ENOMEM ? "out of memory" :
			 "a model or sequence name longer than 65535 bytes, or too many of them");
		goto fail;
	}
	/* Never through a link, never over an existing file. */
	w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (w->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		goto fail;
	}
	r = tv1_write_full(w->fd, hdr, hlen);
	if (r) {
		snprintf(err, errlen, "%s: writing: %s", path, strerror(-r));
		unlink(path);
		goto fail;
	}
	free(hdr);
	*out = w;
	return 0;
nomem:
	r = -ENOMEM;
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	free(hdr);
	if (w)
		writer_free(w);
	return r;
}

int trace_writer_add(struct trace_writer *w, const struct trace_event *ev, char *err, size_t errlen)
{
	const struct trace_model_desc *m;
	uint32_t dup;
	int r;

	if (ev->kind != TRACE_ACQUIRE && ev->kind != TRACE_HINT)
		return trace_bad(err, errlen, "%s: event of kind %d: neither acquire nor hint", w->path, (int)ev->kind);
	if (ev->model >= w->nmodels)
		return trace_bad(err, errlen, "%s: model index %u: the trace has %u models", w->path, ev->model,
				 w->nmodels);
	m = &w->models[ev->model];
	if (m->nlayers && ev->layer >= m->nlayers)
		return trace_bad(err, errlen, "%s: model %s layer %u: it has %u layers", w->path, m->name, ev->layer,
				 m->nlayers);
	if (!ev->nexperts || ev->nexperts > TRACE_MAX_EXPERTS)
		return trace_bad(err, errlen, "%s: model %s layer %u: %u experts in one event (1 to %u)", w->path,
				 m->name, ev->layer, ev->nexperts, TRACE_MAX_EXPERTS);
	for (uint32_t i = 0; i < ev->nexperts; i++)
		if (m->nexperts && ev->experts[i] >= m->nexperts)
			return trace_bad(err, errlen, "%s: model %s layer %u expert %u: it has %u experts a layer",
					 w->path, m->name, ev->layer, ev->experts[i], m->nexperts);
	if (trace_ids_dup(ev->experts, ev->nexperts, &dup))
		return trace_bad(err, errlen, "%s: model %s layer %u expert %u: named twice in one event", w->path,
				 m->name, ev->layer, dup);
	if (w->any && ev->t_ns < w->tprev)
		return trace_bad(err, errlen, "%s: event at %llu ns after one at %llu ns: out of time order",
				 w->path, (unsigned long long)ev->t_ns, (unsigned long long)w->tprev);
	if (!w->nevents) {
		w->t0 = ev->t_ns;
		w->tprev = ev->t_ns;
	}
	w->used += tv1_put_event(w->blk + TRACE_V1_BLOCK_HDR + w->used, ev->t_ns - w->tprev, ev->client, ev->seq,
				 ev->token, ev->kind, ev->model, ev->layer, ev->experts, ev->nexperts);
	w->tprev = ev->t_ns;
	w->any = true;
	w->nevents++;
	w->events++;
	if (w->used >= WRITER_BLOCK) {
		r = writer_flush(w, err, errlen);
		if (r)
			return r;
	}
	return 0;
}

int trace_writer_close(struct trace_writer *w, char *err, size_t errlen)
{
	uint8_t end[TRACE_V1_END_LEN];
	int r;

	r = writer_flush(w, err, errlen);
	if (!r) {
		tv1_end(end, w->events, 0);
		r = tv1_write_full(w->fd, end, sizeof(end));
		if (r)
			snprintf(err, errlen, "%s: writing: %s", w->path, strerror(-r));
	}
	if (!r && fsync(w->fd)) {
		r = -errno;
		snprintf(err, errlen, "%s: fsync: %s", w->path, strerror(-r));
	}
	if (!r && close(w->fd)) {
		r = -errno;
		snprintf(err, errlen, "%s: close: %s", w->path, strerror(-r));
	}
	w->fd = -1;
	writer_free(w);
	return r;
}

void trace_writer_abort(struct trace_writer *w)
{
	if (!w)
		return;
	unlink(w->path);
	writer_free(w);
}
