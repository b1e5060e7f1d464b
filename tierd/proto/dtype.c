/* SPDX-License-Identifier: MIT */
/* The one dtype table (tierd-types.h), built into the daemon and the client library. */
#include "config.h"

#include "tierd-types.h"

/* Exported from libtierd-client (its version script names tierd_dtype_*). */
#define DTYPE_API __attribute__((visibility("default")))

static const struct {
	const char *name;
	size_t size;
} dtypes[TIERD_DTYPE_COUNT] = {
	[TIERD_DTYPE_BOOL] = { "BOOL", 1 },
	[TIERD_DTYPE_U8] = { "U8", 1 },
	[TIERD_DTYPE_I8] = { "I8", 1 },
	[TIERD_DTYPE_F8_E4M3] = { "F8_E4M3", 1 },
	[TIERD_DTYPE_F8_E5M2] = { "F8_E5M2", 1 },
	[TIERD_DTYPE_I16] = { "I16", 2 },
	[TIERD_DTYPE_U16] = { "U16", 2 },
	[TIERD_DTYPE_F16] = { "F16", 2 },
	[TIERD_DTYPE_BF16] = { "BF16", 2 },
	[TIERD_DTYPE_I32] = { "I32", 4 },
	[TIERD_DTYPE_U32] = { "U32", 4 },
	[TIERD_DTYPE_F32] = { "F32", 4 },
	[TIERD_DTYPE_I64] = { "I64", 8 },
	[TIERD_DTYPE_U64] = { "U64", 8 },
	[TIERD_DTYPE_F64] = { "F64", 8 },
	[TIERD_DTYPE_F8_E8M0] = { "F8_E8M0", 1 },
};

DTYPE_API const char *tierd_dtype_name(uint32_t dtype)
{
	return dtype < TIERD_DTYPE_COUNT ? dtypes[dtype].name : "unknown";
}

DTYPE_API size_t tierd_dtype_size(uint32_t dtype)
{
	return dtype < TIERD_DTYPE_COUNT ? dtypes[dtype].size : 0;
}
