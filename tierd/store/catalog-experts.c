/* SPDX-License-Identifier: MIT */
/*
 * Mapping a checkpoint's tensors to experts: what a preset's patterns match
 * (one tensor per expert, or an expert's slice of a fused tensor), checked
 * for agreement across the experts of a model (same roles, shapes, dtypes),
 * and gathered into the catalog's experts, layer by layer.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog-int.h"
#include "log.h"

void catalog_parts_free(struct parts *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		free(ps->v[i].role);
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

static struct part *parts_add(struct parts *ps)
{
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 64;
		struct part *v = realloc(ps->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		ps->v = v;
		ps->cap = cap;
	}
	memset(&ps->v[ps->n], 0, sizeof(ps->v[0]));
	return &ps->v[ps->n++];
}

/* How many tensors of the checkpoint the preset claims (detection). */
size_t catalog_preset_score(const struct loader *l, const struct conf_preset *p)
{
	size_t score = 0;
	struct match m;

	for (size_t f = 0; f < l->nshards; f++)
		for (size_t i = 0; i < l->shards[f].h->ntensors; i++)
			if (catalog_tensor_listed(l, &l->shards[f], l->shards[f].h->tensors[i].name) &&
			    catalog_preset_match(p, l->shards[f].h->tensors[i].name, &m))
				score++;
	return score;
}

int catalog_collect_parts(struct loader *l, const struct conf_preset *p, struct parts *ps, uint64_t *dense)
{
	for (size_t f = 0; f < l->nshards; f++) {
		const struct st_header *h = l->shards[f].h;

		for (size_t i = 0; i < h->ntensors; i++) {
			const struct st_tensor *t = &h->tensors[i];
			const struct conf_kv *kv;
			uint64_t slices = 1, stride;
			struct match m;

			if (!catalog_tensor_listed(l, &l->shards[f], t->name))
				continue;
			kv = catalog_preset_match(p, t->name, &m);
			if (!kv) {
				(*dense)++;
				continue;
			}
			if (!m.has_expert) {
				if (t->ndim == 0 || t->shape[0] == 0)
					return catalog_errf(l->err, l->errlen, -EINVAL,
						    "%s: fused tensor '%s' has no experts along its first dimension",
						    l->shards[f].name, t->name);
				slices = t->shape[0];
				if (slices > CATALOG_MAX_NUMBER)
					return catalog_errf(l->err, l->errlen, -EINVAL,
						    "%s: fused tensor '%s': %" PRIu64 " experts is too many",
						    l->shards[f].name, t->name, slices);
			}
			if (ps->n + slices > CATALOG_MAX_PARTS)
				return catalog_errf(l->err, l->errlen, -E2BIG, "%s: more than %u expert tensors",
					    l->dir, CATALOG_MAX_PARTS);
			stride = (t->end - t->begin) / slices;
			for (uint64_t e = 0; e < slices; e++) {
				struct part *pt = parts_add(ps);

				if (!pt)
					return -ENOMEM;
				pt->layer = m.layer;
				pt->expert = m.has_expert ? m.expert : (uint32_t)e;
				pt->t = t;
				pt->file = (uint32_t)f;
				pt->offset = h->data_start + t->begin + e * stride;
				pt->length = stride;
				if (m.has_expert) {
					pt->ndim = t->ndim;
					memcpy(pt->shape, t->shape, sizeof(pt->shape));
				} else {
					pt->ndim = t->ndim - 1;
					memcpy(pt->shape, t->shape + 1, sizeof(pt->shape[0]) * pt->ndim);
				}
				if (asprintf(&pt->role, "%s|%.*s", kv->value, (int)m.star_len,
					     m.star ? m.star : "") < 0) {
					pt->role = NULL;
					return -ENOMEM;
				}
			}
		}
	}
	return 0;
}

static int cmp_part(const void *a, const void *b)
{
	const struct part *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->expert != y->expert)
		return x->expert < y->expert ? -1 : 1;
	return strcmp(x->t->name, y->t->name);
}

/* parts: the expert's parts, in the order of its tensors. */
static const struct catalog_tensor *find_role(const struct catalog_expert *ex, const struct part *parts,
					      const char *role)
{
	for (uint32_t i = 0; i < ex->ntensors; i++)
		if (!strcmp(parts[i].role, role))
			return &ex->tensors[i];
	return NULL;
}

static void shape_str(const struct catalog_tensor *t, char *buf, size_t len)
{
	size_t n = 0;

	n += (size_t)snprintf(buf, len, "%s[", tierd_dtype_name(t->dtype));
	for (uint32_t i = 0; i < t->ndim && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%" PRIu64, i ? "," : "", t->shape[i]);
	if (n < len)
		snprintf(buf + n, len - n, "]");
}

/* Fills cat->experts from the sorted parts and checks that every layer is complete and uniform. */
int catalog_build_experts(struct catalog *cat, struct loader *l, struct parts *ps)
{
	size_t *starts = NULL;	/* index in ps of each expert's first part */
	size_t i = 0, first = 0;	/* first: index in experts of the current layer's expert 0 */
	int r = 0;

	qsort(ps->v, ps->n, sizeof(*ps->v), cmp_part);
	cat->experts = calloc(ps->n + 1, sizeof(*cat->experts));
	starts = calloc(ps->n + 1, sizeof(*starts));
	if (!cat->experts || !starts) {
		r = -ENOMEM;
		goto out;
	}
	while (i < ps->n) {
		struct catalog_expert *ex = &cat->experts[cat->nexperts];
		size_t j = i;

		while (j < ps->n && ps->v[j].layer == ps->v[i].layer && ps->v[j].expert == ps->v[i].expert)
			j++;
		ex->layer = ps->v[i].layer;
		ex->expert = ps->v[i].expert;
		ex->tensors = calloc(j - i, sizeof(*ex->tensors));
		if (!ex->tensors) {
			r = -ENOMEM;
			goto out;
		}
		cat->nexperts++;
		for (size_t k = i; k < j; k++) {
			struct catalog_tensor *t = &ex->tensors[ex->ntensors];
			const struct part *p = &ps->v[k];

			t->name = strdup(p->t->name);
			if (!t->name) {
				r = -ENOMEM;
				goto out;
			}
			ex->ntensors++;
			t->dtype = p->t->dtype;
			t->ndim = p->ndim;
			memcpy(t->shape, p->shape, sizeof(t->shape));
			t->file = p->file;
			t->offset = p->offset;
			t->length = p->length;
			ex->bytes += p->length;
		}

		if (cat->nexperts == 1 || ex->layer != ex[-1].layer) {
			first = cat->nexperts - 1;
			cat->nlayers++;
		}
		if (ex->expert != cat->nexperts - 1 - first) {
			r = catalog_errf(l->err, l->errlen, -EINVAL, "%s: preset %s: layer %u: expert %zu missing (next is %u)",
				 l->dir, cat->preset, ex->layer, cat->nexperts - 1 - first, ex->expert);
			goto out;
		}
		if (ex->expert + 1 > cat->experts_per_layer)
			cat->experts_per_layer = ex->expert + 1;
		starts[cat->nexperts - 1] = i;
		if (first != cat->nexperts - 1) {
			/* Same tensors, dtypes and shapes as expert 0 of the layer. */
			const struct catalog_expert *e0 = &cat->experts[first];
			const struct part *parts0 = ps->v + starts[first], *partsx = ps->v + i;

			if (ex->ntensors != e0->ntensors) {
				r = catalog_errf(l->err, l->errlen, -EINVAL,
					 "%s: preset %s: layer %u: expert %u has %u tensors, expert 0 has %u",
					 l->dir, cat->preset, ex->layer, ex->expert, ex->ntensors, e0->ntensors);
				goto out;
			}
			for (uint32_t k = 0; k < e0->ntensors; k++) {
				const struct catalog_tensor *t0 = &e0->tensors[k];
				const struct catalog_tensor *t = find_role(ex, partsx, parts0[k].role);
				char a[256], b[256];	/* fits 8 dimensions of 20 digits */

				if (!t) {
					r = catalog_errf(l->err, l->errlen, -EINVAL,
						 "%s: preset %s: layer %u: expert %u has no tensor like '%s' of expert 0",
						 l->dir, cat->preset, ex->layer, ex->expert, t0->name);
					goto out;
				}
				shape_str(t0, a, sizeof(a));
				shape_str(t, b, sizeof(b));
				if (strcmp(a, b)) {
					r = catalog_errf(l->err, l->errlen, -EINVAL,
						 "%s: preset %s: layer %u: tensor '%s' is %s but '%s' of expert 0 is %s",
						 l->dir, cat->preset, ex->layer, t->name, b, t0->name, a);
					goto out;
				}
			}
		}
		i = j;
	}
	/* A layer that ends early (a lost shard, a cut index) would leave its last experts unserved. */
	for (uint32_t k = 0, n = 0; k < cat->nexperts; k++) {
		n = k && cat->experts[k].layer == cat->experts[k - 1].layer ? n + 1 : 1;
		if ((k + 1 == cat->nexperts || cat->experts[k + 1].layer != cat->experts[k].layer) &&
		    n != cat->experts_per_layer) {
			r = catalog_errf(l->err, l->errlen, -EINVAL, "%s: preset %s: layer %u has %u experts, other layers %u",
				 l->dir, cat->preset, cat->experts[k].layer, n, cat->experts_per_layer);
			goto out;
		}
	}
out:
	free(starts);
	return r;
}
