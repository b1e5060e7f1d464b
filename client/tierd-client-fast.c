/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: acquire a resident expert without a system call.  The
 * daemon's residency table says where each expert lies; a pin in this
 * connection's own pin area, checked against the entry's generation, keeps
 * the daemon from freeing the slot (protocol and memory ordering:
 * tierd-fastpath.h).  Anything unusual (not resident, being evicted, a
 * layout not learnt yet or changed by a reload) falls back to the socket.
 *
 * Tensor names, dtypes and shapes are not in the table: each expert's
 * layout inside its slot is learnt from the first socket ACQUIRED of it and
 * reused while the table's layout version for it stays the same.  A layout
 * lives while the connection's entry or an acquisition refers to it: a new
 * connection (the daemon restarted) learns its own, the old ones go as the
 * acquisitions made with them are released.
 */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tierd-client-int.h"

static bool fd_backs(int fd, uint64_t size)
{
	struct stat st;

	return !fstat(fd, &st) && st.st_size >= 0 && (uint64_t)st.st_size >= size;
}

int tdc_fast_open(struct tierd_client *c, const struct tierd_msg_welcome *w, int table_fd, int area_fd)
{
	struct fastpath *f = calloc(1, sizeof(*f));
	const struct tierd_fast_hdr *h;
	void *p;

	if (!f)
		return 0;
	f->table_size = w->fast_table_size;
	f->area_size = w->fast_area_size;
	/* A file shorter than announced would fault (SIGBUS) when read. */
	if (!fd_backs(table_fd, f->table_size) || !fd_backs(area_fd, f->area_size) ||
	    f->table_size < sizeof(*h))
		goto off;
	p = mmap(NULL, f->table_size, PROT_READ, MAP_SHARED, table_fd, 0);
	if (p == MAP_FAILED)
		goto off;
	f->hdr = h = p;
	p = mmap(NULL, f->area_size, PROT_READ | PROT_WRITE, MAP_SHARED, area_fd, 0);
	if (p == MAP_FAILED)
		goto off;
	f->pins = p;
	if (h->magic != TIERD_FAST_MAGIC || h->version != TIERD_FAST_VERSION || h->nmodels != w->nmodels ||
	    h->nmodels > TIERD_PROTO_MAX_MODELS || h->nentries > TIERD_FAST_MAX_ENTRIES ||
	    h->entries_offset < sizeof(*h) || h->entries_offset % 8 ||
	    h->entries_offset > f->table_size ||
	    (uint64_t)h->nentries * sizeof(struct tierd_fast_entry) > f->table_size - h->entries_offset ||
	    (uint64_t)h->nentries * sizeof(struct tierd_fast_pin) + sizeof(struct tierd_fast_area_tail) >
		    f->area_size)
		goto off;
	f->nentries = h->nentries;
	f->max_pins = w->fast_max_pins;
	f->tail = (const struct tierd_fast_area_tail *)(f->pins + f->nentries);
	f->ent = (const struct tierd_fast_entry *)((const uint8_t *)h + h->entries_offset);
	memcpy(f->models, h->models, sizeof(f->models));
	for (uint32_t i = 0; i < h->nmodels; i++) {
		struct tierd_fast_model *m = &f->models[i];

		if (!(m->flags & TIERD_FAST_MODEL_F_ON))
			continue;
		/* Entries of the model inside the table, and the model the one
		 * WELCOME described: otherwise it goes through the socket. */
		if (m->nlayers != w->models[i].nlayers || m->experts_per_layer != w->models[i].experts_per_layer ||
		    (uint64_t)m->base + (uint64_t)m->nlayers * m->experts_per_layer > f->nentries)
			m->flags = 0;
	}
	f->lay = calloc(f->nentries ? f->nentries : 1, sizeof(*f->lay));
	if (!f->lay)
		goto off;
	tdc_fast_close(c);
	f->seq = c->conn_seq;
	c->fast = f;
	return 0;
off:
	if (f->hdr)
		munmap((void *)f->hdr, f->table_size);
	if (f->pins)
		munmap(f->pins, f->area_size);
	free(f);
	return 0;
}

/* The old connection's pins went with its area: nothing to give back. */
void tdc_fast_close(struct tierd_client *c)
{
	struct fastpath *f = c->fast;

	if (!f)
		return;
	munmap((void *)f->hdr, f->table_size);
	munmap(f->pins, f->area_size);
	for (uint32_t i = 0; i < f->nentries; i++)
		tdc_fast_layout_put(f->lay[i]);
	free(f->lay);
	free(f);
	c->fast = NULL;
}

void tdc_fast_layout_put(struct fast_layout *l)
{
	if (l && --l->refs == 0) {
		LIST_REMOVE(l, link);
		free(l);
	}
}

static int entry_index(const struct fastpath *f, const struct tierd_key *k)
{
	const struct tierd_fast_model *m;

	if (k->model >= f->hdr->nmodels)
		return -1;
	m = &f->models[k->model];
	if (!(m->flags & TIERD_FAST_MODEL_F_ON) || k->layer >= m->nlayers || k->expert >= m->experts_per_layer)
		return -1;
	return (int)(m->base + k->layer * m->experts_per_layer + k->expert);
}

static void unpin(struct fastpath *f, uint32_t idx)
{
	atomic_fetch_sub_explicit(&f->pins[idx].pins, 1, memory_order_release);
}

/*
 * Pins one entry: the client's half of the protocol in tierd-fastpath.h.
 * Returns the slot's first byte, or NULL (nothing held).
 */
static const uint8_t *pin(struct tierd_client *c, struct fastpath *f, uint32_t idx, const struct fast_layout *l,
			  uint32_t *poolp)
{
	const struct tierd_fast_entry *e = &f->ent[idx];
	/* The table is mapped read-only: the atomics below only load, but
	 * stdatomic's loads take a pointer to non-const. */
	struct tierd_fast_entry *we = (struct tierd_fast_entry *)e;
	uint64_t g1 = atomic_load_explicit(&we->gen, memory_order_acquire), off;
	uint32_t pool, layout;

	if (g1 & 1)
		return NULL;
	/* Acquire loads: one that sees a field the daemon rewrote also sees
	 * the odd generation it stored before, so g2 below differs. */
	off = atomic_load_explicit(&we->offset, memory_order_acquire);
	pool = atomic_load_explicit(&we->pool, memory_order_acquire);
	layout = atomic_load_explicit(&we->layout, memory_order_acquire);
	if (layout != l->layout || pool >= c->npools || off > c->pools[pool]->size ||
	    l->span > c->pools[pool]->size - off)
		return NULL;
	/* Store-load against the daemon's odd generation then pin scan: both
	 * sides seq_cst, so of two racing sides one sees the other. */
	atomic_fetch_add_explicit(&f->pins[idx].pins, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&we->gen, memory_order_seq_cst) != g1) {
		unpin(f, idx);
		return NULL;
	}
	*poolp = pool;
	return (const uint8_t *)c->pools[pool]->base + off;
}

int tdc_fast_acquire(struct tierd_client *c, const struct tierd_key *keys, size_t n,
		     struct tierd_acquisition **out)
{
	struct fastpath *f = c->fast;
	struct tierd_acquisition *a;
	size_t ntensors = 0, k = 0, i = 0;

	if (!f || (c->flags & TIERD_CLIENT_F_SOCKET) || c->fd < 0 || !n || n > TIERD_PROTO_MAX_BATCH ||
	    (atomic_load_explicit(&f->hdr->flags, memory_order_acquire) & TIERD_FAST_F_SOCKET) ||
	    atomic_load_explicit(&f->tail->revoked, memory_order_acquire) ||
	    /* Over the daemon's max_pins the socket answers EDQUOT; through
	     * the table the sweep would drop the connection instead. */
	    (f->max_pins && c->held + n > f->max_pins))
		return -EAGAIN;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -EAGAIN;
	a->n = n;
	a->keys = malloc(n * sizeof(*a->keys));
	a->fidx = malloc(n * sizeof(*a->fidx));
	a->model_names = calloc(n, sizeof(char *));
	a->lay = calloc(n, sizeof(*a->lay));
	if (!a->keys || !a->fidx || !a->model_names || !a->lay)
		goto fail;
	memcpy(a->keys, keys, n * sizeof(*keys));
	for (i = 0; i < n; i++) {
		int idx = keys[i].model < c->nmodels && (c->models[keys[i].model].info.flags & TIERD_MODEL_F_ALLOWED)
				  ? entry_index(f, &keys[i]) : -1;

		if (idx < 0 || !f->lay[idx])
			goto fail;
		a->fidx[i] = (uint32_t)idx;
		ntensors += f->lay[idx]->ntensors;
	}
	a->experts = malloc(n * sizeof(*a->experts));
	a->tensors = malloc((ntensors ? ntensors : 1) * sizeof(*a->tensors));
	if (!a->experts || !a->tensors)
		goto fail;
	for (i = 0; i < n; i++) {
		const struct fast_layout *l = f->lay[a->fidx[i]];
		uint32_t pool = 0;
		const uint8_t *base = pin(c, f, a->fidx[i], l, &pool);
		struct tierd_expert *x = &a->experts[i];

		if (!base)
			goto unpin;
		x->key = keys[i];
		x->ntensors = l->ntensors;
		x->tensors = &a->tensors[k];
		for (uint32_t j = 0; j < l->ntensors; j++, k++) {
			struct tierd_tensor *t = &a->tensors[k];

			*t = l->tensors[j];
			t->data = base + l->tensors[j].offset;
			t->pool = pool;
			t->offset = (uint64_t)(base - (const uint8_t *)c->pools[pool]->base) + l->tensors[j].offset;
		}
	}
	for (i = 0; i < n; i++) {
		/* For a re-acquire by name after a reconnection. */
		a->model_names[i] = strdup(c->models[keys[i].model].name);
		if (!a->model_names[i]) {
			i = n;
			goto unpin;
		}
		atomic_fetch_add_explicit(&f->pins[a->fidx[i]].uses, 1, memory_order_relaxed);
	}
	/* The tensors name the layouts' strings: held until the free. */
	for (i = 0; i < n; i++) {
		a->lay[i] = f->lay[a->fidx[i]];
		a->lay[i]->refs++;
	}
	for (unsigned p = 0; p < c->npools; p++) {
		a->maps[p] = c->pools[p];
		a->maps[p]->refs++;
	}
	a->fast = true;
	a->fast_seq = f->seq;
	LIST_INSERT_HEAD(&c->acqs, a, link);
	c->held += a->n;
	*out = a;
	return 0;
unpin:
	while (i--)
		unpin(f, a->fidx[i]);
fail:
	tdc_acq_free(a);
	return -EAGAIN;
}

void tdc_fast_release(struct tierd_client *c, struct tierd_acquisition *a)
{
	struct fastpath *f = c->fast;

	if (!a->fast || !f || a->fast_seq != f->seq)
		return;
	for (size_t i = 0; i < a->n; i++)
		unpin(f, a->fidx[i]);
}

/* Learns one expert's layout from tensors the daemon pinned for us. */
static void learn(struct tierd_client *c, struct fastpath *f, const struct tierd_expert *x)
{
	int idx = entry_index(f, &x->key);
	struct tierd_fast_entry *e;
	struct fast_layout *l;
	uint64_t g1, off, slot, span = 0;
	uint32_t pool, layout;
	size_t names = 0;
	char *s;

	if (idx < 0 || x->key.model >= c->nmodels)
		return;
	e = (struct tierd_fast_entry *)&f->ent[idx];
	g1 = atomic_load_explicit(&e->gen, memory_order_acquire);
	off = atomic_load_explicit(&e->offset, memory_order_acquire);
	pool = atomic_load_explicit(&e->pool, memory_order_acquire);
	layout = atomic_load_explicit(&e->layout, memory_order_acquire);
	if ((g1 & 1) || atomic_load_explicit(&e->gen, memory_order_relaxed) != g1)
		return;
	if (f->lay[idx] && f->lay[idx]->layout == layout)
		return;
	/* Our pin holds the expert in one slot: the tensors must lie in the
	 * slot the table names, or the table speaks of another version (a
	 * reload) and nothing is learnt. */
	slot = c->models[x->key.model].info.slot_bytes;
	for (uint32_t j = 0; j < x->ntensors; j++) {
		const struct tierd_tensor *t = &x->tensors[j];

		if (t->pool != pool || t->offset < off || t->offset - off > slot || t->length > slot - (t->offset - off))
			return;
		if (t->offset - off + t->length > span)
			span = t->offset - off + t->length;
		names += strlen(t->name) + 1;
	}
	l = malloc(sizeof(*l) + x->ntensors * sizeof(l->tensors[0]) + names);
	if (!l)
		return;
	l->refs = 1;	/* f->lay[idx]'s */
	l->layout = layout;
	l->ntensors = x->ntensors;
	l->span = span;
	s = (char *)&l->tensors[x->ntensors];
	for (uint32_t j = 0; j < x->ntensors; j++) {
		size_t len = strlen(x->tensors[j].name) + 1;

		l->tensors[j] = x->tensors[j];
		l->tensors[j].data = NULL;
		l->tensors[j].offset = x->tensors[j].offset - off;
		memcpy(s, x->tensors[j].name, len);
		l->tensors[j].name = s;
		s += len;
	}
	LIST_INSERT_HEAD(&c->layouts, l, link);
	/* A reload moved the tensors: the old layout goes with the last
	 * acquisition that names it. */
	tdc_fast_layout_put(f->lay[idx]);
	f->lay[idx] = l;
}

void tdc_fast_learn(struct tierd_client *c, const struct tierd_acquisition *a)
{
	if (!c->fast || a->fast || a->status)
		return;
	for (size_t i = 0; i < a->n; i++)
		learn(c, c->fast, &a->experts[i]);
}
