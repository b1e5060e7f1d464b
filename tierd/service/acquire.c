/* SPDX-License-Identifier: MIT */
/*
 * ACQUIRE and PIN (struct acq_req: one request's experts, answered all or
 * nothing when the engine has completed them all), RELEASE and UNPIN,
 * PREFETCH and EVICT.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server-int.h"
#include "telemetry.h"
#include "trace-rec.h"

static bool key_eq(const struct tierd_key *a, const struct tierd_key *b)
{
	return a->model == b->model && a->layer == b->layer && a->expert == b->expert;
}

static int key_pos_cmp(const void *pa, const void *pb)
{
	const struct key_pos *a = pa, *b = pb;

	if (a->key.model != b->key.model)
		return a->key.model < b->key.model ? -1 : 1;
	if (a->key.layer != b->key.layer)
		return a->key.layer < b->key.layer ? -1 : 1;
	if (a->key.expert != b->key.expert)
		return a->key.expert < b->key.expert ? -1 : 1;
	return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* s->batch becomes the batch's keys with their positions, sorted: equal
 * keys form runs, each led by the key's first place in the batch.  Counting
 * duplicates so is O(n log n) where comparing every pair was O(n^2) on
 * batches of up to TIERD_PROTO_MAX_BATCH keys. */
static void batch_sort(struct server *s, const struct tierd_key *keys, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		s->batch[i] = (struct key_pos){ keys[i], i };
	qsort(s->batch, n, sizeof(s->batch[0]), key_pos_cmp);
}

void req_release_done(struct acq_req *r)
{
	for (uint32_t i = 0; i < r->n; i++)
		if (r->ents[i].done && !r->ents[i].err)
			engine_release(r->srv->engine, &r->ents[i].key);
}

static long encode_acquired(struct server *s, struct acq_req *r)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, s->tx, sizeof(s->tx), TIERD_MSG_ACQUIRED, 0, r->id);
	tierd_proto_put_u32(&b, r->n);
	tierd_proto_put_u32(&b, 0);
	for (uint32_t i = 0; i < r->n; i++) {
		const struct req_ent *e = &r->ents[i];
		const struct catalog_expert *x = e->expert;

		tierd_proto_put_u32(&b, e->key.model);
		tierd_proto_put_u32(&b, e->key.layer);
		tierd_proto_put_u32(&b, e->key.expert);
		tierd_proto_put_u32(&b, x->ntensors);
		for (uint32_t j = 0; j < x->ntensors; j++) {
			const struct catalog_tensor *t = &x->tensors[j];

			tierd_proto_put_u32(&b, e->pool);
			tierd_proto_put_u32(&b, (uint32_t)t->dtype);
			tierd_proto_put_u64(&b, e->offset + t->slot_offset);
			tierd_proto_put_u64(&b, t->length);
			tierd_proto_put_u32(&b, t->ndim);
			for (uint32_t d = 0; d < t->ndim && d < CATALOG_MAX_DIMS; d++)
				tierd_proto_put_u64(&b, t->shape[d]);
			tierd_proto_put_str(&b, t->name);
		}
	}
	return tierd_proto_end(&b);
}

/* The bytes handed to the client: what it copies from DDR into HBM. */
static void server_account_hbm(struct server *s, const struct client *c, const struct acq_req *r)
{
	if (!s->obs || !s->obs->acquired)
		return;
	for (uint32_t i = 0; i < r->n; i++)
		s->obs->acquired(s->obs_arg, c->id, r->ents[i].key.model, r->ents[i].expert->bytes);
}

/*
 * Who holds the pins of a full pool, for the ENOSPC answer: the operator's
 * pins and the clients with the most pins (per-client counts are in the
 * tierd_client_pins metric and `tierctl status`).
 */
static void server_pin_holders(const struct server *s, const struct client *asker, char *buf,
			       size_t len)
{
	const struct client *top[3] = { NULL, NULL, NULL };
	size_t off;
	int n;

	const struct client *c;

	TAILQ_FOREACH(c, &s->clients, link) {
		if (!c->pins.total)
			continue;
		for (int i = 0; i < 3; i++) {
			if (!top[i] || c->pins.total > top[i]->pins.total) {
				for (int j = 2; j > i; j--)
					top[j] = top[j - 1];
				top[i] = c;
				break;
			}
		}
	}
	n = snprintf(buf, len, "the pool is full of pinned experts (%llu operator pins",
		     (unsigned long long)s->opins.total);
	off = n > 0 && (size_t)n < len ? (size_t)n : len;
	for (int i = 0; i < 3 && top[i] && off < len; i++) {
		/* Other users' processes are named to operators only. */
		if (asker->operator || asker->uid == top[i]->uid)
			n = snprintf(buf + off, len - off, "; pid %d uid %u \"%.32s\" holds %llu",
				     (int)top[i]->pid, (unsigned)top[i]->uid, top[i]->name,
				     (unsigned long long)top[i]->pins.total);
		else
			n = snprintf(buf + off, len - off, "; client %u uid %u holds %llu", top[i]->id,
				     (unsigned)top[i]->uid, (unsigned long long)top[i]->pins.total);
		off = n > 0 && (size_t)n < len - off ? off + (size_t)n : len;
	}
	if (off < len)
		snprintf(buf + off, len - off, "): release some, or see `tierctl status`");
}

static void req_finish(struct acq_req *r)
{
	struct server *s = r->srv;
	struct client *c = r->c;
	const struct req_ent *bad = NULL;
	char why[320];

	/* Out of its client's reqs, or of the orphans when c is gone. */
	LIST_REMOVE(r, link);
	if (!c) {
		free(r);
		return;
	}
	if (r->kind == REQ_ACQUIRE) {
		c->inflight -= r->n;
		c->acct->held -= r->n;
	}
	for (uint32_t i = 0; i < r->n && !bad; i++)
		if (r->ents[i].err)
			bad = &r->ents[i];
	if (bad) {
		/* All or nothing: a batch answered in part would leave the client
		 * guessing which pins it holds. */
		const char *stale = bad->err == -ESTALE ?
				    engine_model_stale_reason(s->engine, bad->key.model) : NULL;

		req_release_done(r);
		if (bad->err == -ENOSPC)
			server_pin_holders(s, c, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "%s", stale ? stale : strerror(-bad->err));
		client_error(c, r->id, bad->err, "model %s layer %u expert %u: %s",
			     engine_model_name(s->engine, bad->key.model), bad->key.layer,
			     bad->key.expert, why);
		free(r);
		return;
	}
	if (r->kind == REQ_PIN) {
		/* Saved first, applied after: a pin the file cannot keep is
		 * refused, not held in memory only. */
		struct pinset next;
		int err = pinset_clone(&next, &s->opins);

		for (uint32_t i = 0; i < r->n && !err; i++)
			err = pinset_add(&next, &r->ents[i].key);
		if (!err)
			err = server_pins_save(s, &next, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "out of memory recording pins");
		if (err) {
			pinset_free(&next);
			req_release_done(r);
			client_error(c, r->id, err, "%s: nothing pinned", why);
		} else {
			pinset_free(&s->opins);
			s->opins = next;
			client_ok(c, r->id, 0, r->n);
		}
		free(r);
		return;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		if (pinset_add(&c->pins, &r->ents[i].key)) {
			/* Keep the books right: undo what this batch added. */
			for (uint32_t j = 0; j < i; j++)
				pinset_drop(&c->pins, &r->ents[j].key);
			req_release_done(r);
			client_error(c, r->id, -ENOMEM, "out of memory recording pins");
			free(r);
			return;
		}
	}
	{
		long len = encode_acquired(s, r);

		if (len == -EMSGSIZE) {
			for (uint32_t i = 0; i < r->n; i++)
				pinset_drop(&c->pins, &r->ents[i].key);
			req_release_done(r);
			client_error(c, r->id, -E2BIG,
				     "the answer to %u experts exceeds %u bytes: acquire fewer at once",
				     r->n, TIERD_PROTO_MAX_MSG);
		} else {
			server_account_hbm(s, c, r);
			c->acct->held += r->n;
			/* Dropped on a failed send: its pins go with it. */
			client_send(c, s->tx, len, NULL, 0);
		}
	}
	free(r);
}

static void req_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct req_ent *e = arg;
	struct acq_req *r = e->req;

	e->done = true;
	e->err = err;
	if (!err) {
		e->pool = info->pool;
		e->offset = info->offset;
		e->expert = info->expert;
		if (!r->c)
			engine_release(r->srv->engine, &e->key);
	}
	if (--r->pending == 0)
		req_finish(r);
}

void client_acquire(struct client *c, const struct tierd_msg_hdr *h,
		    const struct tierd_key *keys, uint32_t n, enum req_kind kind)
{
	struct server *s = c->srv;
	struct acq_req *r;

	if (kind == REQ_ACQUIRE) {
		if (c->inflight + n > s->conf->max_inflight) {
			client_error(c, h->request_id, -EDQUOT,
				     "%u experts in flight with this batch, [client] max_inflight is %u",
				     c->inflight + n, s->conf->max_inflight);
			return;
		}
		/* An explicit max_pins bounds each connection; "auto" bounds
		 * all the connections of a uid together, so that no uid pins
		 * more than half of the pool by opening more of them. */
		if (s->conf->max_pins && c->pins.total + c->inflight + n > s->max_pins) {
			client_error(c, h->request_id, -EDQUOT,
				     "would hold %llu pins, [client] max_pins is %llu",
				     (unsigned long long)(c->pins.total + c->inflight + n),
				     (unsigned long long)s->max_pins);
			return;
		}
		if (!s->conf->max_pins && c->acct->held + n > s->max_pins) {
			client_error(c, h->request_id, -EDQUOT,
				     "uid %u would hold %llu pins over its connections, [client] max_pins is "
				     "%llu (auto: half the pool's slots per uid)", (unsigned)c->uid,
				     (unsigned long long)(c->acct->held + n), (unsigned long long)s->max_pins);
			return;
		}
	}
	r = calloc(1, sizeof(*r) + n * sizeof(r->ents[0]));
	if (!r) {
		client_error(c, h->request_id, -ENOMEM, "out of memory");
		return;
	}
	r->srv = s;
	r->c = c;
	r->kind = kind;
	r->id = h->request_id;
	r->n = n;
	r->pending = n + 1;
	LIST_INSERT_HEAD(&c->reqs, r, link);
	if (kind == REQ_ACQUIRE) {
		c->inflight += n;
		c->acct->held += n;
		s->counters[TIERD_STAT_ACQUIRES] += n;
		if (s->rec)
			trace_rec_acquire(s->rec, c->id, (uint32_t)(c->tokens < UINT32_MAX ? c->tokens : UINT32_MAX),
					  keys, n);
	}
	for (uint32_t i = 0; i < n; i++) {
		struct req_ent *e = &r->ents[i];
		int err;

		e->req = r;
		e->key = (struct tierd_key){ keys[i].model, keys[i].layer, keys[i].expert };
		err = engine_acquire_for(s->engine, &e->key, ENGINE_DEMAND, c->id, req_done, e);
		if (err) {
			e->done = true;
			e->err = err;
			r->pending--;
		}
	}
	/* Placement learns from what clients acquire (and prefetches ahead):
	 * after the acquires, so that they go first. */
	if (kind == REQ_ACQUIRE)
		engine_observe(s->engine, c->id, keys, n);
	if (--r->pending == 0)
		req_finish(r);
}

void client_release(struct client *c, const struct tierd_msg_hdr *h,
		    const struct tierd_key *keys, uint32_t n, struct pinset *ps)
{
	struct server *s = c->srv;
	struct pinset next;
	uint32_t bad = n;
	char why[320];
	int err;

	/* Check first, so that a bad batch releases nothing: each key held at
	 * least as often as the batch names it.  Runs of equal keys counted
	 * on the sorted batch; the error names the first bad key in the
	 * batch's order. */
	batch_sort(s, keys, n);
	for (uint32_t i = 0, j; i < n; i = j) {
		const struct pin *p = pinset_find(ps, &s->batch[i].key);

		for (j = i + 1; j < n && key_eq(&s->batch[j].key, &s->batch[i].key); j++)
			;
		if ((!p || p->count < j - i) && s->batch[i].pos < bad)
			bad = s->batch[i].pos;
	}
	if (bad < n) {
		client_error(c, h->request_id, -ENOENT, "model %u layer %u expert %u: not pinned (%s)",
			     keys[bad].model, keys[bad].layer, keys[bad].expert,
			     ps == &s->opins ? "operator pins" : "by this client");
		return;
	}
	if (ps == &s->opins) {
		/* Operator pins: saved first, applied after (see req_finish). */
		err = pinset_clone(&next, ps);
		if (err) {
			client_error(c, h->request_id, err, "out of memory: nothing unpinned");
			return;
		}
		for (uint32_t i = 0; i < n; i++) {
			struct tierd_key k = { keys[i].model, keys[i].layer, keys[i].expert };

			pinset_drop(&next, &k);
		}
		err = server_pins_save(s, &next, why, sizeof(why));
		if (err) {
			pinset_free(&next);
			client_error(c, h->request_id, err, "%s: nothing unpinned", why);
			return;
		}
		pinset_free(ps);
		*ps = next;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct tierd_key k = { keys[i].model, keys[i].layer, keys[i].expert };

		if (ps != &s->opins)
			pinset_drop(ps, &k);
		engine_release(s->engine, &k);
	}
	if (ps == &c->pins)
		c->acct->held -= n;
	s->counters[TIERD_STAT_RELEASES] += n;
	client_ok(c, h->request_id, h->flags, n);
}

/*
 * PREFETCH: fetch without pinning.  Each client may have at most [client]
 * max_prefetch_inflight fetches of its own prefetches in flight (a batch
 * over that is refused whole, before anything starts), and a prefetch evicts
 * at most [pool] max_evict_per_alloc experts for its slot: a client cannot
 * flush the pool of what others use by prefetching.  A prefetch the pool
 * has no room for is skipped, not an error: it was a guess.
 */
void client_prefetch(struct client *c, const struct tierd_msg_hdr *h,
		     const struct tierd_key *keys, uint32_t n)
{
	struct server *s = c->srv;
	uint32_t skipped = 0;

	if (c->prefetching.total + n > s->conf->max_prefetch_inflight) {
		client_error(c, h->request_id, -EDQUOT,
			     "%llu prefetches in flight with this batch, [client] max_prefetch_inflight is %u",
			     (unsigned long long)(c->prefetching.total + n), s->conf->max_prefetch_inflight);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct tierd_key k = { keys[i].model, keys[i].layer, keys[i].expert };
		bool started;
		int r = engine_prefetch_started(s->engine, &k, c->id, &started);

		/* Skipped, not an error: the others of the batch may have
		 * started, and an ERROR must not follow work carried out. */
		if (r) {
			if (r != -ENOSPC && r != -EDQUOT)
				log_warn("prefetch of model %s layer %u expert %u: %s: skipped",
					 engine_model_name(s->engine, k.model), k.layer, k.expert, strerror(-r));
			skipped++;
			continue;
		}
		if (started && pinset_add(&c->prefetching, &k)) {
			/* Not counted against the budget: the fetch runs anyway. */
			log_warn("client pid %d: out of memory counting prefetches", (int)c->pid);
		}
	}
	s->counters[TIERD_STAT_PREFETCHES] += n - skipped;
	client_ok(c, h->request_id, h->flags, n - skipped);
}

/* EVICT: all or nothing, so that an error never comes after part of the
 * batch was carried out. */
void client_evict(struct client *c, const struct tierd_msg_hdr *h,
		  const struct tierd_key *keys, uint32_t n)
{
	struct server *s = c->srv;
	/* Which keys repeat one earlier in the batch. */
	uint64_t again[(TIERD_PROTO_MAX_BATCH + 63) / 64] = { 0 };
	uint32_t busy = 0;
	int err;

	batch_sort(s, keys, n);
	for (uint32_t i = 1; i < n; i++)
		if (key_eq(&s->batch[i].key, &s->batch[i - 1].key))
			again[s->batch[i].pos / 64] |= 1ull << (s->batch[i].pos % 64);
	for (uint32_t i = 0; i < n; i++) {
		struct tierd_key k = { keys[i].model, keys[i].layer, keys[i].expert };

		err = engine_evict_check(s->engine, &k);
		if (!err && (again[i / 64] >> (i % 64) & 1))
			err = -EINVAL;
		if (err) {
			client_error(c, h->request_id, err, "model %s layer %u expert %u: %s: nothing evicted",
				     engine_model_name(s->engine, k.model), k.layer, k.expert,
				     err == -EBUSY ? "pinned or being fetched" : err == -ENOENT ? "not resident" :
				     "named twice in the batch");
			return;
		}
	}
	/* A client may pin one through the residency table since the check:
	 * then nothing is evicted either. */
	err = engine_evict_batch(s->engine, keys, n, &busy);
	if (err) {
		client_error(c, h->request_id, err, "model %s layer %u expert %u: pinned meanwhile: nothing evicted",
			     engine_model_name(s->engine, keys[busy].model), keys[busy].layer, keys[busy].expert);
		return;
	}
	client_ok(c, h->request_id, h->flags, n);
}
