/* SPDX-License-Identifier: MIT */
/*
 * safetensors header parser.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of
 * JSON ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]},
 * "__metadata__": {"k": "v"}}), then the data area; data_offsets are relative
 * to the start of the data area.  Everything is validated before a tensor is
 * returned, to the reference reader's rules (the safetensors crate): header
 * length limit, strict UTF-8 and JSON, types, dtype names, that the shape
 * times the dtype size equals the byte length (without overflow), and that
 * the ranges tile the data area: from byte 0, no overlap, no gap, no bytes
 * after the last tensor.  doc/README-catalog.md lists the cases.  Errors name
 * the file and the fault.
 */
#ifndef TIERD_SAFETENSORS_H
#define TIERD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tierd-types.h"

/* Larger headers are refused (the reference implementation's limit, decimal). */
#define ST_MAX_HEADER_LEN	100000000ULL

struct st_tensor {
	char *name;
	enum tierd_dtype dtype;
	uint32_t ndim;
	uint64_t shape[TIERD_MAX_DIMS];
	uint64_t begin;		/* byte offsets relative to the data area */
	uint64_t end;
};

struct st_header {
	uint64_t header_len;	/* JSON bytes */
	uint64_t data_start;	/* 8 + header_len: file offset of the data area */
	uint64_t file_size;
	size_t ntensors;
	struct st_tensor *tensors;	/* sorted by name */
};

/*
 * Parses a header from memory.  buf holds the start of the file (at least the
 * 8-byte length and the JSON); file_size is the size of the whole file
 * (>= len), against which data_offsets are checked.  name is used in messages.
 * Returns 0, or -EINVAL/-ENOMEM with "name: fault" in err.
 */
int st_header_parse(struct st_header **out, const char *name, const void *buf, size_t len,
		    uint64_t file_size, char *err, size_t errlen);

/* Reads and parses the header of an open file (pread; the offset is untouched). */
int st_header_read(struct st_header **out, const char *name, int fd, char *err, size_t errlen);

void st_header_free(struct st_header *h);

/* Binary search by name; NULL when absent. */
const struct st_tensor *st_header_find(const struct st_header *h, const char *name);

/* "BF16" -> TIERD_DTYPE_BF16; -EINVAL when unknown. */
int st_dtype_parse(const char *s, enum tierd_dtype *out);

#endif
