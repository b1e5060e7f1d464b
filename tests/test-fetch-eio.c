/* SPDX-License-Identifier: MIT */
/*
 * I/O errors and short reads from a real file system: tests/fuse-eio serves a
 * file that fails reads at chosen offsets with EIO and cuts others short.
 * The fetch engine must resubmit short reads, fail a job with EIO, and the
 * engine must count the error, free the slot and never mark the expert
 * resident.  Needs /dev/fuse (and root or fusermount3 to mount).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine.h"
#include "fetch.h"
#include "fuse-eio.h"
#include "log.h"

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define SIZE (4 * MiB + 999)
#define FAIL_AT (2 * MiB + 12345)	/* inside expert 2 below */
#define SHORT_AT (1 * MiB)		/* a request starts here (1 MiB requests) */

static char mnt[4096], data[4200], prog[4096];
static pid_t fs_pid = -1;

static int mount_fs(void **state)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	char num[3][32];
	struct stat sb;

	snprintf(mnt, sizeof(mnt), "%s/fuse-eio.XXXXXX", tmp);
	if (!mkdtemp(mnt))
		return -1;
	snprintf(data, sizeof(data), "%s/data", mnt);
	snprintf(num[0], sizeof(num[0]), "%llu", (unsigned long long)SIZE);
	snprintf(num[1], sizeof(num[1]), "%llu", (unsigned long long)FAIL_AT);
	snprintf(num[2], sizeof(num[2]), "%llu", (unsigned long long)SHORT_AT);
	fs_pid = fork();
	if (fs_pid < 0)
		return -1;
	if (fs_pid == 0) {
		setenv("FUSE_EIO_SIZE", num[0], 1);
		setenv("FUSE_EIO_FAIL", num[1], 1);
		setenv("FUSE_EIO_SHORT", num[2], 1);
		execl(prog, prog, mnt, (char *)NULL);
		_exit(127);
	}
	/* Ready when the file shows up with its size (not a timing check). */
	for (int i = 0; i < 200; i++) {
		int status;

		if (stat(data, &sb) == 0 && sb.st_size == (off_t)SIZE)
			return 0;
		if (waitpid(fs_pid, &status, WNOHANG) == fs_pid) {
			fprintf(stderr, "# fuse-eio exited (status %d) before mounting\n", status);
			fs_pid = -1;
			return -1;
		}
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	}
	return -1;
}

static int unmount_fs(void **state)
{
	pid_t pid;
	int status;

	if (fs_pid > 0) {
		/* The ring drops its file references asynchronously after exit:
		 * the mount can be busy for a moment. */
		for (int i = 0; i < 50; i++) {
			pid = fork();
			if (pid == 0) {
				execlp("fusermount3", "fusermount3", "-u", "-q", mnt, (char *)NULL);
				_exit(127);
			}
			if (pid < 0 || waitpid(pid, &status, 0) != pid)
				break;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				break;
			nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
		}
		/* fuse-eio exits once unmounted; SIGTERM makes it unmount itself. */
		if (waitpid(fs_pid, &status, WNOHANG) == 0) {
			kill(fs_pid, SIGTERM);
			waitpid(fs_pid, &status, 0);
		}
	}
	rmdir(mnt);
	return 0;
}

struct done {
	int calls, err;
	uint64_t bytes;
};

static void on_done(void *arg, int err, uint64_t bytes)
{
	struct done *d = arg;

	d->calls++;
	d->err = err;
	d->bytes = bytes;
}

static void check(const uint8_t *p, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != fuse_eio_byte(off + i))
			fail_msg("byte %llu differs", (unsigned long long)(off + i));
}

static void test_short_and_eio(void **state)
{
	struct fetch_opts o = { .queue_depth = 4, .request_size = 1 * MiB };
	uint8_t *mem = aligned_alloc(FETCH_ALIGN, 5 * MiB);
	struct done ok = { 0 }, bad = { 0 };
	struct fetch_stats st;
	struct fetch_job *j;
	struct fetch *f;
	char err[512] = "";
	int file;

	assert_int_equal(fetch_create(&f, &o, err, sizeof(err)), 0);
	file = fetch_file_open(f, data, err, sizeof(err));
	if (file < 0)
		fail_msg("%s", err);
	/* [0, 2 MiB): the request at 1 MiB comes back short and is resubmitted. */
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &ok, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 0, 2 * MiB, mem), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	/* [2 MiB, EOF): covers the failing offset. */
	assert_int_equal(fetch_job_create(f, FETCH_DEMAND, on_done, &bad, &j), 0);
	assert_int_equal(fetch_job_add(j, (unsigned)file, 2 * MiB, 3 * MiB, mem + 2 * MiB), 0);
	assert_int_equal(fetch_job_submit(j), 0);
	while (fetch_pending(f))
		assert_true(fetch_wait(f) >= 0);
	assert_int_equal(ok.calls, 1);
	assert_int_equal(ok.err, 0);
	assert_int_equal(ok.bytes, 2 * MiB);
	check(mem, 0, 2 * MiB);
	assert_int_equal(bad.calls, 1);
	assert_int_equal(bad.err, -EIO);
	fetch_get_stats(f, &st);
	assert_true(st.short_reads >= 1);
	assert_true(st.errors >= 1);
	assert_int_equal(st.jobs_failed, 1);
	assert_int_equal(st.jobs_done, 1);
	fetch_destroy(f);
	free(mem);
}

struct got {
	int calls, err;
	struct engine_slot_info info;
};

static void on_acquired(void *arg, int err, const struct engine_slot_info *info)
{
	struct got *g = arg;

	g->calls++;
	g->err = err;
	if (info)
		g->info = *info;
}

/* Four 1 MiB experts over the FUSE file; expert 2 holds the failing offset.
 * The pool has two slots: a slot leaked by a failed fetch would show. */
static void test_engine_eio(void **state)
{
	struct catalog_file cf = { .path = data, .size = SIZE };
	struct catalog_tensor t[4];
	struct catalog_expert x[4];
	struct catalog cat = { .dir = mnt, .preset = (char *)"hand", .nfiles = 1, .files = &cf,
			       .nexperts = 4, .experts = x, .nlayers = 1, .experts_per_layer = 4 };
	struct tierd_conf conf;
	struct engine *e;
	struct engine_stats st;
	char err[512] = "";

	for (int i = 0; i < 4; i++) {
		uint64_t off = 100 + (uint64_t)i * (SIZE - 100) / 4;
		uint64_t end = 100 + (uint64_t)(i + 1) * (SIZE - 100) / 4;

		t[i] = (struct catalog_tensor){ .name = (char *)"w", .dtype = TIERD_DTYPE_U8, .ndim = 1,
						.shape = { end - off }, .file = 0, .offset = off,
						.length = end - off };
		x[i] = (struct catalog_expert){ .layer = 0, .expert = (uint32_t)i, .ntensors = 1,
						.tensors = &t[i], .bytes = end - off };
	}
	assert_true(t[2].offset <= FAIL_AT && FAIL_AT < t[2].offset + t[2].length);
	assert_int_equal(catalog_layout_slots(&cat, FETCH_ALIGN), 0);
	cat.slot_bytes = 2 * MiB;	/* two slots in the pool */
	assert_int_equal(conf_init(&conf), 0);
	conf.pool_size = 4 * MiB;
	conf.pool_lock = false;
	conf.hugepages = CONF_HUGEPAGES_NO;
	conf.request_size = 256 * KiB;
	if (engine_create(&e, &conf, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	conf_free(&conf);
	if (engine_add_model(e, "fuse", &cat, false, 0, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	for (int round = 0; round < 3; round++)
		for (uint32_t i = 0; i < 4; i++) {
			struct tierd_key k = { 0, 0, i };
			struct got g = { 0 };

			assert_int_equal(engine_acquire(e, &k, ENGINE_DEMAND, on_acquired, &g), 0);
			assert_int_equal(engine_drain(e), 0);
			assert_int_equal(g.calls, 1);
			if (i == 2) {
				assert_int_equal(g.err, -EIO);
				/* Not resident, no pin left behind. */
				assert_int_equal(engine_release(e, &k), -ENOENT);
				assert_int_equal(engine_evict(e, &k), -ENOENT);
				continue;
			}
			assert_int_equal(g.err, 0);
			check((const uint8_t *)engine_pool_base(e, 0) + g.info.offset + t[i].slot_offset,
			      t[i].offset, t[i].length);
			assert_int_equal(engine_release(e, &k), 0);
		}
	engine_get_stats(e, &st);
	assert_int_equal(st.fetch_errors, 3);
	assert_int_equal(st.pins, 0);
	assert_true(st.bytes_resident <= t[0].length + t[3].length + 2);
	engine_destroy(e);
	for (int i = 0; i < 4; i++)
		free(x[i].extents);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_short_and_eio),
		cmocka_unit_test(test_engine_eio),
	};
	const char *top = getenv("top_builddir");
	char self[4096];

	if (access("/dev/fuse", R_OK | W_OK)) {
		printf("1..0 # SKIP /dev/fuse is not available (%s)\n", strerror(errno));
		return 0;
	}
	snprintf(self, sizeof(self), "%s", argv[0]);
	if (top)
		snprintf(prog, sizeof(prog), "%s/tests/fuse-eio", top);
	else
		snprintf(prog, sizeof(prog), "%s/fuse-eio", dirname(self));
	log_init("test-fetch-eio", LOG_CRIT);
	return cmocka_run_group_tests(tests, mount_fs, unmount_fs);
}
