/* SPDX-License-Identifier: MIT */
/*
 * The residency table and the clients' pin areas (residency.h; the shared
 * layout and the memory ordering are in tierd-fastpath.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <unistd.h>

#include "residency.h"
#include "tierd-fastpath.h"

struct residency_area {
	LIST_ENTRY(residency_area) link;
	int fd;
	struct tierd_fast_pin *pins;	/* the client writes it: read with care */
	uint32_t *seen;			/* uses at the last sweep, ours */
	uint64_t held;			/* pins held at the last sweep */
	const bool *allowed;
};

struct residency {
	int fd, fd_ro;
	uint64_t size;
	struct tierd_fast_hdr *hdr;
	struct tierd_fast_entry *ent;
	uint32_t nentries;
	uint64_t area_size;
	LIST_HEAD(, residency_area) areas;
	unsigned socket_why;		/* RESIDENCY_SOCKET_*: why acquires take the socket */
};

static uint64_t page_round(uint64_t n)
{
	return (n + 4095) & ~(uint64_t)4095;
}

static int memfd_sized(const char *name, uint64_t size, int *out)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), e;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size)) {
		e = -errno;
		close(fd);
		return e;
	}
	*out = fd;
	return 0;
}

int residency_create(struct residency **out, const struct residency_model *models, unsigned n,
		     char *err, size_t errlen)
{
	struct residency *r = calloc(1, sizeof(*r));
	char path[64];
	uint64_t total = 0;
	void *p;
	int e;

	if (!r)
		return -ENOMEM;
	r->fd = r->fd_ro = -1;
	LIST_INIT(&r->areas);
	if (n > TIERD_PROTO_MAX_MODELS) {
		e = -E2BIG;
		snprintf(err, errlen, "residency table: %u models, at most %u", n, TIERD_PROTO_MAX_MODELS);
		goto fail;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t k = (uint64_t)models[i].nlayers * models[i].experts_per_layer;

		if (k && total + k <= TIERD_FAST_MAX_ENTRIES)
			total += k;
	}
	r->nentries = (uint32_t)total;
	r->size = page_round(sizeof(struct tierd_fast_hdr) + total * sizeof(struct tierd_fast_entry));
	r->area_size = page_round((total ? total : 1) * sizeof(struct tierd_fast_pin) +
				  sizeof(struct tierd_fast_area_tail));
	e = memfd_sized("tierd-residency", r->size, &r->fd);
	if (e) {
		snprintf(err, errlen, "residency table: memfd of %llu bytes: %s",
			 (unsigned long long)r->size, strerror(-e));
		goto fail;
	}
	p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (p == MAP_FAILED) {
		e = -errno;
		snprintf(err, errlen, "residency table: mmap: %s", strerror(-e));
		goto fail;
	}
	r->hdr = p;
	r->hdr->magic = TIERD_FAST_MAGIC;
	r->hdr->version = TIERD_FAST_VERSION;
	r->hdr->nmodels = n;
	r->hdr->nentries = r->nentries;
	r->hdr->entries_offset = sizeof(struct tierd_fast_hdr);
	r->ent = (struct tierd_fast_entry *)((uint8_t *)p + r->hdr->entries_offset);
	total = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t k = (uint64_t)models[i].nlayers * models[i].experts_per_layer;
		struct tierd_fast_model *fm = &r->hdr->models[i];

		if (!k || total + k > TIERD_FAST_MAX_ENTRIES)
			continue;	/* flags 0: through the socket */
		fm->base = (uint32_t)total;
		fm->nlayers = models[i].nlayers;
		fm->experts_per_layer = models[i].experts_per_layer;
		fm->flags = TIERD_FAST_MODEL_F_ON;
		total += k;
	}
	/* Every entry starts odd: nothing is servable until published. */
	for (uint32_t i = 0; i < r->nentries; i++)
		atomic_store_explicit(&r->ent[i].gen, 1, memory_order_relaxed);
	/* Clients get a read-only descriptor and cannot make a writable
	 * mapping (F_SEAL_FUTURE_WRITE), nor resize it under the daemon. */
	if (fcntl(r->fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)) {
		e = -errno;
		snprintf(err, errlen, "residency table: sealing the memfd: %s", strerror(-e));
		goto fail;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", r->fd);
	r->fd_ro = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd_ro < 0) {
		e = -errno;
		snprintf(err, errlen, "residency table: reopening read-only via %s: %s", path, strerror(-e));
		goto fail;
	}
	*out = r;
	return 0;
fail:
	residency_destroy(r);
	return e;
}

void residency_destroy(struct residency *r)
{
	if (!r)
		return;
	/* Clients may outlive the daemon: none goes on trusting the table. */
	if (r->hdr)
		atomic_fetch_or_explicit(&r->hdr->flags, TIERD_FAST_F_SOCKET, memory_order_seq_cst);
	while (!LIST_EMPTY(&r->areas))
		residency_area_free(r, LIST_FIRST(&r->areas));
	if (r->hdr)
		munmap(r->hdr, r->size);
	if (r->fd >= 0)
		close(r->fd);
	if (r->fd_ro >= 0)
		close(r->fd_ro);
	free(r);
}

int residency_table_fd(const struct residency *r)
{
	return r->fd_ro;
}

uint64_t residency_table_size(const struct residency *r)
{
	return r->size;
}

uint64_t residency_area_size(const struct residency *r)
{
	return r->area_size;
}

int residency_index(const struct residency *r, const struct tierd_key *k)
{
	const struct tierd_fast_model *fm;

	if (k->model >= r->hdr->nmodels)
		return -ENOENT;
	fm = &r->hdr->models[k->model];
	if (!(fm->flags & TIERD_FAST_MODEL_F_ON) || k->layer >= fm->nlayers ||
	    k->expert >= fm->experts_per_layer)
		return -ENOENT;
	return (int)(fm->base + k->layer * fm->experts_per_layer + k->expert);
}

/* The key of an entry (sweeps): models are few, entries many. */
static bool entry_key(const struct residency *r, uint32_t idx, struct tierd_key *k)
{
	for (uint32_t m = 0; m < r->hdr->nmodels; m++) {
		const struct tierd_fast_model *fm = &r->hdr->models[m];
		uint32_t n = fm->nlayers * fm->experts_per_layer;

		if ((fm->flags & TIERD_FAST_MODEL_F_ON) && idx >= fm->base && idx - fm->base < n) {
			k->model = m;
			k->layer = (idx - fm->base) / fm->experts_per_layer;
			k->expert = (idx - fm->base) % fm->experts_per_layer;
			return true;
		}
	}
	return false;
}

void residency_publish(struct residency *r, uint32_t idx, uint32_t pool, uint64_t offset, uint32_t layout)
{
	struct tierd_fast_entry *e = &r->ent[idx];
	uint64_t g = atomic_load_explicit(&e->gen, memory_order_relaxed);

	if (!(g & 1))
		return;		/* published already: the slot of a resident expert does not move */
	/* Odd since the last unpublish, whose fence orders it before these. */
	atomic_store_explicit(&e->offset, offset, memory_order_relaxed);
	atomic_store_explicit(&e->pool, pool, memory_order_relaxed);
	atomic_store_explicit(&e->layout, layout, memory_order_relaxed);
	atomic_store_explicit(&e->gen, g + 1, memory_order_release);
}

void residency_set_socket_only(struct residency *r, unsigned why, bool on)
{
	r->socket_why = on ? r->socket_why | why : r->socket_why & ~why;
	if (r->socket_why)
		atomic_fetch_or_explicit(&r->hdr->flags, TIERD_FAST_F_SOCKET, memory_order_release);
	else
		atomic_fetch_and_explicit(&r->hdr->flags, ~(uint64_t)TIERD_FAST_F_SOCKET, memory_order_release);
}

void residency_unpublish(struct residency *r, uint32_t idx)
{
	struct tierd_fast_entry *e = &r->ent[idx];
	uint64_t g = atomic_load_explicit(&e->gen, memory_order_relaxed);

	if (g & 1)
		return;
	atomic_store_explicit(&e->gen, g + 1, memory_order_seq_cst);
	/* Store-load: the pins read after this see every pin whose client
	 * could still have read the even generation (tierd-fastpath.h). */
	atomic_thread_fence(memory_order_seq_cst);
}

bool residency_pinned(const struct residency *r, uint32_t idx, uint32_t model)
{
	const struct residency_area *a;

	LIST_FOREACH(a, &r->areas, link)
		if (a->allowed[model] && atomic_load_explicit(&a->pins[idx].pins, memory_order_seq_cst))
			return true;
	return false;
}

bool residency_claim(struct residency *r, uint32_t idx, uint32_t model)
{
	struct tierd_fast_entry *e = &r->ent[idx];
	uint64_t g = atomic_load_explicit(&e->gen, memory_order_relaxed);

	residency_unpublish(r, idx);
	if (!residency_pinned(r, idx, model))
		return true;
	if (!(g & 1)) {
		/* Fields unchanged: only the generation moves on, so that a
		 * client that read the old one retries. */
		atomic_store_explicit(&e->gen, g + 2, memory_order_release);
	}
	return false;
}

int residency_area_new(struct residency *r, const bool *allowed, struct residency_area **out)
{
	struct residency_area *a = calloc(1, sizeof(*a));
	uint32_t n = r->nentries ? r->nentries : 1;
	void *p;
	int e;

	if (!a)
		return -ENOMEM;
	a->fd = -1;
	a->allowed = allowed;
	a->seen = calloc(n, sizeof(*a->seen));
	if (!a->seen) {
		e = -ENOMEM;
		goto fail;
	}
	e = memfd_sized("tierd-pins", r->area_size, &a->fd);
	if (e)
		goto fail;
	/* Sized for good before the client sees it: it cannot shrink it under
	 * our mapping (a read past the end would be SIGBUS in the daemon). */
	if (fcntl(a->fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
		e = -errno;
		goto fail;
	}
	p = mmap(NULL, r->area_size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (p == MAP_FAILED) {
		e = -errno;
		goto fail;
	}
	a->pins = p;
	LIST_INSERT_HEAD(&r->areas, a, link);
	*out = a;
	return 0;
fail:
	if (a->fd >= 0)
		close(a->fd);
	free(a->seen);
	free(a);
	return e;
}

void residency_area_free(struct residency *r, struct residency_area *a)
{
	struct tierd_fast_area_tail *t;

	if (!a)
		return;
	/* The client's pins stop counting here: tell it before they do (a
	 * client still running, dropped for a fault or a quota, would go on
	 * acquiring from the table unprotected). */
	t = (struct tierd_fast_area_tail *)(a->pins + r->nentries);
	atomic_store_explicit(&t->revoked, 1, memory_order_seq_cst);
	LIST_REMOVE(a, link);
	munmap(a->pins, r->area_size);
	if (a->fd >= 0)
		close(a->fd);
	free(a->seen);
	free(a);
}

int residency_area_fd(const struct residency_area *a)
{
	return a->fd;
}

void residency_area_close_fd(struct residency_area *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
}

void residency_area_sweep(struct residency *r, struct residency_area *a,
			  void (*fn)(void *arg, const struct tierd_key *key, uint32_t uses), void *arg,
			  struct residency_sweep *out)
{
	uint64_t np = 0, pins = 0, uses = 0;

	for (uint32_t i = 0; i < r->nentries; i++) {
		uint32_t u = atomic_load_explicit(&a->pins[i].uses, memory_order_relaxed);
		uint32_t d = u - a->seen[i];
		uint32_t p = atomic_load_explicit(&a->pins[i].pins, memory_order_relaxed);
		struct tierd_key k;

		a->seen[i] = u;
		if (!d && !p)
			continue;
		if (!entry_key(r, i, &k) || !a->allowed[k.model])
			continue;
		np += p != 0;
		pins += p;
		uses += d;
		if (d)
			fn(arg, &k, d);
	}
	out->pinned = np;
	out->uses = uses;
	/* A garbage area's numbers need not add up: never below zero. */
	out->releases = uses + a->held > pins ? uses + a->held - pins : 0;
	a->held = pins;
}
