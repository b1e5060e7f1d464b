/* SPDX-License-Identifier: MIT */
/*
 * ckwatch: inotify on checkpoint files.  See ckwatch.h.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "ckwatch.h"

struct ckwatch_entry {
	int wd;
	uint32_t id;
	char *path;
};

struct ckwatch {
	int fd;
	ckwatch_fn fn;
	void *arg;
	struct ckwatch_entry *v;
	size_t n, cap;
};

int ckwatch_create(struct ckwatch **out, ckwatch_fn fn, void *arg)
{
	struct ckwatch *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return -ENOMEM;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		err = -errno;
		free(w);
		return err;
	}
	w->fn = fn;
	w->arg = arg;
	*out = w;
	return 0;
}

void ckwatch_destroy(struct ckwatch *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i].path);
	free(w->v);
	close(w->fd);
	free(w);
}

int ckwatch_fd(const struct ckwatch *w)
{
	return w->fd;
}

int ckwatch_add(struct ckwatch *w, const char *path, uint32_t id)
{
	struct ckwatch_entry *e;
	int wd;

	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;

		e = realloc(w->v, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		w->v = e;
		w->cap = cap;
	}
	/* One inode watched for several ids or paths has one wd: the same mask
	 * for all keeps each one's events. */
	wd = inotify_add_watch(w->fd, path, CKWATCH_MASK);
	if (wd < 0)
		return -errno;
	e = &w->v[w->n];
	e->path = strdup(path);
	if (!e->path)
		return -ENOMEM;	/* the wd stays, unreported: harmless */
	e->wd = wd;
	e->id = id;
	w->n++;
	return 0;
}

static bool wd_used(const struct ckwatch *w, int wd)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].wd == wd)
			return true;
	return false;
}

void ckwatch_remove_id(struct ckwatch *w, uint32_t id)
{
	size_t j = 0;

	for (size_t i = 0; i < w->n; i++) {
		int wd = w->v[i].wd;

		if (w->v[i].id != id)
			continue;
		w->v[i].wd = -1;
		/* A wd the kernel dropped already (-1) or that another watch
		 * still uses stays as it is. */
		if (wd >= 0 && !wd_used(w, wd))
			inotify_rm_watch(w->fd, wd);
	}
	for (size_t i = 0; i < w->n; i++) {
		if (w->v[i].id == id)
			free(w->v[i].path);
		else
			w->v[j++] = w->v[i];
	}
	w->n = j;
}

static void dispatch(struct ckwatch *w, const struct inotify_event *ev)
{
	const char *name = ev->len && ev->name[0] ? ev->name : NULL;

	if (ev->mask & IN_Q_OVERFLOW) {
		w->fn(w->arg, CKWATCH_ALL, NULL, NULL, ev->mask);
		return;
	}
	for (size_t i = 0; i < w->n; i++) {
		if (w->v[i].wd != ev->wd)
			continue;
		w->fn(w->arg, w->v[i].id, w->v[i].path, name, ev->mask);
	}
	/* The kernel dropped the watch (the inode is gone, or unmounted): its
	 * wd may be handed out again, never match it. */
	if (ev->mask & IN_IGNORED)
		for (size_t i = 0; i < w->n; i++)
			if (w->v[i].wd == ev->wd)
				w->v[i].wd = -1;
}

int ckwatch_process(struct ckwatch *w)
{
	/* Aligned for struct inotify_event, room for several with names. */
	char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)]
		__attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		ssize_t got = read(w->fd, buf, sizeof(buf));

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -errno;
		}
		if (got == 0)
			return 0;
		for (char *p = buf; p < buf + got;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			dispatch(w, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
}
