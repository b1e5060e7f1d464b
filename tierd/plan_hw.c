/* SPDX-License-Identifier: MIT */
/* Hardware descriptions and local bandwidth measurements for `tierctl plan`. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ini.h>
#include <liburing.h>

#include "plan_hw.h"

#define READ_QD 8
#define READ_SIZE (1u << 20)
#define COPY_BYTES (64u << 20)

int plan_hw_builtin(const char *name, struct plan_hw *hw, char *err, size_t errlen)
{
	struct plan_params d;

	plan_params_default(&d);
	if (!strcmp(name, "dgx-h100-nvl5") || !strcmp(name, "dgx-h100")) {
		*hw = d.hw;
		return 0;
	}
	if (!strcmp(name, "dgx-h100-nvl4")) {
		*hw = d.hw;
		snprintf(hw->name, sizeof(hw->name), "dgx-h100-nvl4");
		hw->link_gbps = 450;	/* NVLink 4.0 per direction */
		return 0;
	}
	return plan_fail(err, errlen, -ENOENT,
		    "unknown hardware \"%s\" (built-in: dgx-h100-nvl5, dgx-h100-nvl4; "
		    "local; or an INI file)", name);
}

struct ini_ctx {
	struct plan_params *p;
	const char *path;
	char *err;
	size_t errlen;
	int line;
	int r;
};

static int hw_ini_entry(void *user, const char *section, const char *key, const char *value
#if INI_HANDLER_LINENO
		       , int lineno
#endif
		       )
{
	struct ini_ctx *c = user;
	const char *want;
	char why[192];
	int r;

#if INI_HANDLER_LINENO
	c->line = lineno;
#endif
	if (c->r < 0)
		return 0;
	if (!strcmp(section, "hardware") && !strcmp(key, "name")) {
		snprintf(c->p->hw.name, sizeof(c->p->hw.name), "%s", value);
		return 1;
	}
	want = plan_key_section(key);
	if (!want) {
		snprintf(why, sizeof(why), "unknown key");
		r = -EINVAL;
	} else if (strcmp(want, section)) {
		snprintf(why, sizeof(why), "belongs in [%s]", want);
		r = -EINVAL;
	} else {
		r = plan_set(c->p, key, value, why, sizeof(why));
		if (!r)
			return 1;
	}
	c->r = r;
	/* The line is filled in once ini_parse returns it. */
	snprintf(c->err, c->errlen, "[%s] %s: %s", section, key, why);
	return 0;
}

int plan_hw_load_file(struct plan_params *p, const char *path, char *err, size_t errlen)
{
	struct ini_ctx c = { .p = p, .path = path, .err = err, .errlen = errlen };
	char msg[256] = "";
	FILE *f;
	int line, r;

	c.err = msg;
	c.errlen = sizeof(msg);
	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		return plan_fail(err, errlen, r, "%s: %s", path, strerror(-r));
	}
	line = ini_parse_file(f, hw_ini_entry, &c);
	fclose(f);
	if (line == 0) {
		r = plan_params_check(p, msg, sizeof(msg));
		if (r < 0)
			return plan_fail(err, errlen, r, "%s: %s", path, msg);
		return 0;
	}
	if (line < 0)
		return plan_fail(err, errlen, -EIO, "%s: cannot read", path);
	if (c.r < 0)
		return plan_fail(err, errlen, c.r, "%s:%d: %s", path, line, msg);
	return plan_fail(err, errlen, -EINVAL, "%s:%d: syntax error (expected [section] or key = value)",
		    path, line);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int plan_hw_measure_read(const char *path, size_t max_bytes, double *gbps, char *err, size_t errlen)
{
	struct io_uring ring;
	bool ring_ok = false;
	void *buf[READ_QD] = { 0 };
	off_t size, next = 0;
	size_t done = 0, want;
	unsigned inflight = 0;
	struct stat st;
	double t0, t1;
	int fd, r;

	*gbps = 0;
	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return plan_fail(err, errlen, r, "%s: cannot open with O_DIRECT: %s%s", path, strerror(-r),
			    r == -EINVAL ? " (the filesystem does not support O_DIRECT; use a file on disk)" : "");
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		plan_fail(err, errlen, r, "%s: %s", path, strerror(-r));
		goto out;
	}
	size = st.st_size & ~(off_t)(READ_SIZE - 1);
	if (!S_ISREG(st.st_mode) || size < (off_t)READ_SIZE) {
		r = plan_fail(err, errlen, -EINVAL, "%s: need a regular file of at least 1 MiB", path);
		goto out;
	}
	want = (size_t)size < max_bytes ? (size_t)size : max_bytes;
	want &= ~(size_t)(READ_SIZE - 1);
	if (!want)
		want = READ_SIZE;
	for (int i = 0; i < READ_QD; i++) {
		r = -posix_memalign(&buf[i], 4096, READ_SIZE);
		if (r < 0)
			goto out;
	}
	r = io_uring_queue_init(READ_QD, &ring, 0);
	if (r < 0) {
		plan_fail(err, errlen, r, "io_uring_queue_init: %s", strerror(-r));
		goto out;
	}
	ring_ok = true;

	t0 = now_s();
	/* Buffer i serves the request in slot i; its user_data is the slot. */
	for (unsigned i = 0; i < READ_QD && (size_t)next < want; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		io_uring_prep_read(sqe, fd, buf[i], READ_SIZE, (uint64_t)next);
		io_uring_sqe_set_data64(sqe, i);
		next += READ_SIZE;
		inflight++;
	}
	while (inflight) {
		struct io_uring_cqe *cqe;
		unsigned slot;

		r = io_uring_submit_and_wait(&ring, 1);
		if (r < 0) {
			plan_fail(err, errlen, r, "io_uring: %s", strerror(-r));
			goto out;
		}
		r = io_uring_wait_cqe(&ring, &cqe);
		if (r < 0) {
			plan_fail(err, errlen, r, "io_uring: %s", strerror(-r));
			goto out;
		}
		slot = (unsigned)io_uring_cqe_get_data64(cqe);
		r = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		inflight--;
		if (r < 0) {
			plan_fail(err, errlen, r, "%s: read: %s", path, strerror(-r));
			goto out;
		}
		if (r == 0) {
			r = plan_fail(err, errlen, -EIO, "%s: file shrank while measuring", path);
			goto out;
		}
		done += (size_t)r;
		if ((size_t)next < want) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

			io_uring_prep_read(sqe, fd, buf[slot], READ_SIZE, (uint64_t)next);
			io_uring_sqe_set_data64(sqe, slot);
			next += READ_SIZE;
			inflight++;
		}
	}
	t1 = now_s();
	*gbps = done / (t1 - t0) / 1e9;
	r = 0;
out:
	if (ring_ok)
		io_uring_queue_exit(&ring);
	for (int i = 0; i < READ_QD; i++)
		free(buf[i]);
	close(fd);
	return r;
}

int plan_hw_measure_copy(double *gbps, char *err, size_t errlen)
{
	unsigned char *a = NULL, *b = NULL;
	double t0, t, total = 0;
	int r = 0;

	*gbps = 0;
	a = malloc(COPY_BYTES);
	b = malloc(COPY_BYTES);
	if (!a || !b) {
		r = plan_fail(err, errlen, -ENOMEM, "cannot allocate %u MiB buffers", COPY_BYTES >> 20);
		goto out;
	}
	/* Fault the pages in first so the loop measures copies, not page faults. */
	memset(a, 1, COPY_BYTES);
	memset(b, 2, COPY_BYTES);
	t0 = now_s();
	do {
		memcpy(b, a, COPY_BYTES);
		/* Keeps the compiler from dropping the copy, and varies the source. */
		a[total > 0 ? 4096 : 0] ^= b[COPY_BYTES - 1];
		total += COPY_BYTES;
		t = now_s() - t0;
	} while (t < 0.3 || total < 4.0 * COPY_BYTES);
	*gbps = total / t / 1e9;
out:
	free(a);
	free(b);
	return r;
}
