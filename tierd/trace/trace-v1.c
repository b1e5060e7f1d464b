/* SPDX-License-Identifier: MIT */
/*
 * tierd-trace-v1 read: the header at open, then block by block (a block is
 * read whole and its checksum verified before any of its events is handed
 * out), so that a recording of any length is read in bounded memory.  Every
 * error names the byte offset where the file stops making sense.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "trace-int.h"
#include "trace-v1.h"

struct tv1 {
	FILE *f;
	uint64_t off;			/* of the next byte to read from f */
	struct trace_model_desc *models;
	const char **names;		/* info.models */
	struct trace_seq_desc *seqs;
	const char **seqnames;
	uint32_t nmodels, nseqs;
	char *strings;			/* names of models and sequences */
	uint8_t *blk;			/* the current block's payload */
	size_t blkcap;
	uint64_t blkoff;		/* file offset of the block's header */
	uint32_t plen, pos;		/* payload length, next record */
	uint32_t left;			/* records the block still declares */
	uint32_t nrec;			/* records read from the block */
	uint64_t t;			/* time of the last record */
	uint64_t events, dropped;
	bool done;
};

/* Reads exactly len bytes at t->off; the bytes got in *got. */
static int tv1_read(struct tv1 *t, void *buf, size_t len, size_t *got)
{
	*got = fread(buf, 1, len, t->f);
	t->off += *got;
	if (*got < len && ferror(t->f))
		return -EIO;
	return 0;
}

static int tv1_short(struct trace_reader *r, struct tv1 *t, const char *what, uint64_t at, size_t want,
		     size_t got, char *err, size_t errlen)
{
	return trace_bad(err, errlen, "%s: truncated at byte offset %llu: %s at byte offset %llu needs %zu bytes, "
			 "the file has %zu", r->path, (unsigned long long)t->off, what, (unsigned long long)at,
			 want, got);
}

static int parse_header(struct trace_reader *r, struct tv1 *t, char *err, size_t errlen)
{
	uint8_t fixed[32], *h = NULL;
	uint32_t hlen, version, flags;
	size_t got, spos = 0, o;
	int ret;

	ret = tv1_read(t, fixed, sizeof(fixed), &got);
	if (ret)
		goto ioerr;
	if (got < sizeof(fixed))
		return tv1_short(r, t, "the header", 0, sizeof(fixed), got, err, errlen);
	version = tv1_get16(fixed + 8);
	flags = tv1_get16(fixed + 10);
	hlen = tv1_get32(fixed + 12);
	if (version != TRACE_V1_VERSION)
		return trace_bad(err, errlen, "%s: byte offset 8: tierd-trace version %u, this tierd reads version %u",
				 r->path, version, TRACE_V1_VERSION);
	if (flags)
		return trace_bad(err, errlen, "%s: byte offset 10: flags 0x%x, none are defined", r->path, flags);
	if (hlen < sizeof(fixed) + 8 || hlen > TRACE_V1_MAX_HEADER)
		return trace_bad(err, errlen, "%s: byte offset 12: header length %u (40 to %u)", r->path, hlen,
				 TRACE_V1_MAX_HEADER);
	h = malloc(hlen);
	t->strings = malloc(hlen);
	if (!h || !t->strings) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", r->path);
		goto out;
	}
	memcpy(h, fixed, sizeof(fixed));
	ret = tv1_read(t, h + sizeof(fixed), hlen - sizeof(fixed), &got);
	if (ret)
		goto ioerr;
	if (got < hlen - sizeof(fixed)) {
		ret = tv1_short(r, t, "the header", 0, hlen, got + sizeof(fixed), err, errlen);
		goto out;
	}
	if (XXH64(h, hlen - 8, 0) != tv1_get64(h + hlen - 8)) {
		ret = trace_bad(err, errlen, "%s: byte offset %u: the header's checksum does not match: the file is "
				"corrupt", r->path, hlen - 8);
		goto out;
	}
	t->nmodels = tv1_get32(h + 24);
	t->nseqs = tv1_get32(h + 28);
	if (!t->nmodels || t->nmodels > TRACE_V1_MAX_MODELS || t->nseqs > TRACE_V1_MAX_SEQNAMES) {
		ret = trace_bad(err, errlen, "%s: byte offset 24: %u models, %u sequence names (1 to %u, 0 to %u)",
				r->path, t->nmodels, t->nseqs, TRACE_V1_MAX_MODELS, TRACE_V1_MAX_SEQNAMES);
		goto out;
	}
	t->models = calloc(t->nmodels, sizeof(*t->models));
	t->names = calloc(t->nmodels, sizeof(*t->names));
	t->seqs = calloc(t->nseqs ? t->nseqs : 1, sizeof(*t->seqs));
	t->seqnames = calloc(t->nseqs ? t->nseqs : 1, sizeof(*t->seqnames));
	if (!t->models || !t->names || !t->seqs || !t->seqnames) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", r->path);
		goto out;
	}
	o = 32;
	for (uint32_t i = 0; i < t->nmodels + t->nseqs; i++) {
		bool model = i < t->nmodels;
		size_t l;

		if (o + 14 > hlen - 8 || o + 14 + (l = tv1_get16(h + o + 12)) > hlen - 8) {
			ret = trace_bad(err, errlen, "%s: byte offset %zu: %s %u runs past the header's end (byte %u)",
					r->path, o, model ? "model" : "sequence name", model ? i : i - t->nmodels,
					hlen - 8);
			goto out;
		}
		memcpy(t->strings + spos, h + o + 14, l);
		t->strings[spos + l] = '\0';
		if (strlen(t->strings + spos) != l) {
			ret = trace_bad(err, errlen, "%s: byte offset %zu: a NUL byte in a name", r->path, o + 14);
			goto out;
		}
		if (model) {
			uint32_t nl = tv1_get32(h + o), ne = tv1_get32(h + o + 4), tk = tv1_get32(h + o + 8);

			/* The bounds of the JSON reader: what readers size tables by. */
			if (nl > TRACE_MAX_LAYERS || ne > TRACE_MAX_BANK || tk > TRACE_MAX_EXPERTS) {
				ret = trace_bad(err, errlen, "%s: byte offset %zu: model %u: %u layers, %u experts, "
						"top-k %u: beyond %u, %u, %u", r->path, o, i, nl, ne, tk,
						TRACE_MAX_LAYERS, TRACE_MAX_BANK, TRACE_MAX_EXPERTS);
				goto out;
			}
			t->models[i] = (struct trace_model_desc){ t->strings + spos, nl, ne, tk };
			t->names[i] = t->strings + spos;
		} else {
			uint32_t k = i - t->nmodels;

			t->seqs[k] = (struct trace_seq_desc){ tv1_get32(h + o), tv1_get64(h + o + 4), t->strings + spos };
			t->seqnames[k] = t->strings + spos;
		}
		spos += l + 1;
		o += 14 + l;
	}
	if (o != hlen - 8) {
		ret = trace_bad(err, errlen, "%s: byte offset %zu: %zu bytes after the header's tables", r->path, o,
				hlen - 8 - o);
		goto out;
	}
	ret = 0;
	goto out;
ioerr:
	snprintf(err, errlen, "%s: reading: %s", r->path, strerror(-ret));
out:
	free(h);
	return ret;
}

/* LEB128 at *p, below end: 0 on success, -1 if cut or longer than 64 bits. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;

		if (shift == 63 && b > 1)
			return -1;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* The next block's header and payload, or the end record. */
static int next_block(struct trace_reader *r, struct tv1 *t, char *err, size_t errlen)
{
	uint8_t hdr[TRACE_V1_BLOCK_HDR];
	uint64_t at = t->off;
	size_t got;
	uint32_t magic, plen;
	int ret;

	ret = tv1_read(t, hdr, 4, &got);
	if (ret)
		goto ioerr;
	if (got == 0)
		return trace_bad(err, errlen, "%s: ends at byte offset %llu without its end record: the recording "
				 "was cut short (%llu events read)", r->path, (unsigned long long)at,
				 (unsigned long long)t->events);
	if (got < 4)
		return tv1_short(r, t, "a block", at, 4, got, err, errlen);
	magic = tv1_get32(hdr);
	if (magic == TRACE_V1_END_MAGIC) {
		ret = tv1_read(t, hdr + 4, TRACE_V1_END_LEN - 4, &got);
		if (ret)
			goto ioerr;
		if (got < TRACE_V1_END_LEN - 4)
			return tv1_short(r, t, "the end record", at, TRACE_V1_END_LEN, got + 4, err, errlen);
		if (XXH64(hdr, 24, 0) != tv1_get64(hdr + 24) || tv1_get32(hdr + 4))
			return trace_bad(err, errlen, "%s: byte offset %llu: the end record's checksum does not match: "
					 "the file is corrupt", r->path, (unsigned long long)at);
		if (tv1_get64(hdr + 8) != t->events || tv1_get64(hdr + 16) != t->dropped)
			return trace_bad(err, errlen, "%s: byte offset %llu: the end record counts %llu events and %llu "
					 "dropped, the blocks held %llu and %llu: blocks are missing", r->path,
					 (unsigned long long)at, (unsigned long long)tv1_get64(hdr + 8),
					 (unsigned long long)tv1_get64(hdr + 16), (unsigned long long)t->events,
					 (unsigned long long)t->dropped);
		if (fgetc(t->f) != EOF)
			return trace_bad(err, errlen, "%s: byte offset %llu: bytes after the end record", r->path,
					 (unsigned long long)t->off);
		t->done = true;
		return 0;
	}
	if (magic != TRACE_V1_BLOCK_MAGIC)
		return trace_bad(err, errlen, "%s: byte offset %llu: neither a block nor the end record (magic "
				 "0x%08x): the file is corrupt", r->path, (unsigned long long)at, magic);
	ret = tv1_read(t, hdr + 4, TRACE_V1_BLOCK_HDR - 4, &got);
	if (ret)
		goto ioerr;
	if (got < TRACE_V1_BLOCK_HDR - 4)
		return tv1_short(r, t, "the block", at, TRACE_V1_BLOCK_HDR, got + 4, err, errlen);
	plen = tv1_get32(hdr + 4);
	if (plen > TRACE_V1_MAX_PAYLOAD)
		return trace_bad(err, errlen, "%s: byte offset %llu: a block of %u bytes (at most %u): the file is "
				 "corrupt", r->path, (unsigned long long)at, plen, TRACE_V1_MAX_PAYLOAD);
	if (plen > t->blkcap) {
		uint8_t *nb = realloc(t->blk, plen);

		if (!nb) {
			snprintf(err, errlen, "%s: out of memory", r->path);
			return -ENOMEM;
		}
		t->blk = nb;
		t->blkcap = plen;
	}
	ret = tv1_read(t, t->blk, plen, &got);
	if (ret)
		goto ioerr;
	if (got < plen)
		return tv1_short(r, t, "the block", at, TRACE_V1_BLOCK_HDR + plen, TRACE_V1_BLOCK_HDR + got, err,
				 errlen);
	if (XXH64(t->blk, plen, XXH64(hdr, 24, 0)) != tv1_get64(hdr + 24))
		return trace_bad(err, errlen, "%s: byte offset %llu: the checksum of the block of %u bytes there does "
				 "not match: the file is corrupt", r->path, (unsigned long long)at, plen);
	t->blkoff = at;
	t->plen = plen;
	t->pos = 0;
	t->nrec = 0;
	t->left = tv1_get32(hdr + 8);
	t->dropped += tv1_get32(hdr + 12);
	r->dropped = t->dropped;
	t->t = tv1_get64(hdr + 16);
	return 0;
ioerr:
	snprintf(err, errlen, "%s: reading: %s", r->path, strerror(-ret));
	return ret;
}

static int tv1_next(struct trace_reader *r, struct trace_event *ev, char *err, size_t errlen)
{
	struct tv1 *t = r->priv;
	const uint8_t *p, *end;
	uint64_t v[7], at;
	const struct trace_model_desc *m;
	uint32_t dup;
	int ret;

	while (!t->done && t->pos >= t->plen) {
		if (t->left)
			return trace_bad(err, errlen, "%s: byte offset %llu: the block there declares %u more records "
					 "than it holds", r->path, (unsigned long long)t->blkoff, t->left);
		ret = next_block(r, t, err, errlen);
		if (ret)
			return ret;
	}
	if (t->done)
		return 0;
	at = t->blkoff + TRACE_V1_BLOCK_HDR + t->pos;
	p = t->blk + t->pos;
	end = t->blk + t->plen;
	if (!t->left)
		return trace_bad(err, errlen, "%s: byte offset %llu: bytes after the %u records the block at byte "
				 "offset %llu declares", r->path, (unsigned long long)at, t->nrec,
				 (unsigned long long)t->blkoff);
	ev->kind = (enum trace_kind)*p++;
	if (ev->kind != TRACE_ACQUIRE && ev->kind != TRACE_HINT)
		return trace_bad(err, errlen, "%s: byte offset %llu: record kind %u (1: acquire, 2: hint)", r->path,
				 (unsigned long long)at, (unsigned)ev->kind);
	for (int i = 0; i < 7; i++)
		if (get_varint(&p, end, &v[i]))
			return trace_bad(err, errlen, "%s: byte offset %llu: a record cut short by its block's end, or "
					 "a number longer than 64 bits", r->path, (unsigned long long)at);
	/* dt, client, seq, token, model, layer, n */
	if (v[1] > UINT32_MAX || v[3] > UINT32_MAX)
		return trace_bad(err, errlen, "%s: byte offset %llu: client %llu or token %llu above 32 bits", r->path,
				 (unsigned long long)at, (unsigned long long)v[1], (unsigned long long)v[3]);
	if (v[4] >= t->nmodels)
		return trace_bad(err, errlen, "%s: byte offset %llu: model index %llu, the trace has %u models",
				 r->path, (unsigned long long)at, (unsigned long long)v[4], t->nmodels);
	m = &t->models[v[4]];
	if (m->nlayers && v[5] >= m->nlayers)
		return trace_bad(err, errlen, "%s: byte offset %llu: model %s layer %llu: it has %u layers", r->path,
				 (unsigned long long)at, m->name, (unsigned long long)v[5], m->nlayers);
	if (!v[6] || v[6] > TRACE_MAX_EXPERTS)
		return trace_bad(err, errlen, "%s: byte offset %llu: %llu experts in one record (1 to %u)", r->path,
				 (unsigned long long)at, (unsigned long long)v[6], TRACE_MAX_EXPERTS);
	for (uint32_t i = 0; i < v[6]; i++) {
		uint64_t x;

		if (get_varint(&p, end, &x))
			return trace_bad(err, errlen, "%s: byte offset %llu: a record cut short by its block's end",
					 r->path, (unsigned long long)at);
		if (x > UINT32_MAX || (m->nexperts && x >= m->nexperts))
			return trace_bad(err, errlen, "%s: byte offset %llu: model %s layer %llu: expert %llu, it has "
					 "%u experts a layer", r->path, (unsigned long long)at, m->name,
					 (unsigned long long)v[5], (unsigned long long)x, m->nexperts);
		ev->experts[i] = (uint32_t)x;
	}
	if (trace_ids_dup(ev->experts, (uint32_t)v[6], &dup))
		return trace_bad(err, errlen, "%s: byte offset %llu: model %s layer %llu: expert %u named twice",
				 r->path, (unsigned long long)at, m->name, (unsigned long long)v[5], dup);
	t->t += v[0];
	ev->t_ns = t->t;
	ev->client = (uint32_t)v[1];
	ev->seq = v[2];
	ev->token = (uint32_t)v[3];
	ev->model = (uint32_t)v[4];
	ev->layer = (uint32_t)v[5];
	ev->nexperts = (uint32_t)v[6];
	t->pos = (uint32_t)(p - t->blk);
	t->left--;
	t->nrec++;
	t->events++;
	return 1;
}

static void tv1_free(struct tv1 *t)
{
	if (!t)
		return;
	if (t->f)
		fclose(t->f);
	free(t->models);
	free(t->names);
	free(t->seqs);
	free(t->seqnames);
	free(t->strings);
	free(t->blk);
	free(t);
}

static void tv1_close(struct trace_reader *r)
{
	tv1_free(r->priv);
}

static const struct trace_ops tv1_ops = { .next = tv1_next, .close = tv1_close };

int trace_v1_open(struct trace_reader *r, FILE *f, char *err, size_t errlen)
{
	struct tv1 *t = calloc(1, sizeof(*t));
	int ret;

	if (!t) {
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", r->path);
		return -ENOMEM;
	}
	t->f = f;
	ret = parse_header(r, t, err, errlen);
	/* A header without models is refused in parse_header(), which the
	 * analyzer cannot tell through trace_bad(). */
	if (!ret && !t->models) {
		trace_bad(err, errlen, "%s: no models", r->path);
		ret = -EINVAL;
	}
	if (ret) {
		tv1_free(t);
		return ret;
	}
	r->ops = &tv1_ops;
	r->priv = t;
	r->info.format = "tierd-trace-v1";
	r->info.nmodels = t->nmodels;
	r->info.models = t->names;
	r->info.model_desc = t->models;
	r->info.nlayers = t->models[0].nlayers;
	r->info.nexperts = t->models[0].nexperts;
	r->info.top_k = t->models[0].top_k;
	r->info.nsequences = t->nseqs;
	r->info.sequence_names = t->nseqs ? t->seqnames : NULL;
	r->info.sequences = t->nseqs ? t->seqs : NULL;
	return 0;
}

int tv1_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
