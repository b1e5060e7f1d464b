/* SPDX-License-Identifier: MIT */
/*
 * The energy model against hand-computed cases.  energy.c is compiled into
 * this program, its hashing counted: what a removal from the client index
 * costs is checked by the work it does, not by a clock.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>
#include <cmocka.h>

#include "conf.h"
#include "energy.h"
#include "nvme.h"

static uint64_t hashes;		/* keys energy.c hashed */

static XXH64_hash_t counted_xxh3(const void *p, size_t len)
{
	hashes++;
	return XXH3_64bits(p, len);
}

#define XXH3_64bits(p, len)	counted_xxh3(p, len)
#include "energy.c"
#undef XXH3_64bits
/* Its units as doubles; this file's are integers. */
#undef GIB
#undef PJ

#define S		1000000000ULL		/* ns per second */
#define GIB		(1ULL << 30)
#define MB		1000000ULL

#define assert_near(a, b) do { \
	double a_ = (a), b_ = (b); \
	if (fabs(a_ - b_) > 1e-9 * fmax(1.0, fabs(b_))) \
		fail_msg("%s = %.12g, expected %.12g", #a, a_, b_); \
	} while (0)

static void params_default(struct energy_params *p)
{
	struct tierd_conf c;

	assert_int_equal(conf_init(&c), 0);
	energy_params_from_conf(p, &c);
	conf_free(&c);
}

static const struct energy_attr *model_named(const struct energy *e, const char *name)
{
	for (size_t i = 0; i < energy_model_count(e); i++)
		if (!strcmp(energy_model_at(e, i)->model, name))
			return energy_model_at(e, i);
	return NULL;
}

static const struct energy_attr *client_id(const struct energy *e, uint32_t id)
{
	for (size_t i = 0; i < energy_client_count(e); i++)
		if (energy_client_at(e, i)->client == id)
			return energy_client_at(e, i);
	return NULL;
}

/* SSD path: 102.4 pJ/b Flash, then 9.2 DDR and 2 x 4.2 HBM once the client
 * copies it: 110.8 + 9.2 pJ/b in all for a byte that went the whole way. */
static void test_paths(void **state)
{
	struct energy_params p;
	struct energy *e;

	params_default(&p);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_TIERD, 0), 0);
	assert_int_equal(energy_account_fetch(e, "m", 1, MB), 0);
	/* 1e6 B x 8 b/B x 102.4e-12 J/b */
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 8.192e-4);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_DYNAMIC), 0);
	assert_int_equal(energy_account_hbm(e, "m", 1, MB), 0);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_DYNAMIC), 7.36e-5);
	assert_near(energy_joules(e, ENERGY_TIER_HBM, ENERGY_DYNAMIC), 6.72e-5);
	/* The SSD path of the paper, 110.8 pJ/b, is Flash + HBM write + read. */
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC) +
		    energy_joules(e, ENERGY_TIER_HBM, ENERGY_DYNAMIC), MB * 8 * 110.8e-12);
	assert_int_equal(energy_tierd_bytes(e), MB);
	assert_int_equal(energy_hbm_bytes(e), MB);
	assert_near(model_named(e, "m")->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC], 8.192e-4);
	assert_near(client_id(e, 1)->joules[ENERGY_TIER_HBM][ENERGY_DYNAMIC], 6.72e-5);
	energy_destroy(e);
}

static void test_static_power_times_time(void **state)
{
	struct energy_params p;
	struct energy *e;

	params_default(&p);
	p.gpus = 2;
	/* 256 GiB at 57 W per 256 GB: 57 W; two GPUs idle at 70 W: 140 W. */
	assert_int_equal(energy_create(&e, &p, 256 * GIB, ENERGY_SOURCE_TIERD, 5 * S), 0);
	energy_advance(e, 15 * S);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_STATIC), 570.0);
	assert_near(energy_joules(e, ENERGY_TIER_HBM, ENERGY_STATIC), 1400.0);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_STATIC), 0.0);
	assert_near(energy_static_seconds(e), 10.0);
	/* Time going backwards adds nothing. */
	energy_advance(e, 12 * S);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_STATIC), 570.0);
	/* Nobody fetched: nothing to attribute to, and it says so. */
	assert_near(energy_unattributed_joules(e), 1970.0);
	energy_destroy(e);
}

static void test_constants_overridden(void **state)
{
	struct tierd_conf c;
	struct energy_params p;
	struct energy *e;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_set(&c, "energy.flash_pj_per_bit=50", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.ddr_pj_per_bit=10", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.hbm_pj_per_bit=5", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.ddr_static_w_per_gib=0.5", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.gpu_idle_w=100", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.gpus=1", err, sizeof(err)), 0);
	energy_params_from_conf(&p, &c);
	conf_free(&c);
	assert_int_equal(energy_create(&e, &p, 4 * GIB, ENERGY_SOURCE_TIERD, 0), 0);
	assert_int_equal(energy_account_fetch(e, "m", 0, MB), 0);
	assert_int_equal(energy_account_hbm(e, "m", 0, MB), 0);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 4e-4);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_DYNAMIC), 8e-5);
	assert_near(energy_joules(e, ENERGY_TIER_HBM, ENERGY_DYNAMIC), 8e-5);
	energy_advance(e, 2 * S);
	assert_near(energy_joules(e, ENERGY_TIER_DDR, ENERGY_STATIC), 4.0);	/* 0.5 x 4 x 2 */
	assert_near(energy_joules(e, ENERGY_TIER_HBM, ENERGY_STATIC), 200.0);
	energy_destroy(e);
}

static void test_attribution_proportions(void **state)
{
	struct energy_params p;
	struct energy *e;
	const struct energy_attr *a, *b;

	params_default(&p);
	p.ddr_static_w_per_gib = 1.0;
	assert_int_equal(energy_create(&e, &p, 100 * GIB, ENERGY_SOURCE_TIERD, 0), 0);
	/* Interval 1: A fetched 3 MB, B 1 MB: 100 J static split 75 / 25. */
	assert_int_equal(energy_account_fetch(e, "A", 1, 3 * MB), 0);
	assert_int_equal(energy_account_fetch(e, "B", 2, 1 * MB), 0);
	energy_advance(e, 1 * S);
	a = model_named(e, "A");
	b = model_named(e, "B");
	assert_non_null(a);
	assert_non_null(b);
	assert_near(a->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 75.0);
	assert_near(b->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 25.0);
	assert_near(client_id(e, 1)->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 75.0);
	assert_near(client_id(e, 2)->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 25.0);
	/* Dynamic energy follows each one's own bytes. */
	assert_near(a->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC], 3 * 8.192e-4);
	assert_near(b->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC], 8.192e-4);
	/* Interval 2: only B fetched: B takes all 100 J. */
	assert_int_equal(energy_account_fetch(e, "B", 2, 1 * MB), 0);
	energy_advance(e, 2 * S);
	a = model_named(e, "A");
	b = model_named(e, "B");
	assert_near(a->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 75.0);
	assert_near(b->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 125.0);
	/* Interval 3: nobody fetched: split by all bytes so far, 3 : 2. */
	energy_advance(e, 3 * S);
	a = model_named(e, "A");
	b = model_named(e, "B");
	assert_near(a->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 135.0);
	assert_near(b->joules[ENERGY_TIER_DDR][ENERGY_STATIC], 165.0);
	assert_near(energy_unattributed_joules(e), 0.0);
	/* The parts add up to the tier's total. */
	assert_near(a->joules[ENERGY_TIER_DDR][ENERGY_STATIC] + b->joules[ENERGY_TIER_DDR][ENERGY_STATIC],
		    energy_joules(e, ENERGY_TIER_DDR, ENERGY_STATIC));
	energy_destroy(e);
}

static void test_tokens_and_departed_clients(void **state)
{
	struct energy_params p;
	struct energy *e;
	const struct energy_attr *c, *d;

	params_default(&p);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_TIERD, 0), 0);
	assert_int_equal(energy_account_fetch(e, "m", 7, 10 * MB), 0);
	assert_int_equal(energy_account_tokens(e, NULL, 7, 4), 0);
	c = client_id(e, 7);
	assert_int_equal(c->tokens, 4);
	/* 8.192e-3 J over 4 tokens. */
	assert_near(c->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC] / (double)c->tokens, 2.048e-3);
	energy_client_forget(e, 7);
	assert_null(client_id(e, 7));
	d = client_id(e, ENERGY_CLIENT_DEPARTED);
	assert_non_null(d);
	assert_int_equal(d->tokens, 4);
	assert_int_equal(d->fetched_bytes, 10 * MB);
	assert_near(d->joules[ENERGY_TIER_SSD][ENERGY_DYNAMIC], 8.192e-3);
	assert_int_equal(energy_tokens(e), 4);
	energy_destroy(e);
}

/* Many clients come and go: each one's entry is found again whatever the
 * index went through (growth, removals), and the books add up. */
static void test_many_clients(void **state)
{
	struct energy_params p;
	struct energy *e;
	uint64_t tokens = 0;

	params_default(&p);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_TIERD, 0), 0);
	for (uint32_t id = 1; id <= 2000; id++) {
		assert_int_equal(energy_account_fetch(e, id % 2 ? "odd" : "even", id, id), 0);
		assert_int_equal(energy_account_tokens(e, NULL, id, 1), 0);
		tokens++;
	}
	/* Every third leaves: folded into "departed". */
	for (uint32_t id = 3; id <= 2000; id += 3)
		energy_client_forget(e, id);
	for (uint32_t id = 1; id <= 2000; id++) {
		const struct energy_attr *c = client_id(e, id);

		if (id % 3 == 0) {
			assert_null(c);
			continue;
		}
		assert_non_null(c);
		assert_int_equal(c->fetched_bytes, id);
		/* Found again, not added a second time. */
		assert_int_equal(energy_account_tokens(e, NULL, id, 1), 0);
		assert_int_equal(client_id(e, id)->tokens, 2);
		tokens++;
	}
	assert_int_equal(client_id(e, ENERGY_CLIENT_DEPARTED)->tokens, 666);
	/* 2000 - 666 clients, and "departed". */
	assert_int_equal(energy_client_count(e), 2000 - 666 + 1);
	assert_int_equal(energy_model_count(e), 2);
	assert_int_equal(energy_tokens(e), tokens);
	energy_destroy(e);
}

/*
 * Clients leave from the middle of many: every other one is found again
 * with its own books, each departure is folded into "departed" once, and a
 * departure costs a few hashes of keys near the one removed, not a walk
 * over every client (the index used to be rebuilt on each).
 */
static void test_forget_middle_of_many(void **state)
{
	enum { N = 4096, GONE = 1024 };
	struct energy_params p;
	struct energy *e;
	uint64_t before, gone_bytes = 0;
	const struct energy_attr *d;

	(void)state;
	params_default(&p);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_TIERD, 0), 0);
	for (uint32_t id = 1; id <= N; id++)
		assert_int_equal(energy_account_fetch(e, "m", id, 1000 + id), 0);
	/* "departed" exists from the first departure on: made beforehand, the
	 * count below is of removals alone. */
	energy_client_forget(e, N / 2);
	gone_bytes += 1000 + N / 2;
	before = hashes;
	/* The middle block, then every seventh of the rest, out of order. */
	for (uint32_t k = 1; k < GONE; k++) {
		uint32_t id = k < GONE / 2 ? N / 2 - k : (N / 2 + (k - GONE / 2) * 7) % N + 1;

		if (!client_id(e, id))
			continue;
		gone_bytes += 1000 + id;
		energy_client_forget(e, id);
		assert_null(client_id(e, id));
	}
	/* A removal hashes the probe run after its slot (a load of at most
	 * one half keeps runs short), never the whole table. */
	if (hashes - before > 16u * GONE)
		fail_msg("%llu hashes for %u departures among %u clients", (unsigned long long)(hashes - before),
			 GONE, N);
	d = client_id(e, ENERGY_CLIENT_DEPARTED);
	assert_non_null(d);
	assert_int_equal(d->fetched_bytes, gone_bytes);
	for (uint32_t id = 1; id <= N; id++) {
		const struct energy_attr *c = client_id(e, id);
		size_t n = energy_client_count(e);

		if (!c)
			continue;
		assert_int_equal(c->fetched_bytes, 1000 + id);
		/* Found through the index, not added again. */
		assert_int_equal(energy_account_tokens(e, NULL, id, 1), 0);
		assert_int_equal(energy_client_count(e), n);
		assert_int_equal(client_id(e, id)->tokens, 1);
	}
	/* A departed id that comes back is a new client. */
	assert_int_equal(energy_account_tokens(e, NULL, N / 2, 1), 0);
	assert_int_equal(client_id(e, N / 2)->fetched_bytes, 0);
	energy_client_forget(e, N / 2);
	assert_int_equal(client_id(e, ENERGY_CLIENT_DEPARTED)->tokens, 1);
	energy_destroy(e);
}

/* Three states: PS0 operational (busy 5 W, idle 3 W), PS3 and PS4
 * non-operational (50 mW, 5 mW).  APST: PS0 -> PS3 after 100 ms idle, PS3
 * -> PS4 after 1000 ms. */
static void model_3state(struct energy_nvme_model *m)
{
	memset(m, 0, sizeof(*m));
	m->nps = 5;
	m->busy_w[0] = 5.0;
	m->idle_w[0] = 3.0;
	m->idle_w[3] = 0.05;
	m->idle_w[4] = 0.005;
	m->apst_enabled = true;
	m->itps[0] = 3;
	m->itpt_ms[0] = 100;
	m->itps[3] = 4;
	m->itpt_ms[3] = 1000;
	m->cur_ps = 0;
}

/* 10 gaps of 50 ms (slot 25), 4 of 500 ms (slot 28), 2 of 3 s (slot 31). */
static void gaps_synthetic(uint64_t *count, uint64_t *sum)
{
	memset(count, 0, BLKSTAT_SLOTS * sizeof(*count));
	memset(sum, 0, BLKSTAT_SLOTS * sizeof(*sum));
	count[25] = 10;
	sum[25] = 10 * 50000000ULL;
	count[28] = 4;
	sum[28] = 4 * 500000000ULL;
	count[31] = 2;
	sum[31] = 2 * 3000000000ULL;
}

static void test_infer_residency_from_gaps(void **state)
{
	struct energy_nvme_model m;
	uint64_t count[BLKSTAT_SLOTS], sum[BLKSTAT_SLOTS];
	double idle[NVMEDEV_MAX_PS] = { 0 };

	model_3state(&m);
	gaps_synthetic(count, sum);
	energy_infer_idle(&m, count, sum, BLKSTAT_SLOTS, idle);
	/* PS0: 10 x 0.05 + 4 x 0.1 + 2 x 0.1; PS3: 4 x 0.4 + 2 x 1.0;
	 * PS4: 2 x (3 - 1.1). */
	assert_near(idle[0], 1.1);
	assert_near(idle[3], 3.6);
	assert_near(idle[4], 3.8);
	assert_near(idle[1] + idle[2], 0.0);

	/* APST off: every idle second stays in PS0. */
	memset(idle, 0, sizeof(idle));
	m.apst_enabled = false;
	energy_infer_idle(&m, count, sum, BLKSTAT_SLOTS, idle);
	assert_near(idle[0], 8.5);
	assert_near(idle[3] + idle[4], 0.0);

	/* A table that loops (PS3 -> PS4 -> PS3) still ends. */
	memset(idle, 0, sizeof(idle));
	m.apst_enabled = true;
	m.itps[4] = 3;
	m.itpt_ms[4] = 1;
	energy_infer_idle(&m, count, sum, BLKSTAT_SLOTS, idle);
	assert_near(idle[0] + idle[3] + idle[4], 8.5);
}

static void test_device_sample_measured(void **state)
{
	struct energy_params p;
	struct energy_nvme_model m;
	struct probes_dev d;
	struct energy *e;
	const struct energy_device *dv;

	params_default(&p);
	model_3state(&m);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_EBPF, 0), 0);
	assert_int_equal(energy_device_add(e, "nvme0n1", 259, 0), 0);
	assert_int_equal(energy_device_set_nvme(e, 259, 0, &m), 0);
	memset(&d, 0, sizeof(d));
	/* Not added: refused. */
	assert_int_equal(energy_device_sample(e, &d), -ENOENT);
	d.major = 259;
	assert_int_equal(energy_device_sample(e, &d), 0);
	assert_int_equal(energy_account_fetch(e, "m", 1, 400000), 0);
	/* With probes the tier total is what the device moved. */
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 0.0);
	d.read_bytes += MB;
	d.busy_ns += 2 * S;
	gaps_synthetic(d.gap_hist, d.gap_sum_ns);
	assert_int_equal(energy_device_sample(e, &d), 0);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 8.192e-4);
	/* 2 s busy x 5 W + 1.1 s x 3 W + 3.6 s x 0.05 W + 3.8 s x 0.005 W */
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_STATIC), 10.0 + 3.3 + 0.18 + 0.019);
	dv = energy_device_at(e, 0);
	assert_near(dv->state_s[0], 3.1);
	assert_near(dv->state_s[3], 3.6);
	assert_near(dv->state_s[4], 3.8);
	assert_int_equal(dv->read_bytes, MB);
	/* 1 MB moved, 0.4 MB of it tierd's: 0.6 MB other, not hidden. */
	assert_int_equal(energy_device_bytes(e), MB);
	assert_int_equal(energy_other_bytes(e), 600000);
	assert_near(energy_other_joules(e), 600000 * 8 * 102.4e-12);
	/* A sample going backwards (counters reset) takes nothing away. */
	d.read_bytes = 0;
	d.busy_ns = 0;
	assert_int_equal(energy_device_sample(e, &d), 0);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 8.192e-4);
	assert_near(energy_device_at(e, 0)->state_s[0], 3.1);
	/* Static SSD energy is attributed at the next advance; model m fetched
	 * everything so it gets all of it. */
	energy_advance(e, 1 * S);
	assert_near(model_named(e, "m")->joules[ENERGY_TIER_SSD][ENERGY_STATIC], 13.499);
	energy_destroy(e);
}

/* The probes' maps start empty when they load: a first sample is all new. */
static void test_first_sample_counts(void **state)
{
	struct energy_params p;
	struct probes_dev d;
	struct energy *e;

	params_default(&p);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_EBPF, 0), 0);
	assert_int_equal(energy_device_add(e, "vda", 254, 0), 0);
	memset(&d, 0, sizeof(d));
	d.major = 254;
	d.read_bytes = 2 * MB;
	assert_int_equal(energy_device_sample(e, &d), 0);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_DYNAMIC), 1.6384e-3);
	/* Not NVMe and no default power: no static energy, no states. */
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_STATIC), 0.0);
	assert_int_equal(energy_device_at(e, 0)->nps, 0);
	assert_int_equal(energy_other_bytes(e), 2 * MB);
	energy_destroy(e);
}

static void test_no_probes_charges_current_state(void **state)
{
	struct energy_params p;
	struct energy_nvme_model m;
	struct energy *e;

	params_default(&p);
	model_3state(&m);
	assert_int_equal(energy_create(&e, &p, 0, ENERGY_SOURCE_TIERD, 0), 0);
	assert_int_equal(energy_device_add(e, "nvme0n1", 259, 0), 0);
	assert_int_equal(energy_device_set_nvme(e, 259, 0, &m), 0);
	energy_advance(e, 4 * S);
	assert_near(energy_joules(e, ENERGY_TIER_SSD, ENERGY_STATIC), 12.0);	/* 3 W x 4 s */
	assert_near(energy_device_at(e, 0)->state_s[0], 4.0);
	/* A model whose current state is out of range is refused. */
	m.cur_ps = 9;
	assert_int_equal(energy_device_set_nvme(e, 259, 0, &m), -EINVAL);
	energy_destroy(e);
}

static void test_nvme_decoders(void **state)
{
	struct nvmedev_info in;
	struct energy_nvme_model m;
	uint8_t v[16] = { 0x10, 0x27 };

	/* MP 2500: 25 W in 0.01 W units, 0.25 W with MXPS. */
	assert_near(nvmedev_max_power_w(2500, 0), 25.0);
	assert_near(nvmedev_max_power_w(2500, 1), 0.25);
	assert_near(nvmedev_scaled_power_w(100, 0x40), 0.01);
	assert_near(nvmedev_scaled_power_w(100, 0x80), 1.0);
	assert_true(nvmedev_scaled_power_w(100, 0x00) < 0);
	assert_true(nvmedev_scaled_power_w(100, 0xc0) < 0);
	assert_int_equal(nvmedev_le128(v), 10000);
	v[8] = 1;
	assert_true(nvmedev_le128(v) == UINT64_MAX);

	memset(&in, 0, sizeof(in));
	in.nps = 2;
	in.ps[0].max_w = 8.0;
	in.ps[0].idle_w = -1;
	in.ps[0].active_w = 6.0;
	in.ps[1].max_w = 0.1;
	in.ps[1].idle_w = 0.02;
	in.ps[1].active_w = -1;
	in.ps[1].nonop = true;
	in.apst_enabled = true;
	in.apst[0].itps = 1;
	in.apst[0].itpt_ms = 50;
	in.cur_ps = 1;			/* non-operational: I/O runs in PS0 */
	energy_nvme_model_from_info(&m, &in);
	assert_int_equal(m.nps, 2);
	assert_near(m.busy_w[0], 6.0);
	assert_near(m.idle_w[0], 8.0);	/* not reported: the maximum */
	assert_near(m.idle_w[1], 0.02);
	assert_int_equal(m.cur_ps, 0);
	assert_int_equal(m.itps[0], 1);
	assert_int_equal(m.itpt_ms[0], 50);
}

static void test_nvme_refresh_policy(void **state)
{
	/* First time: always. */
	assert_true(nvmedev_refresh_policy(false, 0, 0, 5 * S, 60, 0));
	/* Within the interval: never, whatever the I/O. */
	assert_false(nvmedev_refresh_policy(true, 10 * S, 5, 69 * S, 60, 99));
	/* Interval passed and the device moved I/O: yes. */
	assert_true(nvmedev_refresh_policy(true, 10 * S, 5, 70 * S, 60, 6));
	/* Interval passed but no I/O since: the device may sleep, skip. */
	assert_false(nvmedev_refresh_policy(true, 10 * S, 5, 700 * S, 60, 5));
	/* Activity unknown: the interval alone decides. */
	assert_true(nvmedev_refresh_policy(true, 10 * S, 5, 70 * S, 60, UINT64_MAX));
	/* A clock going backwards does not trigger one. */
	assert_false(nvmedev_refresh_policy(true, 10 * S, 5, 1 * S, 0, 6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_static_power_times_time),
		cmocka_unit_test(test_constants_overridden),
		cmocka_unit_test(test_attribution_proportions),
		cmocka_unit_test(test_tokens_and_departed_clients),
		cmocka_unit_test(test_many_clients),
		cmocka_unit_test(test_forget_middle_of_many),
		cmocka_unit_test(test_infer_residency_from_gaps),
		cmocka_unit_test(test_device_sample_measured),
		cmocka_unit_test(test_first_sample_counts),
		cmocka_unit_test(test_no_probes_charges_current_state),
		cmocka_unit_test(test_nvme_decoders),
		cmocka_unit_test(test_nvme_refresh_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
