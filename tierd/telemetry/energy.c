/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "energy.h"

#define GIB		(1024.0 * 1024.0 * 1024.0)
#define PJ		1e-12

struct energy_entry {
	struct energy_attr a;
	uint64_t interval_bytes;	/* fetched since the last advance */
};

/*
 * Entries in an array (the order the metrics list them), found through an
 * open-addressing index with linear probing: accounting runs for every
 * acquire and fetch, and a walk over every client would cost as much as
 * there are clients.  A removal moves the last entry into the hole and
 * closes the gap in the index by shifting its probe run back (no tombstones
 * to sweep later): a departure costs a few probes, not a rebuild.
 */
struct energy_table {
	struct energy_entry *v;
	size_t n, cap;
	uint32_t *slot;			/* position + 1 in v; 0: empty */
	size_t nslot;			/* a power of two, at least 2 * cap */
};

struct energy_dev {
	struct energy_device d;
	struct energy_nvme_model m;
	bool have_model;
	struct probes_dev last;
};

struct energy {
	struct energy_params p;
	double pool_gib;
	enum energy_source src;
	uint64_t last_ns;
	double joules[ENERGY_TIERS][ENERGY_COMPONENTS];
	/* Static energy integrated but not yet split among models/clients. */
	double pending[ENERGY_TIERS];
	uint64_t tierd_bytes, hbm_bytes, tokens, device_bytes, other_bytes;
	double unattributed_j, static_s;
	struct energy_table models, clients;
	struct energy_dev *devs;
	size_t ndevs;
};

static double bytes_j(uint64_t bytes, double pj_per_bit)
{
	return (double)bytes * 8.0 * pj_per_bit * PJ;
}

void energy_params_from_conf(struct energy_params *p, const struct tierd_conf *c)
{
	memset(p, 0, sizeof(*p));
	p->pj_hbm = c->pj_hbm;
	p->pj_ddr = c->pj_ddr;
	p->pj_flash = c->pj_flash;
	p->ddr_static_w_per_gib = c->ddr_static_w_per_gib;
	p->gpu_idle_w = c->gpu_idle_w;
	p->gpus = c->gpus;
	p->nvme_default_w = c->nvme_default_w;
}

int energy_create(struct energy **out, const struct energy_params *p, uint64_t pool_bytes,
		  enum energy_source src, uint64_t now_ns)
{
	struct energy *e = calloc(1, sizeof(*e));

	*out = NULL;
	if (!e)
		return -ENOMEM;
	e->p = *p;
	e->pool_gib = (double)pool_bytes / GIB;
	e->src = src;
	e->last_ns = now_ns;
	*out = e;
	return 0;
}

static void table_free(struct energy_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free((char *)t->v[i].a.model);
	free(t->v);
	free(t->slot);
}

static uint64_t key_hash(const char *model, uint32_t client)
{
	return model ? XXH3_64bits(model, strlen(model)) : XXH3_64bits(&client, sizeof(client));
}

static bool key_is(const struct energy_entry *x, const char *model, uint32_t client)
{
	return model ? x->a.model && !strcmp(x->a.model, model) : !x->a.model && x->a.client == client;
}

/* Rebuilds the index for nslot slots (when it grows). */
static int table_index(struct energy_table *t, size_t nslot)
{
	uint32_t *slot = calloc(nslot, sizeof(*slot));

	if (!slot)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		size_t h = key_hash(t->v[i].a.model, t->v[i].a.client) & (nslot - 1);

		while (slot[h])
			h = (h + 1) & (nslot - 1);
		slot[h] = (uint32_t)i + 1;
	}
	free(t->slot);
	t->slot = slot;
	t->nslot = nslot;
	return 0;
}

void energy_destroy(struct energy *e)
{
	if (!e)
		return;
	table_free(&e->models);
	table_free(&e->clients);
	free(e->devs);
	free(e);
}

enum energy_source energy_source(const struct energy *e)
{
	return e->src;
}

/* The index slot of the entry with that key, or SIZE_MAX (t->nslot set). */
static size_t slot_find(const struct energy_table *t, const char *model, uint32_t client)
{
	for (size_t h = key_hash(model, client) & (t->nslot - 1); t->slot[h]; h = (h + 1) & (t->nslot - 1))
		if (key_is(&t->v[t->slot[h] - 1], model, client))
			return h;
	return SIZE_MAX;
}

/*
 * Empties slot h.  A later slot of the same probe run whose key hashes at
 * or before h moves back into the hole (else a lookup of it would stop at
 * the hole), and the hole moves on with it until the run ends.
 */
static void slot_delete(struct energy_table *t, size_t h)
{
	size_t mask = t->nslot - 1;

	for (size_t j = (h + 1) & mask; t->slot[j]; j = (j + 1) & mask) {
		const struct energy_entry *x = &t->v[t->slot[j] - 1];
		size_t home = key_hash(x->a.model, x->a.client) & mask;

		/* Stays where it is when home lies cyclically in (h, j]. */
		if (h <= j ? h < home && home <= j : h < home || home <= j)
			continue;
		t->slot[h] = t->slot[j];
		h = j;
	}
	t->slot[h] = 0;
}

/* model != NULL: the model table, keyed by name; else clients by id.
 * Adds the entry if it is not there. */
static struct energy_entry *table_get(struct energy_table *t, const char *model, uint32_t client)
{
	struct energy_entry *v;
	size_t h;

	if (!t->nslot && t->n && table_index(t, 4 * t->cap))
		return NULL;
	if (t->nslot) {
		for (h = key_hash(model, client) & (t->nslot - 1); t->slot[h]; h = (h + 1) & (t->nslot - 1))
			if (key_is(&t->v[t->slot[h] - 1], model, client))
				return &t->v[t->slot[h] - 1];
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;

		if (cap > UINT32_MAX / 2)
			return NULL;
		v = realloc(t->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		t->v = v;
		t->cap = cap;
	}
	v = &t->v[t->n];
	memset(v, 0, sizeof(*v));
	if (model) {
		v->a.model = strdup(model);
		if (!v->a.model)
			return NULL;
	}
	v->a.client = client;
	t->n++;
	if (t->nslot < 2 * t->cap) {
		if (table_index(t, 4 * t->cap)) {
			t->n--;
			free((char *)v->a.model);
			return NULL;
		}
	} else {
		for (h = key_hash(model, client) & (t->nslot - 1); t->slot[h]; h = (h + 1) & (t->nslot - 1))
			;
		t->slot[h] = (uint32_t)t->n;
	}
	return v;
}

static int entries_get(struct energy *e, const char *model, uint32_t client,
		       struct energy_entry **m, struct energy_entry **c)
{
	*m = table_get(&e->models, model ? model : "", 0);
	*c = table_get(&e->clients, NULL, client);
	return *m && *c ? 0 : -ENOMEM;
}

int energy_account_fetch(struct energy *e, const char *model, uint32_t client, uint64_t bytes)
{
	struct energy_entry *m, *c;
	double j = bytes_j(bytes, e->p.pj_flash);
	int r = entries_get(e, model, client, &m, &c);

	if (r)
		return r;
	e->tierd_bytes += bytes;
	/* With probes the tier total comes from what the device moved. */
	if (e->src == ENERGY_SOURCE_TIERD)
		e->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC] += j;
	for (struct energy_entry *x = m; x; x = x == m ? c : NULL) {
		x->a.fetched_bytes += bytes;
		x->interval_bytes += bytes;
		x->a.joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC] += j;
	}
	return 0;
}

int energy_account_hbm(struct energy *e, const char *model, uint32_t client, uint64_t bytes)
{
	struct energy_entry *m, *c;
	double jd = bytes_j(bytes, e->p.pj_ddr);
	/* Written into HBM once and read there once. */
	double jh = bytes_j(bytes, 2.0 * e->p.pj_hbm);
	int r = entries_get(e, model, client, &m, &c);

	if (r)
		return r;
	e->hbm_bytes += bytes;
	e->joules[ENERGY_TIER_DDR][ENERGY_DYNAMIC] += jd;
	e->joules[ENERGY_TIER_HBM][ENERGY_DYNAMIC] += jh;
	for (struct energy_entry *x = m; x; x = x == m ? c : NULL) {
		x->a.hbm_bytes += bytes;
		x->a.joules[ENERGY_TIER_DDR][ENERGY_DYNAMIC] += jd;
		x->a.joules[ENERGY_TIER_HBM][ENERGY_DYNAMIC] += jh;
	}
	return 0;
}

int energy_account_tokens(struct energy *e, const char *model, uint32_t client, uint64_t n)
{
	struct energy_entry *c = table_get(&e->clients, NULL, client);
	struct energy_entry *m = model ? table_get(&e->models, model, 0) : NULL;

	if (!c || (model && !m))
		return -ENOMEM;
	c->a.tokens += n;
	if (m)
		m->a.tokens += n;
	e->tokens += n;
	return 0;
}

void energy_client_forget(struct energy *e, uint32_t client)
{
	struct energy_table *t = &e->clients;
	struct energy_entry *gone, *dep;
	size_t h, i, last;

	/* No index: no client was ever added (table_get builds it with the
	 * first, and a failed growth keeps the old one). */
	if (client == ENERGY_CLIENT_DEPARTED || !t->nslot || slot_find(t, NULL, client) == SIZE_MAX)
		return;
	dep = table_get(t, NULL, ENERGY_CLIENT_DEPARTED);
	if (!dep)
		return;		/* keep the client's own entry: nothing is lost */
	/* table_get may have grown the array and rebuilt the index. */
	h = slot_find(t, NULL, client);
	i = t->slot[h] - 1;
	gone = &t->v[i];
	dep->a.fetched_bytes += gone->a.fetched_bytes;
	dep->a.hbm_bytes += gone->a.hbm_bytes;
	dep->a.tokens += gone->a.tokens;
	dep->interval_bytes += gone->interval_bytes;
	for (int ti = 0; ti < ENERGY_TIERS; ti++)
		for (int ci = 0; ci < ENERGY_COMPONENTS; ci++)
			dep->a.joules[ti][ci] += gone->a.joules[ti][ci];
	slot_delete(t, h);
	last = t->n - 1;
	/* The last entry fills the hole: its slot is told where it went. */
	if (i != last) {
		t->slot[slot_find(t, t->v[last].a.model, t->v[last].a.client)] = (uint32_t)i + 1;
		t->v[i] = t->v[last];
	}
	t->n--;
}

static struct energy_dev *dev_find(struct energy *e, uint32_t major, uint32_t minor)
{
	for (size_t i = 0; i < e->ndevs; i++)
		if (e->devs[i].d.major == major && e->devs[i].d.minor == minor)
			return &e->devs[i];
	return NULL;
}

int energy_device_add(struct energy *e, const char *name, uint32_t major, uint32_t minor)
{
	struct energy_dev *d;

	if (dev_find(e, major, minor))
		return 0;
	d = realloc(e->devs, (e->ndevs + 1) * sizeof(*d));
	if (!d)
		return -ENOMEM;
	e->devs = d;
	d = &e->devs[e->ndevs++];
	memset(d, 0, sizeof(*d));
	snprintf(d->d.name, sizeof(d->d.name), "%s", name);
	d->d.major = major;
	d->d.minor = minor;
	return 0;
}

int energy_device_set_nvme(struct energy *e, uint32_t major, uint32_t minor,
			   const struct energy_nvme_model *m)
{
	struct energy_dev *d = dev_find(e, major, minor);

	if (!d)
		return -ENOENT;
	if (!m->nps || m->nps > NVMEDEV_MAX_PS || m->cur_ps >= m->nps)
		return -EINVAL;
	d->m = *m;
	d->have_model = true;
	d->d.is_nvme = true;
	d->d.nps = m->nps;
	return 0;
}

void energy_nvme_model_from_info(struct energy_nvme_model *m, const struct nvmedev_info *in)
{
	memset(m, 0, sizeof(*m));
	m->nps = in->nps;
	for (unsigned i = 0; i < in->nps && i < NVMEDEV_MAX_PS; i++) {
		const struct nvmedev_psd *p = &in->ps[i];

		/* Unreported powers fall back to the state's maximum: an upper
		 * bound, never an underestimate. */
		m->busy_w[i] = p->active_w >= 0 ? p->active_w : p->max_w;
		m->idle_w[i] = p->idle_w >= 0 ? p->idle_w : p->max_w;
		m->itps[i] = in->apst[i].itps;
		m->itpt_ms[i] = in->apst[i].itpt_ms;
	}
	m->apst_enabled = in->apst_enabled;
	/* I/O runs in an operational state; APST's own moves do not show in
	 * Get Features, and a non-operational value means "back to PS0". */
	if (in->cur_ps >= 0 && (unsigned)in->cur_ps < in->nps && !in->ps[in->cur_ps].nonop)
		m->cur_ps = (unsigned)in->cur_ps;
}

/* Seconds one gap of gap_s spends in each state, times n. */
static void infer_gap(const struct energy_nvme_model *m, double gap_s, double n, double *idle_s)
{
	unsigned s = m->cur_ps;

	/* Each step moves to another state; the table has NVMEDEV_MAX_PS
	 * entries, so a longer walk is a loop in a malformed table. */
	for (unsigned step = 0; step < NVMEDEV_MAX_PS && gap_s > 0; step++) {
		double itpt = m->itpt_ms[s] / 1000.0;
		unsigned next = m->itps[s];

		if (!m->apst_enabled || !m->itpt_ms[s] || next == s || next >= m->nps) {
			idle_s[s] += n * gap_s;
			return;
		}
		if (gap_s <= itpt) {
			idle_s[s] += n * gap_s;
			return;
		}
		idle_s[s] += n * itpt;
		gap_s -= itpt;
		s = next;
	}
	if (gap_s > 0)
		idle_s[s] += n * gap_s;
}

void energy_infer_idle(const struct energy_nvme_model *m, const uint64_t *gap_count,
		       const uint64_t *gap_sum_ns, unsigned nslots, double *idle_s)
{
	for (unsigned i = 0; i < nslots; i++) {
		if (!gap_count[i])
			continue;
		/* The slot's real mean: the probe keeps the sum per slot. */
		infer_gap(m, (double)gap_sum_ns[i] / (double)gap_count[i] / 1e9,
			  (double)gap_count[i], idle_s);
	}
}

static uint64_t sub_clamp(uint64_t now, uint64_t before)
{
	return now > before ? now - before : 0;
}

int energy_device_sample(struct energy *e, const struct probes_dev *pd)
{
	struct energy_dev *d = dev_find(e, pd->major, pd->minor);
	uint64_t gc[BLKSTAT_SLOTS], gs[BLKSTAT_SLOTS], dr, dw, db;
	double idle_s[NVMEDEV_MAX_PS] = { 0 }, busy_s, st = 0, dyn;

	if (!d)
		return -ENOENT;
	/* No baseline to take: the probes' maps start empty when they load,
	 * so everything in them happened while tierd watched. */
	dr = sub_clamp(pd->read_bytes, d->last.read_bytes);
	dw = sub_clamp(pd->write_bytes, d->last.write_bytes);
	db = sub_clamp(pd->busy_ns, d->last.busy_ns);
	for (unsigned i = 0; i < BLKSTAT_SLOTS; i++) {
		gc[i] = sub_clamp(pd->gap_hist[i], d->last.gap_hist[i]);
		gs[i] = sub_clamp(pd->gap_sum_ns[i], d->last.gap_sum_ns[i]);
	}
	d->last = *pd;

	d->d.read_bytes += dr;
	d->d.write_bytes += dw;
	d->d.busy_ns += db;
	busy_s = (double)db / 1e9;
	dyn = bytes_j(dr, e->p.pj_flash);
	d->d.dynamic_j += dyn;
	e->device_bytes += dr;
	if (e->src == ENERGY_SOURCE_EBPF)
		e->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC] += dyn;

	if (d->have_model) {
		energy_infer_idle(&d->m, gc, gs, BLKSTAT_SLOTS, idle_s);
		d->d.state_s[d->m.cur_ps] += busy_s;
		st += busy_s * d->m.busy_w[d->m.cur_ps];
		for (unsigned s = 0; s < d->m.nps; s++) {
			d->d.state_s[s] += idle_s[s];
			st += idle_s[s] * d->m.idle_w[s];
		}
	} else {
		double idle = 0;

		for (unsigned i = 0; i < BLKSTAT_SLOTS; i++)
			idle += (double)gs[i] / 1e9;
		st = (busy_s + idle) * e->p.nvme_default_w;
	}
	d->d.static_j += st;
	if (e->src == ENERGY_SOURCE_EBPF) {
		e->joules[ENERGY_TIER_SSD][ENERGY_STATIC] += st;
		e->pending[ENERGY_TIER_SSD] += st;
	}
	/* Device reads that tierd did not ask for; kept monotonic although
	 * tierd counts at submission and the device at completion. */
	if (e->device_bytes > e->tierd_bytes && e->device_bytes - e->tierd_bytes > e->other_bytes)
		e->other_bytes = e->device_bytes - e->tierd_bytes;
	return 0;
}

/* Splits pending static energy among the entries of t by weights w. */
static void table_split(struct energy_table *t, const double *pending, bool by_interval,
			double total)
{
	for (size_t i = 0; i < t->n; i++) {
		struct energy_entry *x = &t->v[i];
		double w = (double)(by_interval ? x->interval_bytes : x->a.fetched_bytes) / total;

		for (int ti = 0; ti < ENERGY_TIERS; ti++)
			x->a.joules[ti][ENERGY_STATIC] += pending[ti] * w;
	}
}

static void energy_attribute(struct energy *e)
{
	uint64_t interval = 0, all = 0;
	bool by_interval;

	for (size_t i = 0; i < e->models.n; i++) {
		interval += e->models.v[i].interval_bytes;
		all += e->models.v[i].a.fetched_bytes;
	}
	if (!all) {
		for (int ti = 0; ti < ENERGY_TIERS; ti++)
			e->unattributed_j += e->pending[ti];
	} else {
		by_interval = interval > 0;
		table_split(&e->models, e->pending, by_interval, (double)(by_interval ? interval : all));
		table_split(&e->clients, e->pending, by_interval, (double)(by_interval ? interval : all));
	}
	for (int ti = 0; ti < ENERGY_TIERS; ti++)
		e->pending[ti] = 0;
	for (size_t i = 0; i < e->models.n; i++)
		e->models.v[i].interval_bytes = 0;
	for (size_t i = 0; i < e->clients.n; i++)
		e->clients.v[i].interval_bytes = 0;
}

void energy_advance(struct energy *e, uint64_t now_ns)
{
	double dt, j;

	if (now_ns <= e->last_ns)
		return;
	dt = (double)(now_ns - e->last_ns) / 1e9;
	e->last_ns = now_ns;
	e->static_s += dt;

	j = e->p.ddr_static_w_per_gib * e->pool_gib * dt;
	e->joules[ENERGY_TIER_DDR][ENERGY_STATIC] += j;
	e->pending[ENERGY_TIER_DDR] += j;

	j = e->p.gpu_idle_w * e->p.gpus * dt;
	e->joules[ENERGY_TIER_HBM][ENERGY_STATIC] += j;
	e->pending[ENERGY_TIER_HBM] += j;

	/* Without probes there are no gaps to infer from: the device is
	 * charged its current state's idle power for the whole time. */
	if (e->src == ENERGY_SOURCE_TIERD) {
		for (size_t i = 0; i < e->ndevs; i++) {
			struct energy_dev *d = &e->devs[i];

			j = d->have_model ? d->m.idle_w[d->m.cur_ps] * dt : e->p.nvme_default_w * dt;
			if (d->have_model)
				d->d.state_s[d->m.cur_ps] += dt;
			d->d.static_j += j;
			e->joules[ENERGY_TIER_SSD][ENERGY_STATIC] += j;
			e->pending[ENERGY_TIER_SSD] += j;
		}
	}
	energy_attribute(e);
}

double energy_joules(const struct energy *e, enum energy_tier t, enum energy_component c)
{
	return e->joules[t][c];
}

uint64_t energy_tierd_bytes(const struct energy *e) { return e->tierd_bytes; }
uint64_t energy_device_bytes(const struct energy *e) { return e->device_bytes; }
uint64_t energy_other_bytes(const struct energy *e) { return e->other_bytes; }
uint64_t energy_hbm_bytes(const struct energy *e) { return e->hbm_bytes; }
uint64_t energy_tokens(const struct energy *e) { return e->tokens; }
double energy_unattributed_joules(const struct energy *e) { return e->unattributed_j; }
double energy_static_seconds(const struct energy *e) { return e->static_s; }

double energy_other_joules(const struct energy *e)
{
	return bytes_j(e->other_bytes, e->p.pj_flash);
}

size_t energy_model_count(const struct energy *e) { return e->models.n; }
size_t energy_client_count(const struct energy *e) { return e->clients.n; }
size_t energy_device_count(const struct energy *e) { return e->ndevs; }

const struct energy_attr *energy_model_at(const struct energy *e, size_t i)
{
	return i < e->models.n ? &e->models.v[i].a : NULL;
}

const struct energy_attr *energy_client_at(const struct energy *e, size_t i)
{
	return i < e->clients.n ? &e->clients.v[i].a : NULL;
}

const struct energy_device *energy_device_at(const struct energy *e, size_t i)
{
	return i < e->ndevs ? &e->devs[i].d : NULL;
}

const char *energy_tier_name(enum energy_tier t)
{
	switch (t) {
	case ENERGY_TIER_HBM: return "hbm";
	case ENERGY_TIER_DDR: return "ddr";
	case ENERGY_TIER_SSD: return "ssd";
	}
	return "?";
}

const char *energy_component_name(enum energy_component c)
{
	switch (c) {
	case ENERGY_DYNAMIC: return "dynamic";
	case ENERGY_STATIC: return "static";
	}
	return "?";
}

const char *energy_source_name(enum energy_source s)
{
	switch (s) {
	case ENERGY_SOURCE_TIERD: return "tierd";
	case ENERGY_SOURCE_EBPF: return "ebpf";
	}
	return "?";
}
