/* SPDX-License-Identifier: MIT */
/* What a reload can apply, and what waits for a restart (reload.h). */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "reload.h"

struct keylist {
	char *buf;
	size_t len, off;
	unsigned n;
};

static void add(struct keylist *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(struct keylist *k, const char *fmt, ...)
{
	va_list ap;
	int r;

	k->n++;
	if (!k->len || k->off >= k->len)
		return;
	if (k->n > 1) {
		r = snprintf(k->buf + k->off, k->len - k->off, ", ");
		k->off = r < 0 || (size_t)r >= k->len - k->off ? k->len : k->off + (size_t)r;
	}
	if (k->off >= k->len)
		return;
	va_start(ap, fmt);
	r = vsnprintf(k->buf + k->off, k->len - k->off, fmt, ap);
	va_end(ap);
	k->off = r < 0 || (size_t)r >= k->len - k->off ? k->len : k->off + (size_t)r;
}

static bool str_differs(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

unsigned reload_restart_keys(const struct tierd_conf *a, const struct tierd_conf *b, char *buf,
			     size_t len)
{
	struct keylist k = { .buf = buf, .len = len };

	if (len)
		buf[0] = '\0';
	if (a->pool_size != b->pool_size || a->npool_sizes != b->npool_sizes ||
	    memcmp(a->pool_size_node, b->pool_size_node, sizeof(a->pool_size_node)) ||
	    memcmp(a->pool_size_bytes, b->pool_size_bytes, sizeof(a->pool_size_bytes)))
		add(&k, "[pool] size");
	if (a->numa_node != b->numa_node)
		add(&k, "[pool] numa_node");
	if (a->pool_nodes_auto != b->pool_nodes_auto || a->npool_nodes != b->npool_nodes ||
	    memcmp(a->pool_nodes, b->pool_nodes, sizeof(a->pool_nodes)))
		add(&k, "[pool] nodes");
	if (a->hugepages != b->hugepages)
		add(&k, "[pool] hugepages");
	if (a->pool_lock != b->pool_lock)
		add(&k, "[pool] lock");
	if (a->max_evict_per_alloc != b->max_evict_per_alloc)
		add(&k, "[pool] max_evict_per_alloc");
	if (a->queue_depth != b->queue_depth)
		add(&k, "[fetch] queue_depth");
	if (a->request_size != b->request_size)
		add(&k, "[fetch] request_size");
	if (str_differs(a->policy, b->policy))
		add(&k, "[cache] policy");
	/* Read when the engine starts (and the fast path decides by them). */
	if (a->prefetch != b->prefetch)
		add(&k, "[cache] prefetch");
	if (a->prefetch_depth != b->prefetch_depth || a->prefetch_min_prob != b->prefetch_min_prob ||
	    a->prefetch_max_slots != b->prefetch_max_slots || a->prefetch_max_bytes != b->prefetch_max_bytes)
		add(&k, "[cache] prefetch_*");
	if (str_differs(a->socket_path, b->socket_path))
		add(&k, "[daemon] socket");
	for (size_t i = 0; i < a->nmodels; i++) {
		const struct conf_model *m = conf_model_find(b, a->models[i].name);

		if (!m)
			add(&k, "[model %s] removed", a->models[i].name);
		else if (strcmp(m->path, a->models[i].path))
			add(&k, "[model %s] path", a->models[i].name);
		else if (str_differs(m->preset, a->models[i].preset))
			add(&k, "[model %s] preset", a->models[i].name);
		else if (m->quota_bytes != a->models[i].quota_bytes)
			add(&k, "[model %s] quota", a->models[i].name);
	}
	for (size_t i = 0; i < b->nmodels; i++)
		if (!conf_model_find(a, b->models[i].name))
			add(&k, "[model %s] added", b->models[i].name);
	for (size_t i = 0; i < a->npresets || i < b->npresets; i++) {
		const struct conf_preset *pa = i < a->npresets ? &a->presets[i] : NULL;
		const struct conf_preset *pb = i < b->npresets ? &b->presets[i] : NULL;
		bool same = pa && pb && !strcmp(pa->name, pb->name) && pa->nkv == pb->nkv;

		for (size_t j = 0; same && j < pa->nkv; j++)
			same = !strcmp(pa->kv[j].key, pb->kv[j].key) && !strcmp(pa->kv[j].value, pb->kv[j].value);
		if (!same)
			add(&k, "[preset %s]", pa ? pa->name : pb ? pb->name : "?");
	}
	if (str_differs(a->metrics_listen, b->metrics_listen))
		add(&k, "[metrics] listen");
	if (str_differs(a->metrics_textfile, b->metrics_textfile))
		add(&k, "[metrics] textfile");
	if (a->pj_hbm != b->pj_hbm || a->pj_ddr != b->pj_ddr || a->pj_flash != b->pj_flash ||
	    a->ddr_static_w_per_gib != b->ddr_static_w_per_gib || a->gpu_idle_w != b->gpu_idle_w ||
	    a->gpus != b->gpus || a->nvme_default_w != b->nvme_default_w)
		add(&k, "[energy]");
	if (a->probes != b->probes || a->nvme_refresh_s != b->nvme_refresh_s)
		add(&k, "[nvme]");
	if (len && k.off >= len && len >= 4)
		memcpy(buf + len - 4, "...", 4);
	return k.n;
}
