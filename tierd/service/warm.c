/* SPDX-License-Identifier: MIT */
/*
 * WARM: an operator loads a range of a model's layers into the pool,
 * SERVER_WARM_WINDOW experts in flight at once, with PROGRESS answers.  A
 * warm outlives its client as an orphan until its fetches complete.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server-int.h"

#define SERVER_WARM_WINDOW	16		/* experts a warm keeps in flight */

static void warm_pump(struct warm *w);

static void warm_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct warm *w = arg;
	struct server *s = w->srv;
	const struct catalog_expert *x = NULL;

	w->inflight--;
	w->done++;
	if (err) {
		w->failed++;
		if (!w->first_err)
			w->first_err = err;
	} else {
		x = info->expert;
		struct tierd_key k = { w->model, x->layer, x->expert };

		/* Warm loads, it does not hold: the pin only kept the slot while
		 * it was read. */
		engine_release(s->engine, &k);
	}
	/* A hit completes inside engine_acquire, inside warm_pump's loop: the
	 * loop goes on by itself, and recursing would grow the stack by one
	 * frame per resident expert. */
	if (!w->pumping)
		warm_pump(w);
}

/* Issues more work, reports progress, finishes. */
static void warm_pump(struct warm *w)
{
	struct server *s = w->srv;

	w->pumping = true;
	while (w->c && w->next < w->end && w->inflight < SERVER_WARM_WINDOW) {
		const struct catalog_expert *x = &w->cat->experts[w->next++];
		struct tierd_key k = { w->model, x->layer, x->expert };
		int err;

		w->inflight++;
		err = engine_acquire(s->engine, &k, ENGINE_PREFETCH, warm_done, w);
		if (err) {
			/* Refused up front: no callback will come. */
			w->inflight--;
			w->done++;
			w->failed++;
			if (!w->first_err)
				w->first_err = err;
		}
	}
	w->pumping = false;
	if (w->c && w->total) {
		unsigned pct = (unsigned)(w->done * 100 / w->total);

		/* If the client is dropped here, w becomes an orphan (w->c NULL)
		 * and is finished below like one. */
		if (pct != w->last_pct && w->done < w->total) {
			w->last_pct = pct;
			client_send(w->c, s->tx,
				    tierd_proto_encode_progress(s->tx, sizeof(s->tx), w->id, w->done, w->total),
				    NULL, 0);
		}
	}
	if (w->inflight)
		return;
	if (w->c && w->next < w->end)
		return;
	/* Out of its client's warms, or of the orphans when the client is
	 * gone. */
	LIST_REMOVE(w, link);
	if (w->c) {
		struct client *c = w->c;

		if (w->failed)
			client_error(c, w->id, w->first_err, "%llu of %llu experts could not be loaded: %s",
				     (unsigned long long)w->failed, (unsigned long long)w->total,
				     strerror(-w->first_err));
		else
			client_ok(c, w->id, 0, w->done);
	}
	free(w);
}

void client_warm(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_warm *m)
{
	struct server *s = c->srv;
	const struct catalog *cat;
	struct warm *w;

	if (m->model >= (uint32_t)engine_model_count(s->engine)) {
		client_error(c, h->request_id, -ENOENT, "model index %u: no such model", m->model);
		return;
	}
	cat = engine_model_catalog(s->engine, m->model);
	w = calloc(1, sizeof(*w));
	if (!w) {
		client_error(c, h->request_id, -ENOMEM, "out of memory");
		return;
	}
	w->srv = s;
	w->c = c;
	w->id = h->request_id;
	w->model = m->model;
	w->cat = cat;
	/* Experts are sorted by (layer, expert): the layers form one range. */
	w->next = cat->nexperts;
	w->end = 0;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		uint32_t L = cat->experts[i].layer;

		if (L >= m->first_layer && L <= m->last_layer) {
			if (w->next == cat->nexperts)
				w->next = i;
			w->end = i + 1;
		}
	}
	if (w->next >= w->end) {
		free(w);
		client_error(c, h->request_id, -ENOENT, "model %s has no experts in layers %u..%u",
			     engine_model_name(s->engine, m->model), m->first_layer, m->last_layer);
		return;
	}
	w->total = w->end - w->next;
	LIST_INSERT_HEAD(&c->warms, w, link);
	log_info("warming model %s: %llu experts for pid %d", engine_model_name(s->engine, m->model),
		 (unsigned long long)w->total, (int)c->pid);
	warm_pump(w);
}
