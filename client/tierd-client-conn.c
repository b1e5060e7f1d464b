/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client: connect and reconnect.  HELLO/WELCOME with the pool
 * descriptors (and the fast path's, tierd-client-fast.c), the pool
 * mappings, and on a reconnection the acquisitions
 * of the old connection acquired again from the new daemon.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tierd-client-int.h"

static int recv_with_fds(int fd, void *buf, size_t cap, int *fds, int *nfds, int timeout_ms)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * TIERD_PROTO_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;
	int r;

	*nfds = 0;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (int i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof(int));
				if (*nfds < (int)TIERD_PROTO_MAX_FDS)
					fds[(*nfds)++] = f;
				else
					close(f);
			}
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EMSGSIZE;
	}
	return (int)n;
}

/* A synchronous request on the fresh connection (lock held, nobody else reads). */
static int conn_request(struct tierd_client *c, long len, uint64_t id, struct tierd_msg_acquired **acq)
{
	int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
	int r = tdc_send_locked(c, len, CONNECT_TIMEOUT_MS);

	if (r)
		return r;
	for (;;) {
		int fds[TIERD_PROTO_MAX_FDS], nfds = 0, n = -ETIMEDOUT;
		int64_t left = deadline - now_ms();
		struct tierd_msg_hdr h;
		const char *why;

		/* Other packets can keep coming past the deadline: a negative
		 * timeout would make poll() wait forever, with the lock held. */
		if (left > 0)
			n = recv_with_fds(c->fd, c->rx, sizeof(c->rx), fds, &nfds, (int)left);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (n < 0) {
			/* The answer may still come, and pins with it: only a
			 * close keeps the daemon from holding them for nobody. */
			tdc_conn_lost(c, strerror(-n));
			if (n == -ETIMEDOUT)
				tdc_set_error(c, "no answer from tierd to a re-acquire within %d ms",
					      CONNECT_TIMEOUT_MS);
			else
				tdc_set_error(c, "re-acquire after a reconnection: %s", strerror(-n));
			return n;
		}
		if (tierd_proto_decode_hdr(c->rx, (size_t)n, &h, &why) || h.request_id != id)
			continue;
		if (h.type == TIERD_MSG_ERROR) {
			struct tierd_msg_error e;

			if (tierd_proto_decode_error(c->rx + sizeof(h), h.length, &e, &why))
				return -EBADMSG;
			tdc_set_error(c, "%s", e.reason);
			/* The decoder allows only negative codes; an ERROR must
			 * never read as success to the caller. */
			return e.err < 0 ? e.err : -EBADMSG;
		}
		if (h.type == TIERD_MSG_ACQUIRED)
			r = tierd_proto_decode_acquired(c->rx + sizeof(h), h.length, acq, &why);
		else
			r = -EBADMSG;
		if (r) {
			/* The daemon may have pinned what it answered. */
			tdc_conn_lost(c, h.type == TIERD_MSG_ACQUIRED ? why : "unexpected answer to a re-acquire");
			return r;
		}
		return 0;
	}
}

/* Re-acquires what the old connection held; returns counts.  Fails if the
 * new connection breaks too; the acquisitions not re-established then stay
 * -ENOTCONN, for the next try. */
static int reestablish(struct tierd_client *c, unsigned *ok, unsigned *lost)
{
	struct tierd_acquisition *a;

	LIST_FOREACH(a, &c->acqs, link) {
		struct tierd_key *keys;
		struct tierd_msg_acquired *m = NULL;
		uint64_t id;
		int r = 0;

		if (a->status != -ENOTCONN)
			continue;
		keys = calloc(a->n, sizeof(*keys));
		if (!keys)
			r = -ENOMEM;
		for (size_t i = 0; !r && i < a->n; i++) {
			int idx = -1;

			for (uint32_t j = 0; a->model_names[i] && j < c->nmodels; j++)
				if (!strcmp(c->models[j].name, a->model_names[i]))
					idx = (int)j;
			if (idx < 0)
				r = -ENOENT;
			keys[i] = a->keys[i];
			keys[i].model = (uint32_t)idx;
		}
		if (!r) {
			id = c->next_id++;
			r = conn_request(c, tierd_proto_encode_keys(c->tx, sizeof(c->tx), TIERD_MSG_ACQUIRE, 0, id,
								    (const struct tierd_key *)keys,
								    (uint32_t)a->n), id, &m);
			if (c->fd < 0) {
				free(keys);
				return r ? r : -ECONNRESET;
			}
		}
		if (!r) {
			struct retired *old = calloc(1, sizeof(*old));
			struct tierd_acquisition tmp = *a;

			if (!old) {
				r = -ENOMEM;
			} else {
				/* Keep the old arrays: the application may hold pointers. */
				tmp.raw = NULL;
				tmp.experts = NULL;
				tmp.tensors = NULL;
				memset(tmp.maps, 0, sizeof(tmp.maps));
				r = tdc_acq_fill(c, &tmp, m, keys, a->n);
				if (!r) {
					old->raw = a->raw;
					old->experts = a->experts;
					old->tensors = a->tensors;
					memcpy(old->maps, a->maps, sizeof(old->maps));
					SLIST_INSERT_HEAD(&a->retired, old, link);
					a->raw = tmp.raw;
					a->experts = tmp.experts;
					a->tensors = tmp.tensors;
					memcpy(a->maps, tmp.maps, sizeof(a->maps));
					memcpy(a->keys, keys, a->n * sizeof(*keys));
					/* Pinned by the daemon now, released by RELEASE. */
					a->fast = false;
					m = NULL;
				} else {
					tdc_release_keys_noreply(c, keys, a->n);
					free(old);
				}
			}
		}
		free(m);
		free(keys);
		a->status = r ? -ENOLINK : 0;
		if (r)
			(*lost)++;
		else
			(*ok)++;
	}
	return 0;
}

int tdc_conn_open(struct tierd_client *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tierd_msg_welcome *w = NULL;
	struct tierd_msg_hdr h;
	struct model *models = NULL;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS] = { 0 };
	int fds[TIERD_PROTO_MAX_FDS], nfds = 0, fd, n, r;
	const char *why = NULL;
	uint64_t id;

	if (strlen(c->path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, c->path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A Unix connect() waits while the daemon's listen queue is full (a
	 * daemon stopped, or not accepting): for as long as the send timeout,
	 * which is then put back to none, since sends wait with poll(). */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO,
		       &(struct timeval){ CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000 },
		       sizeof(struct timeval)) ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		r = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
		if (r == -ETIMEDOUT)
			tdc_set_error(c, "%s: tierd accepted no connection within %d ms (its listen queue is "
				      "full: stopped or overloaded)", c->path, CONNECT_TIMEOUT_MS);
		else
			tdc_set_error(c, "%s: %s", c->path, strerror(-r));
		close(fd);
		return r;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval){ 0, 0 }, sizeof(struct timeval))) {
		r = -errno;
		close(fd);
		return r;
	}
	c->fd = fd;
	id = c->next_id++;
	r = tdc_send_locked(c, tierd_proto_encode_hello_node(c->tx, sizeof(c->tx), id, (uint32_t)getpid(),
							     c->name, c->numa_node), CONNECT_TIMEOUT_MS);
	if (r)
		return r;
	n = recv_with_fds(fd, c->rx, sizeof(c->rx), fds, &nfds, CONNECT_TIMEOUT_MS);
	if (n < 0) {
		r = n;
		tdc_set_error(c, "no WELCOME from tierd: %s", strerror(-r));
		goto fail;
	}
	r = tierd_proto_decode_hdr(c->rx, (size_t)n, &h, &why);
	if (r == -EPROTO) {
		struct tierd_msg_error e;

		/* The header and ERROR are the same in every version. */
		if (h.type == TIERD_MSG_ERROR && (size_t)n >= sizeof(h) &&
		    !tierd_proto_decode_error(c->rx + sizeof(h), (size_t)n - sizeof(h), &e, &why))
			tdc_set_error(c, "%s", e.reason);
		else
			tdc_set_error(c, "tierd speaks protocol %u.%u, this library %u.%u", h.major, h.minor,
				      TIERD_PROTO_MAJOR, TIERD_PROTO_MINOR);
		r = -EPROTONOSUPPORT;
		goto fail;
	}
	if (!r && h.type == TIERD_MSG_ERROR) {
		struct tierd_msg_error e;

		r = tierd_proto_decode_error(c->rx + sizeof(h), h.length, &e, &why);
		if (!r) {
			tdc_set_error(c, "%s", e.reason);
			r = e.err;
			goto fail;
		}
	}
	if (!r && h.type != TIERD_MSG_WELCOME) {
		r = -EBADMSG;
		why = "expected WELCOME";
	}
	w = malloc(sizeof(*w));
	if (!r && !w)
		r = -ENOMEM;
	if (!r)
		r = tierd_proto_decode_welcome(c->rx + sizeof(h), h.length, w, &why);
	if (!r && (int)w->npools + ((w->fast & TIERD_WELCOME_F_FAST) ? 2 : 0) != nfds) {
		r = -EBADMSG;
		why = "pool descriptors missing";
	}
	if (r) {
		if (why)
			tdc_set_error(c, "bad WELCOME from tierd: %s", why);
		goto fail;
	}
	for (uint32_t i = 0; i < w->npools; i++) {
		struct stat st;
		void *base;

		/* Pages past the end of the file would fault with SIGBUS when a
		 * tensor is read: the descriptor must back the size announced. */
		if (fstat(fds[i], &st) || st.st_size < 0 || (uint64_t)st.st_size < w->pool_size[i]) {
			r = -EBADMSG;
			tdc_set_error(c, "bad WELCOME from tierd: pool %u is smaller than its announced %llu bytes",
				      i, (unsigned long long)w->pool_size[i]);
			goto fail;
		}
		base = mmap(NULL, w->pool_size[i], PROT_READ, MAP_SHARED, fds[i], 0);

		maps[i] = calloc(1, sizeof(**maps));
		if (base == MAP_FAILED || !maps[i]) {
			r = base == MAP_FAILED ? -errno : -ENOMEM;
			if (base != MAP_FAILED)
				munmap(base, w->pool_size[i]);
			tdc_set_error(c, "cannot map pool %u: %s", i, strerror(-r));
			goto fail;
		}
		maps[i]->base = base;
		maps[i]->size = w->pool_size[i];
		maps[i]->refs = 1;
	}
	models = calloc(w->nmodels + 1, sizeof(*models));
	if (!models) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < w->nmodels; i++) {
		models[i].info = w->models[i];
		models[i].name = strdup(w->models[i].name);
		models[i].info.name = models[i].name;
		if (!models[i].name) {
			r = -ENOMEM;
			goto fail;
		}
	}
	for (uint32_t i = 0; i < c->nmodels; i++)
		free(c->models[i].name);
	free(c->models);
	c->models = models;
	c->nmodels = w->nmodels;
	for (uint32_t i = 0; i < c->npools; i++)
		tdc_mapping_unref(c->pools[i]);
	memcpy(c->pools, maps, sizeof(maps));
	c->npools = w->npools;
	c->instance = w->instance;
	c->conn_seq++;
	tdc_fast_close(c);
	if ((w->fast & TIERD_WELCOME_F_FAST) && c->npools)
		tdc_fast_open(c, w, fds[w->npools], fds[w->npools + 1]);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	nfds = 0;
	free(w);
	return 0;
fail:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	for (unsigned i = 0; i < TIERD_PROTO_MAX_POOLS; i++)
		tdc_mapping_unref(maps[i]);
	if (models) {
		for (uint32_t i = 0; i < w->nmodels; i++)
			free(models[i].name);
		free(models);
	}
	free(w);
	close(c->fd);
	c->fd = -1;
	return r;
}

/* Connected, or reconnects (lock held).  Runs the reconnect callback. */
int tdc_ensure_conn(struct tierd_client *c)
{
	struct tierd_acquisition *a;
	unsigned ok = 0, lost = 0;
	bool had = false;
	int r;

	if (c->fd >= 0)
		return 0;
	while (c->reading)
		pthread_cond_wait(&c->cond, &c->lock);
	if (c->fd >= 0)
		return 0;
	r = tdc_conn_open(c);
	if (r)
		return r;
	LIST_FOREACH(a, &c->acqs, link)
		had |= a->status == -ENOTCONN;
	if (!had)
		return 0;
	r = reestablish(c, &ok, &lost);
	if (r)
		return r;
	if (c->reconnect_fn) {
		tierd_reconnect_fn fn = c->reconnect_fn;
		void *arg = c->reconnect_arg;

		pthread_mutex_unlock(&c->lock);
		fn(c, ok, lost, arg);
		pthread_mutex_lock(&c->lock);
	}
	return 0;
}
