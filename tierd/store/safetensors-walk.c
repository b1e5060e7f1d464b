/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors-int.h"

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


/* The header is read as a Rust str: strict UTF-8, no overlong forms,
 * surrogates or code points past U+10FFFF.  Returns the offset of the first
 * byte that is not, len when all are. */
size_t st_utf8_valid_upto(const unsigned char *s, size_t len)
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
	return st_fail(w->err, w->errlen, w->file, "header is not valid JSON: %s at byte %zu", what, w->i);
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
				r = st_fail(w->err, w->errlen, w->file, "%s[%zu] is negative", dims, k);
			else if (!r && !num.integer)
				r = st_fail(w->err, w->errlen, w->file, "%s[%zu] is not an integer", dims, k);
			else if (!r && !number_fits_u64(w, &num))
				r = st_fail(w->err, w->errlen, w->file, "%s[%zu] is too large", dims, k);
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
		 st_printable(name, nbuf, sizeof(nbuf)));
	r = st_tensor_decode(&t, o, w->file, label, w->err, w->errlen);
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
			return st_fail(w->err, w->errlen, w->file, "duplicate key '__metadata__'");
		w->have_metadata = true;
		return walk_value(w, depth + 1);
	}
	if (memchr(key, '\0', klen))
		return st_fail(w->err, w->errlen, w->file, "tensor name '%s\\u0000...' holds a NUL character",
			    st_printable(key, nbuf, sizeof(nbuf)));
	snprintf(label, sizeof(label), "tensor '%s'", st_printable(key, nbuf, sizeof(nbuf)));
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
				if (strcmp(key, st_field_names[k]))
					continue;
				/* json-c's tree would take "dtype\u0000" for "dtype". */
				if (klen != strlen(st_field_names[k])) {
					r = st_fail(w->err, w->errlen, w->file, "%s: key '%s\\u0000...' holds a NUL character",
						 label, st_field_names[k]);
					break;
				}
				f = k;
			}
			if (r)
				break;
			if (f >= 0 && seen[f]) {
				r = st_fail(w->err, w->errlen, w->file, "%s: duplicate key '%s'", label, st_field_names[f]);
				break;
			}
			if (f >= 0)
				seen[f] = true;
			if ((f == F_SHAPE || f == F_OFFSETS) && at(w, '[')) {
				snprintf(dims, sizeof(dims), "%s: %s", label, st_field_names[f]);
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

int st_walk_header(const char *json, size_t len, const char *file, char *err, size_t errlen)
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
