/* SPDX-License-Identifier: MIT */
/*
 * The shared routing-trace layout (JSON, read with json-c):
 *
 *   {"model": NAME, "num_layers": L, "num_experts": E, "top_k": K,
 *    "prompts": {NAME: {"prompt_len": P, "prefill": [ROW...], "decode": [ROW...]}, ...}}
 *
 * a ROW being one token: L lists of K distinct expert ids below E.  The
 * whole file is checked at open, so that a malformed trace is refused
 * before a replay has counted anything, and kept as flat arrays of ids (the
 * json-c tree of a trace weighs some 40 times its ids).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "trace-int.h"

/* Nesting of the layout is 6; a little room, and no deep recursion on
 * hostile input. */
#define TJ_DEPTH		16
/* Far above any real trace (the shared one is 120 KB). */
#define TJ_MAX_BYTES		(1ull << 30)
#define TJ_MAX_LAYERS		TRACE_MAX_LAYERS
#define TJ_MAX_EXPERTS		TRACE_MAX_BANK

struct tj_prompt {
	char *name;
	uint32_t nprefill, ndecode;
	uint32_t *ids;		/* (nprefill + ndecode) * nlayers * top_k, token-major */
};

struct tj {
	char *model;
	struct tj_prompt *prompts;
	uint32_t nprompts;
	const char **names;	/* info.sequence_names */
	struct trace_seq_desc *seqs;	/* info.sequences */
	struct trace_model_desc desc;	/* info.model_desc */
	uint32_t nlayers, nexperts, top_k;
	/* Where trace_next is: prompt, token (prefill rows then decode rows), layer. */
	uint32_t p, t, l;
};

static void text_position(const char *text, size_t off, unsigned *line, unsigned *col)
{
	const char *bol = text;

	*line = 1;
	for (size_t i = 0; i < off; i++)
		if (text[i] == '\n') {
			(*line)++;
			bol = text + i + 1;
		}
	*col = (unsigned)(text + off - bol) + 1;
}

static int read_all(FILE *f, const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		goto nomem;
	for (;;) {
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (n < cap) {
			if (ferror(f)) {
				free(buf);
				snprintf(err, errlen, "%s: reading: %s", path, strerror(EIO));
				return -EIO;
			}
			break;
		}
		if (cap >= TJ_MAX_BYTES) {
			free(buf);
			return trace_bad(err, errlen, "%s: larger than %llu bytes: not a routing trace", path,
					 (unsigned long long)TJ_MAX_BYTES);
		}
		{
			char *nb = realloc(buf, cap * 2 + 1);

			if (!nb)
				goto nomem;
			buf = nb;
			cap *= 2;
		}
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
nomem:
	free(buf);
	snprintf(err, errlen, "%s: out of memory", path);
	return -ENOMEM;
}

/* A whole number key of the root, from lo to hi. */
static int get_u32(struct json_object *root, const char *path, const char *key, uint32_t lo, uint32_t hi,
		   uint32_t *out, char *err, size_t errlen)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(root, key, &v))
		return trace_bad(err, errlen, "%s: key \"%s\" missing", path, key);
	x = json_object_get_int64(v);
	if (!json_object_is_type(v, json_type_int) || x < lo || x > hi)
		return trace_bad(err, errlen, "%s: key \"%s\": expected a whole number from %u to %u, got %.40s",
				 path, key, lo, hi, json_object_to_json_string(v));
	*out = (uint32_t)x;
	return 0;
}

/* One token's row: nlayers lists of top_k distinct ids below nexperts. */
static int parse_row(struct tj *j, const char *path, const char *prompt, const char *phase, size_t token,
		     struct json_object *row, uint32_t *ids, char *err, size_t errlen)
{
	size_t nl;

	if (!json_object_is_type(row, json_type_array))
		return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu: expected a list of %u layers, got %s",
				 path, prompt, phase, token, j->nlayers, json_type_to_name(json_object_get_type(row)));
	nl = json_object_array_length(row);
	if (nl != j->nlayers)
		return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu: %zu layers, num_layers is %u",
				 path, prompt, phase, token, nl, j->nlayers);
	for (size_t l = 0; l < nl; l++) {
		struct json_object *lay = json_object_array_get_idx(row, l);
		size_t ne;

		if (!json_object_is_type(lay, json_type_array))
			return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu layer %zu: expected a list of "
					 "%u expert ids, got %s", path, prompt, phase, token, l, j->top_k,
					 json_type_to_name(json_object_get_type(lay)));
		ne = json_object_array_length(lay);
		if (ne != j->top_k)
			return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu layer %zu: %zu experts, top_k "
					 "is %u", path, prompt, phase, token, l, ne, j->top_k);
		for (size_t k = 0; k < ne; k++) {
			struct json_object *e = json_object_array_get_idx(lay, k);
			int64_t x = json_object_get_int64(e);

			if (!json_object_is_type(e, json_type_int) || x < 0 || x >= j->nexperts)
				return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu layer %zu: expert id "
						 "%.40s: expected a whole number from 0 to %u", path, prompt, phase,
						 token, l, json_object_to_json_string(e), j->nexperts - 1);
			for (size_t m = 0; m < k; m++)
				if (ids[l * j->top_k + m] == (uint32_t)x)
					return trace_bad(err, errlen, "%s: prompt \"%s\": %s token %zu layer %zu: expert "
							 "%" PRId64 " named twice", path, prompt, phase, token, l, x);
			ids[l * j->top_k + k] = (uint32_t)x;
		}
	}
	return 0;
}

static int parse_prompt(struct tj *j, const char *path, const char *name, struct json_object *po,
			struct tj_prompt *p, char *err, size_t errlen)
{
	struct json_object *pre, *dec, *plen;
	size_t row_ids = (size_t)j->nlayers * j->top_k;
	size_t ntok;
	int r;

	if (!json_object_is_type(po, json_type_object))
		return trace_bad(err, errlen, "%s: prompt \"%s\": expected an object, got %s", path, name,
				 json_type_to_name(json_object_get_type(po)));
	if (!json_object_object_get_ex(po, "prefill", &pre) || !json_object_is_type(pre, json_type_array))
		return trace_bad(err, errlen, "%s: prompt \"%s\": key \"prefill\": expected a list of tokens",
				 path, name);
	if (!json_object_object_get_ex(po, "decode", &dec) || !json_object_is_type(dec, json_type_array))
		return trace_bad(err, errlen, "%s: prompt \"%s\": key \"decode\": expected a list of tokens",
				 path, name);
	p->nprefill = (uint32_t)json_object_array_length(pre);
	p->ndecode = (uint32_t)json_object_array_length(dec);
	if (json_object_object_get_ex(po, "prompt_len", &plen) &&
	    (!json_object_is_type(plen, json_type_int) || json_object_get_int64(plen) != p->nprefill))
		return trace_bad(err, errlen, "%s: prompt \"%s\": prompt_len %.40s, but %u prefill rows", path, name,
				 json_object_to_json_string(plen), p->nprefill);
	ntok = (size_t)p->nprefill + p->ndecode;
	p->name = strdup(name);
	p->ids = malloc((ntok ? ntok : 1) * row_ids * sizeof(uint32_t));
	if (!p->name || !p->ids) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	for (size_t t = 0; t < ntok; t++) {
		bool decode = t >= p->nprefill;
		size_t idx = decode ? t - p->nprefill : t;

		r = parse_row(j, path, name, decode ? "decode" : "prefill", idx,
			      json_object_array_get_idx(decode ? dec : pre, idx), p->ids + t * row_ids, err, errlen);
		if (r)
			return r;
	}
	return 0;
}

static int parse_root(struct tj *j, const char *path, struct json_object *root, char *err, size_t errlen)
{
	struct json_object *v, *prompts;
	uint32_t i = 0;
	int r;

	if (!json_object_is_type(root, json_type_object))
		return trace_bad(err, errlen, "%s: expected a JSON object, got %s", path,
				 json_type_to_name(json_object_get_type(root)));
	if (json_object_object_get_ex(root, "model", &v)) {
		if (!json_object_is_type(v, json_type_string))
			return trace_bad(err, errlen, "%s: key \"model\": expected a name, got %.40s", path,
					 json_object_to_json_string(v));
		j->model = strdup(json_object_get_string(v));
	} else {
		j->model = strdup("unnamed");
	}
	if (!j->model) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	r = get_u32(root, path, "num_layers", 1, TJ_MAX_LAYERS, &j->nlayers, err, errlen);
	if (!r)
		r = get_u32(root, path, "num_experts", 1, TJ_MAX_EXPERTS, &j->nexperts, err, errlen);
	if (!r)
		r = get_u32(root, path, "top_k", 1, TRACE_MAX_EXPERTS, &j->top_k, err, errlen);
	if (r)
		return r;
	if (j->top_k > j->nexperts)
		return trace_bad(err, errlen, "%s: top_k %u exceeds num_experts %u", path, j->top_k, j->nexperts);
	if (!json_object_object_get_ex(root, "prompts", &prompts) ||
	    !json_object_is_type(prompts, json_type_object))
		return trace_bad(err, errlen, "%s: key \"prompts\": expected an object of prompts by name", path);
	j->nprompts = (uint32_t)json_object_object_length(prompts);
	j->prompts = calloc(j->nprompts ? j->nprompts : 1, sizeof(*j->prompts));
	j->names = calloc(j->nprompts ? j->nprompts : 1, sizeof(*j->names));
	j->seqs = calloc(j->nprompts ? j->nprompts : 1, sizeof(*j->seqs));
	if (!j->prompts || !j->names || !j->seqs) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	/* json-c keeps an object's keys in the file's order: prompt i is the
	 * i-th in the file. */
	json_object_object_foreach(prompts, name, po) {
		r = parse_prompt(j, path, name, po, &j->prompts[i], err, errlen);
		if (r)
			return r;
		j->names[i] = j->prompts[i].name;
		j->seqs[i] = (struct trace_seq_desc){ i, (uint64_t)i + 1, j->prompts[i].name };
		i++;
	}
	return 0;
}

static int tj_next(struct trace_reader *r, struct trace_event *ev, char *err, size_t errlen)
{
	struct tj *j = r->priv;
	const struct tj_prompt *p;
	const uint32_t *ids;

	(void)err;
	(void)errlen;
	while (j->p < j->nprompts && j->t >= j->prompts[j->p].nprefill + j->prompts[j->p].ndecode) {
		j->p++;
		j->t = 0;
		j->l = 0;
	}
	if (j->p >= j->nprompts)
		return 0;
	p = &j->prompts[j->p];
	ids = p->ids + ((size_t)j->t * j->nlayers + j->l) * j->top_k;
	ev->t_ns = 0;
	ev->client = j->p;
	ev->seq = (uint64_t)j->p + 1;
	ev->kind = j->t < p->nprefill ? TRACE_HINT : TRACE_ACQUIRE;
	ev->token = j->t < p->nprefill ? j->t : j->t - p->nprefill;
	ev->model = 0;
	ev->layer = j->l;
	ev->nexperts = j->top_k;
	memcpy(ev->experts, ids, j->top_k * sizeof(uint32_t));
	if (++j->l == j->nlayers) {
		j->l = 0;
		j->t++;
	}
	return 1;
}

static void tj_free(struct tj *j)
{
	if (!j)
		return;
	for (uint32_t i = 0; j->prompts && i < j->nprompts; i++) {
		free(j->prompts[i].name);
		free(j->prompts[i].ids);
	}
	free(j->prompts);
	free(j->names);
	free(j->seqs);
	free(j->model);
	free(j);
}

static void tj_close(struct trace_reader *r)
{
	tj_free(r->priv);
}

static const struct trace_ops tj_ops = { .next = tj_next, .close = tj_close };

int trace_json_open(struct trace_reader *r, FILE *f, char *err, size_t errlen)
{
	struct json_tokener *tok = NULL;
	struct json_object *root = NULL;
	enum json_tokener_error je;
	struct tj *j = NULL;
	char *text = NULL;
	size_t len = 0;
	int ret;

	ret = read_all(f, r->path, &text, &len, err, errlen);
	fclose(f);
	if (ret)
		return ret;
	j = calloc(1, sizeof(*j));
	tok = json_tokener_new_ex(TJ_DEPTH);
	if (!j || !tok) {
		snprintf(err, errlen, "%s: out of memory", r->path);
		ret = -ENOMEM;
		goto out;
	}
	if (strlen(text) != len) {
		ret = trace_bad(err, errlen, "%s: a NUL byte at offset %zu: not JSON text", r->path, strlen(text));
		goto out;
	}
	/* Strict: no comments, no single quotes, nothing after the object. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, text, (int)len);
	je = json_tokener_get_error(tok);
	if (je == json_tokener_success && json_tokener_get_parse_end(tok) < len &&
	    text[json_tokener_get_parse_end(tok) + strspn(text + json_tokener_get_parse_end(tok), " \t\r\n")])
		je = json_tokener_error_parse_unexpected;
	if (je != json_tokener_success) {
		size_t off = json_tokener_get_parse_end(tok);
		int near = (int)strcspn(text + off, "\n");
		unsigned line, col;

		text_position(text, off, &line, &col);
		near = near > 20 ? 20 : near;
		ret = trace_bad(err, errlen, "%s:%u:%u: not valid JSON: %s at byte offset %zu%s%.*s%s", r->path, line,
				col, je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je), off,
				near ? ", near \"" : "", near, text + off, near ? "\"" : "");
		goto out;
	}
	ret = parse_root(j, r->path, root, err, errlen);
	if (ret)
		goto out;
	r->ops = &tj_ops;
	r->priv = j;
	r->info.format = "routing-json";
	r->info.nmodels = 1;
	r->info.models = (const char *const *)&j->model;
	r->info.nlayers = j->nlayers;
	r->info.nexperts = j->nexperts;
	r->info.top_k = j->top_k;
	r->info.nsequences = j->nprompts;
	r->info.sequence_names = j->names;
	r->info.sequences = j->seqs;
	j->desc = (struct trace_model_desc){ j->model, j->nlayers, j->nexperts, j->top_k };
	r->info.model_desc = &j->desc;
	j = NULL;
out:
	json_object_put(root);
	if (tok)
		json_tokener_free(tok);
	free(text);
	tj_free(j);
	return ret;
}
