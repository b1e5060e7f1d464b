/* SPDX-License-Identifier: MIT */
/*
 * Root test of the block-layer probe: reads a file with O_DIRECT from the
 * disk the build directory lives on and checks that the eBPF-measured read
 * bytes of that disk match what the test read within 1%, that requests,
 * busy time and latency are plausible, and that no counter ever decreases.
 *
 * Other processes may read the same disk meanwhile.  Such noise only ever
 * adds bytes, so the check is "at least what we read, and at most 1% more";
 * an attempt spoiled by noise is repeated (ten times at most).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "nvme.h"
#include "probes.h"

#define FILE_SIZE	(64ULL << 20)
#define CHUNK		(1ULL << 20)
#define SNAP_EVERY	(8ULL << 20)
#define ATTEMPTS	10
#define MAX_SNAPS	(FILE_SIZE / SNAP_EVERY + 2)

struct fixture {
	struct nvmedev_map map;
	char path[256];
	int skip;			/* 0, or why not: -EPERM, -ENODEV */
	struct probes *p;
	void *buf;
	/* The accepted attempt's snapshots, first to last. */
	struct probes_dev snaps[MAX_SNAPS];
	uint64_t snap_ns[MAX_SNAPS];
	size_t nsnaps;
	uint64_t read_bytes;
};

static int snapshot_dev(struct probes *p, const struct nvmedev_map *m, struct probes_dev *out,
			uint64_t *ns)
{
	struct probes_snapshot s;
	const struct probes_dev *d;
	int r = probes_read(p, &s);

	if (r)
		return r;
	d = probes_snapshot_dev(&s, m->major, m->minor);
	if (d)
		*out = *d;
	else
		memset(out, 0, sizeof(*out));
	*ns = s.mono_ns;
	probes_snapshot_free(&s);
	return 0;
}

static int make_file(struct fixture *f)
{
	int fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
	int r = 0;

	if (fd < 0)
		return -errno;
	for (uint64_t off = 0; off < FILE_SIZE; off += CHUNK) {
		memset(f->buf, (int)(off / CHUNK) + 1, CHUNK);
		if (pwrite(fd, f->buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
			r = errno ? -errno : -EIO;
			break;
		}
	}
	if (!r && fsync(fd))
		r = -errno;
	close(fd);
	return r;
}

/* Reads the whole file with O_DIRECT, snapshotting along the way. */
static int read_file(struct fixture *f, struct probes *p, uint64_t size)
{
	int fd = open(f->path, O_RDONLY | O_DIRECT);
	int r = 0;

	if (fd < 0)
		return -errno;
	f->nsnaps = 0;
	f->read_bytes = 0;
	r = snapshot_dev(p, &f->map, &f->snaps[f->nsnaps], &f->snap_ns[f->nsnaps]);
	f->nsnaps++;
	for (uint64_t off = 0; !r && off < size; off += CHUNK) {
		ssize_t n = pread(fd, f->buf, CHUNK, (off_t)off);

		if (n != (ssize_t)CHUNK) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		f->read_bytes += (uint64_t)n;
		if ((off + CHUNK) % SNAP_EVERY == 0 && f->nsnaps < MAX_SNAPS - 1) {
			r = snapshot_dev(p, &f->map, &f->snaps[f->nsnaps], &f->snap_ns[f->nsnaps]);
			f->nsnaps++;
		}
	}
	if (!r) {
		r = snapshot_dev(p, &f->map, &f->snaps[f->nsnaps], &f->snap_ns[f->nsnaps]);
		f->nsnaps++;
	}
	close(fd);
	return r;
}

/* 0 when the measured bytes are within [read, read * 1.01]. */
/* Runs of the block programs the kernel skipped so far. */
static uint64_t probes_missed_now(struct probes *p)
{
	struct probes_snapshot s;
	uint64_t m = 0;

	if (!probes_read(p, &s)) {
		m = s.missed;
		probes_snapshot_free(&s);
	}
	return m;
}

static int measure(struct fixture *f, struct probes *p, uint64_t size, uint64_t *measured)
{
	for (int a = 0; a < ATTEMPTS; a++) {
		uint64_t missed = probes_missed_now(p);
		int r = read_file(f, p, size);

		if (r)
			return r;
		missed = probes_missed_now(p) - missed;
		*measured = f->snaps[f->nsnaps - 1].read_bytes - f->snaps[0].read_bytes;
		printf("# attempt %d: read %llu bytes, eBPF measured %llu on %s (%u:%u), %llu runs skipped\n",
		       a + 1, (unsigned long long)f->read_bytes, (unsigned long long)*measured,
		       f->map.disk, f->map.major, f->map.minor, (unsigned long long)missed);
		if (*measured < f->read_bytes) {
			/*
			 * With skipped runs: a completion interrupted a completion
			 * on one CPU and the kernel ran the program once.  Without
			 * them: rare (one 1 MiB completion in some runs on a busy
			 * 2-vCPU VM) and not understood yet; it is printed so that
			 * it is seen, and it fails the test when every attempt
			 * loses bytes.
			 */
			printf("# lost %llu bytes (%s): trying again\n",
			       (unsigned long long)(f->read_bytes - *measured),
			       missed ? "the kernel skipped nested runs of the probes" :
					"no skipped runs: unexplained");
			sleep(1);
			continue;
		}
		if ((*measured - f->read_bytes) * 100 <= f->read_bytes)
			return 0;
		printf("# other I/O on the disk during the read: trying again\n");
		sleep(1);
	}
	return -EAGAIN;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct probes_opts o;
	const char *dir = getenv("TIERD_TEST_DIR");
	int r;

	if (!f)
		return -1;
	*state = f;
	if (posix_memalign(&f->buf, 4096, CHUNK))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/test-bpf-blk.%d.dat", dir ? dir : ".", (int)getpid());
	r = nvmedev_map_path(dir ? dir : ".", &f->map);
	if (r) {
		printf("# %s is not on a block device (%s)\n", dir ? dir : ".", strerror(-r));
		f->skip = r;
		return 0;
	}
	r = make_file(f);
	if (r) {
		printf("# cannot write %s: %s\n", f->path, strerror(-r));
		f->skip = r;
		return 0;
	}
	probes_opts_init(&o);
	o.major = f->map.major;
	o.minor = f->map.minor;
	o.nvme = false;
	r = probes_create(&f->p, &o);
	if (r) {
		printf("# probes not loaded: %s\n", strerror(-r));
		f->skip = r;
	}
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	probes_destroy(f->p);
	unlink(f->path);
	free(f->buf);
	free(f);
	return 0;
}

static void need(struct fixture *f)
{
	/* Only a missing privilege is a reason to skip; CI runs as root. */
	if (f->skip == -EPERM && geteuid() != 0)
		skip();
	assert_int_equal(f->skip, 0);
}

static void test_read_bytes_within_1pct(void **state)
{
	struct fixture *f = *state;
	uint64_t measured = 0;

	need(f);
	printf("# block programs: %s\n", probes_block_mode(f->p));
	assert_int_equal(measure(f, f->p, FILE_SIZE, &measured), 0);
	assert_true(measured >= FILE_SIZE);
	assert_true(measured - FILE_SIZE <= FILE_SIZE / 100);
}

static void test_requests_and_busy_plausible(void **state)
{
	struct fixture *f = *state;
	const struct probes_dev *a, *b;
	uint64_t reqs, busy, wall, lat;
	uint64_t hist = 0;

	need(f);
	assert_true(f->nsnaps >= 2);
	a = &f->snaps[0];
	b = &f->snaps[f->nsnaps - 1];
	reqs = b->read_reqs - a->read_reqs;
	busy = b->busy_ns - a->busy_ns;
	wall = f->snap_ns[f->nsnaps - 1] - f->snap_ns[0];
	lat = b->lat_count - a->lat_count;
	for (unsigned i = 0; i < BLKSTAT_SLOTS; i++)
		hist += b->lat_hist[i] - a->lat_hist[i];
	printf("# %llu read requests, busy %.3f ms of %.3f ms, %llu latencies, mean %.1f us\n",
	       (unsigned long long)reqs, busy / 1e6, wall / 1e6, (unsigned long long)lat,
	       lat ? (double)(b->lat_sum_ns - a->lat_sum_ns) / (double)lat / 1e3 : 0.0);
	/* 1 MiB reads: at least one request each (the device may split them),
	 * at most one per 4 KiB block, plus what others did meanwhile. */
	assert_true(reqs >= FILE_SIZE / CHUNK);
	assert_true(reqs <= FILE_SIZE / 4096 + (b->other_reqs - a->other_reqs) + 1024);
	assert_true(busy > 0);
	assert_true(busy <= wall);
	assert_true(lat > 0);
	assert_int_equal(hist, lat);
	assert_true(b->issued - a->issued >= reqs / 2);
}

static void test_counters_monotonic(void **state)
{
	struct fixture *f = *state;

	need(f);
	assert_true(f->nsnaps >= 3);
	for (size_t i = 1; i < f->nsnaps; i++) {
		const struct probes_dev *a = &f->snaps[i - 1], *b = &f->snaps[i];

		assert_true(b->read_bytes >= a->read_bytes);
		assert_true(b->write_bytes >= a->write_bytes);
		assert_true(b->other_bytes >= a->other_bytes);
		assert_true(b->read_reqs >= a->read_reqs);
		assert_true(b->write_reqs >= a->write_reqs);
		assert_true(b->issued >= a->issued);
		assert_true(b->busy_ns >= a->busy_ns);
		assert_true(b->busy_periods >= a->busy_periods);
		assert_true(b->lat_count >= a->lat_count);
		for (unsigned s = 0; s < BLKSTAT_SLOTS; s++) {
			assert_true(b->lat_hist[s] >= a->lat_hist[s]);
			assert_true(b->gap_hist[s] >= a->gap_hist[s]);
			assert_true(b->gap_sum_ns[s] >= a->gap_sum_ns[s]);
		}
	}
	/* The read kept the disk busy with gaps between requests: some gap
	 * was measured somewhere along the way. */
	{
		uint64_t gaps = 0;

		for (unsigned s = 0; s < BLKSTAT_SLOTS; s++)
			gaps += f->snaps[f->nsnaps - 1].gap_hist[s];
		assert_true(gaps > 0);
	}
}

static void test_raw_tp_fallback(void **state)
{
	struct fixture *f = *state;
	struct probes_opts o;
	struct probes *p = NULL;
	uint64_t measured = 0;
	int r;

	need(f);
	probes_opts_init(&o);
	o.major = f->map.major;
	o.minor = f->map.minor;
	o.nvme = false;
	o.force_raw_tp = true;
	/* Both sets attached at once is fine: they count into separate maps. */
	r = probes_create(&p, &o);
	assert_int_equal(r, 0);
	assert_string_equal(probes_block_mode(p), "raw_tp");
	r = measure(f, p, 16ULL << 20, &measured);
	probes_destroy(p);
	assert_int_equal(r, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_bytes_within_1pct),
		cmocka_unit_test(test_requests_and_busy_plausible),
		cmocka_unit_test(test_counters_monotonic),
		cmocka_unit_test(test_raw_tp_fallback),
	};

	log_init("test-bpf-blk", LOG_WARNING);
	return cmocka_run_group_tests(tests, setup, teardown);
}
