/* SPDX-License-Identifier: MIT */
/*
 * tierd-trace-v1 on disk (doc/trace-format.md describes it): the constants
 * and encoders its writers (trace-writer.c, trace-rec.c) and its reader
 * (trace-v1.c) share.  Not installed.  Integers are little-endian.
 */
#ifndef TIERD_TRACE_V1_H
#define TIERD_TRACE_V1_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trace.h"

#define TRACE_V1_MAGIC		"TIERDTRC"
#define TRACE_V1_MAGIC_LEN	8
#define TRACE_V1_VERSION	1
#define TRACE_V1_BLOCK_MAGIC	0x4b4c4254u	/* "TBLK" */
#define TRACE_V1_END_MAGIC	0x444e4554u	/* "TEND" */
#define TRACE_V1_BLOCK_HDR	32u	/* magic, payload, events, dropped, t0, hash */
#define TRACE_V1_END_LEN	32u	/* magic, 0, events, dropped, hash */
/* Largest block payload a reader accepts (writers use far less). */
#define TRACE_V1_MAX_PAYLOAD	(64u << 20)
/* Largest header, tables and checksum included: what a reader allocates at
 * open, so writers refuse beyond it too (a file they wrote would not read
 * back).  64 MiB is far above 65536 models' names. */
#define TRACE_V1_MAX_HEADER	(64u << 20)
/* Largest tables: names are at most 65535 bytes each. */
#define TRACE_V1_MAX_MODELS	65536u
#define TRACE_V1_MAX_SEQNAMES	(1u << 20)
/* Kind, seven varints, the experts' varints (ids are at most 32 bits). */
#define TRACE_V1_MAX_RECORD	(1u + 7u * 10u + TRACE_MAX_EXPERTS * 5u)

static inline void tv1_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void tv1_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void tv1_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t tv1_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t tv1_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t tv1_get64(const uint8_t *p)
{
	return (uint64_t)tv1_get32(p) | (uint64_t)tv1_get32(p + 4) << 32;
}

/* LEB128: 7 bits a byte, low first. */
static inline size_t tv1_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* One event record at p (room for TRACE_V1_MAX_RECORD bytes); returns its
 * length.  dt_ns: since the block's previous record, or its t0. */
static inline size_t tv1_put_event(uint8_t *p, uint64_t dt_ns, uint32_t client, uint64_t seq, uint32_t token,
				   enum trace_kind kind, uint32_t model, uint32_t layer, const uint32_t *experts,
				   uint32_t n)
{
	size_t o = 0;

	p[o++] = (uint8_t)kind;
	o += tv1_put_varint(p + o, dt_ns);
	o += tv1_put_varint(p + o, client);
	o += tv1_put_varint(p + o, seq);
	o += tv1_put_varint(p + o, token);
	o += tv1_put_varint(p + o, model);
	o += tv1_put_varint(p + o, layer);
	o += tv1_put_varint(p + o, n);
	for (uint32_t i = 0; i < n; i++)
		o += tv1_put_varint(p + o, experts[i]);
	return o;
}

/* The header: *len bytes into a new buffer (free it); -ENOMEM, -EINVAL for
 * a name longer than 65535 bytes or too many entries, or -EFBIG for a header
 * above TRACE_V1_MAX_HEADER (then *len is the size it would have). */
int tv1_header(uint8_t **out, size_t *len, uint64_t realtime_ns, const struct trace_model_desc *models,
	       uint32_t nmodels, const struct trace_seq_desc *seqs, uint32_t nseqs);
/* Fills the TRACE_V1_BLOCK_HDR bytes at blk, whose payload follows them. */
void tv1_block_seal(uint8_t *blk, uint32_t payload_len, uint32_t nevents, uint32_t dropped, uint64_t t0_ns);
void tv1_end(uint8_t out[TRACE_V1_END_LEN], uint64_t events, uint64_t dropped);
/* All of buf to fd (short writes and EINTR retried); 0 or -errno.  The
 * recorder's writer thread and trace_writer both write through it. */
int tv1_write_full(int fd, const void *buf, size_t len);

#endif
