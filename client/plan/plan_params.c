/* SPDX-License-Identifier: MIT */
/* The planner's parameters: defaults, the keys of --set and hardware files, checks (see plan.h). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "plan-int.h"

int plan_fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

unsigned plan_tp(const struct plan_hw *hw)
{
	return hw->tp ? hw->tp : hw->gpus_per_node;
}

void plan_params_default(struct plan_params *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->hw.name, sizeof(p->hw.name), "dgx-h100-nvl5");
	p->hw.nodes = 1;
	p->hw.gpus_per_node = 8;
	p->hw.gpu_tflops = 989;		/* H100 SXM dense BF16 */
	p->hw.hbm_gbps = 3352;
	p->hw.hbm_gib = 80;
	p->hw.link_gbps = 900;		/* NVLink 5.0 per direction */
	p->hw.ddr_gbps = 0;		/* the paper: CPU memory keeps up with the links */
	p->hw.ssd_gbps = 0;		/* likewise the SSDs */
	p->hw.ddr_gib = 2048;		/* DGX H100: 2 TB of system memory */
	/*
	 * Interconnect of the paper's modeling tool (the Duplex simulator's H100
	 * system): NVLink 4.0 between GPUs, 450 GB/s and 0.8 us per transfer, even
	 * when the offload links are NVLink 5.0; one ConnectX-7 InfiniBand port
	 * per GPU (8 per node), 50 GB/s and 130 ns.
	 */
	p->hw.tp = 0;
	p->hw.nvlink_gbps = 450;
	p->hw.nvlink_lat_us = 0.8;
	p->hw.ib_gbps = 50;
	p->hw.ib_lat_us = 0.13;
	p->hw.act_bytes = 2;		/* BF16 activations, as the paper */
	p->en.pj_hbm = 4.2;
	p->en.pj_ddr = 9.2;
	p->en.pj_flash = 102.4;
	p->en.flash_scale = 1;
	p->en.pj_l1 = 0.16;
	p->en.pj_l2 = 0.3;
	p->en.pj_flop = 0.16;
	p->en.gpu_idle_w = 70;
	p->en.ddr_static_w = 57;
	p->en.ddr_static_gb = 256;
	p->en.ddr_gb_per_gpu = 256;	/* the paper: each GPU has its own 256 GB of DDR5 */
	p->en.ssd_idle_w = 0;
	p->en.tile = 128;
	p->context = 1024;
	/* The paper's tool runs MLA unfused (use_flash_mla off): the latent is read
	 * once as keys for the scores and once as values. */
	p->mla_kv_reads = 2;
}

enum key_type { KEY_DOUBLE, KEY_UINT };

struct plan_key {
	const char *name;
	const char *section;
	enum key_type type;
	size_t off;
	double min;		/* inclusive */
	double max;
	bool min_exclusive;
};

#define HW(f) offsetof(struct plan_params, hw.f)
#define EN(f) offsetof(struct plan_params, en.f)
#define PP(f) offsetof(struct plan_params, f)

static const struct plan_key keys[] = {
	{ "nodes", "hardware", KEY_UINT, HW(nodes), 1, 100000, false },
	{ "gpus_per_node", "hardware", KEY_UINT, HW(gpus_per_node), 1, 1024, false },
	{ "gpu_tflops", "hardware", KEY_DOUBLE, HW(gpu_tflops), 0, 1e6, true },
	{ "hbm_gbps", "hardware", KEY_DOUBLE, HW(hbm_gbps), 0, 1e6, true },
	{ "hbm_gib", "hardware", KEY_DOUBLE, HW(hbm_gib), 0, 1e6, true },
	{ "link_gbps", "hardware", KEY_DOUBLE, HW(link_gbps), 0, 1e6, true },
	{ "ddr_gbps", "hardware", KEY_DOUBLE, HW(ddr_gbps), 0, 1e6, false },
	{ "ssd_gbps", "hardware", KEY_DOUBLE, HW(ssd_gbps), 0, 1e6, false },
	{ "ddr_gib", "hardware", KEY_DOUBLE, HW(ddr_gib), 0, 1e9, false },
	{ "tp", "hardware", KEY_UINT, HW(tp), 0, 1024, false },
	{ "nvlink_gbps", "hardware", KEY_DOUBLE, HW(nvlink_gbps), 0, 1e6, true },
	{ "nvlink_lat_us", "hardware", KEY_DOUBLE, HW(nvlink_lat_us), 0, 1e6, false },
	{ "ib_gbps", "hardware", KEY_DOUBLE, HW(ib_gbps), 0, 1e6, true },
	{ "ib_lat_us", "hardware", KEY_DOUBLE, HW(ib_lat_us), 0, 1e6, false },
	{ "act_bytes", "hardware", KEY_DOUBLE, HW(act_bytes), 0, 64, true },
	{ "pj_hbm", "energy", KEY_DOUBLE, EN(pj_hbm), 0, 1e6, false },
	{ "pj_ddr", "energy", KEY_DOUBLE, EN(pj_ddr), 0, 1e6, false },
	{ "pj_flash", "energy", KEY_DOUBLE, EN(pj_flash), 0, 1e6, false },
	{ "flash_scale", "energy", KEY_DOUBLE, EN(flash_scale), 0, 1e3, false },
	{ "pj_l1", "energy", KEY_DOUBLE, EN(pj_l1), 0, 1e6, false },
	{ "pj_l2", "energy", KEY_DOUBLE, EN(pj_l2), 0, 1e6, false },
	{ "pj_flop", "energy", KEY_DOUBLE, EN(pj_flop), 0, 1e6, false },
	{ "gpu_idle_w", "energy", KEY_DOUBLE, EN(gpu_idle_w), 0, 1e6, false },
	{ "ddr_static_w", "energy", KEY_DOUBLE, EN(ddr_static_w), 0, 1e6, false },
	{ "ddr_static_gb", "energy", KEY_DOUBLE, EN(ddr_static_gb), 0, 1e9, true },
	{ "ddr_gb_per_gpu", "energy", KEY_DOUBLE, EN(ddr_gb_per_gpu), 0, 1e9, false },
	{ "ssd_idle_w", "energy", KEY_DOUBLE, EN(ssd_idle_w), 0, 1e6, false },
	{ "tile", "energy", KEY_UINT, EN(tile), 1, 1 << 20, false },
	{ "context", "model", KEY_UINT, PP(context), 0, 1 << 30, false },
	{ "top_k", "model", KEY_UINT, PP(top_k), 0, 1 << 20, false },
	{ "bytes_per_param", "model", KEY_DOUBLE, PP(bytes_per_param), 0, 64, false },
	{ "mla_kv_reads", "model", KEY_UINT, PP(mla_kv_reads), 1, 16, false },
};

const char *plan_key_name(size_t i)
{
	return i < sizeof(keys) / sizeof(keys[0]) ? keys[i].name : NULL;
}

static const struct plan_key *key_find(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

const char *plan_key_section(const char *key)
{
	const struct plan_key *k = key_find(key);

	return k ? k->section : NULL;
}

int plan_set(struct plan_params *p, const char *key, const char *value, char *err, size_t errlen)
{
	const struct plan_key *k = key_find(key);
	char *end;
	double v;

	if (!k)
		return plan_fail(err, errlen, -ENOENT, "%s: unknown key", key);
	errno = 0;
	v = strtod(value, &end);
	if (end == value || *end || errno == ERANGE || !isfinite(v))
		return plan_fail(err, errlen, -EINVAL, "%s: expected a number, got \"%s\"", key, value);
	if (v < k->min || (k->min_exclusive && v <= k->min) || v > k->max)
		return plan_fail(err, errlen, -ERANGE, "%s: %s out of range (%s%g .. %g)", key, value,
			    k->min_exclusive ? "above " : "", k->min, k->max);
	switch (k->type) {
	case KEY_UINT:
		if (v != floor(v))
			return plan_fail(err, errlen, -EINVAL, "%s: expected an integer, got \"%s\"",
				    key, value);
		*(unsigned *)((char *)p + k->off) = (unsigned)v;
		break;
	case KEY_DOUBLE:
		*(double *)((char *)p + k->off) = v;
		break;
	}
	return 0;
}

int plan_model_check(const struct plan_model *m, char *err, size_t errlen)
{
	const char *n = m->name[0] ? m->name : "model";

	if (!m->layers)
		return plan_fail(err, errlen, -EINVAL, "%s: needs at least one layer", n);
	if (!m->hidden)
		return plan_fail(err, errlen, -EINVAL, "%s: hidden size must be positive", n);
	if (!(m->bytes_per_param > 0) || m->bytes_per_param > 64)
		return plan_fail(err, errlen, -EINVAL, "%s: bytes per parameter must be in (0, 64]", n);
	if (!m->heads)
		return plan_fail(err, errlen, -EINVAL, "%s: attention heads must be positive", n);
	switch (m->attn) {
	case PLAN_ATTN_GQA:
		if (!m->kv_heads || !m->head_dim)
			return plan_fail(err, errlen, -EINVAL, "%s: GQA needs kv heads and head dim", n);
		if (m->heads % m->kv_heads)
			return plan_fail(err, errlen, -EINVAL,
				    "%s: %u attention heads are not a multiple of %u kv heads",
				    n, m->heads, m->kv_heads);
		break;
	case PLAN_ATTN_MLA:
		if (!m->kv_lora || !m->v_dim || !(m->rope_dim + m->nope_dim))
			return plan_fail(err, errlen, -EINVAL,
				    "%s: MLA needs kv_lora_rank, v_head_dim and qk head dims", n);
		break;
	}
	if (m->experts) {
		if (!m->top_k || m->top_k > m->experts)
			return plan_fail(err, errlen, -EINVAL, "%s: top-k %u must be in 1..%u experts",
				    n, m->top_k, m->experts);
		if (!m->expert_ffn)
			return plan_fail(err, errlen, -EINVAL, "%s: expert intermediate size must be positive", n);
		if (!m->moe_step)
			return plan_fail(err, errlen, -EINVAL, "%s: MoE layer step must be positive", n);
		if (m->shared_experts && !m->shared_ffn)
			return plan_fail(err, errlen, -EINVAL, "%s: shared experts need an intermediate size", n);
	}
	/* Layers that are not MoE run the dense FFN. */
	if ((!m->experts || m->first_dense || m->moe_step > 1) && !m->dense_ffn)
		return plan_fail(err, errlen, -EINVAL, "%s: dense layers need an intermediate size", n);
	return 0;
}

int plan_params_check(const struct plan_params *p, char *err, size_t errlen)
{
	const struct plan_hw *h = &p->hw;
	const struct plan_energy *e = &p->en;

	if (!h->nodes || !h->gpus_per_node)
		return plan_fail(err, errlen, -EINVAL, "hardware: needs at least one node and one GPU");
	if (!(h->gpu_tflops > 0) || !(h->hbm_gbps > 0) || !(h->link_gbps > 0) || !(h->hbm_gib > 0))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: gpu_tflops, hbm_gbps, hbm_gib and link_gbps must be positive");
	if (!(h->ddr_gbps >= 0) || !(h->ssd_gbps >= 0) || !(h->ddr_gib >= 0))
		return plan_fail(err, errlen, -EINVAL, "hardware: ddr_gbps, ssd_gbps and ddr_gib must not be negative");
	if (!(e->pj_hbm >= 0) || !(e->pj_ddr >= 0) || !(e->pj_flash >= 0) || !(e->flash_scale >= 0) ||
	    !(e->pj_l1 >= 0) || !(e->pj_l2 >= 0) || !(e->pj_flop >= 0) || !(e->gpu_idle_w >= 0) ||
	    !(e->ddr_static_w >= 0) || !(e->ssd_idle_w >= 0))
		return plan_fail(err, errlen, -EINVAL, "energy: constants must not be negative");
	if (!(e->ddr_static_gb > 0) || !e->tile)
		return plan_fail(err, errlen, -EINVAL, "energy: ddr_static_gb and tile must be positive");
	if (!(p->bytes_per_param >= 0))
		return plan_fail(err, errlen, -EINVAL, "bytes_per_param must not be negative");
	if (h->tp && (h->tp > h->gpus_per_node || h->gpus_per_node % h->tp))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: tp %u must divide the %u GPUs of a node (tensor parallelism stays "
			    "inside a node)", h->tp, h->gpus_per_node);
	if (!(h->nvlink_gbps > 0) || !(h->ib_gbps > 0) || !(h->act_bytes > 0) ||
	    !(h->nvlink_lat_us >= 0) || !(h->ib_lat_us >= 0))
		return plan_fail(err, errlen, -EINVAL,
			    "hardware: nvlink_gbps, ib_gbps and act_bytes must be positive, latencies not negative");
	if (!(e->ddr_gb_per_gpu >= 0))
		return plan_fail(err, errlen, -EINVAL, "energy: ddr_gb_per_gpu must not be negative");
	if (!p->mla_kv_reads)
		return plan_fail(err, errlen, -EINVAL, "mla_kv_reads must be at least 1");
	return 0;
}

int plan_parse_batches(const char *s, unsigned *out, size_t max, size_t *n)
{
	const char *q = s;
	char *end;

	*n = 0;
	if (!*s)
		return -EINVAL;
	while (*q) {
		unsigned long a, b;

		if (*q < '0' || *q > '9')
			return -EINVAL;
		errno = 0;
		a = strtoul(q, &end, 10);
		if (errno || !a || a > 1u << 24)
			return -ERANGE;
		b = a;
		q = end;
		if (*q == '-') {
			q++;
			if (*q < '0' || *q > '9')
				return -EINVAL;
			b = strtoul(q, &end, 10);
			if (errno || b < a || b > 1u << 24)
				return -ERANGE;
			q = end;
		}
		/* A range doubles from its start: 1-1024 is 1,2,4,...,1024. */
		for (unsigned long v = a; v <= b; v *= 2) {
			if (*n >= max)
				return -E2BIG;
			out[(*n)++] = (unsigned)v;
		}
		if (*q == ',')
			q++;
		else if (*q)
			return -EINVAL;
		if (*q == '\0' && q[-1] == ',')
			return -EINVAL;
	}
	return 0;
}
