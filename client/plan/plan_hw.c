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

#include "fetch.h"
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

struct measure_read {
	uint8_t *buf;			/* READ_QD buffers of READ_SIZE */
	unsigned free[READ_QD], nfree;	/* buffers without a read in flight */
	uint64_t bytes;
	int err;
};

struct measure_slot {
	struct measure_read *m;
	unsigned buf;
};

static void measure_done(void *arg, int err, uint64_t bytes)
{
	struct measure_slot *s = arg;

	s->m->bytes += bytes;
	if (err && !s->m->err)
		s->m->err = err;
	s->m->free[s->m->nfree++] = s->buf;
}

/* Through the fetch engine, as tierd reads experts: a read per buffer, READ_QD in flight. */
int plan_hw_measure_read(const char *path, size_t max_bytes, double *gbps, char *err, size_t errlen)
{
	struct fetch_opts fo = { .queue_depth = READ_QD, .request_size = READ_SIZE };
	struct measure_read m = { 0 };
	struct measure_slot slots[READ_QD];
	struct fetch *f = NULL;
	uint64_t size, next = 0, want;
	double t0, t1;
	int file, r;

	*gbps = 0;
	r = fetch_create(&f, &fo, err, errlen);
	if (r < 0)
		return r;
	file = fetch_file_open(f, path, err, errlen);
	if (file < 0) {
		r = file;
		goto out;
	}
	size = fetch_file_size(f, (unsigned)file) & ~(uint64_t)(READ_SIZE - 1);
	if (size < READ_SIZE) {
		r = plan_fail(err, errlen, -EINVAL, "%s: need a regular file of at least 1 MiB", path);
		goto out;
	}
	want = size < max_bytes ? size : max_bytes & ~(uint64_t)(READ_SIZE - 1);
	if (!want)
		want = READ_SIZE;
	r = -posix_memalign((void **)&m.buf, FETCH_ALIGN, (size_t)READ_QD * READ_SIZE);
	if (r < 0) {
		m.buf = NULL;
		goto out;
	}
	for (unsigned i = 0; i < READ_QD; i++) {
		slots[i] = (struct measure_slot){ &m, i };
		m.free[m.nfree++] = i;
	}
	t0 = now_s();
	while (next < want || m.nfree < READ_QD) {
		while (next < want && m.nfree && !m.err) {
			struct measure_slot *s = &slots[m.free[--m.nfree]];
			struct fetch_job *j;

			r = fetch_job_create(f, FETCH_DEMAND, measure_done, s, &j);
			if (r == 0) {
				r = fetch_job_add(j, (unsigned)file, next, READ_SIZE, m.buf + (size_t)s->buf * READ_SIZE);
				if (r < 0)
					fetch_job_free(j);
			}
			/* Once submitted the job is the engine's, even when submitting fails. */
			r = r ?: fetch_job_submit(j);
			if (r < 0) {
				plan_fail(err, errlen, r, "%s: io_uring: %s", path, strerror(-r));
				goto out;
			}
			next += READ_SIZE;
		}
		if (m.err)
			next = want;	/* stop issuing; wait for what is in flight */
		r = fetch_wait(f);
		if (r < 0) {
			plan_fail(err, errlen, r, "%s: io_uring: %s", path, strerror(-r));
			goto out;
		}
	}
	t1 = now_s();
	if (m.err) {
		r = plan_fail(err, errlen, m.err, "%s: read: %s", path, strerror(-m.err));
		goto out;
	}
	*gbps = (double)m.bytes / (t1 - t0) / 1e9;
	r = 0;
out:
	/* Waits for reads still in flight before their buffers go. */
	fetch_destroy(f);
	free(m.buf);
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
