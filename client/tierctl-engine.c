/* SPDX-License-Identifier: MIT */
/*
 * tierctl fetch / demo, and what tierctl bench fetch (tierctl-bench-fetch.c)
 * shares with them: drive the engine directly (no daemon).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "catalog.h"
#include "conf.h"
#include "demostore.h"
#include "engine.h"
#include "fetch.h"
#include "log.h"
#include "pool.h"
#include "tierctl.h"
#include "tierctl-direct.h"



double tierctl_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tierctl_parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max) {
		fprintf(stderr, "tierctl: %s: '%s' is not a number up to %" PRIu64 "\n", opt, s, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int tierctl_parse_size(const char *opt, const char *s, uint64_t *out)
{
	if (conf_parse_size(s, out) < 0) {
		fprintf(stderr, "tierctl: %s: '%s' is not a size (e.g. 1M)\n", opt, s);
		return -EINVAL;
	}
	return 0;
}

void direct_close(struct direct *d)
{
	engine_destroy(d->e);
	if (d->have_conf)
		conf_free(&d->conf);
	memset(d, 0, sizeof(*d));
}

int direct_conf_prepare(struct direct *d, const struct tierctl_opts *o)
{
	char err[512];
	int r;

	r = conf_init(&d->conf);
	if (r < 0)
		return r;
	d->have_conf = true;
	if (o->config_path) {
		d->conf_file = true;
		r = conf_load_file(&d->conf, o->config_path, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "tierctl: %s\n", err);
			return r;
		}
	} else if (geteuid() != 0) {
		/* Without CAP_IPC_LOCK the default 8 MiB RLIMIT_MEMLOCK cannot lock a pool. */
		d->conf.pool_lock = false;
	}
	return 0;
}

/*
 * Opens dir's catalog, then an engine whose pool holds 'slots' experts of it
 * (a config file's larger pool is kept).
 */
int direct_open(struct direct *d, const char *dir, uint64_t slots)
{
	struct catalog *cat = NULL;
	char err[1024];
	uint64_t slot, need;
	int r;

	r = catalog_open(&cat, dir, NULL, &d->conf, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "tierctl: %s\n", err);
		return r;
	}
	slot = (cat->slot_bytes + CHUNK - 1) / CHUNK * CHUNK;
	need = slots * slot;
	if (!d->conf_file || d->conf.pool_size < need)
		d->conf.pool_size = need;
	r = conf_validate(&d->conf, err, sizeof(err));
	if (r == 0)
		r = engine_create(&d->e, &d->conf, err, sizeof(err));
	if (r == 0)
		r = engine_add_model(d->e, "model", cat, true, 0, err, sizeof(err));
	if (r < 0) {
		if (!d->e || engine_model_count(d->e) == 0)
			catalog_free(cat);
		fprintf(stderr, "tierctl: %s\n", err);
		return r;
	}
	d->cat = cat;
	return 0;
}


void direct_on_acquired(void *arg, int err, const struct engine_slot_info *info)
{
	struct acq *a = arg;

	a->done = 1;
	a->err = err;
	if (info)
		a->info = *info;
}

/* Every expert's file cache dropped, so reads come from the device. */
void direct_drop_caches(const struct direct *d)
{
	int fd;

	for (uint32_t f = 0; f < d->cat->nfiles; f++) {
		fd = engine_file_fd(d->e, 0, f);
		if (fd >= 0)
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	}
	if (geteuid() == 0) {
		sync();
		fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (write(fd, "1", 1) != 1)
				log_info("drop_caches: %s", strerror(errno));
			close(fd);
		}
	}
}

/* Acquires experts [first, first + n) of the catalog and waits for them. */
int direct_acquire_range(struct direct *d, uint32_t first, uint32_t n, struct acq *a)
{
	int r;

	for (uint32_t i = 0; i < n; i++) {
		const struct catalog_expert *x = &d->cat->experts[first + i];
		struct tierd_key k = { 0, x->layer, x->expert };

		a[i] = (struct acq){ 0 };
		r = engine_acquire(d->e, &k, ENGINE_DEMAND, direct_on_acquired, &a[i]);
		if (r < 0) {
			fprintf(stderr, "tierctl: layer %u expert %u: %s\n", x->layer, x->expert, strerror(-r));
			engine_drain(d->e);
			return r;
		}
	}
	r = engine_drain(d->e);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < n; i++)
		if (!a[i].done || a[i].err) {
			const struct catalog_expert *x = &d->cat->experts[first + i];

			fprintf(stderr, "tierctl: layer %u expert %u: fetch failed: %s\n", x->layer, x->expert,
				strerror(a[i].done ? -a[i].err : EIO));
			return a[i].done ? a[i].err : -EIO;
		}
	return 0;
}

void direct_release_range(struct direct *d, uint32_t first, uint32_t n, bool evict)
{
	for (uint32_t i = 0; i < n; i++) {
		const struct catalog_expert *x = &d->cat->experts[first + i];
		struct tierd_key k = { 0, x->layer, x->expert };

		engine_release(d->e, &k);
		if (evict)
			engine_evict(d->e, &k);
	}
}

int direct_verify_range(const struct direct *d, uint32_t first, uint32_t n, const struct acq *a)
{
	const uint8_t *base = engine_pool_base(d->e, 0);

	for (uint32_t i = 0; i < n; i++)
		if (demostore_verify_expert(a[i].info.expert, base + a[i].info.offset) < 0) {
			fprintf(stderr, "tierctl: layer %u expert %u: bytes differ from the demo-store contents\n",
				d->cat->experts[first + i].layer, d->cat->experts[first + i].expert);
			return -EBADMSG;
		}
	return 0;
}

/* ---- fetch ------------------------------------------------------------------------------- */

int cmd_fetch(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "verify", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *usage = "Usage: tierctl fetch CHECKPOINT_DIR LAYER EXPERT [--verify]\n";
	struct direct d = { 0 };
	struct engine_stats st;
	struct acq a = { 0 };
	uint64_t layer, expert;
	bool verify = false;
	int opt, rc = 1, r;
	double t0, t;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'v': verify = true; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc - 3 || tierctl_parse_u64("LAYER", argv[optind + 1], UINT32_MAX, &layer) ||
	    tierctl_parse_u64("EXPERT", argv[optind + 2], UINT32_MAX, &expert)) {
		fputs(usage, stderr);
		return 2;
	}
	if (direct_conf_prepare(&d, o) < 0 || direct_open(&d, argv[optind], 1) < 0)
		goto out;
	direct_drop_caches(&d);
	t0 = tierctl_now_s();
	r = engine_acquire(d.e, &(struct tierd_key){ 0, (uint32_t)layer, (uint32_t)expert }, ENGINE_DEMAND,
			   direct_on_acquired, &a);
	if (r == 0)
		r = engine_drain(d.e);
	if (r == 0 && a.err)
		r = a.err;
	t = tierctl_now_s() - t0;
	if (r < 0) {
		fprintf(stderr, "tierctl: layer %" PRIu64 " expert %" PRIu64 ": %s\n", layer, expert,
			r == -ENOENT ? "not in the checkpoint" : strerror(-r));
		goto out;
	}
	engine_get_stats(d.e, &st);
	printf("layer %u expert %u: %u tensors, %" PRIu64 " bytes, in slot at pool offset %" PRIu64 "\n",
	       a.info.expert->layer, a.info.expert->expert, a.info.expert->ntensors, a.info.expert->bytes,
	       a.info.offset);
	for (uint32_t i = 0; i < a.info.expert->ntensors; i++) {
		const struct catalog_tensor *ct = &a.info.expert->tensors[i];

		printf("  %-60s %-8s file %u offset %" PRIu64 " length %" PRIu64 " -> slot +%" PRIu64 "\n",
		       ct->name, tierd_dtype_name(ct->dtype), ct->file, ct->offset, ct->length, ct->slot_offset);
	}
	printf("read %" PRIu64 " bytes (4 KiB aligned) in %.3f ms = %.2f GB/s; flash read energy %.3f mJ "
	       "(%.1f pJ/bit)\n", st.bytes_read, t * 1e3, (double)st.bytes_read / t / 1e9,
	       (double)st.bytes_read * 8 * d.conf.pj_flash * 1e-9, d.conf.pj_flash);
	if (verify) {
		if (direct_verify_range(&d, (uint32_t)(a.info.expert - d.cat->experts), 1, &a) < 0)
			goto out;
		printf("every byte matches the demo-store contents\n");
	}
	engine_release(d.e, &(struct tierd_key){ 0, (uint32_t)layer, (uint32_t)expert });
	rc = 0;
out:
	direct_close(&d);
	return rc;
}

/* ---- demo -------------------------------------------------------------------------------- */

static void human(char *buf, size_t len, double bytes)
{
	if (bytes >= 1e9)
		snprintf(buf, len, "%.2f GB", bytes / 1e9);
	else if (bytes >= 1e6)
		snprintf(buf, len, "%.1f MB", bytes / 1e6);
	else
		snprintf(buf, len, "%.0f kB", bytes / 1e3);
}

static void joules(char *buf, size_t len, double j)
{
	if (j >= 1)
		snprintf(buf, len, "%.3f J", j);
	else
		snprintf(buf, len, "%.3f mJ", j * 1e3);
}

int cmd_demo(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "layers", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *usage = "Usage: tierctl demo CHECKPOINT_DIR [--layers N]\n"
			    "Fetches every expert of the first N layers (default 3) through the engine,\n"
			    "checks every byte against the demo-store contents, and prints what it cost.\n";
	struct direct d = { 0 };
	struct engine_stats st;
	struct acq *a = NULL;
	uint64_t want = 3, served = 0, fetched = 0;
	uint32_t layers = 0, first = 0;
	double total = 0;
	char b1[32], b2[32], j1[32], j2[32];
	int opt, rc = 1;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int r = 0;

		switch (opt) {
		case 'l': r = tierctl_parse_u64("--layers", optarg, UINT32_MAX, &want); break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
		if (r)
			return 2;
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (direct_conf_prepare(&d, o) < 0)
		goto out;
	/* Room for one layer: each new layer evicts the one before (LRU). */
	{
		struct catalog *cat;
		char err[1024];
		uint64_t per_layer;

		if (catalog_open(&cat, argv[optind], NULL, &d.conf, err, sizeof(err)) < 0) {
			fprintf(stderr, "tierctl: %s\n", err);
			goto out;
		}
		per_layer = cat->experts_per_layer;
		catalog_free(cat);
		if (direct_open(&d, argv[optind], per_layer) < 0)
			goto out;
	}
	a = calloc(d.cat->experts_per_layer, sizeof(*a));
	if (!a)
		goto out;
	printf("checkpoint %s: preset %s, %u layers x %u experts, %" PRIu64 " bytes per expert slot\n",
	       argv[optind], d.cat->preset, d.cat->nlayers, d.cat->experts_per_layer, d.cat->slot_bytes);
	printf("pool %" PRIu64 " MiB (room for one layer of experts or a little more), io_uring queue depth %u, requests of %" PRIu64 " KiB\n",
	       engine_pool_size(d.e, 0) >> 20, d.conf.queue_depth, d.conf.request_size >> 10);
	direct_drop_caches(&d);
	while (first < d.cat->nexperts && layers < want) {
		uint32_t n = 0, layer = d.cat->experts[first].layer;
		uint64_t bytes = 0, read0;
		double t0, t;

		while (first + n < d.cat->nexperts && d.cat->experts[first + n].layer == layer)
			n++;
		engine_get_stats(d.e, &st);
		read0 = st.bytes_read;
		t0 = tierctl_now_s();
		if (direct_acquire_range(&d, first, n, a) < 0)
			goto out;
		t = tierctl_now_s() - t0;
		total += t;
		engine_get_stats(d.e, &st);
		if (direct_verify_range(&d, first, n, a) < 0)
			goto out;
		for (uint32_t i = 0; i < n; i++)
			bytes += d.cat->experts[first + i].bytes;
		served += bytes;
		fetched += n;
		human(b1, sizeof(b1), (double)(st.bytes_read - read0));
		printf("layer %u: %u experts acquired, %s read from flash in %.1f ms (%.2f GB/s), every byte verified\n",
		       layer, n, b1, t * 1e3, (double)(st.bytes_read - read0) / t / 1e9);
		direct_release_range(&d, first, n, false);
		first += n;
		layers++;
	}
	/* The last layer again: resident, served from DDR without touching flash. */
	if (layers) {
		uint32_t n = 0, start = first;
		uint64_t read0, hits0;
		double t0, t;

		while (start > 0 && d.cat->experts[start - 1].layer == d.cat->experts[first - 1].layer) {
			start--;
			n++;
		}
		engine_get_stats(d.e, &st);
		read0 = st.bytes_read;
		hits0 = st.hits;
		t0 = tierctl_now_s();
		if (direct_acquire_range(&d, start, n, a) < 0)
			goto out;
		t = tierctl_now_s() - t0;
		if (direct_verify_range(&d, start, n, a) < 0)
			goto out;
		engine_get_stats(d.e, &st);
		for (uint32_t i = 0; i < n; i++)
			served += d.cat->experts[start + i].bytes;
		printf("layer %u again: %" PRIu64 " hits from the DDR pool, %" PRIu64 " bytes from flash, %.3f ms, "
		       "every byte verified\n",
		       d.cat->experts[start].layer, st.hits - hits0, st.bytes_read - read0, t * 1e3);
		direct_release_range(&d, start, n, false);
	}
	engine_get_stats(d.e, &st);
	human(b1, sizeof(b1), (double)st.bytes_read);
	human(b2, sizeof(b2), (double)served);
	printf("summary: %" PRIu64 " experts fetched in %u layers, %s read from flash in %.3f s = %.2f GB/s; "
	       "%" PRIu64 " hits, %" PRIu64 " evictions, %" PRIu64 " fetch errors\n", fetched, layers, b1, total,
	       total > 0 ? (double)st.bytes_read / total / 1e9 : 0.0, st.hits, st.evictions, st.fetch_errors);
	joules(j1, sizeof(j1), (double)st.bytes_read * 8 * d.conf.pj_flash * 1e-12);
	joules(j2, sizeof(j2), (double)served * 8 * d.conf.pj_ddr * 1e-12);
	printf("dynamic energy (bytes x 8 x pJ/bit, [energy] of the config): flash read %s x %.1f pJ = %s; "
	       "DDR read of the %s served to clients x %.1f pJ = %s\n",
	       b1, d.conf.pj_flash, j1, b2, d.conf.pj_ddr, j2);
	rc = 0;
out:
	free(a);
	direct_close(&d);
	return rc;
}
