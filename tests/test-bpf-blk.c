/* SPDX-License-Identifier: MIT */
/*
 * Root test of the block-layer probe: reads a file with O_DIRECT from the
 * disk the build directory lives on and checks that the eBPF-measured read
 * bytes of that disk match what the test read within 1%, that requests,
 * busy time and latency are plausible, that no counter ever decreases, and
 * that a request whose completion the programs did not see is accounted.
 *
 * Other processes may read the same disk meanwhile.  Such noise only ever
 * adds bytes, so the check is "at least what we read, and at most 1% more";
 * an attempt spoiled by noise is repeated (ten times at most).  Fewer bytes
 * than read is a failure at once: the kernel may skip the programs for a
 * completion, and the probes must then find and account it themselves.
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
/* The probes account an unseen completion once its request was issued this
 * long ago (their default is a second; shorter keeps the test quick). */
#define LOST_AFTER_MS	100
#define PAUSED_READ	(4ULL << 20)

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

/* Sectors read from the disk's /sys/block/DEV/stat: a second opinion for the
 * log (it counts every reader too, so it is printed, not compared). */
static uint64_t disk_sectors_read(const struct nvmedev_map *m)
{
	unsigned long long ios, merges, sectors = 0;
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/stat", m->disk);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu %llu", &ios, &merges, &sectors) != 3)
		sectors = 0;
	fclose(f);
	return sectors;
}

/* Lets every request of ours age past LOST_AFTER_MS, so that the next read of
 * the probes accounts any whose completion was not seen. */
static void wait_lost_after(void)
{
	struct timespec ts = { 0, 2 * LOST_AFTER_MS * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
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
		wait_lost_after();
		r = snapshot_dev(p, &f->map, &f->snaps[f->nsnaps], &f->snap_ns[f->nsnaps]);
		f->nsnaps++;
	}
	close(fd);
	return r;
}

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

/*
 * 0 when the measured bytes are within [read, read * 1.01]; -EAGAIN when
 * other readers spoiled every attempt; -EIO when bytes were lost.
 */
static int measure(struct fixture *f, struct probes *p, uint64_t size, uint64_t *measured)
{
	for (int a = 0; a < ATTEMPTS; a++) {
		uint64_t missed = probes_missed_now(p);
		uint64_t sectors = disk_sectors_read(&f->map);
		const struct probes_dev *first, *last;
		int r = read_file(f, p, size);

		if (r)
			return r;
		missed = probes_missed_now(p) - missed;
		sectors = disk_sectors_read(&f->map) - sectors;
		first = &f->snaps[0];
		last = &f->snaps[f->nsnaps - 1];
		*measured = last->read_bytes - first->read_bytes;
		printf("# attempt %d: read %llu bytes, eBPF measured %llu on %s (%u:%u): %llu requests "
		       "with their completion unseen (%llu bytes) accounted late, %llu completions "
		       "without an issue, %llu runs skipped; the disk's stat says %llu bytes read\n",
		       a + 1, (unsigned long long)f->read_bytes, (unsigned long long)*measured,
		       f->map.disk, f->map.major, f->map.minor,
		       (unsigned long long)(last->lost_reqs - first->lost_reqs),
		       (unsigned long long)(last->lost_bytes - first->lost_bytes),
		       (unsigned long long)(last->unmatched - first->unmatched),
		       (unsigned long long)missed, (unsigned long long)sectors * 512);
		if (*measured < f->read_bytes) {
			printf("# lost %llu bytes\n", (unsigned long long)(f->read_bytes - *measured));
			return -EIO;
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
	o.lost_after_ms = LOST_AFTER_MS;
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
	uint64_t reqs, busy, wall, lat, measured = 0;
	uint64_t hist = 0;

	need(f);
	/* Its own read: no test relies on what another left behind. */
	assert_int_equal(measure(f, f->p, FILE_SIZE, &measured), 0);
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
	uint64_t measured = 0;

	need(f);
	assert_int_equal(measure(f, f->p, FILE_SIZE, &measured), 0);
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
	o.lost_after_ms = LOST_AFTER_MS;
	/* Both sets attached at once is fine: they count into separate maps. */
	r = probes_create(&p, &o);
	assert_int_equal(r, 0);
	assert_string_equal(probes_block_mode(p), "raw_tp");
	r = measure(f, p, 16ULL << 20, &measured);
	probes_destroy(p);
	assert_int_equal(r, 0);
}

/*
 * What the kernel does when it skips the programs for a completion, made
 * certain: the completion program is detached while the test reads, so the
 * issues are seen and the completions are not.  The bytes must be there
 * after all, and said to be accounted late.
 */
static void test_unseen_completions_accounted(void **state)
{
	struct fixture *f = *state;
	struct probes_dev a, b;
	uint64_t ns;
	int fd;

	need(f);
	if (!probes_have_sweep(f->p)) {
		printf("# this kernel runs no sweep program: unseen completions are found only "
		       "on reissue\n");
		skip();
	}
	assert_int_equal(snapshot_dev(f->p, &f->map, &a, &ns), 0);
	assert_int_equal(probes_pause_completions(f->p, true), 0);
	fd = open(f->path, O_RDONLY | O_DIRECT);
	assert_true(fd >= 0);
	for (uint64_t off = 0; off < PAUSED_READ; off += CHUNK)
		assert_int_equal(pread(fd, f->buf, CHUNK, (off_t)off), (ssize_t)CHUNK);
	close(fd);
	assert_int_equal(probes_pause_completions(f->p, false), 0);
	wait_lost_after();
	assert_int_equal(snapshot_dev(f->p, &f->map, &b, &ns), 0);
	printf("# completions unseen for a %llu-byte read: %llu requests, %llu bytes accounted "
	       "late; %llu bytes read in all\n", (unsigned long long)PAUSED_READ,
	       (unsigned long long)(b.lost_reqs - a.lost_reqs),
	       (unsigned long long)(b.lost_bytes - a.lost_bytes),
	       (unsigned long long)(b.read_bytes - a.read_bytes));
	/* At least one request per read; other readers only add. */
	assert_true(b.lost_reqs - a.lost_reqs >= PAUSED_READ / CHUNK);
	assert_true(b.lost_bytes - a.lost_bytes >= PAUSED_READ);
	assert_true(b.read_bytes - a.read_bytes >= PAUSED_READ);
	assert_true(b.read_reqs - a.read_reqs >= PAUSED_READ / CHUNK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_bytes_within_1pct),
		cmocka_unit_test(test_requests_and_busy_plausible),
		cmocka_unit_test(test_counters_monotonic),
		cmocka_unit_test(test_raw_tp_fallback),
		cmocka_unit_test(test_unseen_completions_accounted),
	};

	log_init("test-bpf-blk", LOG_WARNING);
	return cmocka_run_group_tests(tests, setup, teardown);
}
