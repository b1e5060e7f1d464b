/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "safetensors-int.h"

int st_dtype_parse(const char *s, enum tierd_dtype *out)
{
	for (unsigned i = 0; i < TIERD_DTYPE_COUNT; i++) {
		if (!strcmp(s, tierd_dtype_name(i))) {
			*out = (enum tierd_dtype)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Messages quote names from the file: keep them short and printable. */
const char *st_printable(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 4 < len; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i]) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

int st_fail(char *err, size_t errlen, const char *file, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!errlen)
		return -EINVAL;
	n = snprintf(err, errlen, "%s: ", file);
	if (n < 0 || (size_t)n >= errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

void st_header_free(struct st_header *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->ntensors; i++)
		free(h->tensors[i].name);
	free(h->tensors);
	free(h);
}

/* A JSON number that must be a non-negative integer (the walk has refused -0
 * and integers past 64 bits). */
static int get_u64(struct json_object *v, uint64_t *out, const char **why)
{
	if (!json_object_is_type(v, json_type_int)) {
		*why = "is not an integer";
		return -EINVAL;
	}
	if (json_object_get_int64(v) < 0) {
		*why = "is negative";
		return -EINVAL;
	}
	*out = json_object_get_uint64(v);
	return 0;
}

/* What serde checks when it reads a tensor entry: the three keys, their types,
 * a known dtype. */
int st_tensor_decode(struct st_tensor *t, struct json_object *obj, const char *file, const char *label,
			 char *err, size_t errlen)
{
	struct json_object *v[F_COUNT] = { NULL };
	bool have[F_COUNT] = { false };
	const char *why;
	size_t n;

	if (!json_object_is_type(obj, json_type_object))
		return st_fail(err, errlen, file, "%s: not a JSON object", label);
	json_object_object_foreach(obj, key, val) {
		/* A JSON null comes back as a NULL value: remember the key was there. */
		for (int k = 0; k < F_COUNT; k++) {
			if (!strcmp(key, st_field_names[k])) {
				v[k] = val;
				have[k] = true;
			}
		}
	}
	for (int k = 0; k < F_COUNT; k++)
		if (!have[k])
			return st_fail(err, errlen, file, "%s: missing %s", label, st_field_names[k]);

	if (!json_object_is_type(v[F_DTYPE], json_type_string))
		return st_fail(err, errlen, file, "%s: dtype is not a string", label);
	if (st_dtype_parse(json_object_get_string(v[F_DTYPE]), &t->dtype)) {
		char dbuf[40];

		return st_fail(err, errlen, file, "%s: unknown dtype '%s'", label,
			    st_printable(json_object_get_string(v[F_DTYPE]), dbuf, sizeof(dbuf)));
	}

	if (!json_object_is_type(v[F_SHAPE], json_type_array))
		return st_fail(err, errlen, file, "%s: shape is not an array", label);
	n = json_object_array_length(v[F_SHAPE]);
	for (size_t i = 0; i < n; i++) {
		uint64_t dim;

		if (get_u64(json_object_array_get_idx(v[F_SHAPE], i), &dim, &why))
			return st_fail(err, errlen, file, "%s: shape[%zu] %s", label, i, why);
		if (i < TIERD_MAX_DIMS)
			t->shape[i] = dim;
	}
	t->ndim = n > TIERD_MAX_DIMS ? TIERD_MAX_DIMS + 1 : (uint32_t)n;

	if (!json_object_is_type(v[F_OFFSETS], json_type_array) || json_object_array_length(v[F_OFFSETS]) != 2)
		return st_fail(err, errlen, file, "%s: data_offsets is not an array of two integers", label);
	if (get_u64(json_object_array_get_idx(v[F_OFFSETS], 0), &t->begin, &why))
		return st_fail(err, errlen, file, "%s: data_offsets[0] %s", label, why);
	if (get_u64(json_object_array_get_idx(v[F_OFFSETS], 1), &t->end, &why))
		return st_fail(err, errlen, file, "%s: data_offsets[1] %s", label, why);
	return 0;
}

/* What Metadata::validate checks of one tensor, and that it lies in the file. */
static int tensor_check(const struct st_tensor *t, const char *file, const char *label, uint64_t data_len,
			char *err, size_t errlen)
{
	uint64_t nelem = 1, nbits;

	/* A limit of the catalog, not of the format (an earlier duplicate may
	 * have more: only the entry kept is checked here). */
	if (t->ndim > TIERD_MAX_DIMS)
		return st_fail(err, errlen, file, "%s: shape has more than %d dimensions, the most supported",
			    label, TIERD_MAX_DIMS);
	for (uint32_t i = 0; i < t->ndim; i++)
		if (__builtin_mul_overflow(nelem, t->shape[i], &nelem))
			return st_fail(err, errlen, file, "%s: shape overflows 64 bits", label);
	/* The reference counts bits (for its sub-byte dtypes) and overflows on those. */
	if (__builtin_mul_overflow(nelem, 8 * (uint64_t)tierd_dtype_size(t->dtype), &nbits))
		return st_fail(err, errlen, file, "%s: shape x dtype size overflows 64 bits", label);
	if (t->end < t->begin)
		return st_fail(err, errlen, file, "%s: data_offsets [%" PRIu64 ",%" PRIu64 ") end before begin",
			    label, t->begin, t->end);
	if (t->end > data_len)
		return st_fail(err, errlen, file,
			    "%s: data_offsets [%" PRIu64 ",%" PRIu64 ") beyond the data area (%" PRIu64 " bytes)",
			    label, t->begin, t->end, data_len);
	if (t->end - t->begin != nbits / 8)
		return st_fail(err, errlen, file,
			    "%s: shape x %s size is %" PRIu64 " bytes but data_offsets [%" PRIu64 ",%" PRIu64 ") hold %" PRIu64,
			    label, tierd_dtype_name(t->dtype), nbits / 8, t->begin, t->end, t->end - t->begin);
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_offsets(const void *a, const void *b)
{
	const struct st_tensor *x = *(const struct st_tensor * const *)a;
	const struct st_tensor *y = *(const struct st_tensor * const *)b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return (x->end > y->end) - (x->end < y->end);
}

/*
 * In offset order the tensors tile the data area from byte 0 to its end: no
 * overlap, no gap, nothing after the last one (Metadata::validate and the
 * reference's buffer-length check).  A zero-sized tensor sits at a boundary.
 */
static int check_layout(struct st_header *h, const char *file, char *err, size_t errlen)
{
	struct st_tensor **by = calloc(h->ntensors ? h->ntensors : 1, sizeof(*by));
	const struct st_tensor *prev = NULL;
	uint64_t pos = 0, data_len = h->file_size - h->data_start;
	int r = 0;

	if (!by)
		return -ENOMEM;
	for (size_t i = 0; i < h->ntensors; i++)
		by[i] = &h->tensors[i];
	qsort(by, h->ntensors, sizeof(*by), cmp_offsets);
	for (size_t i = 0; i < h->ntensors && !r; i++) {
		const struct st_tensor *t = by[i];
		char a[80], b[80];

		if (prev && t->begin < pos)
			r = st_fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") overlap '%s' [%" PRIu64 ",%" PRIu64 ")",
				 st_printable(t->name, a, sizeof(a)), t->begin, t->end,
				 st_printable(prev->name, b, sizeof(b)), prev->begin, prev->end);
		else if (t->begin > pos)
			r = st_fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") leave bytes [%" PRIu64 ",%" PRIu64 ") of the data area to no tensor",
				 st_printable(t->name, a, sizeof(a)), t->begin, t->end, pos, t->begin);
		pos = t->end;
		prev = t;
	}
	if (!r && pos != data_len)
		r = st_fail(err, errlen, file, "%" PRIu64 " bytes after the last tensor (data ends at %" PRIu64 " of a %" PRIu64 "-byte data area)",
			 data_len - pos, pos, data_len);
	free(by);
	return r;
}

static int check_metadata(struct json_object *md, const char *file, char *err, size_t errlen)
{
	/* serde reads it as an Option: null is no metadata. */
	if (!md)
		return 0;
	if (!json_object_is_type(md, json_type_object))
		return st_fail(err, errlen, file, "__metadata__ is not a JSON object");
	json_object_object_foreach(md, key, val) {
		char kbuf[40];

		if (!json_object_is_type(val, json_type_string))
			return st_fail(err, errlen, file, "__metadata__ '%s' is not a string",
				    st_printable(key, kbuf, sizeof(kbuf)));
	}
	return 0;
}

int st_header_parse(struct st_header **out, const char *file, const void *buf, size_t len,
		    uint64_t file_size, char *err, size_t errlen)
{
	struct json_tokener *tok = NULL;
	struct json_object *root = NULL;
	struct st_header *h = NULL;
	const char *json = (const char *)buf + 8;
	uint64_t hl, le;
	size_t i, bad_at;
	int r;

	*out = NULL;
	if (len < 8 || file_size < 8) {
		r = st_fail(err, errlen, file, "truncated: %" PRIu64 " bytes, shorter than the 8-byte header length",
			 file_size < len ? file_size : (uint64_t)len);
		goto out;
	}
	memcpy(&le, buf, 8);
	hl = le64toh(le);
	if (hl > ST_MAX_HEADER_LEN) {
		r = st_fail(err, errlen, file, "header length %" PRIu64 " exceeds the limit of %llu bytes",
			 hl, ST_MAX_HEADER_LEN);
		goto out;
	}
	if (hl > file_size - 8) {
		r = st_fail(err, errlen, file, "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
			 hl, file_size);
		goto out;
	}
	if (hl > len - 8) {
		r = st_fail(err, errlen, file, "truncated: header length %" PRIu64 " but only %zu header bytes available",
			 hl, len - 8);
		goto out;
	}
	if (memchr(json, '\0', hl)) {
		r = st_fail(err, errlen, file, "header contains a NUL byte");
		goto out;
	}
	bad_at = st_utf8_valid_upto((const unsigned char *)json, hl);
	if (bad_at < hl) {
		r = st_fail(err, errlen, file, "header is not valid UTF-8 at byte %zu", bad_at);
		goto out;
	}
	tok = json_tokener_new_ex(ST_JSON_DEPTH);
	if (!tok) {
		r = -ENOMEM;
		goto out;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, json, (int)hl);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		enum json_tokener_error je = json_tokener_get_error(tok);

		r = st_fail(err, errlen, file, "header is not valid JSON: %s at byte %zu",
			 je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je),
			 json_tokener_get_parse_end(tok));
		goto out;
	}
	if (!json_object_is_type(root, json_type_object)) {
		r = st_fail(err, errlen, file, "header is not a JSON object");
		goto out;
	}
	r = st_walk_header(json, hl, file, err, errlen);
	if (r)
		goto out;

	h = calloc(1, sizeof(*h));
	if (!h) {
		r = -ENOMEM;
		goto out;
	}
	h->header_len = hl;
	h->data_start = 8 + hl;
	h->file_size = file_size;
	h->tensors = calloc((size_t)json_object_object_length(root) + 1, sizeof(*h->tensors));
	if (!h->tensors) {
		r = -ENOMEM;
		goto out;
	}
	i = 0;
	/* json-c kept the last value of a duplicated name, as serde does. */
	json_object_object_foreach(root, key, val) {
		char label[128], nbuf[80];

		if (!strcmp(key, "__metadata__")) {
			r = check_metadata(val, file, err, errlen);
			if (r)
				goto out;
			continue;
		}
		snprintf(label, sizeof(label), "tensor '%s'", st_printable(key, nbuf, sizeof(nbuf)));
		r = st_tensor_decode(&h->tensors[i], val, file, label, err, errlen);
		if (!r)
			r = tensor_check(&h->tensors[i], file, label, file_size - h->data_start, err, errlen);
		if (r)
			goto out;
		h->tensors[i].name = strdup(key);
		if (!h->tensors[i].name) {
			r = -ENOMEM;
			goto out;
		}
		h->ntensors = ++i;
	}
	r = check_layout(h, file, err, errlen);
	if (r)
		goto out;
	qsort(h->tensors, h->ntensors, sizeof(*h->tensors), cmp_name);
	*out = h;
	h = NULL;
out:
	st_header_free(h);
	json_object_put(root);
	if (tok)
		json_tokener_free(tok);
	return r;
}

int st_header_read(struct st_header **out, const char *file, int fd, char *err, size_t errlen)
{
	unsigned char head[8];
	struct stat st;
	uint64_t hl, le;
	char *buf = NULL;
	ssize_t n;
	int r;

	*out = NULL;
	if (fstat(fd, &st)) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", file, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode))
		return st_fail(err, errlen, file, "not a regular file");
	n = pread(fd, head, sizeof(head), 0);
	if (n < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: reading the header: %s", file, strerror(-r));
		return r;
	}
	if ((size_t)n < sizeof(head))
		return st_header_parse(out, file, head, (size_t)n, (uint64_t)st.st_size, err, errlen);
	memcpy(&le, head, 8);
	hl = le64toh(le);
	/* Let the parser report length faults before anything is allocated from the length. */
	if (hl > ST_MAX_HEADER_LEN || hl > (uint64_t)st.st_size - 8)
		return st_header_parse(out, file, head, sizeof(head), (uint64_t)st.st_size, err, errlen);
	buf = malloc(8 + hl);
	if (!buf)
		return -ENOMEM;
	for (size_t got = 0; got < 8 + hl; got += (size_t)n) {
		n = pread(fd, buf + got, 8 + hl - got, (off_t)got);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: reading the header: %s", file, strerror(-r));
			goto out;
		}
		if (n == 0) {
			r = st_fail(err, errlen, file, "truncated while reading the header");
			goto out;
		}
	}
	r = st_header_parse(out, file, buf, 8 + hl, (uint64_t)st.st_size, err, errlen);
out:
	free(buf);
	return r;
}

const struct st_tensor *st_header_find(const struct st_header *h, const char *name)
{
	struct st_tensor key = { .name = (char *)name };

	return bsearch(&key, h->tensors, h->ntensors, sizeof(*h->tensors), cmp_name);
}
