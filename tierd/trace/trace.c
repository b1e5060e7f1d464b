/* SPDX-License-Identifier: MIT */
/*
 * trace_open: which format a trace is in, told by its first bytes (the
 * tierd-trace-v1 magic, or a JSON object), then handed to that format's
 * reader.  The readers live beside it: trace-json.c, trace-v1.c.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "trace-int.h"
#include "trace-v1.h"

int trace_bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

bool trace_ids_dup(const uint32_t *ids, uint32_t n, uint32_t *dup)
{
	uint32_t s[TRACE_MAX_EXPERTS];

	/* Top-k of 8 or 16: comparing pairs costs less than sorting. */
	if (n <= 16 || n > TRACE_MAX_EXPERTS) {
		for (uint32_t i = 1; i < n; i++)
			for (uint32_t k = 0; k < i; k++)
				if (ids[k] == ids[i]) {
					*dup = ids[i];
					return true;
				}
		return false;
	}
	memcpy(s, ids, n * sizeof(s[0]));
	qsort(s, n, sizeof(s[0]), u32_cmp);
	for (uint32_t i = 1; i < n; i++)
		if (s[i] == s[i - 1]) {
			*dup = s[i];
			return true;
		}
	return false;
}

int trace_open(struct trace_reader **out, const char *path, char *err, size_t errlen)
{
	struct trace_reader *r = NULL;
	unsigned char head[TRACE_V1_MAGIC_LEN];
	struct stat st;
	size_t got, i;
	FILE *f;
	int ret;

	*out = NULL;
	f = fopen(path, "rbe");
	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	/* A FIFO or a device would be read to no end: traces are files. */
	if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
		fclose(f);
		snprintf(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r || !(r->path = strdup(path))) {
		free(r);
		fclose(f);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	got = fread(head, 1, sizeof(head), f);
	rewind(f);
	if (got == sizeof(head) && !memcmp(head, TRACE_V1_MAGIC, TRACE_V1_MAGIC_LEN)) {
		ret = trace_v1_open(r, f, err, errlen);
		goto out;
	}
	for (i = 0; i < got && strchr(" \t\r\n", head[i]); i++)
		;
	if (i < got && head[i] == '{') {
		ret = trace_json_open(r, f, err, errlen);
		goto out;
	}
	fclose(f);
	ret = trace_bad(err, errlen, "%s: neither a tierd-trace-v1 recording (magic \"%.8s\") nor a routing "
			"trace in JSON (an object): unknown format", path, TRACE_V1_MAGIC);
out:
	if (ret) {
		free(r->path);
		free(r);
		return ret;
	}
	*out = r;
	return 0;
}

const struct trace_info *trace_info(const struct trace_reader *r)
{
	return &r->info;
}

int trace_next(struct trace_reader *r, struct trace_event *ev, char *err, size_t errlen)
{
	return r->ops->next(r, ev, err, errlen);
}

uint64_t trace_dropped(const struct trace_reader *r)
{
	return r->dropped;
}

void trace_close(struct trace_reader *r)
{
	if (!r)
		return;
	r->ops->close(r);
	free(r->path);
	free(r);
}
