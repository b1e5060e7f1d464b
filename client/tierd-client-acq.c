/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: acquisition objects.  An acquisition holds the host
 * pointers of the experts it pinned, a reference on each pool mapping they
 * point into, and, after a reconnection, the retired arrays of the old
 * connection that the application may still read.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tierd-client-int.h"

void tdc_mapping_unref(struct mapping *m)
{
	if (m && --m->refs == 0) {
		munmap(m->base, m->size);
		free(m);
	}
}

static void acq_free_arrays(struct tierd_acquisition *a)
{
	free(a->raw);
	free(a->experts);
	free(a->tensors);
	for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
		tdc_mapping_unref(a->maps[i]);
	memset(a->maps, 0, sizeof(a->maps));
}

void tdc_acq_free(struct tierd_acquisition *a)
{
	acq_free_arrays(a);
	while (!SLIST_EMPTY(&a->retired)) {
		struct retired *r = SLIST_FIRST(&a->retired);

		SLIST_REMOVE_HEAD(&a->retired, link);
		free(r->raw);
		free(r->experts);
		free(r->tensors);
		for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
			tdc_mapping_unref(r->maps[i]);
		free(r);
	}
	for (size_t i = 0; i < a->n; i++)
		free(a->model_names ? a->model_names[i] : NULL);
	free(a->model_names);
	free(a->keys);
	free(a->fidx);
	for (size_t i = 0; a->lay && i < a->n; i++)
		tdc_fast_layout_put(a->lay[i]);
	free(a->lay);
	free(a);
}

/*
 * Turns a decoded ACQUIRED into host pointers.  Every tensor must lie inside
 * a pool this client mapped and the experts must be the ones asked for:
 * otherwise -EBADMSG, never a wrong pointer.
 */
int tdc_acq_fill(struct tierd_client *c, struct tierd_acquisition *a, struct tierd_msg_acquired *m,
		 const struct tierd_key *asked, size_t n)
{
	size_t ntensors = 0, k = 0;

	if (m->count != n) {
		tdc_set_error(c, "daemon answered %u experts for %zu asked", m->count, n);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++) {
		const struct tierd_key *got = &m->experts[i].key;

		if (got->model != asked[i].model || got->layer != asked[i].layer ||
		    got->expert != asked[i].expert) {
			tdc_set_error(c, "daemon answered another expert than asked");
			return -EBADMSG;
		}
		for (uint32_t j = 0; j < m->experts[i].ntensors; j++) {
			const struct tierd_proto_tensor *t = &m->experts[i].tensors[j];

			if (t->pool >= c->npools || t->offset > c->pools[t->pool]->size ||
			    t->length > c->pools[t->pool]->size - t->offset) {
				tdc_set_error(c, "tensor %s lies outside the mapped pool", t->name);
				return -EBADMSG;
			}
		}
		ntensors += m->experts[i].ntensors;
	}
	a->experts = calloc(n, sizeof(*a->experts));
	a->tensors = calloc(ntensors, sizeof(*a->tensors));
	if (!a->experts || !a->tensors) {
		free(a->experts);
		free(a->tensors);
		a->experts = NULL;
		a->tensors = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct tierd_proto_expert *pe = &m->experts[i];
		struct tierd_expert *e = &a->experts[i];

		e->key = asked[i];
		e->ntensors = pe->ntensors;
		e->tensors = &a->tensors[k];
		for (uint32_t j = 0; j < pe->ntensors; j++, k++) {
			const struct tierd_proto_tensor *pt = &pe->tensors[j];
			struct tierd_tensor *t = &a->tensors[k];

			t->name = pt->name;
			t->data = (const uint8_t *)c->pools[pt->pool]->base + pt->offset;
			t->length = pt->length;
			t->dtype = pt->dtype;
			t->ndim = pt->ndim;
			memcpy(t->shape, pt->shape, sizeof(t->shape));
			t->pool = pt->pool;
			t->offset = pt->offset;
		}
	}
	for (unsigned i = 0; i < c->npools; i++) {
		a->maps[i] = c->pools[i];
		a->maps[i]->refs++;
	}
	a->raw = m;
	return 0;
}

/*
 * The acquisition of an ACQUIRED answer m to the n keys asked (lock held).
 * Takes keys (malloc'd) and m whatever happens: on failure both are freed
 * and the pins the daemon granted are given back, so the caller holds
 * nothing to clean up.
 */
int tdc_acq_new(struct tierd_client *c, struct tierd_key *keys, size_t n, struct tierd_msg_acquired *m,
		struct tierd_acquisition **out)
{
	struct tierd_acquisition *a = calloc(1, sizeof(*a));
	int r = -ENOMEM;

	*out = NULL;
	if (!a) {
		tdc_set_error(c, "out of memory for an acquisition of %zu experts", n);
		tdc_release_keys_noreply(c, keys, n);
		free(keys);
		free(m);
		return -ENOMEM;
	}
	a->n = n;
	a->keys = keys;
	a->model_names = calloc(n, sizeof(char *));
	if (a->model_names) {
		r = 0;
		for (size_t i = 0; !r && i < n; i++) {
			if (keys[i].model >= c->nmodels)
				continue;	/* refused by the daemon; lost at a reconnection */
			a->model_names[i] = strdup(c->models[keys[i].model].name);
			if (!a->model_names[i])
				r = -ENOMEM;
		}
	}
	if (r)
		tdc_set_error(c, "out of memory for an acquisition of %zu experts", n);
	else
		r = tdc_acq_fill(c, a, m, keys, n);
	if (r) {
		tdc_release_keys_noreply(c, keys, n);
		tdc_acq_free(a);
		free(m);
		return r;
	}
	LIST_INSERT_HEAD(&c->acqs, a, link);
	c->held += a->n;
	*out = a;
	return 0;
}

EXPORT size_t tierd_acquisition_count(const struct tierd_acquisition *a)
{
	return a->n;
}

EXPORT const struct tierd_expert *tierd_acquisition_expert(const struct tierd_acquisition *a, size_t i)
{
	return i < a->n ? &a->experts[i] : NULL;
}

EXPORT int tierd_acquisition_status(struct tierd_client *c, const struct tierd_acquisition *a)
{
	int s;

	pthread_mutex_lock(&c->lock);
	s = a->status;
	pthread_mutex_unlock(&c->lock);
	return s;
}

