/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "catalog-int.h"
#include "log.h"
#include "safetensors.h"
#include "smallfile.h"

#define INDEX_NAME		CATALOG_INDEX_NAME
#define SINGLE_NAME		"model.safetensors"
#define CONFIG_NAME		CATALOG_CONFIG_NAME
/* JSON side files are small; this bounds what a hostile one can make us allocate. */
#define MAX_JSON_FILE		(256ULL << 20)

/*
 * The built-in presets, in the syntax of the configuration file, so that a
 * family a user adds with [preset NAME] is no different from these.  Order
 * breaks ties in detection.
 */
static const char builtin_presets[] =
	"[preset mixtral]\n"
	"tensor = model.layers.{L}.block_sparse_moe.experts.{E}.*\n"
	"[preset qwen-moe]\n"
	"; Qwen1.5/2/3-MoE, DeepSeek-V2/V3 (with FP8 weight_scale_inv), OLMoE\n"
	"tensor = model.layers.{L}.mlp.experts.{E}.*\n"
	"[preset llama4]\n"
	"fused = model.layers.{L}.feed_forward.experts.*\n"
	"fused = language_model.model.layers.{L}.feed_forward.experts.*\n"
	"; quantized releases store the experts one by one\n"
	"tensor = model.layers.{L}.feed_forward.experts.{E}.*\n"
	"tensor = language_model.model.layers.{L}.feed_forward.experts.{E}.*\n"
	"[preset gpt-oss]\n"
	"fused = model.layers.{L}.mlp.experts.*\n";

int catalog_errf(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
		/* Names come from the checkpoint: no control bytes (terminal
		 * escapes, newlines) into messages and logs. */
		for (char *c = err; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
	}
	return r;
}

/* {L} / {E}: a decimal number without leading zeros, below CATALOG_MAX_NUMBER. */
static size_t match_number(const char *s, uint32_t *out)
{
	size_t n = 0;
	uint64_t v = 0;

	while (isdigit((unsigned char)s[n])) {
		v = v * 10 + (uint64_t)(s[n] - '0');
		if (v >= CATALOG_MAX_NUMBER)
			return 0;
		n++;
	}
	if (n > 1 && s[0] == '0')
		return 0;
	*out = (uint32_t)v;
	return n;
}

/*
 * Matches a name against a pattern.  '*' takes the rest of the name when it
 * is the last token, else the shortest run that lets the rest match.  It
 * never starts with a digit: a fused pattern "experts.*" must not claim the
 * per-expert tensor "experts.3.w1".
 */
static bool pattern_match(const char *p, const char *s, struct match *m)
{
	for (;;) {
		if (!*p)
			return !*s;
		if (*p == '*') {
			if (!*s || isdigit((unsigned char)*s))
				return false;
			for (const char *t = s + 1;; t++) {
				if (pattern_match(p + 1, t, m)) {
					m->star = s;
					m->star_len = (size_t)(t - s);
					return true;
				}
				if (!*t)
					return false;
			}
		}
		if (!strncmp(p, "{L}", 3) || !strncmp(p, "{E}", 3)) {
			uint32_t v;
			size_t n = match_number(s, &v);

			if (!n)
				return false;
			if (p[1] == 'L') {
				m->layer = v;
			} else {
				m->expert = v;
				m->has_expert = true;
			}
			p += 3;
			s += n;
			continue;
		}
		if (*p != *s)
			return false;
		p++;
		s++;
	}
}

int catalog_preset_check(const char *file, const struct conf_preset *p, char *err, size_t errlen)
{
	if (!file)
		file = "config";
	size_t npat = 0;

	for (size_t i = 0; i < p->nkv; i++) {
		const struct conf_kv *kv = &p->kv[i];
		bool fused = !strcmp(kv->key, "fused");
		const char *v = kv->value;
		unsigned nl = 0, ne = 0, nstar = 0;

		if (!fused && strcmp(kv->key, "tensor"))
			return catalog_errf(err, errlen, -EINVAL,
				    "%s:%u: [preset %s] %s: unknown key (expected 'tensor' or 'fused')",
				    file, kv->line, p->name, kv->key);
		for (const char *c = v; *c; c++) {
			if (!strncmp(c, "{L}", 3))
				nl++;
			else if (!strncmp(c, "{E}", 3))
				ne++;
			else if (*c == '*')
				nstar++;
		}
		if (nl != 1 || ne != (fused ? 0u : 1u) || nstar > 1)
			return catalog_errf(err, errlen, -EINVAL,
				    "%s:%u: [preset %s] %s = %s: needs one {L}, %s {E} and at most one '*'",
				    file, kv->line, p->name, kv->key, v, fused ? "no" : "one");
		npat++;
	}
	if (!npat)
		return catalog_errf(err, errlen, -EINVAL, "%s:%u: [preset %s] has no 'tensor' or 'fused' pattern",
			    file, p->line, p->name);
	return 0;
}

/* The pattern of p that name matches, or NULL. */
const struct conf_kv *catalog_preset_match(const struct conf_preset *p, const char *name, struct match *m)
{
	for (size_t i = 0; i < p->nkv; i++) {
		memset(m, 0, sizeof(*m));
		if (pattern_match(p->kv[i].value, name, m))
			return &p->kv[i];
	}
	return NULL;
}

/* ---- reading the checkpoint ------------------------------------------------------------- */

static int read_json_file(struct loader *l, const char *name, bool optional, struct json_object **out)
{
	struct json_tokener *tok = NULL;
	struct json_object *o = NULL;
	char path[PATH_MAX];
	char *buf = NULL;
	size_t got;
	int r;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/%s", l->dir, name);
	r = smallfile_read(path, MAX_JSON_FILE, &buf, &got, l->err, l->errlen);
	if (r == -ENOENT && optional)
		return 0;
	if (r < 0)
		return r;
	tok = json_tokener_new();
	if (!tok) {
		r = -ENOMEM;
		goto out;
	}
	o = json_tokener_parse_ex(tok, buf, (int)got);
	if (!o || !json_object_is_type(o, json_type_object)) {
		enum json_tokener_error je = json_tokener_get_error(tok);

		r = catalog_errf(l->err, l->errlen, -EINVAL, "%s: not a JSON object%s%s", path,
			 o ? "" : ": ", o ? "" : (je == json_tokener_continue ? "unexpected end" :
						 json_tokener_error_desc(je)));
		json_object_put(o);
		goto out;
	}
	*out = o;
out:
	if (tok)
		json_tokener_free(tok);
	free(buf);
	return r;
}

/* An index may only name plain files in the checkpoint directory itself. */
static bool confined_name(const char *s)
{
	return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < NAME_MAX;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_shard(const void *a, const void *b)
{
	return strcmp(((const struct shard *)a)->name, ((const struct shard *)b)->name);
}

static int load_shard(struct loader *l, struct shard *s)
{
	char path[PATH_MAX], *real = NULL;
	size_t n = strlen(l->realdir);
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", l->dir, s->name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* Visibly never 0, since 0 would pass on a shard without a header
		 * (static analyzers do not see through the variadic errf). */
		r = errno ? -errno : -EIO;
		catalog_errf(l->err, l->errlen, r, "%s: %s", path, strerror(-r));
		return r;
	}
	/* A symlink may point elsewhere in the directory, never out of it. */
	real = realpath(path, NULL);
	if (!real || strncmp(real, l->realdir, n) || real[n] != '/' || strchr(real + n + 1, '/')) {
		r = catalog_errf(l->err, l->errlen, -EINVAL, "%s: resolves outside the checkpoint directory", s->name);
		goto out;
	}
	r = st_header_read(&s->h, s->name, fd, l->err, l->errlen);
out:
	free(real);
	close(fd);
	return r;
}

static int load_files(struct loader *l)
{
	struct json_object *index = NULL, *wm;
	char **names = NULL;
	size_t n = 0, cap;
	int r;

	l->realdir = realpath(l->dir, NULL);
	if (!l->realdir) {
		r = -errno;
		return catalog_errf(l->err, l->errlen, r, "%s: %s", l->dir, strerror(-r));
	}
	r = read_json_file(l, CONFIG_NAME, true, &l->config);
	if (r)
		return r;
	r = read_json_file(l, INDEX_NAME, true, &index);
	if (r)
		return r;
	if (!index) {
		l->shards = calloc(1, sizeof(*l->shards));
		if (!l->shards || !(l->shards[0].name = strdup(SINGLE_NAME)))
			return -ENOMEM;
		l->nshards = 1;
		r = load_shard(l, &l->shards[0]);
		if (r == -ENOENT)
			catalog_errf(l->err, l->errlen, r, "%s: neither " INDEX_NAME " nor " SINGLE_NAME " found", l->dir);
		return r;
	}
	if (!json_object_object_get_ex(index, "weight_map", &wm) || !json_object_is_type(wm, json_type_object)) {
		r = catalog_errf(l->err, l->errlen, -EINVAL, INDEX_NAME ": no weight_map object");
		goto out;
	}
	cap = (size_t)json_object_object_length(wm);
	names = calloc(cap + 1, sizeof(*names));
	if (!names) {
		r = -ENOMEM;
		goto out;
	}
	json_object_object_foreach(wm, tname, fname) {
		const char *f = json_object_get_string(fname);

		if (!json_object_is_type(fname, json_type_string)) {
			r = catalog_errf(l->err, l->errlen, -EINVAL, INDEX_NAME ": weight_map['%s'] is not a string", tname);
			goto out;
		}
		if (!confined_name(f)) {
			r = catalog_errf(l->err, l->errlen, -EINVAL,
				 INDEX_NAME ": weight_map['%s'] = '%s': file names must stay in the checkpoint directory",
				 tname, f);
			goto out;
		}
		names[n++] = (char *)f;
	}
	if (!n) {
		r = catalog_errf(l->err, l->errlen, -EINVAL, INDEX_NAME ": weight_map is empty");
		goto out;
	}
	qsort(names, n, sizeof(*names), cmp_str);
	l->shards = calloc(n, sizeof(*l->shards));
	if (!l->shards) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (i && !strcmp(names[i], names[i - 1]))
			continue;
		l->shards[l->nshards].name = strdup(names[i]);
		if (!l->shards[l->nshards].name) {
			r = -ENOMEM;
			goto out;
		}
		r = load_shard(l, &l->shards[l->nshards++]);
		if (r)
			goto out;
	}
	/* Every tensor the index names must be in the shard it names (shards are sorted by name). */
	json_object_object_foreach(wm, tname2, fname2) {
		struct shard key = { .name = (char *)json_object_get_string(fname2) };
		const struct shard *s = bsearch(&key, l->shards, l->nshards, sizeof(*s), cmp_shard);

		if (!s || !st_header_find(s->h, tname2)) {
			r = catalog_errf(l->err, l->errlen, -EINVAL,
				 INDEX_NAME ": tensor '%s' is mapped to %s, which does not contain it", tname2, key.name);
			goto out;
		}
	}
	l->weight_map = json_object_get(wm);
out:
	free(names);
	json_object_put(index);
	return r;
}

static void loader_free(struct loader *l)
{
	for (size_t i = 0; i < l->nshards; i++) {
		free(l->shards[i].name);
		st_header_free(l->shards[i].h);
	}
	free(l->shards);
	free(l->realdir);
	json_object_put(l->weight_map);
	json_object_put(l->config);
}

/* A tensor of a sharded checkpoint counts where the index puts it, nowhere else. */
bool catalog_tensor_listed(const struct loader *l, const struct shard *s, const char *name)
{
	struct json_object *f;

	if (!l->weight_map)
		return true;
	return json_object_object_get_ex(l->weight_map, name, &f) && !strcmp(json_object_get_string(f), s->name);
}

/* ---- config.json ------------------------------------------------------------------------ */

/* A positive integer under one of keys, at the top level or in text_config (Llama 4). */
static int config_number(struct loader *l, const char *const *keys, uint32_t *out)
{
	struct json_object *scopes[2] = { l->config, NULL }, *v;

	*out = 0;
	if (!l->config)
		return 0;
	if (json_object_object_get_ex(l->config, "text_config", &v) && json_object_is_type(v, json_type_object))
		scopes[1] = v;
	for (size_t s = 0; s < 2 && scopes[s]; s++) {
		for (size_t k = 0; keys[k]; k++) {
			int64_t n;

			if (!json_object_object_get_ex(scopes[s], keys[k], &v) || json_object_is_type(v, json_type_null))
				continue;
			n = json_object_get_int64(v);
			if (!json_object_is_type(v, json_type_int) || n <= 0 || n >= CATALOG_MAX_NUMBER)
				return catalog_errf(l->err, l->errlen, -EINVAL, "%s/" CONFIG_NAME ": %s is not a positive integer",
					    l->dir, keys[k]);
			*out = (uint32_t)n;
			return 0;
		}
	}
	return 0;
}

static int apply_config(struct catalog *cat, struct loader *l)
{
	static const char *const expert_keys[] = { "num_local_experts", "num_experts", "n_routed_experts", NULL };
	static const char *const topk_keys[] = { "num_experts_per_tok", "experts_per_token", "moe_top_k", NULL };
	uint32_t n;
	int r;

	r = config_number(l, expert_keys, &n);
	if (r)
		return r;
	if (n && n != cat->experts_per_layer)
		return catalog_errf(l->err, l->errlen, -EINVAL,
			    "%s: " CONFIG_NAME " says %u experts per layer, the tensors (preset %s) have %u",
			    l->dir, n, cat->preset, cat->experts_per_layer);
	r = config_number(l, topk_keys, &cat->top_k);
	if (r)
		return r;
	if (cat->top_k > cat->experts_per_layer)
		return catalog_errf(l->err, l->errlen, -EINVAL, "%s: " CONFIG_NAME ": top-k %u exceeds %u experts per layer",
			    l->dir, cat->top_k, cat->experts_per_layer);
	return 0;
}

/* ---- slots ------------------------------------------------------------------------------ */

static int layout_expert(struct catalog_expert *ex, uint64_t align)
{
	struct catalog_extent *xs = calloc(ex->ntensors + 1, sizeof(*xs));
	struct catalog_extent *cur = NULL;
	uint32_t n = 0;
	uint64_t pos = 0;

	if (!xs)
		return -ENOMEM;
	for (uint32_t i = 0; i < ex->ntensors; i++) {
		struct catalog_tensor *t = &ex->tensors[i];
		uint64_t start = t->offset & ~(align - 1);
		uint64_t end = (t->offset + t->length + align - 1) & ~(align - 1);

		/*
		 * Only forward continuations join an extent: in the reference
		 * writer's order (scales grouped apart from weights) a weight's
		 * neighbour in the file is not its neighbour in the slot, and
		 * its block is then read twice rather than placed twice.
		 */
		if (cur && cur->file == t->file && start >= cur->offset && start <= cur->offset + cur->length) {
			if (end > cur->offset + cur->length) {
				pos += end - (cur->offset + cur->length);
				cur->length = end - cur->offset;
			}
		} else {
			cur = &xs[n++];
			cur->file = t->file;
			cur->offset = start;
			cur->length = end - start;
			cur->slot_offset = pos;
			pos += cur->length;
		}
		t->slot_offset = cur->slot_offset + (t->offset - cur->offset);
	}
	free(ex->extents);
	ex->extents = xs;
	ex->nextents = n;
	ex->slot_bytes = pos;
	return 0;
}

int catalog_layout_slots(struct catalog *cat, uint64_t align)
{
	int r;

	if (!align || (align & (align - 1)))
		return -EINVAL;
	cat->slot_bytes = 0;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		r = layout_expert(&cat->experts[i], align);
		if (r)
			return r;
		if (cat->experts[i].slot_bytes > cat->slot_bytes)
			cat->slot_bytes = cat->experts[i].slot_bytes;
	}
	cat->align = align;
	return 0;
}

/* ---- open / find / free ------------------------------------------------------------------- */

static const struct conf_preset *find_preset(const struct tierd_conf *user, const struct tierd_conf *builtin,
					     const char *name)
{
	const struct tierd_conf *cs[2] = { user, builtin };

	for (size_t c = 0; c < 2; c++)
		for (size_t i = 0; cs[c] && i < cs[c]->npresets; i++)
			if (!strcmp(cs[c]->presets[i].name, name))
				return &cs[c]->presets[i];
	return NULL;
}

/* The preset that claims the most tensors; the user's first, then built-ins, earlier wins ties. */
static const struct conf_preset *detect_preset(const struct loader *l, const struct tierd_conf *user,
					       const struct tierd_conf *builtin)
{
	const struct tierd_conf *cs[2] = { user, builtin };
	const struct conf_preset *best = NULL;
	size_t best_score = 0;

	for (size_t c = 0; c < 2; c++) {
		for (size_t i = 0; cs[c] && i < cs[c]->npresets; i++) {
			const struct conf_preset *p = &cs[c]->presets[i];
			size_t score;

			/* A user preset of the same name replaces the built-in one. */
			if (c == 1 && user && find_preset(user, NULL, p->name))
				continue;
			score = catalog_preset_score(l, p);
			if (score > best_score) {
				best = p;
				best_score = score;
			}
		}
	}
	return best;
}

int catalog_open(struct catalog **out, const char *dir, const char *preset,
		 const struct tierd_conf *conf, char *err, size_t errlen)
{
	struct loader l = { .dir = dir, .err = err, .errlen = errlen };
	struct tierd_conf builtin;
	const struct conf_preset *p;
	struct parts ps = { 0 };
	struct catalog *cat = NULL;
	bool builtin_ok = false;
	int r;

	*out = NULL;
	r = conf_init(&builtin);
	if (r)
		goto out;
	builtin_ok = true;
	r = conf_load_string(&builtin, "built-in presets", builtin_presets, err, errlen);
	if (r)
		goto out;
	for (size_t c = 0; conf && c < conf->npresets; c++) {
		r = catalog_preset_check(conf->path, &conf->presets[c], err, errlen);
		if (r)
			goto out;
	}
	r = load_files(&l);
	if (r)
		goto out;
	if (preset) {
		p = find_preset(conf, &builtin, preset);
		if (!p) {
			r = catalog_errf(err, errlen, -ENOENT, "preset '%s' is neither built in nor configured", preset);
			goto out;
		}
	} else {
		p = detect_preset(&l, conf, &builtin);
		if (!p) {
			r = catalog_errf(err, errlen, -ENOENT, "%s: no preset matches any tensor name (is it a MoE checkpoint?)",
				 dir);
			goto out;
		}
	}

	cat = calloc(1, sizeof(*cat));
	if (!cat || !(cat->dir = strdup(dir)) || !(cat->preset = strdup(p->name))) {
		r = -ENOMEM;
		goto out;
	}
	r = catalog_collect_parts(&l, p, &ps, &cat->dense_tensors);
	if (r)
		goto out;
	if (!ps.n) {
		r = catalog_errf(err, errlen, -ENOENT, "%s: preset %s matches no tensor", dir, p->name);
		goto out;
	}
	r = catalog_build_experts(cat, &l, &ps);
	if (r)
		goto out;
	r = apply_config(cat, &l);
	if (r)
		goto out;
	cat->files = calloc(l.nshards, sizeof(*cat->files));
	if (!cat->files) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t f = 0; f < l.nshards; f++) {
		if (asprintf(&cat->files[f].path, "%s/%s", dir, l.shards[f].name) < 0) {
			cat->files[f].path = NULL;
			r = -ENOMEM;
			goto out;
		}
		cat->files[f].size = l.shards[f].h->file_size;
		cat->nfiles++;
	}
	r = catalog_layout_slots(cat, CATALOG_DEFAULT_ALIGN);
	if (r)
		goto out;
	*out = cat;
	cat = NULL;
out:
	if (r == -ENOMEM)
		catalog_errf(err, errlen, r, "%s: out of memory", dir);
	catalog_free(cat);
	catalog_parts_free(&ps);
	loader_free(&l);
	if (builtin_ok)
		conf_free(&builtin);
	return r;
}

void catalog_free(struct catalog *cat)
{
	if (!cat)
		return;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		for (uint32_t j = 0; j < cat->experts[i].ntensors; j++)
			free(cat->experts[i].tensors[j].name);
		free(cat->experts[i].tensors);
		free(cat->experts[i].extents);
	}
	free(cat->experts);
	for (uint32_t f = 0; f < cat->nfiles; f++)
		free(cat->files[f].path);
	free(cat->files);
	free(cat->preset);
	free(cat->dir);
	free(cat);
}

bool catalog_same_experts(const struct catalog *a, const struct catalog *b, char *why, size_t len)
{
	if (a->nfiles != b->nfiles) {
		snprintf(why, len, "%u shard files, there were %u", b->nfiles, a->nfiles);
		return false;
	}
	for (uint32_t f = 0; f < a->nfiles; f++) {
		if (strcmp(a->files[f].path, b->files[f].path)) {
			snprintf(why, len, "shard %s is new", b->files[f].path);
			return false;
		}
	}
	if (a->top_k != b->top_k) {
		snprintf(why, len, "top_k is %u, it was %u", b->top_k, a->top_k);
		return false;
	}
	if (a->nexperts != b->nexperts) {
		snprintf(why, len, "%u experts, there were %u", b->nexperts, a->nexperts);
		return false;
	}
	for (uint32_t i = 0; i < a->nexperts; i++) {
		const struct catalog_expert *x = &a->experts[i], *y = &b->experts[i];

		if (x->layer != y->layer || x->expert != y->expert || x->ntensors != y->ntensors) {
			snprintf(why, len, "layer %u expert %u is not what it was", y->layer, y->expert);
			return false;
		}
		for (uint32_t t = 0; t < x->ntensors; t++) {
			const struct catalog_tensor *u = &x->tensors[t], *v = &y->tensors[t];

			if (strcmp(u->name, v->name) || u->dtype != v->dtype || u->ndim != v->ndim ||
			    memcmp(u->shape, v->shape, sizeof(u->shape))) {
				snprintf(why, len, "tensor %s changed name, dtype or shape", v->name);
				return false;
			}
		}
	}
	return true;
}

bool catalog_same_layout(const struct catalog *a, const struct catalog *b)
{
	char why[256];

	if (!catalog_same_experts(a, b, why, sizeof(why)) || a->slot_bytes != b->slot_bytes)
		return false;
	for (uint32_t f = 0; f < a->nfiles; f++)
		if (a->files[f].size != b->files[f].size)
			return false;
	for (uint32_t i = 0; i < a->nexperts; i++) {
		const struct catalog_expert *x = &a->experts[i], *y = &b->experts[i];

		if (x->nextents != y->nextents)
			return false;
		for (uint32_t t = 0; t < x->ntensors; t++) {
			const struct catalog_tensor *u = &x->tensors[t], *v = &y->tensors[t];

			if (u->file != v->file || u->offset != v->offset || u->length != v->length ||
			    u->slot_offset != v->slot_offset)
				return false;
		}
		for (uint32_t k = 0; k < x->nextents; k++) {
			const struct catalog_extent *u = &x->extents[k], *v = &y->extents[k];

			if (u->file != v->file || u->offset != v->offset || u->length != v->length ||
			    u->slot_offset != v->slot_offset)
				return false;
		}
	}
	return true;
}

const struct catalog_expert *catalog_find(const struct catalog *cat, uint32_t layer, uint32_t expert)
{
	size_t lo = 0, hi = cat->nexperts;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct catalog_expert *e = &cat->experts[mid];

		if (e->layer == layer && e->expert == expert)
			return e;
		if (e->layer < layer || (e->layer == layer && e->expert < expert))
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
