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
/* Most layers and experts per layer a trace's model may have (both formats). */
#define TRACE_MAX_LAYERS	65536u
#define TRACE_MAX_BANK		(1u << 20)

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
	/* Token index within the sequence: for imports, the row's index in its
	 * phase (prefill rows from 0, then decode rows from 0 again); for
	 * recordings, the tokens the client had reported (TOKEN_REPORT) when it
	 * sent the request. */
	uint32_t token;
	enum trace_kind kind;
	uint32_t model;		/* index into trace_info.models */
	uint32_t layer;
	uint32_t nexperts;
	uint32_t experts[TRACE_MAX_EXPERTS];
};

/* A model as a trace knows it: 0 for what is unknown. */
struct trace_model_desc {
	const char *name;
	uint32_t nlayers, nexperts, top_k;
};

/* A named sequence: a prompt of an import. */
struct trace_seq_desc {
	uint32_t client;
	uint64_t seq;
	const char *name;
};

/* What a trace holds, known once it is opened. */
struct trace_info {
	const char *format;	/* "tierd-trace-v1" or "routing-json" */
	uint32_t nmodels;
	const char *const *models;	/* names */
	uint32_t nlayers, nexperts, top_k;	/* of model 0; 0 when unknown */
	uint32_t nsequences;	/* prompts, or distinct (client, seq), when known */
	const char *const *sequence_names;	/* prompt names; NULL for recordings */
	/* Added after the first version, so at the end: */
	const struct trace_model_desc *model_desc;	/* nmodels entries */
	const struct trace_seq_desc *sequences;	/* nsequences entries; NULL for recordings */
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
/* Events a recording lost (the daemon's writer fell behind, or its size
 * limit was reached), as its blocks say: complete once trace_next has
 * returned 0.  0 for imports. */
uint64_t trace_dropped(const struct trace_reader *r);

/*
 * Writes tierd-trace-v1 (doc/trace-format.md): the file is created, never
 * replaced (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0640), events are buffered and
 * written in checksummed blocks, and trace_writer_close() writes the end
 * record that tells a complete recording from a cut one.  Events must come
 * in time order (t_ns never decreasing), name a model of the table, a layer
 * and experts below its counts (where known), 1 to TRACE_MAX_EXPERTS
 * distinct experts; anything else is -EINVAL.  A header above the readers'
 * 64 MiB (the models' and sequences' names) is -EFBIG at create, before the
 * file is made.  Errors name the path.
 */
struct trace_writer;

int trace_writer_create(struct trace_writer **out, const char *path, const struct trace_model_desc *models,
			uint32_t nmodels, const struct trace_seq_desc *seqs, uint32_t nseqs, char *err,
			size_t errlen);
int trace_writer_add(struct trace_writer *w, const struct trace_event *ev, char *err, size_t errlen);
/* Writes what is buffered and the end record, closes; 0 when every byte
 * reached the file (fsync'd).  Frees w whatever happens. */
int trace_writer_close(struct trace_writer *w, char *err, size_t errlen);
/* Closes and deletes the file (a conversion that failed half way). */
void trace_writer_abort(struct trace_writer *w);

#endif
