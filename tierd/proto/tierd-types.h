/* SPDX-License-Identifier: MIT */
/*
 * Types the daemon and the client library share, one definition each:
 * the expert key, and the tensor element types (the safetensors dtypes,
 * numbered as they travel in ACQUIRED).  Installed with tierd-client.h, which
 * includes it.
 */
#ifndef TIERD_TYPES_H
#define TIERD_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An expert: the model's index (its position in WELCOME, see
 * tierd_client_model_find()), the layer and the expert's number in it.  The
 * same in the daemon, on the wire and in the client library. */
struct tierd_key {
	uint32_t model;
	uint32_t layer;
	uint32_t expert;
};

/* Dimensions of a tensor, at most. */
#define TIERD_MAX_DIMS	8

/* Frozen numbering: new types are appended. */
enum tierd_dtype {
	TIERD_DTYPE_BOOL, TIERD_DTYPE_U8, TIERD_DTYPE_I8, TIERD_DTYPE_F8_E4M3,
	TIERD_DTYPE_F8_E5M2, TIERD_DTYPE_I16, TIERD_DTYPE_U16, TIERD_DTYPE_F16,
	TIERD_DTYPE_BF16, TIERD_DTYPE_I32, TIERD_DTYPE_U32, TIERD_DTYPE_F32,
	TIERD_DTYPE_I64, TIERD_DTYPE_U64, TIERD_DTYPE_F64,
	TIERD_DTYPE_F8_E8M0,		/* 8-bit power-of-two scales (MX block scales) */
	TIERD_DTYPE_COUNT,
};

/* The safetensors name ("BF16"), or "unknown". */
const char *tierd_dtype_name(uint32_t dtype);
/* Bytes per element, or 0 when unknown. */
size_t tierd_dtype_size(uint32_t dtype);

#ifdef __cplusplus
}
#endif

#endif
