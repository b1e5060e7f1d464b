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

#include "safetensors.h"

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
 * A header is valid when the reference reader (the safetensors crate:
 * serde_json into its Metadata, Metadata::validate, then the check that the
 * file ends where the last tensor does) takes it; doc/README-catalog.md lists
 * the cases and the few deliberate differences.  json-c builds the tree, but
 * it takes things serde_json refuses (NaN, raw control characters in strings,
 * unpaired surrogates, whitespace other than JSON's) and its tree hides others
 * (duplicate keys, -0, integers past 64 bits), so a strict walk over the text
 * comes first.
 */

/* serde_json's recursion limit: 127 levels of nesting pass, 128 do not. */
#define ST_JSON_DEPTH 127

enum field { F_DTYPE, F_SHAPE, F_OFFSETS, F_COUNT };
static const char *const field_names[F_COUNT] = { "dtype", "shape", "data_offsets" };

/* The header is read as a Rust str: strict UTF-8, no overlong forms,
 * surrogates or code points past U+10FFFF.  Returns the offset of the first
 * byte that is not, len when all are. */
static size_t utf8_valid_upto(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp, min;
		size_t n;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 2, cp = c & 0x0f, min = 0x800;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07, min = 0x10000;
		else
			return i;
		if (len - i <= n)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

struct walk {
	const char *s;
	size_t n, i;
	const char *file;
	char *err;
	size_t errlen;
	struct json_object *spans;	/* tensor name -> [start, end) of its value */
	bool have_metadata;
};

static bool json_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(struct walk *w)
{
	while (w->i < w->n && json_ws(w->s[w->i]))
		w->i++;
}

static bool at(const struct walk *w, char c)
{
	return w->i < w->n && w->s[w->i] == c;
}

static int bad(struct walk *w, const char *what)
{
	return fail(w->err, w->errlen, w->file, "header is not valid JSON: %s at byte %zu", what, w->i);
}

static long hex4(const char *s, size_t n, size_t i)
{
	long v = 0;

	if (i + 4 > n)
		return -1;
	for (size_t k = i; k < i + 4; k++) {
		char c = s[k];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* A string starting at the quote under i; leaves i past the closing quote. */
static int walk_string(struct walk *w)
{
	size_t i = w->i + 1;

	for (;;) {
		unsigned char c;
		long cp, lo;

		if (i >= w->n) {
			w->i = i;
			return bad(w, "unterminated string");
		}
		c = (unsigned char)w->s[i];
		if (c == '"')
			break;
		if (c < 0x20) {
			w->i = i;
			return bad(w, "control character in a string");
		}
		if (c != '\\') {
			i++;
			continue;
		}
		c = i + 1 < w->n ? (unsigned char)w->s[i + 1] : 0;
		if (c != 'u') {
			if (!c || !strchr("\"\\/bfnrt", c)) {
				w->i = i;
				return bad(w, "invalid escape in a string");
			}
			i += 2;
			continue;
		}
		cp = hex4(w->s, w->n, i + 2);
		if (cp >= 0xd800 && cp <= 0xdbff) {
			lo = i + 7 < w->n && w->s[i + 6] == '\\' && w->s[i + 7] == 'u' ? hex4(w->s, w->n, i + 8) : -1;
			if (lo < 0xdc00 || lo > 0xdfff) {
				w->i = i;
				return bad(w, "unpaired surrogate in a \\u escape");
			}
			i += 12;
		} else if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
			w->i = i;
			return bad(w, cp < 0 ? "invalid \\u escape" : "unpaired surrogate in a \\u escape");
		} else {
			i += 6;
		}
	}
	w->i = i + 1;
	return 0;
}

/* The string between s[start] and s[end] (quotes included), unescaped by
 * json-c when it has escapes.  *len counts NUL bytes a \u0000 put in. */
static int string_decode(const struct walk *w, size_t start, size_t end, char **out, size_t *len)
{
	struct json_object *o;
	char *tmp;

	if (!memchr(w->s + start, '\\', end - start)) {
		*len = end - start - 2;
		*out = strndup(w->s + start + 1, *len);
		return *out ? 0 : -ENOMEM;
	}
	tmp = strndup(w->s + start, end - start);
	o = tmp ? json_tokener_parse(tmp) : NULL;
	free(tmp);
	if (!o || !json_object_is_type(o, json_type_string)) {
		json_object_put(o);
		return -ENOMEM;
	}
	*len = (size_t)json_object_get_string_len(o);
	*out = malloc(*len + 1);
	if (*out) {
		memcpy(*out, json_object_get_string(o), *len);
		(*out)[*len] = '\0';
	}
	json_object_put(o);
	return *out ? 0 : -ENOMEM;
}

struct number {
	bool negative, integer;
	size_t digits, ndigits;		/* the integer part */
};

static bool is_digit(const struct walk *w)
{
	return w->i < w->n && w->s[w->i] >= '0' && w->s[w->i] <= '9';
}

static int walk_number(struct walk *w, struct number *num)
{
	size_t start = w->i;

	*num = (struct number){ .negative = at(w, '-'), .integer = true };
	if (num->negative)
		w->i++;
	if (!is_digit(w))
		return bad(w, "malformed number");
	num->digits = w->i;
	if (at(w, '0'))
		w->i++;
	else
		while (is_digit(w))
			w->i++;
	num->ndigits = w->i - num->digits;
	if (at(w, '.')) {
		num->integer = false;
		w->i++;
		if (!is_digit(w))
			return bad(w, "malformed number");
		while (is_digit(w))
			w->i++;
	}
	if (at(w, 'e') || at(w, 'E')) {
		num->integer = false;
		w->i++;
		if (at(w, '+') || at(w, '-'))
			w->i++;
		if (!is_digit(w))
			return bad(w, "malformed number");
		while (is_digit(w))
			w->i++;
	}
	/* serde_json reads what is not a u64 as a double and refuses one that
	 * overflows it (1e400); the digits are followed by at least a '}'. */
	if ((!num->integer || num->negative || num->ndigits >= 20) && isinf(strtod(w->s + start, NULL))) {
		w->i = start;
		return bad(w, "number out of range");
	}
	return 0;
}

static bool number_fits_u64(const struct walk *w, const struct number *num)
{
	return num->ndigits < 20 ||
	       (num->ndigits == 20 && memcmp(w->s + num->digits, "18446744073709551615", 20) <= 0);
}

static int walk_literal(struct walk *w)
{
	static const char *const lit[] = { "true", "false", "null" };

	for (unsigned k = 0; k < 3; k++) {
		size_t len = strlen(lit[k]);

		if (w->n - w->i >= len && !memcmp(w->s + w->i, lit[k], len)) {
			w->i += len;
			return 0;
		}
	}
	/* NaN and Infinity among them: json-c takes those, JSON does not. */
	return bad(w, "unexpected character");
}

enum obj_kind { OBJ_ROOT, OBJ_TENSOR, OBJ_OTHER };

static int walk_object(struct walk *w, unsigned depth, enum obj_kind kind, const char *label);
static int walk_array(struct walk *w, unsigned depth, const char *dims);

static int walk_value(struct walk *w, unsigned depth)
{
	if (w->i >= w->n)
		return bad(w, "unexpected end");
	switch (w->s[w->i]) {
	case '{':
		return walk_object(w, depth, OBJ_OTHER, NULL);
	case '[':
		return walk_array(w, depth, NULL);
	case '"':
		return walk_string(w);
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9': {
		struct number num;

		return walk_number(w, &num);
	}
	default:
		return walk_literal(w);
	}
}

/*
 * dims, when set ("tensor 'a': shape"), names an array whose numbers serde
 * reads as usize: -0 (a float to serde_json, 0 to json-c) and integers past
 * 64 bits (which json-c clamps) are refused here, where the text still shows
 * them.
 */
static int walk_array(struct walk *w, unsigned depth, const char *dims)
{
	int r;

	if (depth > ST_JSON_DEPTH)
		return bad(w, "nesting too deep");
	w->i++;
	skip_ws(w);
	if (at(w, ']')) {
		w->i++;
		return 0;
	}
	for (size_t k = 0;; k++) {
		if (dims && (at(w, '-') || is_digit(w))) {
			struct number num;

			r = walk_number(w, &num);
			if (!r && num.negative)
				r = fail(w->err, w->errlen, w->file, "%s[%zu] is negative", dims, k);
			else if (!r && !num.integer)
				r = fail(w->err, w->errlen, w->file, "%s[%zu] is not an integer", dims, k);
			else if (!r && !number_fits_u64(w, &num))
				r = fail(w->err, w->errlen, w->file, "%s[%zu] is too large", dims, k);
		} else {
			r = walk_value(w, depth + 1);
		}
		if (r)
			return r;
		skip_ws(w);
		if (at(w, ']')) {
			w->i++;
			return 0;
		}
		if (!at(w, ','))
			return bad(w, "expected ',' or ']'");
		w->i++;
		skip_ws(w);
	}
}

static int tensor_decode(struct st_tensor *t, struct json_object *obj, const char *file, const char *label,
			 char *err, size_t errlen);

/* serde_json reads every value given for a tensor name and keeps the last:
 * an earlier one must still be a well-formed tensor entry. */
static int check_superseded(struct walk *w, const char *name, size_t start, size_t end)
{
	struct json_tokener *tok = json_tokener_new_ex(ST_JSON_DEPTH);
	struct json_object *o = NULL;
	struct st_tensor t = { 0 };
	char label[128], nbuf[80];
	char *copy = malloc(end - start + 1);
	int r;

	if (!tok || !copy) {
		r = -ENOMEM;
		goto out;
	}
	/* A space ends a number that ends the span (json-c waits for more digits). */
	memcpy(copy, w->s + start, end - start);
	copy[end - start] = ' ';
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, copy, (int)(end - start + 1));
	if (json_tokener_get_error(tok) != json_tokener_success) {
		/* The walk passed this text: only a failed allocation gets here. */
		r = -ENOMEM;
		goto out;
	}
	snprintf(label, sizeof(label), "tensor '%s' (an earlier entry of that name)",
		 printable(name, nbuf, sizeof(nbuf)));
	r = tensor_decode(&t, o, w->file, label, w->err, w->errlen);
out:
	json_object_put(o);
	if (tok)
		json_tokener_free(tok);
	free(copy);
	return r;
}

static int root_member(struct walk *w, unsigned depth, const char *key, size_t klen)
{
	struct json_object *span, *old;
	char label[128], nbuf[80];
	size_t start;
	int r;

	if (klen == strlen("__metadata__") && !strcmp(key, "__metadata__")) {
		if (w->have_metadata)
			return fail(w->err, w->errlen, w->file, "duplicate key '__metadata__'");
		w->have_metadata = true;
		return walk_value(w, depth + 1);
	}
	if (memchr(key, '\0', klen))
		return fail(w->err, w->errlen, w->file, "tensor name '%s\\u0000...' holds a NUL character",
			    printable(key, nbuf, sizeof(nbuf)));
	snprintf(label, sizeof(label), "tensor '%s'", printable(key, nbuf, sizeof(nbuf)));
	start = w->i;
	r = at(w, '{') ? walk_object(w, depth + 1, OBJ_TENSOR, label) : walk_value(w, depth + 1);
	if (r)
		return r;
	if (json_object_object_get_ex(w->spans, key, &old)) {
		r = check_superseded(w, key, (size_t)json_object_get_int64(json_object_array_get_idx(old, 0)),
				     (size_t)json_object_get_int64(json_object_array_get_idx(old, 1)));
		if (r)
			return r;
	}
	span = json_object_new_array_ext(2);
	if (!span || json_object_array_add(span, json_object_new_int64((int64_t)start)) ||
	    json_object_array_add(span, json_object_new_int64((int64_t)w->i)) ||
	    json_object_object_add(w->spans, key, span)) {
		json_object_put(span);
		return -ENOMEM;
	}
	return 0;
}

static int walk_object(struct walk *w, unsigned depth, enum obj_kind kind, const char *label)
{
	bool seen[F_COUNT] = { false };
	int r;

	if (depth > ST_JSON_DEPTH)
		return bad(w, "nesting too deep");
	w->i++;
	skip_ws(w);
	if (at(w, '}')) {
		w->i++;
		return 0;
	}
	for (;;) {
		size_t kstart = w->i, klen = 0;
		char *key = NULL, dims[160];
		int f = -1;

		if (!at(w, '"'))
			return bad(w, "expected a double-quoted key");
		r = walk_string(w);
		if (r)
			return r;
		if (kind != OBJ_OTHER) {
			r = string_decode(w, kstart, w->i, &key, &klen);
			if (r)
				return r;
		}
		skip_ws(w);
		if (!at(w, ':')) {
			free(key);
			return bad(w, "expected ':'");
		}
		w->i++;
		skip_ws(w);
		switch (kind) {
		case OBJ_ROOT:
			r = root_member(w, depth, key, klen);
			break;
		case OBJ_TENSOR:
			for (int k = 0; k < F_COUNT; k++) {
				if (strcmp(key, field_names[k]))
					continue;
				/* json-c's tree would take "dtype\u0000" for "dtype". */
				if (klen != strlen(field_names[k])) {
					r = fail(w->err, w->errlen, w->file, "%s: key '%s\\u0000...' holds a NUL character",
						 label, field_names[k]);
					break;
				}
				f = k;
			}
			if (r)
				break;
			if (f >= 0 && seen[f]) {
				r = fail(w->err, w->errlen, w->file, "%s: duplicate key '%s'", label, field_names[f]);
				break;
			}
			if (f >= 0)
				seen[f] = true;
			if ((f == F_SHAPE || f == F_OFFSETS) && at(w, '[')) {
				snprintf(dims, sizeof(dims), "%s: %s", label, field_names[f]);
				r = walk_array(w, depth + 1, dims);
			} else {
				/* Keys other than the three are ignored, as serde does. */
				r = walk_value(w, depth + 1);
			}
			break;
		case OBJ_OTHER:
			r = walk_value(w, depth + 1);
			break;
		}
		free(key);
		if (r)
			return r;
		skip_ws(w);
		if (at(w, '}')) {
			w->i++;
			return 0;
		}
		if (!at(w, ','))
			return bad(w, "expected ',' or '}'");
		w->i++;
		skip_ws(w);
	}
}

static int walk_header(const char *json, size_t len, const char *file, char *err, size_t errlen)
{
	struct walk w = { .s = json, .n = len, .file = file, .err = err, .errlen = errlen };
	int r;

	w.spans = json_object_new_object();
	if (!w.spans)
		return -ENOMEM;
	skip_ws(&w);
	r = at(&w, '{') ? walk_object(&w, 1, OBJ_ROOT, NULL) : bad(&w, "the header is not a JSON object");
	if (!r) {
		/* Writers pad the header with spaces to align the data area. */
		skip_ws(&w);
		if (w.i < w.n)
			r = bad(&w, "trailing bytes after the JSON object");
	}
	json_object_put(w.spans);
	return r;
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
static int tensor_decode(struct st_tensor *t, struct json_object *obj, const char *file, const char *label,
			 char *err, size_t errlen)
{
	struct json_object *v[F_COUNT] = { NULL };
	bool have[F_COUNT] = { false };
	const char *why;
	size_t n;

	if (!json_object_is_type(obj, json_type_object))
		return fail(err, errlen, file, "%s: not a JSON object", label);
	json_object_object_foreach(obj, key, val) {
		/* A JSON null comes back as a NULL value: remember the key was there. */
		for (int k = 0; k < F_COUNT; k++) {
			if (!strcmp(key, field_names[k])) {
				v[k] = val;
				have[k] = true;
			}
		}
	}
	for (int k = 0; k < F_COUNT; k++)
		if (!have[k])
			return fail(err, errlen, file, "%s: missing %s", label, field_names[k]);

	if (!json_object_is_type(v[F_DTYPE], json_type_string))
		return fail(err, errlen, file, "%s: dtype is not a string", label);
	if (st_dtype_parse(json_object_get_string(v[F_DTYPE]), &t->dtype)) {
		char dbuf[40];

		return fail(err, errlen, file, "%s: unknown dtype '%s'", label,
			    printable(json_object_get_string(v[F_DTYPE]), dbuf, sizeof(dbuf)));
	}

	if (!json_object_is_type(v[F_SHAPE], json_type_array))
		return fail(err, errlen, file, "%s: shape is not an array", label);
	n = json_object_array_length(v[F_SHAPE]);
	for (size_t i = 0; i < n; i++) {
		uint64_t dim;

		if (get_u64(json_object_array_get_idx(v[F_SHAPE], i), &dim, &why))
			return fail(err, errlen, file, "%s: shape[%zu] %s", label, i, why);
		if (i < TIERD_MAX_DIMS)
			t->shape[i] = dim;
	}
	t->ndim = n > TIERD_MAX_DIMS ? TIERD_MAX_DIMS + 1 : (uint32_t)n;

	if (!json_object_is_type(v[F_OFFSETS], json_type_array) || json_object_array_length(v[F_OFFSETS]) != 2)
		return fail(err, errlen, file, "%s: data_offsets is not an array of two integers", label);
	if (get_u64(json_object_array_get_idx(v[F_OFFSETS], 0), &t->begin, &why))
		return fail(err, errlen, file, "%s: data_offsets[0] %s", label, why);
	if (get_u64(json_object_array_get_idx(v[F_OFFSETS], 1), &t->end, &why))
		return fail(err, errlen, file, "%s: data_offsets[1] %s", label, why);
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
		return fail(err, errlen, file, "%s: shape has more than %d dimensions, the most supported",
			    label, TIERD_MAX_DIMS);
	for (uint32_t i = 0; i < t->ndim; i++)
		if (__builtin_mul_overflow(nelem, t->shape[i], &nelem))
			return fail(err, errlen, file, "%s: shape overflows 64 bits", label);
	/* The reference counts bits (for its sub-byte dtypes) and overflows on those. */
	if (__builtin_mul_overflow(nelem, 8 * (uint64_t)tierd_dtype_size(t->dtype), &nbits))
		return fail(err, errlen, file, "%s: shape x dtype size overflows 64 bits", label);
	if (t->end < t->begin)
		return fail(err, errlen, file, "%s: data_offsets [%" PRIu64 ",%" PRIu64 ") end before begin",
			    label, t->begin, t->end);
	if (t->end > data_len)
		return fail(err, errlen, file,
			    "%s: data_offsets [%" PRIu64 ",%" PRIu64 ") beyond the data area (%" PRIu64 " bytes)",
			    label, t->begin, t->end, data_len);
	if (t->end - t->begin != nbits / 8)
		return fail(err, errlen, file,
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
			r = fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") overlap '%s' [%" PRIu64 ",%" PRIu64 ")",
				 printable(t->name, a, sizeof(a)), t->begin, t->end,
				 printable(prev->name, b, sizeof(b)), prev->begin, prev->end);
		else if (t->begin > pos)
			r = fail(err, errlen, file, "tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 ") leave bytes [%" PRIu64 ",%" PRIu64 ") of the data area to no tensor",
				 printable(t->name, a, sizeof(a)), t->begin, t->end, pos, t->begin);
		pos = t->end;
		prev = t;
	}
	if (!r && pos != data_len)
		r = fail(err, errlen, file, "%" PRIu64 " bytes after the last tensor (data ends at %" PRIu64 " of a %" PRIu64 "-byte data area)",
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
	size_t i, bad_at;
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
	if (memchr(json, '\0', hl)) {
		r = fail(err, errlen, file, "header contains a NUL byte");
		goto out;
	}
	bad_at = utf8_valid_upto((const unsigned char *)json, hl);
	if (bad_at < hl) {
		r = fail(err, errlen, file, "header is not valid UTF-8 at byte %zu", bad_at);
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

		r = fail(err, errlen, file, "header is not valid JSON: %s at byte %zu",
			 je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je),
			 json_tokener_get_parse_end(tok));
		goto out;
	}
	if (!json_object_is_type(root, json_type_object)) {
		r = fail(err, errlen, file, "header is not a JSON object");
		goto out;
	}
	r = walk_header(json, hl, file, err, errlen);
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
		snprintf(label, sizeof(label), "tensor '%s'", printable(key, nbuf, sizeof(nbuf)));
		r = tensor_decode(&h->tensors[i], val, file, label, err, errlen);
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
