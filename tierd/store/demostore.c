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
#define DEEPSEEK_DENSE_LAYERS	1	/* first_k_dense_replace: layers with a dense MLP */
#define DEEPSEEK_SHARED	2		/* n_shared_experts */
#define DEMO_VOCAB	256		/* tokens are bytes */

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

/*
 * Word i (bytes 8i..8i+7, little-endian) of a tensor's contents.  Random bits
 * under a mask that makes them finite numbers of modest size whatever the
 * dtype, so a decoder can run on them: every odd byte, the high byte of a
 * BF16/F16 element (and of an F32 one at bytes 3 and 7), is s0111 10x (BF16
 * and F32 magnitudes 2^-7..2^-3, F16 1..1.5, E4M3 1.5..1.75); every even
 * byte has bit 6 clear, so no FP8 byte is NaN or infinite.
 */
#define SANE_KEEP	0x81bf81bf81bf81bfULL
#define SANE_SET	0x3c003c003c003c00ULL
static inline uint64_t word_of(uint64_t seed, uint64_t i)
{
	return (mix64(seed + i * 0x9e3779b97f4a7c15ULL) & SANE_KEEP) | SANE_SET;
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
	[DEMOSTORE_OLMOE] = "olmoe",
	[DEMOSTORE_DEEPSEEK] = "deepseek",
};

const char *demostore_layout_name(enum demostore_layout l)
{
	return (unsigned)l <= DEMOSTORE_DEEPSEEK ? layout_names[l] : "?";
}

int demostore_layout_parse(const char *s, enum demostore_layout *out)
{
	if (!strcmp(s, "mixtral"))
		*out = DEMOSTORE_MIXTRAL;
	else if (!strcmp(s, "qwen") || !strcmp(s, "qwen-moe"))
		*out = DEMOSTORE_QWEN;
	else if (!strcmp(s, "fused") || !strcmp(s, "llama4"))
		*out = DEMOSTORE_FUSED;
	else if (!strcmp(s, "olmoe"))
		*out = DEMOSTORE_OLMOE;
	else if (!strcmp(s, "deepseek"))
		*out = DEMOSTORE_DEEPSEEK;
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
	bool ones;		/* a norm's weight: every element 1.0 */
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

/* Attention shape of the demo: heads of 64 (one head below that), a quarter as many KV heads. */
static void attn_shape(const struct demostore_opts *o, uint32_t *heads, uint32_t *kv_heads)
{
	*heads = o->hidden % 64 ? 1 : o->hidden / 64;
	*kv_heads = *heads % 4 ? *heads : *heads / 4;
}

static bool is_deepseek_dense(const struct demostore_opts *o, uint32_t l)
{
	return o->layout == DEMOSTORE_DEEPSEEK && l < DEEPSEEK_DENSE_LAYERS;
}

/* A SwiGLU MLP (gate, up, down) of width F under prefix: a dense layer's or a shared expert's. */
static int add_mlp(struct specs *ss, enum tierd_dtype dt, uint32_t l, uint32_t sh, uint32_t ti,
		   uint64_t H, uint64_t F, const char *prefix)
{
	int r = 0;

	r = r ?: ADD(dt, l, DENSE_EXPERT, ti, sh, (F, H), "model.layers.%u.%s.gate_proj.weight", l, prefix);
	r = r ?: ADD(dt, l, DENSE_EXPERT, ti + 1, sh, (F, H), "model.layers.%u.%s.up_proj.weight", l, prefix);
	r = r ?: ADD(dt, l, DENSE_EXPERT, ti + 2, sh, (H, F), "model.layers.%u.%s.down_proj.weight", l, prefix);
	return r;
}

/* Mixtral's w1/w2/w3 or the gate/up/down_proj (+ FP8 scales) of the others, for expert e. */
static int add_expert(struct specs *ss, const struct demostore_opts *o, uint32_t l, uint32_t e, uint32_t sh,
		      const char *prefix)
{
	const uint64_t H = o->hidden, F = o->ffn;
	bool fp8 = o->dtype == TIERD_DTYPE_F8_E4M3;
	const struct role *roles = o->layout == DEMOSTORE_MIXTRAL ? mixtral_roles : qwen_roles;
	size_t nroles = o->layout == DEMOSTORE_MIXTRAL ? 3 : sizeof(qwen_roles) / sizeof(qwen_roles[0]);
	uint32_t ti = 0;
	int r = 0;

	for (size_t k = 0; k < nroles && !r; k++) {
		const struct role *ro = &roles[k];
		uint64_t rows = ro->out_hidden ? H : F, cols = ro->out_hidden ? F : H;

		if (ro->scale && !fp8)
			continue;
		if (ro->scale)
			r = ADD(TIERD_DTYPE_F32, l, e, ti, sh,
				((rows + FP8_BLOCK - 1) / FP8_BLOCK, (cols + FP8_BLOCK - 1) / FP8_BLOCK),
				"model.layers.%u.%s.experts.%u.%s", l, prefix, e, ro->suffix);
		else
			r = ADD(o->dtype, l, e, ti, sh, (rows, cols), "model.layers.%u.%s.experts.%u.%s",
				l, prefix, e, ro->suffix);
		ti++;
	}
	return r;
}

static void last_is_ones(struct specs *ss, int r)
{
	if (!r)
		ss->v[ss->n - 1].ones = true;
}

static int add_layer(struct specs *ss, const struct demostore_opts *o, uint32_t l, uint32_t sh)
{
	const uint64_t H = o->hidden, F = o->ffn, E = o->experts;
	enum tierd_dtype dense = o->dtype == TIERD_DTYPE_F8_E4M3 || o->dtype == TIERD_DTYPE_F8_E5M2 ? TIERD_DTYPE_BF16 : o->dtype;
	uint32_t heads, kv_heads;
	uint64_t kv;
	int r = 0;

	attn_shape(o, &heads, &kv_heads);
	kv = H / heads * kv_heads;
	/* Dense tensors of the layer: attention and norms, which no preset may claim. */
	r = r ?: ADD(dense, l, DENSE_EXPERT, 0, sh, (H, H), "model.layers.%u.self_attn.q_proj.weight", l);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 1, sh, (H), "model.layers.%u.input_layernorm.weight", l);
	last_is_ones(ss, r);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 4, sh, (kv, H), "model.layers.%u.self_attn.k_proj.weight", l);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 5, sh, (kv, H), "model.layers.%u.self_attn.v_proj.weight", l);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 6, sh, (H, H), "model.layers.%u.self_attn.o_proj.weight", l);
	r = r ?: ADD(dense, l, DENSE_EXPERT, 7, sh, (H), "model.layers.%u.post_attention_layernorm.weight", l);
	last_is_ones(ss, r);
	if (o->layout == DEMOSTORE_QWEN) {
		/* Qwen2's attention has biases on q, k and v. */
		r = r ?: ADD(dense, l, DENSE_EXPERT, 8, sh, (H), "model.layers.%u.self_attn.q_proj.bias", l);
		r = r ?: ADD(dense, l, DENSE_EXPERT, 9, sh, (kv), "model.layers.%u.self_attn.k_proj.bias", l);
		r = r ?: ADD(dense, l, DENSE_EXPERT, 10, sh, (kv), "model.layers.%u.self_attn.v_proj.bias", l);
	}
	if (o->layout == DEMOSTORE_OLMOE) {
		/* OLMoE normalises q and k over all heads. */
		r = r ?: ADD(dense, l, DENSE_EXPERT, 8, sh, (H), "model.layers.%u.self_attn.q_norm.weight", l);
		last_is_ones(ss, r);
		r = r ?: ADD(dense, l, DENSE_EXPERT, 9, sh, (kv), "model.layers.%u.self_attn.k_norm.weight", l);
		last_is_ones(ss, r);
	}
	switch (o->layout) {
	case DEMOSTORE_MIXTRAL:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.block_sparse_moe.gate.weight", l);
		for (uint32_t e = 0; e < E && !r; e++)
			r = add_expert(ss, o, l, e, sh, "block_sparse_moe");
		break;
	case DEMOSTORE_QWEN:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.mlp.gate.weight", l);
		r = r ?: add_mlp(ss, dense, l, sh, 11, H, F, "mlp.shared_expert");
		r = r ?: ADD(dense, l, DENSE_EXPERT, 3, sh, (1, H), "model.layers.%u.mlp.shared_expert_gate.weight", l);
		for (uint32_t e = 0; e < E && !r; e++)
			r = add_expert(ss, o, l, e, sh, "mlp");
		break;
	case DEMOSTORE_OLMOE:
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.mlp.gate.weight", l);
		for (uint32_t e = 0; e < E && !r; e++)
			r = add_expert(ss, o, l, e, sh, "mlp");
		break;
	case DEMOSTORE_DEEPSEEK:
		if (is_deepseek_dense(o, l)) {
			r = r ?: add_mlp(ss, dense, l, sh, 11, H, 2 * F, "mlp");
			break;
		}
		r = r ?: ADD(dense, l, DENSE_EXPERT, 2, sh, (E, H), "model.layers.%u.mlp.gate.weight", l);
		r = r ?: add_mlp(ss, dense, l, sh, 11, H, F * DEEPSEEK_SHARED, "mlp.shared_experts");
		for (uint32_t e = 0; e < E && !r; e++)
			r = add_expert(ss, o, l, e, sh, "mlp");
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
	const uint64_t H = o->hidden, V = DEMO_VOCAB;
	enum tierd_dtype dense = o->dtype == TIERD_DTYPE_F8_E4M3 || o->dtype == TIERD_DTYPE_F8_E5M2 ? TIERD_DTYPE_BF16 : o->dtype;
	int r;

	r = ADD(dense, 0, DENSE_EXPERT, 100, 0, (V, H), "model.embed_tokens.weight");
	for (uint32_t l = 0; l < o->layers && !r; l++)
		r = add_layer(ss, o, l, (uint32_t)((uint64_t)l * o->shards / o->layers));
	r = r ?: ADD(dense, 0, DENSE_EXPERT, 101, o->shards - 1, (H), "model.norm.weight");
	last_is_ones(ss, r);
	r = r ?: ADD(dense, 0, DENSE_EXPERT, 102, o->shards - 1, (V, H), "lm_head.weight");
	return r;
}

uint32_t demostore_moe_layers(const struct demostore_opts *o)
{
	return o->layout == DEMOSTORE_DEEPSEEK ? o->layers - DEEPSEEK_DENSE_LAYERS : o->layers;
}

uint64_t demostore_expert_bytes(const struct demostore_opts *o)
{
	uint64_t w = (uint64_t)o->hidden * o->ffn * tierd_dtype_size(o->dtype) * 3;

	if (o->layout != DEMOSTORE_MIXTRAL && o->layout != DEMOSTORE_FUSED && o->dtype == TIERD_DTYPE_F8_E4M3) {
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

/* Appends n elements of 1.0 in dtype dt (a norm's weight). */
static int writer_ones(struct writer *w, enum tierd_dtype dt, uint64_t n)
{
	/* Little-endian 1.0: BF16 0x3f80, F16 0x3c00, F32 0x3f800000. */
	uint32_t one = dt == TIERD_DTYPE_F32 ? 0x3f800000U : dt == TIERD_DTYPE_F16 ? 0x3c00U : 0x3f80U;
	size_t sz = tierd_dtype_size(dt);

	for (uint64_t i = 0; i < n; i++) {
		uint32_t le = htole32(one);
		int r;

		if (w->used + sz > WRITE_BUF && (r = writer_flush(w)))
			return r;
		memcpy(w->buf + w->used, &le, sz);
		w->used += sz;
	}
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
		if (s->ones && (s->dtype == TIERD_DTYPE_BF16 || s->dtype == TIERD_DTYPE_F16 ||
				s->dtype == TIERD_DTYPE_F32)) {
			r = writer_ones(&w, s->dtype, s->shape[0]);
		} else if (s->fused) {
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

static void set_int(struct json_object *c, const char *key, int64_t v)
{
	json_object_object_add(c, key, json_object_new_int64(v));
}

/* What the layout's Hugging Face configuration class reads, with that class's key names. */
static struct json_object *config_json(const struct demostore_opts *o)
{
	struct json_object *c = json_object_new_object(), *arch = json_object_new_array();
	const char *archs[] = {
		[DEMOSTORE_MIXTRAL] = "MixtralForCausalLM",
		[DEMOSTORE_QWEN] = "Qwen2MoeForCausalLM",
		[DEMOSTORE_FUSED] = "Llama4ForCausalLM",
		[DEMOSTORE_OLMOE] = "OlmoeForCausalLM",
		[DEMOSTORE_DEEPSEEK] = "DeepseekForCausalLM",
	};
	const char *types[] = {
		[DEMOSTORE_MIXTRAL] = "mixtral",
		[DEMOSTORE_QWEN] = "qwen2_moe",
		[DEMOSTORE_FUSED] = "llama4_text",
		[DEMOSTORE_OLMOE] = "olmoe",
		[DEMOSTORE_DEEPSEEK] = "deepseek",
	};
	uint32_t heads, kv_heads;

	if (!c || !arch) {
		json_object_put(c);
		json_object_put(arch);
		return NULL;
	}
	attn_shape(o, &heads, &kv_heads);
	json_object_array_add(arch, json_object_new_string(archs[o->layout]));
	json_object_object_add(c, "architectures", arch);
	json_object_object_add(c, "model_type", json_object_new_string(types[o->layout]));
	set_int(c, "vocab_size", DEMO_VOCAB);
	set_int(c, "hidden_size", o->hidden);
	set_int(c, "num_hidden_layers", o->layers);
	set_int(c, "num_attention_heads", heads);
	set_int(c, "num_key_value_heads", kv_heads);
	set_int(c, "max_position_embeddings", 4096);
	json_object_object_add(c, "rms_norm_eps", json_object_new_double(1e-5));
	json_object_object_add(c, "rope_theta", json_object_new_double(10000.0));
	json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(0));
	json_object_object_add(c, "hidden_act", json_object_new_string("silu"));
	switch (o->layout) {
	case DEMOSTORE_MIXTRAL:
	case DEMOSTORE_FUSED:
		set_int(c, "intermediate_size", o->ffn);
		set_int(c, "num_local_experts", o->experts);
		break;
	case DEMOSTORE_QWEN:
		set_int(c, "intermediate_size", 2 * (int64_t)o->ffn);
		set_int(c, "moe_intermediate_size", o->ffn);
		set_int(c, "shared_expert_intermediate_size", o->ffn);
		set_int(c, "num_experts", o->experts);
		set_int(c, "decoder_sparse_step", 1);
		json_object_object_add(c, "norm_topk_prob", json_object_new_boolean(0));
		break;
	case DEMOSTORE_OLMOE:
		set_int(c, "intermediate_size", o->ffn);
		set_int(c, "num_experts", o->experts);
		json_object_object_add(c, "norm_topk_prob", json_object_new_boolean(0));
		break;
	case DEMOSTORE_DEEPSEEK:
		set_int(c, "intermediate_size", 2 * (int64_t)o->ffn);
		set_int(c, "moe_intermediate_size", o->ffn);
		set_int(c, "n_routed_experts", o->experts);
		set_int(c, "n_shared_experts", DEEPSEEK_SHARED);
		set_int(c, "first_k_dense_replace", DEEPSEEK_DENSE_LAYERS);
		set_int(c, "moe_layer_freq", 1);
		json_object_object_add(c, "scoring_func", json_object_new_string("softmax"));
		json_object_object_add(c, "norm_topk_prob", json_object_new_boolean(1));
		break;
	}
	set_int(c, "num_experts_per_tok", o->top_k);
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
	    o->layers > 100000 || o->experts > 65536 || o->top_k > o->experts || !demostore_moe_layers(o)) {
		snprintf(err, errlen, "demo store: need layers, experts, hidden, ffn >= 1, 1 <= shards <= layers, "
			 "top_k <= experts and a MoE layer (deepseek: layers >= 2)");
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
