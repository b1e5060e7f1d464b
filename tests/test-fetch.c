/* SPDX-License-Identifier: MIT */
/*
 * Fetch engine against real files with O_DIRECT on the local disk ($TMPDIR or
 * /var/tmp): registered and plain buffers, aligned supersets of unaligned
 * ranges, splitting, the short read at the end of a file, demand before
 * prefetch, cancellation, destroying with jobs left, a failing read, and
 * io_uring_submit refusing (a hook stands in for the kernel's refusals).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "fetch.h"
#include "log.h"

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define FILE_SIZE (3 * MiB + 1234)

static char path[4096];

static uint8_t byte_at(uint64_t off)
{
	return (uint8_t)((off * 2654435761u) >> 11 ^ off >> 12);
}

static int setup(void **state)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	uint8_t *buf = malloc(FILE_SIZE);
	int fd;

	snprintf(path, sizeof(path), "%s/test-fetch.XXXXXX", dir);
	fd = mkstemp(path);
	if (fd < 0 || !buf)
		return -1;
	for (uint64_t i = 0; i < FILE_SIZE; i++)
		buf[i] = byte_at(i);
	if (write(fd, buf, FILE_SIZE) != (ssize_t)FILE_SIZE)
		return -1;
	close(fd);
	free(buf);
	return 0;
}

static int teardown(void **state)
{
	unlink(path);
	return 0;
}

struct done {
	int calls;
	int err;
	uint64_t bytes;
	int order;
	int *counter;
};

static void on_done(void *arg, int err, uint64_t bytes)
{
	struct done *d = arg;

	d->calls++;
	d->err = err;
	d->bytes = bytes;
	if (d->counter)
		d->order = ++*d->counter;
}

static struct fetch *make(unsigned depth, uint64_t req, int *file)
{
	struct fetch_opts o = { .queue_depth = depth, .request_size = req };
	struct fetch *f = NULL;
	char err[512] = "";
	int e = fetch_create(&f, &o, err, sizeof(err));

	if (e < 0)
		fail_msg("fetch_create: %s", err);
	*file = fetch_file_open(f, path, err, sizeof(err));
	if (*file < 0)
		fail_msg("fetch_file_open: %s", err);
	assert_int_equal(fetch_file_size(f, (unsigned)*file), FILE_SIZE);
	return f;
}

static void drain(struct fetch *f)
{
	while (fetch_pending(f))
		assert_true(fetch_wait(f) >= 0);
}

static void check_range(const uint8_t *dst, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		if (dst[i] != byte_at(off + i))
			fail_msg("byte %llu: %#x, want %#x", (unsigned long long)(off + i), dst[i], byte_at(off + i));
}

/* Whole file into registered memory, split in requests, tail short at EOF. */
static void test_whole_file_fixed(void **state)
{
	uint64_t len = (FILE_SIZE + FETCH_ALIGN - 1) & ~(FETCH_ALIGN - 1);
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 4 * MiB);
	struct iovec iov[2] = { { mem, 2 * MiB }, { mem + 2 * MiB, 2 * MiB } };
	struct fetch_stats st;
	struct done d = { 0 };
	struct fetch_job *j;
	struct fetch *f;
	int file;

	f = make(4, 256 * KiB, &file);
	/* Two buffers: requests must not cross from one into the next. */
	assert_int_equal(fetch_register_buffers(f, iov, 2), 0);
	memset(mem, 0xee, 4 * MiB);
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &d, &j), 0);
	/* An odd first piece so a request straddles the buffer boundary. */
	assert_int_equal(fetch_job_add(j, (unsigned)file, 0, 12 * KiB, mem), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 12 * KiB, len - 12 * KiB, mem + 12 * KiB), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	assert_int_equal(d.bytes, FILE_SIZE);
	check_range(mem, 0, FILE_SIZE);
	fetch_get_stats(f, &st);
	/* 12K + 2 MiB-12K in 256K pieces cut at 2 MiB + the rest. */
	assert_true(st.requests >= 1 + (2 * MiB - 12 * KiB) / (256 * KiB) + (len - 2 * MiB) / (256 * KiB));
	assert_int_equal(st.bytes_read, FILE_SIZE);
	assert_int_equal(st.jobs_done, 1);
	/* Into registered memory: every read is READ_FIXED. */
	assert_int_equal(st.requests_fixed, st.requests);
	fetch_destroy(f);
	free(mem);
}

/* An unaligned range read as its aligned superset into unregistered memory. */
static void test_unaligned_superset(void **state)
{
	uint64_t off = 5000, length = 777777;
	uint64_t a = off & ~(FETCH_ALIGN - 1);
	uint64_t b = (off + length + FETCH_ALIGN - 1) & ~(FETCH_ALIGN - 1);
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 1 * MiB);
	struct done d = { 0 };
	struct fetch_job *j;
	struct fetch *f;
	int file;

	f = make(8, 64 * KiB, &file);
	assert_int_equal(fetch_job_create(f, FETCH_PREFETCH, on_done, &d, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, off, length, mem), -EINVAL);
	assert_int_equal(fetch_job_add(j, (unsigned)file, a, b - a, mem + 1), -EINVAL);
	assert_int_equal(fetch_job_add(j, 99, a, b - a, mem), -EINVAL);
	assert_int_equal(fetch_job_add(j, (unsigned)file, a, b - a, mem), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	assert_int_equal(d.bytes, b - a);
	check_range(mem + (off - a), off, length);
	{
		struct fetch_stats st;

		fetch_get_stats(f, &st);
		assert_int_equal(st.requests_fixed, 0);	/* plain memory: plain reads */
		assert_true(st.requests >= (b - a) / (64 * KiB));
	}
	fetch_destroy(f);
	free(mem);
}

/* The last tensor's aligned end is past EOF: the short read is accepted. */
static void test_short_at_eof(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 64 * KiB);
	uint64_t a = (FILE_SIZE - 5000) & ~(FETCH_ALIGN - 1);
	struct fetch_stats st;
	struct done d = { 0 };
	struct fetch_job *j;
	struct fetch *f;
	int file;

	f = make(2, 1 * MiB, &file);
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &d, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, a, 64 * KiB, mem), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	drain(f);
	assert_int_equal(d.err, 0);
	assert_int_equal(d.bytes, FILE_SIZE - a);
	check_range(mem, a, FILE_SIZE - a);
	fetch_get_stats(f, &st);
	assert_int_equal(st.short_reads, 0);
	fetch_destroy(f);
	free(mem);
}

/* Queue depth 1: a demand job queued after two prefetches goes first. */
static void test_demand_first_and_cancel(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 5 * 256 * KiB);
	struct done d[5];
	struct fetch_job *j[5];
	struct fetch_stats st;
	struct fetch *f;
	int file, counter = 0;
	enum fetch_prio prio[5] = { FETCH_PREFETCH, FETCH_PREFETCH, FETCH_PREFETCH, FETCH_DEMAND, FETCH_DEMAND };

	memset(d, 0, sizeof(d));
	f = make(1, 256 * KiB, &file);
	for (int i = 0; i < 5; i++) {
		d[i].counter = &counter;
		assert_int_equal(fetch_job_create(f, prio[i], on_done, &d[i], &j[i]), 0);
		assert_int_equal(fetch_job_add(j[i], (unsigned)file, (uint64_t)i * 256 * KiB, 256 * KiB,
					       mem + i * 256 * KiB), 0);
	}
	/* j0 goes in flight at once; j1, j2 wait; j3 (demand) arrives later. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(fetch_job_submit(j[i]), 0);
	assert_true(fetch_job_started(j[0]));
	assert_false(fetch_job_started(j[1]));
	assert_int_equal(fetch_job_cancel(j[0]), -EBUSY);
	/* A prefetch that someone now waits for moves up too. */
	fetch_job_promote(j[2]);
	assert_int_equal(fetch_job_cancel(j[1]), 0);	/* no longer wanted */
	assert_int_equal(fetch_pending(f), 3);
	drain(f);
	assert_int_equal(d[0].order, 1);
	/* j3 was queued as demand before j2 was promoted behind it. */
	assert_int_equal(d[3].order, 2);
	assert_int_equal(d[2].order, 3);
	assert_int_equal(d[1].calls, 0);
	for (int i = 0; i < 4; i++)
		if (i != 1)
			check_range(mem + i * 256 * KiB, (uint64_t)i * 256 * KiB, 256 * KiB);
	fetch_get_stats(f, &st);
	assert_int_equal(st.jobs_cancelled, 1);
	assert_int_equal(st.jobs_done, 3);
	/* A job never submitted is not the engine's to cancel: it is just freed. */
	assert_int_equal(fetch_job_cancel(j[4]), -EINVAL);
	assert_int_equal(fetch_pending(f), 0);
	fetch_job_free(j[4]);
	fetch_destroy(f);
	free(mem);
}

/*
 * Destroyed with work left: a job in flight and out of the queues, one in
 * flight and still queued, one waiting in the other queue.  Each is freed
 * once (ASan) and none is called back.
 */
static void test_destroy_with_jobs(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 4 * 256 * KiB);
	struct done d[3];
	struct fetch_job *j[3];
	struct fetch *f;
	int file;
	enum fetch_prio prio[3] = { FETCH_DEMAND, FETCH_DEMAND, FETCH_PREFETCH };
	uint64_t len[3] = { 256 * KiB, 2 * 256 * KiB, 256 * KiB }, off = 0;

	memset(d, 0, sizeof(d));
	assert_non_null(mem);
	f = make(2, 256 * KiB, &file);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(fetch_job_create(f, prio[i], on_done, &d[i], &j[i]), 0);
		assert_int_equal(fetch_job_add(j[i], (unsigned)file, off, len[i], mem + off), 0);
		assert_int_equal(fetch_job_submit(j[i]), 0);
		off += len[i];
	}
	assert_true(fetch_job_started(j[0]));
	assert_true(fetch_job_started(j[1]));
	assert_false(fetch_job_started(j[2]));
	assert_int_equal(fetch_pending(f), 3);
	fetch_destroy(f);
	for (int i = 0; i < 3; i++)
		assert_int_equal(d[i].calls, 0);
	free(mem);
}

/* A read that fails (bad destination): the job fails with that errno. */
static void test_read_error(void **state)
{
	uint8_t *bad = mmap(NULL, 1 * MiB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *good = aligned_alloc(FETCH_ALIGN, 1 * MiB);
	struct fetch_stats st;
	struct done d = { 0 }, ok = { 0 };
	struct fetch_job *j;
	struct fetch *f;
	int file;

	assert_ptr_not_equal(bad, MAP_FAILED);
	f = make(4, 128 * KiB, &file);
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &d, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 0, 512 * KiB, good), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 512 * KiB, 512 * KiB, bad), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	/* Another job beside it is not affected. */
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &ok, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 0, 512 * KiB, good + 512 * KiB), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	drain(f);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, -EFAULT);
	assert_int_equal(ok.calls, 1);
	assert_int_equal(ok.err, 0);
	check_range(good + 512 * KiB, 0, 512 * KiB);
	fetch_get_stats(f, &st);
	assert_true(st.errors >= 1);
	assert_int_equal(st.jobs_failed, 1);
	fetch_destroy(f);
	munmap(bad, 1 * MiB);
	free(good);
}

/* Stands in for io_uring_submit: refuses 'fail' times (-1: always) with err. */
struct hook {
	int err;
	int fail;
	int refused;
};

static int submit_hook(struct io_uring *ring, void *arg)
{
	struct hook *h = arg;

	if (h->fail) {
		if (h->fail > 0)
			h->fail--;
		h->refused++;
		return h->err;
	}
	return io_uring_submit(ring);
}

/* Whether the event loop would be woken now (no waiting). */
static bool efd_readable(struct fetch *f)
{
	struct pollfd p = { .fd = fetch_fd(f), .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static struct fetch_job *job(struct fetch *f, int file, struct done *d, uint64_t off, uint64_t len, uint8_t *dst)
{
	struct fetch_job *j;

	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, d, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, off, len, dst), 0);
	return j;
}

/*
 * -EBUSY while reads are in the kernel: the refused reads stay queued and go
 * with the next submission, after a completion; both jobs read everything.
 */
static void test_submit_busy_retried(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 2 * MiB);
	struct hook hk = { .err = -EBUSY };
	struct done a = { 0 }, b = { 0 };
	struct fetch_stats st;
	struct fetch *f;
	int file;

	assert_non_null(mem);
	f = make(8, 256 * KiB, &file);
	fetch_set_submit_hook(f, submit_hook, &hk);
	assert_int_equal(fetch_job_submit(job(f, file, &a, 0, 1 * MiB, mem)), 0);
	/* a's four reads are in the kernel (unreaped) when b's are refused. */
	hk.fail = 1;
	assert_int_equal(fetch_job_submit(job(f, file, &b, 1 * MiB, 1 * MiB, mem + 1 * MiB)), 0);
	assert_int_equal(hk.refused, 1);
	assert_int_equal(b.calls, 0);
	assert_int_equal(fetch_pending(f), 2);
	drain(f);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.err, 0);
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.err, 0);
	assert_int_equal(b.bytes, 1 * MiB);
	check_range(mem, 0, 2 * MiB);
	fetch_get_stats(f, &st);
	assert_int_equal(st.submit_errors, 1);
	assert_int_equal(st.jobs_done, 2);
	assert_int_equal(st.jobs_failed, 0);
	fetch_destroy(f);
	free(mem);
}

/*
 * -EAGAIN with nothing in the kernel: no completion would ever retry, so the
 * job fails with -EAGAIN, its callback from fetch_process (woken through the
 * eventfd), not from inside fetch_job_submit.  The reads it had queued never
 * run; once the kernel takes submissions again, a new job reads as usual.
 */
static void test_submit_refused_nothing_in_flight(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 1 * MiB);
	struct hook hk = { .err = -EAGAIN, .fail = -1 };
	struct done a = { 0 }, c = { 0 };
	struct fetch_stats st;
	struct fetch *f;
	int file;

	assert_non_null(mem);
	f = make(4, 256 * KiB, &file);
	fetch_set_submit_hook(f, submit_hook, &hk);
	memset(mem, 0xee, 1 * MiB);
	assert_int_equal(fetch_job_submit(job(f, file, &a, 0, 512 * KiB, mem)), 0);
	assert_true(hk.refused >= 1);
	assert_int_equal(a.calls, 0);
	assert_true(efd_readable(f));
	assert_int_equal(fetch_pending(f), 1);
	drain(f);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.err, -EAGAIN);
	assert_int_equal(a.bytes, 0);
	assert_int_equal(fetch_pending(f), 0);
	assert_int_equal(fetch_wait(f), 0);

	hk.fail = 0;
	assert_int_equal(fetch_job_submit(job(f, file, &c, 512 * KiB, 512 * KiB, mem + 512 * KiB)), 0);
	drain(f);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.err, 0);
	check_range(mem + 512 * KiB, 512 * KiB, 512 * KiB);
	/* Nothing wrote where the refused job's reads pointed. */
	for (uint64_t i = 0; i < 512 * KiB; i++)
		if (mem[i] != 0xee)
			fail_msg("byte %llu written by a withdrawn read", (unsigned long long)i);
	fetch_get_stats(f, &st);
	assert_int_equal(st.jobs_failed, 1);
	assert_int_equal(st.jobs_done, 1);
	assert_true(st.submit_errors >= 1);
	fetch_destroy(f);
	free(mem);
}

/*
 * Any other refusal fails what is not in the kernel with its errno: the
 * refused reads' job, and a job still queued behind it.  Then the ring is
 * used again.
 */
static void test_submit_error_fails_queued(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 2 * MiB);
	struct hook hk = { .err = -ENXIO };
	struct done a = { 0 }, b = { 0 }, c = { 0 };
	struct fetch_job *jb;
	struct fetch *f;
	int file;

	assert_non_null(mem);
	f = make(2, 256 * KiB, &file);
	fetch_set_submit_hook(f, submit_hook, &hk);
	/* a: four reads, two at a time; b waits behind it. */
	assert_int_equal(fetch_job_submit(job(f, file, &a, 0, 1 * MiB, mem)), 0);
	jb = job(f, file, &b, 1 * MiB, 256 * KiB, mem + 1 * MiB);
	assert_int_equal(fetch_job_submit(jb), 0);
	assert_false(fetch_job_started(jb));
	/* a's next reads are refused when its first ones come back. */
	hk.fail = -1;
	drain(f);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.err, -ENXIO);
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.err, -ENXIO);
	assert_true(hk.refused >= 1);

	hk.fail = 0;
	assert_int_equal(fetch_job_submit(job(f, file, &c, 0, 1 * MiB, mem)), 0);
	drain(f);
	assert_int_equal(c.err, 0);
	check_range(mem, 0, 1 * MiB);
	fetch_destroy(f);
	free(mem);
}

/* Destroyed while refused reads wait in the submission queue: it waits only
 * for the reads in the kernel. */
static void test_destroy_with_unsubmitted(void **state)
{
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 2 * MiB);
	struct hook hk = { .err = -EBUSY };
	struct done a = { 0 }, b = { 0 };
	struct fetch *f;
	int file;

	assert_non_null(mem);
	f = make(8, 256 * KiB, &file);
	fetch_set_submit_hook(f, submit_hook, &hk);
	assert_int_equal(fetch_job_submit(job(f, file, &a, 0, 1 * MiB, mem)), 0);
	hk.fail = -1;
	assert_int_equal(fetch_job_submit(job(f, file, &b, 1 * MiB, 1 * MiB, mem + 1 * MiB)), 0);
	assert_int_equal(hk.refused, 1);
	fetch_destroy(f);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);
	free(mem);
}

static void test_bad_open(void **state)
{
	struct fetch_opts o = { .queue_depth = 4, .request_size = 4096 };
	struct fetch *f;
	char err[512] = "";

	o.request_size = 1000;
	assert_int_equal(fetch_create(&f, &o, err, sizeof(err)), -EINVAL);
	o.request_size = 4096;
	assert_int_equal(fetch_create(&f, &o, err, sizeof(err)), 0);
	assert_int_equal(fetch_file_open(f, "/nonexistent/x.safetensors", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/x.safetensors"));
	assert_int_equal(fetch_file_open(f, "/", err, sizeof(err)) < 0, 1);
	fetch_destroy(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_file_fixed),
		cmocka_unit_test(test_unaligned_superset),
		cmocka_unit_test(test_short_at_eof),
		cmocka_unit_test(test_demand_first_and_cancel),
		cmocka_unit_test(test_destroy_with_jobs),
		cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_submit_busy_retried),
		cmocka_unit_test(test_submit_refused_nothing_in_flight),
		cmocka_unit_test(test_submit_error_fails_queued),
		cmocka_unit_test(test_destroy_with_unsubmitted),
		cmocka_unit_test(test_bad_open),
	};

	log_init("test-fetch", LOG_CRIT);
	return cmocka_run_group_tests(tests, setup, teardown);
}
