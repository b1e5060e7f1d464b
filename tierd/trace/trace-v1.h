/* SPDX-License-Identifier: MIT */
/*
 * tierd-trace-v1 on disk (doc/trace-format.md is its description): the
 * constants its writer (trace-writer.c, trace-rec.c) and its reader
 * (trace-v1.c) share.  Not installed.
 */
#ifndef TIERD_TRACE_V1_H
#define TIERD_TRACE_V1_H

#define TRACE_V1_MAGIC		"TIERDTRC"
#define TRACE_V1_MAGIC_LEN	8
#define TRACE_V1_VERSION	1

#endif
