/* SPDX-License-Identifier: MIT */
/*
 * Routing traces: what clients did (acquires and routing hints, per client
 * and sequence, by layer), recorded by the daemon in tierd's own format and
 * read back, with the shared routing-trace layout (JSON: prompts, prefill
 * and decode rows) read through the same interface, so that both replay the
 * same way (tierctl replay, tierctl plan --trace).
 *
 * This header is the contract between the recorder/readers (trace.c,
 * trace-json.c) and their users (the replay lab, the planner).
 */
#ifndef TIERD_TRACE_H
#define TIERD_TRACE_H

#include <stddef.h>
#include <stdint.h>

/* Most expert ids one event carries (a layer's top-k, or a hint's list). */
#define TRACE_MAX_EXPERTS	256

enum trace_kind {
	/* A client acquired these experts of one layer (one ACQUIRE batch, or
	 * a decode row of the shared layout): what replay counts. */
	TRACE_ACQUIRE = 1,
	/* A routing hint: the client says it will need these (prefill rows
	 * of the shared layout): what policies learn from, never counted. */
	TRACE_HINT = 2,
};

struct trace_event {
	uint64_t t_ns;		/* since the recording started (0 in imports) */
	uint32_t client;	/* connection id, or prompt index for imports */
	uint64_t seq;		/* the client's sequence id (0: none given) */
	uint32_t token;		/* token index within the sequence */
	enum trace_kind kind;
	uint32_t model;		/* index into trace_info.models */
	uint32_t layer;
	uint32_t nexperts;
	uint32_t experts[TRACE_MAX_EXPERTS];
};

/* What a trace holds, known once it is opened. */
struct trace_info {
	const char *format;	/* "tierd-trace-v1" or "routing-json" */
	uint32_t nmodels;
	const char *const *models;	/* names */
	uint32_t nlayers, nexperts, top_k;	/* of model 0; 0 when unknown */
	uint32_t nsequences;	/* prompts, or distinct (client, seq), when known */
	const char *const *sequence_names;	/* prompt names; NULL for recordings */
};

struct trace_reader;

/*
 * Opens a trace, telling the two formats apart by their content.  A
 * malformed trace gets -EINVAL and err names what is wrong and where (line
 * or byte offset).
 */
int trace_open(struct trace_reader **out, const char *path, char *err, size_t errlen);
const struct trace_info *trace_info(const struct trace_reader *r);
/* 1 with the next event (in recorded order: for imports, each prompt's
 * prefill hints then its decode acquires, token by token, layer by layer),
 * 0 at the end, negative errno with err on a malformed record. */
int trace_next(struct trace_reader *r, struct trace_event *ev, char *err, size_t errlen);
void trace_close(struct trace_reader *r);

#endif
