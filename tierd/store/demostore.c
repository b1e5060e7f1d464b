/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <endian.h>
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

#include "demostore.h"
#include "log.h"

#define WRITE_BUF	(8U << 20)	/* large writes keep multi-GiB stores disk-bound */
#define DENSE_EXPERT	UINT32_MAX	/* "expert" number of dense tensors' contents */
#define FP8_BLOCK	128		/* DeepSeek-V3's weight_block_size */

/* splitmix64's finaliser: cheap, and every input bit moves every output bit. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint64_t seed_of(uint32_t layer, uint32_t expert, uint32_t ti)
{
	return mix64(mix64(mix64(layer + 0x7465696564ULL) ^ expert) ^ ti);
}

/* Word i (bytes 8i..8i+7, little-endian) of a tensor's contents. */
static inline uint64_t word_of(uint64_t seed, uint64_t i)
{
	return mix64(seed + i * 0x9e3779b97f4a7c15ULL);
}

uint8_t demostore_byte(uint32_t layer, uint32_t expert, uint32_t tensor_index, uint64_t offset)
{
	return (uint8_t)(word_of(seed_of(layer, expert, tensor_index), offset >> 3) >> ((offset & 7) * 8));
}

void demostore_fill(uint32_t layer, uint32_t expert, uint32_t tensor_index, uint64_t offset,
		    void *buf, size_t len)
{
	uint64_t seed = seed_of(layer, expert, tensor_index);
	uint8_t *p = buf;

	for (; len && (offset & 7); len--, offset++)
		*p++ = (uint8_t)(word_of(seed, offset >> 3) >> ((offset & 7) * 8));
	for (; len >= 8; len -= 8, offset += 8, p += 8) {
		uint64_t w = htole64(word_of(seed, offset >> 3));

		memcpy(p, &w, 8);
	}
	for (; len; len--, offset++)
		*p++ = (uint8_t)(word_of(seed, offset >> 3) >> ((offset & 7) * 8));
}

int demostore_verify_expert(const struct catalog_expert *ex, const void *slot)
{
	uint8_t want[16384];

	for (uint32_t i = 0; i < ex->ntensors; i++) {
		const struct catalog_tensor *t = &ex->tensors[i];
		const uint8_t *have = (const uint8_t *)slot + t->slot_offset;

		for (uint64_t off = 0; off < t->length; off += sizeof(want)) {
			size_t n = t->length - off < sizeof(want) ? (size_t)(t->length - off) : sizeof(want);

			demostore_fill(ex->layer, ex->expert, i, off, want, n);
			if (memcmp(have + off, want, n)) {
				size_t k = 0;

				while (have[off + k] == want[k])
					k++;
				log_warn("demostore: layer %u expert %u tensor '%s': byte %" PRIu64 " is 0x%02x, expected 0x%02x",
					 ex->layer, ex->expert, t->name, off + k, have[off + k], want[k]);
				return -EBADMSG;
			}
		}
	}
	return 0;
}

void demostore_opts_default(struct demostore_opts *o)
{
	*o = (struct demostore_opts){
		.layers = 2, .experts = 4, .hidden = 64, .ffn = 96, .shards = 2, .top_k = 2,
		.dtype = TIERD_DTYPE_BF16, .layout = DEMOSTORE_MIXTRAL,
	};
}

static const char *const layout_names[] = {
	[DEMOSTORE_MIXTRAL] = "mixtral",
	[DEMOSTORE_QWEN] = "qwen",
	[DEMOSTORE_FUSED] = "fused",
};

const char *demostore_layout_name(enum demostore_layout l)
{
	return (unsigned)l <= DEMOSTORE_FUSED ? layout_names[l] : "?";
}

int demostore_layout_parse(const char *s, enum demostore_layout *out)
{
	if (!strcmp(s, "mixtral"))
		*out = DEMOSTORE_MIXTRAL;
	else if (!strcmp(s, "qwen") || !strcmp(s, "qwen-moe"))
		*out = DEMOSTORE_QWEN;
	else if (!strcmp(s, "fused") || !strcmp(s, "llama4"))
		*out = DEMOSTORE_FUSED;
	else
		return -EINVAL;
	return 0;
}

/* ---- the tensor list ---------------------------------------------------------------------- */

struct spec {
	char *name;
	enum tierd_dtype dtype;
	uint32_t ndim;
	uint64_t shape[4];
	uint32_t layer;
	uint32_t expert;	/* DENSE_EXPERT for dense tensors */
	uint32_t ti;		/* tensor index in the expert (content) */
	bool fused;		/* shape[0] experts, slice e has expert e's contents */
	uint32_t shard;
	uint64_t bytes;
	uint64_t begin;		/* data_offsets, set per shard */
};

struct specs {
	struct spec *v;
	size_t n, cap;
};

/* The roles of one expert's tensors, in name order (= the catalog's tensor index). */
struct role {
	const char *suffix;
	bool scale;		/* FP8 block scale of the previous weight */
	bool out_hidden;	/* [hidden, ffn] rather than [ffn, hidden] */
};

static const struct role mixtral_roles[] = {
	{ "w1.weight", false, false }, { "w2.weight", false, true }, { "w3.weight", false, false },
};
static const struct role qwen_roles[] = {
	{ "down_proj.weight", false, true }, { "down_proj.weight_scale_inv", true, true },
	{ "gate_proj.weight", false, false }, { "gate_proj.weight_scale_inv", true, false },
	{ "up_proj.weight", false, false }, { "up_proj.weight_scale_inv", true, false },
};

static int specs_add(struct specs *ss, enum tierd_dtype dtype, uint32_t layer, uint32_t expert, uint32_t ti,
		     uint32_t shard, uint32_t ndim, const uint64_t *shape, const char *fmt, ...)
	__attribute__((format(printf, 9, 10)));
static int specs_add(struct specs *ss, enum tierd_dtype dtype, uint32_t layer, uint32_t expert, uint32_t ti,
		     uint32_t shard, uint32_t ndim, const uint64_t *shape, const char *fmt, ...)
{
	struct spec *s;
	va_list ap;
	int n;

	if (ss->n == ss->cap) {
		size_t cap = ss->cap ? ss->cap * 2 : 64;
		struct spec *v = realloc(ss->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ss->v = v;
		ss->cap = cap;
	}
	s = &ss->v[ss->n];
	memset(s, 0, sizeof(*s));
	va_start(ap, fmt);
	n = vasprintf(&s->name, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	s->dtype = dtype;
	s->layer = layer;
	s->expert = expert;
	s->ti = ti;
	s->shard = shard;
	s->ndim = ndim;
	s->bytes = tierd_dtype_size(dtype);
	for (uint32_t i = 0; i < ndim; i++) {
		s->shape[i] = shape[i];
		s->bytes *= shape[i];
	}
	ss->n++;
	return 0;
}

#define SHAPE(...) (const uint64_t[]){ __VA_ARGS__ }
#define NDIM(...) (uint32_t)(sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t))
#define ADD(dt, l, e, ti, sh, nd_shape, ...) \
	specs_add(ss, dt, l, e, ti, sh, NDIM nd_shape, SHAPE nd_shape, __VA_ARGS__)

static int add_layer(struct specs *ss, const struct demostore_opts *o, uint32_t l, uint32_t sh)
{
	const uint64_t H = o->hidden, F = o->ffn, E = o->experts;
	enum tierd_dtype dense = o->dtype == TIERD_DTYPE_F8_E4M3 || o->dtype == TIERD_DTYPE_F8_E5M2 ? TIERD_DTYPE_BF16 : o->dtype;
	bool fp8 = o->dtype == TIERD_DTYPE_F8_E4M3;
	int r = 0;

	/* Dense tensors of the layer: attention and norm, which no preset may claim. */
	r = r ?: ADD(dense, l, DENSE_EXPERT, 0, sh, (H, H), "model.layers.%u.self_attn.q_proj.weight", l);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 1, sh, (H), "model.layers.%u.input_layernorm.weight", l);
	switch (o->layout) {
	case DEMOSTORE_MIXTRAL:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.block_sparse_moe.gate.weight", l);
		for (uint32_t e = 0; e < E && !r; e++)
			for (uint32_t ti = 0; ti < 3 && !r; ti++) {
				const struct role *ro = &mixtral_roles[ti];

				r = ro->out_hidden ?
					ADD(o->dtype, l, e, ti, sh, (H, F), "model.layers.%u.block_sparse_moe.experts.%u.%s", l, e, ro->suffix) :
					ADD(o->dtype, l, e, ti, sh, (F, H), "model.layers.%u.block_sparse_moe.experts.%u.%s", l, e, ro->suffix);
			}
		break;
	case DEMOSTORE_QWEN:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.mlp.gate.weight", l);
		r = r ?: ADD(dense, l, DENSE_EXPERT, 3, sh, (F, H), "model.layers.%u.mlp.shared_expert.gate_proj.weight", l);
		for (uint32_t e = 0; e < E && !r; e++) {
			uint32_t ti = 0;

			for (size_t k = 0; k < sizeof(qwen_roles) / sizeof(qwen_roles[0]) && !r; k++) {
				const struct role *ro = &qwen_roles[k];
				uint64_t rows = ro->out_hidden ? H : F, cols = ro->out_hidden ? F : H;

				if (ro->scale && !fp8)
					continue;
				if (ro->scale)
					r = ADD(TIERD_DTYPE_F32, l, e, ti, sh,
						((rows + FP8_BLOCK - 1) / FP8_BLOCK, (cols + FP8_BLOCK - 1) / FP8_BLOCK),
						"model.layers.%u.mlp.experts.%u.%s", l, e, ro->suffix);
				else
					r = ADD(o->dtype, l, e, ti, sh, (rows, cols),
						"model.layers.%u.mlp.experts.%u.%s", l, e, ro->suffix);
				ti++;
			}
		}
		break;
	case DEMOSTORE_FUSED:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.feed_forward.router.weight", l);
		r = r ?: ADD(dense, l, DENSE_EXPERT, 3, sh, (H, F),
			     "model.layers.%u.feed_forward.shared_expert.down_proj.weight", l);
		r = r ?: ADD(o->dtype, l, 0, 0, sh, (E, F, H), "model.layers.%u.feed_forward.experts.down_proj", l);
		if (!r)
			ss->v[ss->n - 1].fused = true;
		r = r ?: ADD(o->dtype, l, 0, 1, sh, (E, H, 2 * F), "model.layers.%u.feed_forward.experts.gate_up_proj", l);
		if (!r)
			ss->v[ss->n - 1].fused = true;
		break;
	}
	return r;
}

static int build_specs(struct specs *ss, const struct demostore_opts *o)
{
	const uint64_t H = o->hidden, V = 256;
	enum tierd_dtype dense = o->dtype == TIERD_DTYPE_F8_E4M3 || o->dtype == TIERD_DTYPE_F8_E5M2 ? TIERD_DTYPE_BF16 : o->dtype;
	int r;

	r = ADD(dense, 0, DENSE_EXPERT, 100, 0, (V, H), "model.embed_tokens.weight");
	for (uint32_t l = 0; l < o->layers && !r; l++)
		r = add_layer(ss, o, l, (uint32_t)((uint64_t)l * o->shards / o->layers));
	r = r ?: ADD(dense, 0, DENSE_EXPERT, 101, o->shards - 1, (H), "model.norm.weight");
	r = r ?: ADD(dense, 0, DENSE_EXPERT, 102, o->shards - 1, (V, H), "lm_head.weight");
	return r;
}

uint64_t demostore_expert_bytes(const struct demostore_opts *o)
{
	uint64_t w = (uint64_t)o->hidden * o->ffn * tierd_dtype_size(o->dtype) * 3;

	if (o->layout == DEMOSTORE_QWEN && o->dtype == TIERD_DTYPE_F8_E4M3) {
		uint64_t hb = (o->hidden + FP8_BLOCK - 1) / FP8_BLOCK, fb = (o->ffn + FP8_BLOCK - 1) / FP8_BLOCK;

		w += 3 * hb * fb * tierd_dtype_size(TIERD_DTYPE_F32);
	}
	return w;
}

/* ---- writing ---------------------------------------------------------------------------- */

struct writer {
	int fd;
	uint8_t *buf;
	size_t used;
	const char *path;
	char *err;
	size_t errlen;
};

static int writer_flush(struct writer *w)
{
	size_t done = 0;

	while (done < w->used) {
		ssize_t n = write(w->fd, w->buf + done, w->used - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			snprintf(w->err, w->errlen, "%s: write: %s", w->path, strerror(-r));
			return r;
		}
		done += (size_t)n;
	}
	w->used = 0;
	return 0;
}

/* Appends len bytes of (layer, expert, ti) contents starting at offset 0. */
static int writer_contents(struct writer *w, uint32_t layer, uint32_t expert, uint32_t ti, uint64_t len)
{
	for (uint64_t off = 0; off < len;) {
		size_t n = WRITE_BUF - w->used;
		int r;

		if (n > len - off)
			n = (size_t)(len - off);
		demostore_fill(layer, expert, ti, off, w->buf + w->used, n);
		w->used += n;
		off += n;
		if (w->used == WRITE_BUF) {
			r = writer_flush(w);
			if (r)
				return r;
		}
	}
	return 0;
}

static int write_json(const char *path, struct json_object *o, char *err, size_t errlen)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	FILE *f = fopen(path, "we");
	int r = 0;

	if (!s)
		return -ENOMEM;
	if (!f || fputs(s, f) < 0 || fputc('\n', f) < 0)
		r = -errno ?: -EIO;
	if (f && fclose(f) && !r)
		r = -errno ?: -EIO;
	if (r)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	return r;
}

static struct json_object *shape_json(const struct spec *s)
{
	struct json_object *a = json_object_new_array();

	for (uint32_t i = 0; a && i < s->ndim; i++)
		json_object_array_add(a, json_object_new_int64((int64_t)s->shape[i]));
	return a;
}

static int write_shard(const char *dir, const char *name, struct specs *ss, uint32_t shard,
		       struct json_object *weight_map, uint64_t *total, char *err, size_t errlen)
{
	struct writer w = { .fd = -1, .err = err, .errlen = errlen };
	struct json_object *hdr = json_object_new_object(), *md = json_object_new_object();
	char path[PATH_MAX];
	const char *js;
	uint64_t pos = 0, hl, le;
	size_t jl;
	int r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	w.path = path;
	if (!hdr || !md) {
		json_object_put(md);
		r = -ENOMEM;
		goto out;
	}
	json_object_object_add(md, "format", json_object_new_string("pt"));
	json_object_object_add(hdr, "__metadata__", md);
	for (size_t i = 0; i < ss->n; i++) {
		struct spec *s = &ss->v[i];
		struct json_object *t, *offs;

		if (s->shard != shard)
			continue;
		s->begin = pos;
		pos += s->bytes;
		t = json_object_new_object();
		offs = json_object_new_array();
		if (!t || !offs) {
			json_object_put(t);
			json_object_put(offs);
			r = -ENOMEM;
			goto out;
		}
		json_object_array_add(offs, json_object_new_int64((int64_t)s->begin));
		json_object_array_add(offs, json_object_new_int64((int64_t)pos));
		json_object_object_add(t, "dtype", json_object_new_string(tierd_dtype_name(s->dtype)));
		json_object_object_add(t, "shape", shape_json(s));
		json_object_object_add(t, "data_offsets", offs);
		json_object_object_add(hdr, s->name, t);
		if (weight_map)
			json_object_object_add(weight_map, s->name, json_object_new_string(name));
	}
	*total += pos;
	js = json_object_to_json_string_ext(hdr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!js) {
		r = -ENOMEM;
		goto out;
	}
	jl = strlen(js);
	/* Like the reference writer, pad the header with spaces so the data area starts 8-aligned. */
	hl = (jl + 7) & ~7ULL;
	w.buf = malloc(WRITE_BUF);
	if (!w.buf) {
		r = -ENOMEM;
		goto out;
	}
	w.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w.fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	le = htole64(hl);
	memcpy(w.buf, &le, 8);
	w.used = 8;
	/* The header fits the buffer unless the store has hundreds of thousands of tensors. */
	for (size_t i = 0; i < hl; i++) {
		w.buf[w.used++] = i < jl ? (uint8_t)js[i] : ' ';
		if (w.used == WRITE_BUF && (r = writer_flush(&w)))
			goto out;
	}
	for (size_t i = 0; i < ss->n && !r; i++) {
		const struct spec *s = &ss->v[i];

		if (s->shard != shard)
			continue;
		if (s->fused) {
			for (uint64_t e = 0; e < s->shape[0] && !r; e++)
				r = writer_contents(&w, s->layer, (uint32_t)e, s->ti, s->bytes / s->shape[0]);
		} else {
			r = writer_contents(&w, s->layer, s->expert, s->ti, s->bytes);
		}
	}
	if (!r)
		r = writer_flush(&w);
	if (!r && close(w.fd)) {
		r = -errno;
		snprintf(err, errlen, "%s: close: %s", path, strerror(-r));
	}
	w.fd = -1;
out:
	if (w.fd >= 0)
		close(w.fd);
	free(w.buf);
	json_object_put(hdr);
	if (r == -ENOMEM)
		snprintf(err, errlen, "%s: out of memory", path);
	return r;
}

static struct json_object *config_json(const struct demostore_opts *o)
{
	struct json_object *c = json_object_new_object(), *arch = json_object_new_array();
	const char *archs[] = {
		[DEMOSTORE_MIXTRAL] = "MixtralForCausalLM",
		[DEMOSTORE_QWEN] = "Qwen2MoeForCausalLM",
		[DEMOSTORE_FUSED] = "Llama4ForCausalLM",
	};
	const char *types[] = {
		[DEMOSTORE_MIXTRAL] = "mixtral",
		[DEMOSTORE_QWEN] = "qwen2_moe",
		[DEMOSTORE_FUSED] = "llama4_text",
	};

	if (!c || !arch) {
		json_object_put(c);
		json_object_put(arch);
		return NULL;
	}
	json_object_array_add(arch, json_object_new_string(archs[o->layout]));
	json_object_object_add(c, "architectures", arch);
	json_object_object_add(c, "model_type", json_object_new_string(types[o->layout]));
	json_object_object_add(c, "hidden_size", json_object_new_int64(o->hidden));
	json_object_object_add(c, "num_hidden_layers", json_object_new_int64(o->layers));
	json_object_object_add(c, o->layout == DEMOSTORE_QWEN ? "moe_intermediate_size" : "intermediate_size",
			       json_object_new_int64(o->ffn));
	json_object_object_add(c, o->layout == DEMOSTORE_QWEN ? "num_experts" : "num_local_experts",
			       json_object_new_int64(o->experts));
	json_object_object_add(c, "num_experts_per_tok", json_object_new_int64(o->top_k));
	json_object_object_add(c, "torch_dtype", json_object_new_string(o->dtype == TIERD_DTYPE_F32 ? "float32" :
									 o->dtype == TIERD_DTYPE_F16 ? "float16" : "bfloat16"));
	if (o->dtype == TIERD_DTYPE_F8_E4M3) {
		struct json_object *q = json_object_new_object(), *b = json_object_new_array();

		json_object_array_add(b, json_object_new_int(FP8_BLOCK));
		json_object_array_add(b, json_object_new_int(FP8_BLOCK));
		json_object_object_add(q, "quant_method", json_object_new_string("fp8"));
		json_object_object_add(q, "fmt", json_object_new_string("e4m3"));
		json_object_object_add(q, "weight_block_size", b);
		json_object_object_add(c, "quantization_config", q);
	}
	return c;
}

int demostore_write(const char *dir, const struct demostore_opts *o, char *err, size_t errlen)
{
	struct json_object *index = NULL, *wm = NULL, *md = NULL, *cfg = NULL;
	struct specs ss = { 0 };
	char path[PATH_MAX], name[64];
	uint64_t total = 0;
	int r;

	if (!o->layers || !o->experts || !o->hidden || !o->ffn || !o->shards || o->shards > o->layers ||
	    o->layers > 100000 || o->experts > 65536 || o->top_k > o->experts) {
		snprintf(err, errlen, "demo store: need layers, experts, hidden, ffn >= 1, 1 <= shards <= layers "
			 "and top_k <= experts");
		return -EINVAL;
	}
	if (!tierd_dtype_size(o->dtype)) {
		snprintf(err, errlen, "demo store: bad dtype");
		return -EINVAL;
	}
	if (mkdir(dir, 0755) && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(-r));
		return r;
	}
	r = build_specs(&ss, o);
	if (r)
		goto out;
	if (o->shards > 1) {
		index = json_object_new_object();
		wm = json_object_new_object();
		md = json_object_new_object();
		if (!index || !wm || !md) {
			json_object_put(wm);
			json_object_put(md);
			r = -ENOMEM;
			goto out;
		}
		json_object_object_add(md, "total_size", json_object_new_int64(0));
		json_object_object_add(index, "metadata", md);
		json_object_object_add(index, "weight_map", wm);
	}
	for (uint32_t s = 0; s < o->shards; s++) {
		if (o->shards == 1)
			snprintf(name, sizeof(name), "model.safetensors");
		else
			snprintf(name, sizeof(name), "model-%05u-of-%05u.safetensors", s + 1, o->shards);
		r = write_shard(dir, name, &ss, s, wm, &total, err, errlen);
		if (r)
			goto out;
	}
	if (index) {
		json_object_object_add(md, "total_size", json_object_new_int64((int64_t)total));
		snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
		r = write_json(path, index, err, errlen);
		if (r)
			goto out;
	}
	cfg = config_json(o);
	if (!cfg) {
		r = -ENOMEM;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/config.json", dir);
	r = write_json(path, cfg, err, errlen);
out:
	if (r == -ENOMEM)
		snprintf(err, errlen, "%s: out of memory", dir);
	json_object_put(cfg);
	json_object_put(index);
	for (size_t i = 0; i < ss.n; i++)
		free(ss.v[i].name);
	free(ss.v);
	return r;
}
