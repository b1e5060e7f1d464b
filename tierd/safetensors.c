/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "safetensors.h"

static const struct {
	const char *name;
	size_t size;
} dtypes[ST_DTYPE_COUNT] = {
	[ST_BOOL] = { "BOOL", 1 },
	[ST_U8] = { "U8", 1 },
	[ST_I8] = { "I8", 1 },
	[ST_F8_E4M3] = { "F8_E4M3", 1 },
	[ST_F8_E5M2] = { "F8_E5M2", 1 },
	[ST_I16] = { "I16", 2 },
	[ST_U16] = { "U16", 2 },
	[ST_F16] = { "F16", 2 },
	[ST_BF16] = { "BF16", 2 },
	[ST_I32] = { "I32", 4 },
	[ST_U32] = { "U32", 4 },
	[ST_F32] = { "F32", 4 },
	[ST_I64] = { "I64", 8 },
	[ST_U64] = { "U64", 8 },
	[ST_F64] = { "F64", 8 },
	[ST_F8_E8M0] = { "F8_E8M0", 1 },
};

const char *st_dtype_name(enum st_dtype t)
{
	return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].name : "?";
}

size_t st_dtype_size(enum st_dtype t)
{
	return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].size : 0;
}

int st_dtype_parse(const char *s, enum st_dtype *out)
{
	for (unsigned i = 0; i < ST_DTYPE_COUNT; i++) {
		if (!strcmp(s, dtypes[i].name)) {
			*out = (enum st_dtype)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Messages quote names from the file: keep them short and printable. */
static const char *printable(const char *s, char *buf, size_t len)
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

__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t errlen, const char *file, const char *fmt, ...)
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

/*
 * json-c keeps the last of duplicate keys silently, and a duplicated tensor
 * name would make the file mean two things.  The JSON is already known to be
 * valid here, so a small scan finds the top-level keys; each is decoded by
 * json-c itself and looked up in a set.  json-c also takes single-quoted
 * strings, which JSON (and the scan) does not.  Returns 1 and the duplicate's
 * name, 2 for a single quote, 0 when neither, negative errno.
 */
static int find_duplicate_key(const char *json, size_t len, char **dup)
{
	struct json_object *seen = json_object_new_object();
	int depth = 0, r = 0;
	bool expect_key = false;

	if (!seen)
		return -ENOMEM;
	for (size_t i = 0; i < len && !r; i++) {
		char c = json[i];

		if (c == '"') {
			size_t j = i + 1;

			while (j < len && json[j] != '"')
				j += json[j] == '\\' ? 2 : 1;
			if (j >= len)
				break;
			if (depth == 1 && expect_key) {
				char *tmp = strndup(json + i, j + 1 - i);
				struct json_object *k = tmp ? json_tokener_parse(tmp) : NULL;

				free(tmp);
				if (!k || !json_object_is_type(k, json_type_string)) {
					json_object_put(k);
					r = -ENOMEM;
					break;
				}
				if (json_object_object_get_ex(seen, json_object_get_string(k), NULL)) {
					*dup = strdup(json_object_get_string(k));
					r = *dup ? 1 : -ENOMEM;
				} else if (json_object_object_add(seen, json_object_get_string(k), NULL)) {
					r = -ENOMEM;
				}
				json_object_put(k);
				expect_key = false;
			}
			i = j;
		} else if (c == '\'') {
			r = 2;
		} else if (c == '{' || c == '[') {
			depth++;
			expect_key = c == '{' && depth == 1;
		} else if (c == '}' || c == ']') {
			depth--;
		} else if (c == ',' && depth == 1) {
			expect_key = true;
		}
	}
	json_object_put(seen);
	return r;
}

/* A JSON number that must be a non-negative integer; json-c clamps overflow to UINT64_MAX. */
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
	if (*out == UINT64_MAX) {
		*why = "is too large";
		return -EINVAL;
	}
	return 0;
}

static int parse_tensor(struct st_tensor *t, struct json_object *obj, const char *file,
			const char *pname, uint64_t data_len, char *err, size_t errlen)
{
	struct json_object *dtype = NULL, *shape = NULL, *offs = NULL;
	bool have_dtype = false, have_shape = false, have_offs = false;
	uint64_t nelem = 1, nbytes, dim;
	const char *why;
	size_t n;

	if (!json_object_is_type(obj, json_type_object))
		return fail(err, errlen, file, "tensor '%s': not a JSON object", pname);
	json_object_object_foreach(obj, key, val) {
		char kbuf[40];

		/* A JSON null comes back as a NULL value: remember the key was there. */
		if (!strcmp(key, "dtype"))
			dtype = val, have_dtype = true;
		else if (!strcmp(key, "shape"))
			shape = val, have_shape = true;
		else if (!strcmp(key, "data_offsets"))
			offs = val, have_offs = true;
		else
			return fail(err, errlen, file, "tensor '%s': unexpected key '%s'", pname,
				    printable(key, kbuf, sizeof(kbuf)));
	}
	if (!have_dtype)
		return fail(err, errlen, file, "tensor '%s': missing dtype", pname);
	if (!have_shape)
		return fail(err, errlen, file, "tensor '%s': missing shape", pname);
	if (!have_offs)
		return fail(err, errlen, file, "tensor '%s': missing data_offsets", pname);

	if (!json_object_is_type(dtype, json_type_string))
		return fail(err, errlen, file, "tensor '%s': dtype is not a string", pname);
	if (st_dtype_parse(json_object_get_string(dtype), &t->dtype)) {
		char dbuf[40];

		return fail(err, errlen, file, "tensor '%s': unknown dtype '%s'", pname,
			    printable(json_object_get_string(dtype), dbuf, sizeof(dbuf)));
	}

	if (!json_object_is_type(shape, json_type_array))
		return fail(err, errlen, file, "tensor '%s': shape is not an array", pname);
	n = json_object_array_length(shape);
	if (n > CATALOG_MAX_DIMS)
		return fail(err, errlen, file, "tensor '%s': shape has %zu dimensions, at most %d supported",
			    pname, n, CATALOG_MAX_DIMS);
	t->ndim = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		if (get_u64(json_object_array_get_idx(shape, i), &dim, &why))
			return fail(err, errlen, file, "tensor '%s': shape[%zu] %s", pname, i, why);
		t->shape[i] = dim;
		if (__builtin_mul_overflow(nelem, dim, &nelem))
			return fail(err, errlen, file, "tensor '%s': shape overflows 64 bits", pname);
	}
	if (__builtin_mul_overflow(nelem, (uint64_t)st_dtype_size(t->dtype), &nbytes))
		return fail(err, errlen, file, "tensor '%s': shape x dtype size overflows 64 bits", pname);

	if (!json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2)
		return fail(err, errlen, file, "tensor '%s': data_offsets is not an array of two integers",
			    pname);
	if (get_u64(json_object_array_get_idx(offs, 0), &t->begin, &why))
		return fail(err, errlen, file, "tensor '%s': data_offsets begin %s", pname, why);
	if (get_u64(json_object_array_get_idx(offs, 1), &t->end, &why))
		return fail(err, errlen, file, "tensor '%s': data_offsets end %s", pname, why);
	if (t->end < t->begin)
		return fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") end before begin",
			    pname, t->begin, t->end);
	if (t->end > data_len)
		return fail(err, errlen, file,
			    "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") beyond the data area (%" PRIu64 " bytes)",
			    pname, t->begin, t->end, data_len);
	if (t->end - t->begin != nbytes)
		return fail(err, errlen, file,
			    "tensor '%s': shape x %s size is %" PRIu64 " bytes but data_offsets [%" PRIu64 ",%" PRIu64 ") hold %" PRIu64,
			    pname, st_dtype_name(t->dtype), nbytes, t->begin, t->end, t->end - t->begin);
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
	const struct st_tensor *x = *(const struct st_tensor * const *)a;
	const struct st_tensor *y = *(const struct st_tensor * const *)b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return (x->end > y->end) - (x->end < y->end);
}

/* Sorted by begin, a range overlaps another iff it starts before the furthest end so far. */
static int check_overlap(struct st_header *h, const char *file, char *err, size_t errlen)
{
	struct st_tensor **by = calloc(h->ntensors ? h->ntensors : 1, sizeof(*by));
	const struct st_tensor *far = NULL;
	int r = 0;

	if (!by)
		return -ENOMEM;
	for (size_t i = 0; i < h->ntensors; i++)
		by[i] = &h->tensors[i];
	qsort(by, h->ntensors, sizeof(*by), cmp_begin);
	for (size_t i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = by[i];
		char a[80], b[80];

		/* Empty tensors occupy no bytes and may share an offset with anything. */
		if (t->begin == t->end)
			continue;
		if (far && t->begin < far->end) {
			r = fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") overlap '%s' [%" PRIu64 ",%" PRIu64 ")",
				 printable(t->name, a, sizeof(a)), t->begin, t->end,
				 printable(far->name, b, sizeof(b)), far->begin, far->end);
			break;
		}
		if (!far || t->end > far->end)
			far = t;
	}
	free(by);
	return r;
}

static int check_metadata(struct json_object *md, const char *file, char *err, size_t errlen)
{
	if (!json_object_is_type(md, json_type_object))
		return fail(err, errlen, file, "__metadata__ is not a JSON object");
	json_object_object_foreach(md, key, val) {
		char kbuf[40];

		if (!json_object_is_type(val, json_type_string))
			return fail(err, errlen, file, "__metadata__ '%s' is not a string",
				    printable(key, kbuf, sizeof(kbuf)));
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
	char *dup = NULL;
	size_t end, i;
	int r;

	*out = NULL;
	if (len < 8 || file_size < 8) {
		r = fail(err, errlen, file, "truncated: %" PRIu64 " bytes, shorter than the 8-byte header length",
			 file_size < len ? file_size : (uint64_t)len);
		goto out;
	}
	memcpy(&le, buf, 8);
	hl = le64toh(le);
	if (hl > ST_MAX_HEADER_LEN) {
		r = fail(err, errlen, file, "header length %" PRIu64 " exceeds the limit of %llu bytes",
			 hl, ST_MAX_HEADER_LEN);
		goto out;
	}
	if (hl > file_size - 8) {
		r = fail(err, errlen, file, "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
			 hl, file_size);
		goto out;
	}
	if (hl > len - 8) {
		r = fail(err, errlen, file, "truncated: header length %" PRIu64 " but only %zu header bytes available",
			 hl, len - 8);
		goto out;
	}
	if (hl < 2 || json[0] != '{') {
		r = fail(err, errlen, file, "header is not a JSON object (must start with '{')");
		goto out;
	}
	if (memchr(json, '\0', hl)) {
		r = fail(err, errlen, file, "header contains a NUL byte");
		goto out;
	}
	tok = json_tokener_new();
	if (!tok) {
		r = -ENOMEM;
		goto out;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, json, (int)hl);
	if (!root) {
		enum json_tokener_error je = json_tokener_get_error(tok);

		r = fail(err, errlen, file, "header is not valid JSON: %s at byte %zu",
			 je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je),
			 json_tokener_get_parse_end(tok));
		goto out;
	}
	/* The format pads the header with spaces; anything else after the object is an error. */
	for (end = json_tokener_get_parse_end(tok); end < hl; end++) {
		if (!isspace((unsigned char)json[end])) {
			r = fail(err, errlen, file, "header has trailing bytes after the JSON object at byte %zu", end);
			goto out;
		}
	}
	if (!json_object_is_type(root, json_type_object)) {
		r = fail(err, errlen, file, "header is not a JSON object");
		goto out;
	}
	r = find_duplicate_key(json, hl, &dup);
	if (r < 0)
		goto out;
	if (r == 2) {
		r = fail(err, errlen, file, "header is not valid JSON: single-quoted string");
		goto out;
	}
	if (r > 0) {
		char nbuf[80];

		r = fail(err, errlen, file, "duplicate tensor name '%s'", printable(dup, nbuf, sizeof(nbuf)));
		goto out;
	}

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
	json_object_object_foreach(root, key, val) {
		char nbuf[80];

		if (!strcmp(key, "__metadata__")) {
			r = check_metadata(val, file, err, errlen);
			if (r)
				goto out;
			continue;
		}
		if (!*key) {
			r = fail(err, errlen, file, "empty tensor name");
			goto out;
		}
		r = parse_tensor(&h->tensors[i], val, file, printable(key, nbuf, sizeof(nbuf)),
				 file_size - h->data_start, err, errlen);
		if (r)
			goto out;
		h->tensors[i].name = strdup(key);
		if (!h->tensors[i].name) {
			r = -ENOMEM;
			goto out;
		}
		h->ntensors = ++i;
	}
	qsort(h->tensors, h->ntensors, sizeof(*h->tensors), cmp_name);
	r = check_overlap(h, file, err, errlen);
	if (r)
		goto out;
	*out = h;
	h = NULL;
out:
	st_header_free(h);
	free(dup);
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
		return fail(err, errlen, file, "not a regular file");
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
			r = fail(err, errlen, file, "truncated while reading the header");
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
