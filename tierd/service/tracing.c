/* SPDX-License-Identifier: MIT */
/*
 * Traces recorded by the service (tierd/trace/trace-rec.h): started by
 * [trace] record = yes or by an operator's TRACE (tierctl trace start FILE),
 * stopped by TRACE stop, a reload that turns [trace] record off, the size
 * limit, a write error, or the daemon's end.  One recording at a time.
 *
 * The file is created by the daemon, never replaced and never reached
 * through a symbolic link as its last component (O_CREAT | O_EXCL |
 * O_NOFOLLOW, mode 0640): an operator cannot be tricked into overwriting
 * what a link points to.  Only operators may ask, as for PIN.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "residency.h"
#include "server-int.h"
#include "trace-rec.h"

#define TRACE_FLUSH_MS	1000	/* a quiet daemon's events reach the disk within this */

/* [trace] file with %t (UTC start time) and %p (pid) expanded, %% a %. */
static int expand_path(const char *pattern, char *out, size_t len)
{
	size_t o = 0;

	for (const char *p = pattern; *p; p++) {
		char piece[64];
		const char *add = piece;

		if (*p != '%') {
			piece[0] = *p;
			piece[1] = '\0';
		} else if (p[1] == 't') {
			time_t now = time(NULL);
			struct tm tm;

			gmtime_r(&now, &tm);
			strftime(piece, sizeof(piece), "%Y%m%dT%H%M%SZ", &tm);
			p++;
		} else if (p[1] == 'p') {
			snprintf(piece, sizeof(piece), "%d", (int)getpid());
			p++;
		} else if (p[1] == '%') {
			add = "%";
			p++;
		} else {
			add = "%";
		}
		if (o + strlen(add) >= len)
			return -ENAMETOOLONG;
		memcpy(out + o, add, strlen(add));
		o += strlen(add);
	}
	out[o] = '\0';
	return 0;
}

static void trace_tick(struct loop_source *src, void *arg);

/* Starts recording into path; 0, or a negative errno with why. */
static int trace_start(struct server *s, const char *path, bool from_conf, char *why, size_t whylen)
{
	struct trace_model_desc *models;
	uint32_t n = (uint32_t)engine_model_count(s->engine);
	int fd, err;

	if (s->rec) {
		snprintf(why, whylen, "already recording into %s (tierctl trace stop first)", trace_rec_path(s->rec));
		return -EBUSY;
	}
	if (path[0] != '/') {
		snprintf(why, whylen, "%s: the trace file must be an absolute path", path);
		return -EINVAL;
	}
	/* A trace names its models: without any it could not be read back. */
	if (!n) {
		snprintf(why, whylen, "no models are served: nothing to record");
		return -ENOENT;
	}
	models = calloc(n ? n : 1, sizeof(*models));
	if (!models) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct catalog *cat = engine_model_catalog(s->engine, i);

		models[i] = (struct trace_model_desc){ engine_model_name(s->engine, i), cat->nlayers,
						       cat->experts_per_layer, cat->top_k };
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0) {
		err = -errno;
		snprintf(why, whylen, "%s: %s%s", path, strerror(-err),
			 err == -EEXIST ? " (a trace never replaces a file)" : "");
		free(models);
		return err;
	}
	err = trace_rec_start(&s->rec, fd, path, models, n, s->conf->trace_max_size, why, whylen);
	free(models);
	if (err) {
		unlink(path);
		return err;
	}
	if (!s->trace_timer)
		err = loop_add_timer(s->loop, TRACE_FLUSH_MS, TRACE_FLUSH_MS, trace_tick, s, &s->trace_timer);
	else
		err = loop_timer_set(s->trace_timer, TRACE_FLUSH_MS, TRACE_FLUSH_MS);
	if (err)
		log_warn("trace %s: no periodic flush (%s): events reach the file as buffers fill", path,
			 strerror(-err));
	s->trace_from_conf = from_conf;
	/* Acquires through the residency table would not be recorded. */
	if (engine_residency(s->engine))
		residency_set_socket_only(engine_residency(s->engine), RESIDENCY_SOCKET_TRACE, true);
	log_notice("recording a trace into %s%s (acquires go through the socket meanwhile)", path,
		   from_conf ? " ([trace] record)" : "");
	return 0;
}

/* Stops the recording; 0, or the error that spoiled it (with why). */
static int trace_stop(struct server *s, uint64_t *events, char *why, size_t whylen)
{
	struct trace_rec_stats st;
	char path[4096];
	int err;

	snprintf(path, sizeof(path), "%s", trace_rec_path(s->rec));
	err = trace_rec_stop(s->rec, &st, why, whylen);
	s->rec = NULL;
	if (engine_residency(s->engine))
		residency_set_socket_only(engine_residency(s->engine), RESIDENCY_SOCKET_TRACE, false);
	if (s->trace_timer)
		loop_timer_stop(s->trace_timer);
	s->trace_events_done += st.events;
	s->trace_dropped_done += st.dropped;
	if (events)
		*events = st.events;
	if (err)
		log_err("trace %s: %s: %llu events recorded, %llu lost", path, why, (unsigned long long)st.events,
			(unsigned long long)st.dropped);
	else
		log_notice("trace %s: %llu events recorded, %llu dropped, %llu bytes%s", path,
			   (unsigned long long)st.events, (unsigned long long)st.dropped,
			   (unsigned long long)st.bytes, st.full ? " ([trace] max_size reached)" : "");
	return err;
}

static void trace_tick(struct loop_source *src, void *arg)
{
	struct server *s = arg;
	struct trace_rec_stats st;
	char why[512];

	(void)src;
	if (!s->rec)
		return;
	trace_rec_flush(s->rec);
	trace_rec_get_stats(s->rec, &st);
	/* Nothing more would reach the file: end it properly now. */
	if (st.error || st.full)
		trace_stop(s, NULL, why, sizeof(why));
}

void server_trace_conf(struct server *s)
{
	char path[4096], why[512];

	if (s->rec && s->trace_from_conf && !s->conf->trace_record) {
		trace_stop(s, NULL, why, sizeof(why));
		return;
	}
	if (s->rec || !s->conf->trace_record || !s->conf->trace_file)
		return;
	if (expand_path(s->conf->trace_file, path, sizeof(path))) {
		log_err("[trace] file: longer than %zu bytes once expanded: not recording", sizeof(path) - 1);
		return;
	}
	if (trace_start(s, path, true, why, sizeof(why)))
		log_err("[trace] record: %s: not recording", why);
}

void server_trace_destroy(struct server *s)
{
	char why[512];

	if (s->rec)
		trace_stop(s, NULL, why, sizeof(why));
	loop_remove(s->trace_timer);
	s->trace_timer = NULL;
}

void server_trace_stats(const struct server *s, uint64_t *v)
{
	struct trace_rec_stats st = { 0 };

	if (s->rec)
		trace_rec_get_stats(s->rec, &st);
	v[TIERD_STAT_TRACE_EVENTS] = s->trace_events_done + st.events;
	v[TIERD_STAT_TRACE_DROPPED] = s->trace_dropped_done + st.dropped;
	v[TIERD_STAT_TRACE_ACTIVE] = s->rec != NULL;
}

void client_trace(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_trace *m)
{
	struct server *s = c->srv;
	uint64_t events = 0;
	char why[512];
	int err;

	if (!c->operator) {
		client_error(c, h->request_id, -EPERM, "TRACE is for operators (root or the daemon's user), not uid %u",
			     (unsigned)c->uid);
		return;
	}
	switch ((enum tierd_trace_op)m->op) {
	case TIERD_TRACE_START:
		err = trace_start(s, m->path, false, why, sizeof(why));
		if (err) {
			client_error(c, h->request_id, err, "%s", why);
			return;
		}
		log_info("client %u: pid %d uid %u started the trace %s", c->id, (int)c->pid, (unsigned)c->uid,
			 m->path);
		client_ok(c, h->request_id, h->flags, 0);
		return;
	case TIERD_TRACE_STOP:
		if (!s->rec) {
			client_error(c, h->request_id, -ENOENT, "no trace is being recorded");
			return;
		}
		err = trace_stop(s, &events, why, sizeof(why));
		if (err) {
			/* Stopped all the same: the error says what the file lacks. */
			client_error(c, h->request_id, err, "recording stopped, its file incomplete: %s", why);
			return;
		}
		client_ok(c, h->request_id, h->flags, events);
		return;
	}
	client_error(c, h->request_id, -EINVAL, "trace operation %u: unknown", m->op);
}
