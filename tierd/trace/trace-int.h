/* SPDX-License-Identifier: MIT */
/*
 * Inside the trace readers: what trace.c (open, dispatch by content) shares
 * with each format's reader (trace-json.c, trace-v1.c).  Not installed.
 */
#ifndef TIERD_TRACE_INT_H
#define TIERD_TRACE_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "trace.h"

struct trace_reader;

struct trace_ops {
	int (*next)(struct trace_reader *r, struct trace_event *ev, char *err, size_t errlen);
	void (*close)(struct trace_reader *r);
};

struct trace_reader {
	const struct trace_ops *ops;
	struct trace_info info;
	char *path;		/* for messages */
	uint64_t dropped;	/* events the recorder lost (tierd-trace-v1) */
	void *priv;		/* the format's state */
};

/* Formats err and returns -EINVAL: a malformed trace. */
int trace_bad(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Whether ids[0..n) names an id twice: true with it in *dup.  O(n log n):
 * events carry up to TRACE_MAX_EXPERTS ids. */
bool trace_ids_dup(const uint32_t *ids, uint32_t n, uint32_t *dup);

/* Each format's open: f is at offset 0 and becomes the reader's (closed on
 * failure too); r->path is set, the rest is the opener's. */
int trace_json_open(struct trace_reader *r, FILE *f, char *err, size_t errlen);
int trace_v1_open(struct trace_reader *r, FILE *f, char *err, size_t errlen);

#endif
