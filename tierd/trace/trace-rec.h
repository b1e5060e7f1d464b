/* SPDX-License-Identifier: MIT */
/*
 * The daemon's recorder: what clients ask (ACQUIRE batches, ROUTING_HINTs)
 * written as tierd-trace-v1 while the service runs.
 *
 * Cost on the service's loop: the hooks encode a record into a 1 MiB
 * buffer (a few dozen ns); a full buffer is handed to a writer thread, and
 * when the writer holds every buffer (the disk is slower than the clients)
 * events are dropped and counted, never waited for.  The loop flushes a
 * partial buffer now and then (trace_rec_flush), so that a recording of a
 * quiet daemon still reaches the disk.
 *
 * Every function runs on the loop's thread, except the writer's own.
 */
#ifndef TIERD_TRACE_REC_H
#define TIERD_TRACE_REC_H

#include <stdbool.h>
#include <stdint.h>

#include "tierd-proto.h"
#include "trace.h"

struct trace_rec;

struct trace_rec_stats {
	uint64_t events;	/* recorded into buffers */
	uint64_t dropped;	/* lost: no buffer free, the size limit, a write error */
	uint64_t bytes;		/* written to the file */
	int error;		/* first write error (negative errno), 0: none */
	bool full;		/* max_bytes reached */
};

/*
 * Starts recording into fd (an empty file opened for writing; owned by the
 * recorder from now on, closed on failure too); path names it in messages.
 * max_bytes: the file stops growing there (0: no limit).
 */
int trace_rec_start(struct trace_rec **out, int fd, const char *path, const struct trace_model_desc *models,
		    uint32_t nmodels, uint64_t max_bytes, char *err, size_t errlen);
/* An ACQUIRE batch: one event per run of keys of one (model, layer). */
void trace_rec_acquire(struct trace_rec *r, uint32_t client, uint32_t token, const struct tierd_key *keys,
		       uint32_t n);
/* A ROUTING_HINT: ids out of the model's range or repeated are left out. */
void trace_rec_hint(struct trace_rec *r, uint32_t client, uint32_t token, uint32_t model, uint32_t layer,
		    const struct tierd_proto_hint *h, uint32_t n);
/* Hands what is buffered to the writer. */
void trace_rec_flush(struct trace_rec *r);
void trace_rec_get_stats(const struct trace_rec *r, struct trace_rec_stats *st);
const char *trace_rec_path(const struct trace_rec *r);
/* Writes out every buffer and the end record, closes the file; 0, or the
 * first write error with err.  Frees r; st gets the final counts. */
int trace_rec_stop(struct trace_rec *r, struct trace_rec_stats *st, char *err, size_t errlen);

#endif
