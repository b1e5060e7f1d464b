/* SPDX-License-Identifier: MIT */
/*
 * The safetensors parser's parts share these: safetensors.c decodes and
 * checks the header (json-c's tree), safetensors-walk.c first walks its text
 * strictly, refusing what the reference reader refuses and json-c's tree
 * would hide.  Other modules use safetensors.h.
 */
#ifndef TIERD_SAFETENSORS_INT_H
#define TIERD_SAFETENSORS_INT_H

#include <stddef.h>

#include <json-c/json.h>

#include "safetensors.h"

/* serde_json's recursion limit: 127 levels of nesting pass, 128 do not. */
#define ST_JSON_DEPTH 127

enum st_field { F_DTYPE, F_SHAPE, F_OFFSETS, F_COUNT };
static const char *const st_field_names[F_COUNT] = { "dtype", "shape", "data_offsets" };

/* Messages quote names from the file: short and printable, in buf. */
const char *st_printable(const char *s, char *buf, size_t len);
/* "FILE: " and the message in err; returns -EINVAL. */
int st_fail(char *err, size_t errlen, const char *file, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* One tensor entry of the tree: dtype, shape and data_offsets, checked. */
int st_tensor_decode(struct st_tensor *t, struct json_object *obj, const char *file, const char *label,
		     char *err, size_t errlen);

/* safetensors-walk.c */
/* The offset of the first byte that is not strict UTF-8, len when all are. */
size_t st_utf8_valid_upto(const unsigned char *s, size_t len);
/* The strict walk over the header's text: 0, or -EINVAL with err. */
int st_walk_header(const char *json, size_t len, const char *file, char *err, size_t errlen);

#endif
