/* SPDX-License-Identifier: MIT */
/*
 * Connections: the listening socket bound, connections accepted (peer
 * credentials, connection limits, per-uid accounting) and dropped (pins
 * released, pending work orphaned), dropped clients reaped, and accept
 * paused at the fd limit.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "server-int.h"
#include "telemetry.h"

#define SERVER_MAX_REFUSED_CONNS 64		/* refused connections waiting for their HELLO */
#define SERVER_ACCEPT_RETRY_MS	200		/* accept paused at the fd limit: retry after */
#define SERVER_MAX_UIDS		4096		/* distinct uids connected at once */

/* ---- per-uid accounting ---- */

static struct uidacct *server_acct(struct server *s, uid_t uid)
{
	struct uidacct *free_slot = NULL, *v;

	for (size_t i = 0; i < s->naccts; i++) {
		if (s->accts[i].uid == uid && s->accts[i].conns)
			return &s->accts[i];
		if (!s->accts[i].conns && !free_slot)
			free_slot = &s->accts[i];
	}
	if (free_slot) {
		*free_slot = (struct uidacct){ .uid = uid };
		return free_slot;
	}
	/* Clients point into the array: it grows in place or not at all. */
	if (s->naccts == SERVER_MAX_UIDS)
		return NULL;
	if (!s->accts) {
		v = calloc(SERVER_MAX_UIDS, sizeof(*v));
		if (!v)
			return NULL;
		s->accts = v;
	}
	s->accts[s->naccts] = (struct uidacct){ .uid = uid };
	return &s->accts[s->naccts++];
}

/* ---- clients by id ---- */

/*
 * The engine names the owner of each fetch it completes by client id.  Ids
 * are handed out in sequence, so the id modulo the bucket count spreads the
 * clients evenly without hashing.
 */
struct client *server_client_by_id(const struct server *s, uint32_t id)
{
	struct client *c;

	if (!s->nbyid)
		return NULL;
	LIST_FOREACH(c, &s->byid[id & (s->nbyid - 1)], byid)
		if (c->id == id)
			return c;
	return NULL;
}

/* Room for n clients at one per bucket.  Only the first table is needed:
 * when a larger one cannot be had, the chains grow longer, still right. */
static int server_byid_reserve(struct server *s, size_t n)
{
	size_t nb = s->nbyid ? s->nbyid : 64;
	struct client_bucket *v;
	struct client *c;

	if (n <= s->nbyid)
		return 0;
	while (nb < n)
		nb *= 2;
	v = calloc(nb, sizeof(*v));
	if (!v)
		return s->byid ? 0 : -ENOMEM;
	free(s->byid);
	s->byid = v;
	s->nbyid = nb;
	TAILQ_FOREACH(c, &s->clients, link)
		LIST_INSERT_HEAD(&s->byid[c->id & (nb - 1)], c, byid);
	return 0;
}

/* ---- connections ---- */

static void server_accept_resume(struct server *s);

/* Dropped clients are freed here, when no callback can still hold them. */
void server_reap(struct server *s)
{
	struct client *c;

	while ((c = TAILQ_FIRST(&s->dead))) {
		TAILQ_REMOVE(&s->dead, c, link);
		free(c->allowed);
		free(c);
	}
}

static void client_event(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct client *c = arg;

	server_reap(c->srv);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		client_read(c);
	if (!c->dead && (events & EPOLLOUT))
		client_flush(c);
}

void client_drop(struct client *c, const char *why)
{
	struct server *s = c->srv;
	uint64_t pins = c->pins.total;

	if (c->dead)
		return;
	if (why)
		log_notice("client pid %d uid %u dropped: %s", (int)c->pid, (unsigned)c->uid, why);
	else
		log_info("client pid %d uid %u disconnected", (int)c->pid, (unsigned)c->uid);
	if (pins)
		log_info("released %llu pins of pid %d", (unsigned long long)pins, (int)c->pid);
	c->acct->held -= pins;
	pinset_release_all(&c->pins, s->engine);
	client_fast_close(c);
	if (s->obs && s->obs->client_gone)
		s->obs->client_gone(s->obs_arg, c->id);
	/* Requests still waiting for the engine: their completions release what
	 * they pinned; pins already obtained are released now. */
	while (!LIST_EMPTY(&c->reqs)) {
		struct acq_req *r = LIST_FIRST(&c->reqs);

		LIST_REMOVE(r, link);
		req_release_done(r);
		r->c = NULL;
		LIST_INSERT_HEAD(&s->orphans, r, link);
	}
	while (!LIST_EMPTY(&c->warms)) {
		struct warm *w = LIST_FIRST(&c->warms);

		LIST_REMOVE(w, link);
		w->c = NULL;
		LIST_INSERT_HEAD(&s->orphan_warms, w, link);
	}
	while (!STAILQ_EMPTY(&c->out)) {
		struct outmsg *m = STAILQ_FIRST(&c->out);

		STAILQ_REMOVE_HEAD(&c->out, link);
		s->queued_bytes -= m->len;
		c->acct->queued -= m->len;
		free(m);
	}
	c->out_bytes = 0;
	c->acct->held -= c->pins.total + c->inflight;
	c->acct->conns--;
	pinset_free(&c->prefetching);
	if (c->refuse[0])
		s->nrefused_conns--;
	loop_remove(c->src);
	close(c->fd);
	/* An fd is free again. */
	server_accept_resume(s);
	TAILQ_REMOVE(&s->clients, c, link);
	LIST_REMOVE(c, byid);
	s->nclients--;
	c->dead = true;
	TAILQ_INSERT_HEAD(&s->dead, c, link);
}

/*
 * At the fd limit accept fails while the connection stays in the backlog,
 * and level-triggered epoll would wake again at once: stop watching the
 * listener, and try again when a client goes away or after a short time.
 * Logged at most once a minute, and once when accepting works again.
 */
static void server_accept_pause(struct server *s, int err)
{
	struct timespec now;

	/* One refused connection per episode, not per retry. */
	if (!s->accept_failures++)
		s->connections_refused++;
	if (s->accept_paused)
		return;
	/* Without a timer to wake it, a paused listener would wait for a
	 * client to leave, perhaps for ever: keep polling then. */
	if (loop_timer_set(s->accept_timer, SERVER_ACCEPT_RETRY_MS, SERVER_ACCEPT_RETRY_MS))
		log_err("accept: cannot arm the retry timer: polling the listener at the fd limit");
	else if (!loop_modify_fd(s->listen_src, 0))
		s->accept_paused = true;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (s->accept_logged.tv_sec && now.tv_sec - s->accept_logged.tv_sec < 60)
		return;
	s->accept_logged = now;
	log_warn("accept: %s: new connections wait%s (%llu failed attempts)", strerror(err),
		 err == EMFILE || err == ENFILE ?
		 "; raise the open files limit: LimitNOFILE= in the unit, or ulimit -n" : "",
		 (unsigned long long)s->accept_failures);
}

static void server_accept_resume(struct server *s)
{
	if (!s->accept_paused)
		return;
	/* Still paused if the listener cannot be watched: the timer retries. */
	if (loop_modify_fd(s->listen_src, EPOLLIN))
		return;
	s->accept_paused = false;
	loop_timer_stop(s->accept_timer);
}

void server_accept_retry(struct loop_source *src, void *arg)
{
	server_accept_resume(arg);
}

void server_accept(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct server *s = arg;

	server_reap(s);
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct client *c;
		int cfd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				server_accept_pause(s, errno);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				 errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		if (s->accept_failures) {
			log_notice("accepting connections again, after %llu failed attempts",
				   (unsigned long long)s->accept_failures);
			s->accept_failures = 0;
		}
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
			log_warn("SO_PEERCRED: %s: refusing the connection", strerror(errno));
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c || server_byid_reserve(s, s->nclients + 1)) {
			close(cfd);
			free(c);
			continue;
		}
		STAILQ_INIT(&c->out);
		c->srv = s;
		c->fd = cfd;
		/* 0 is "nobody in particular", UINT32_MAX "departed". */
		if (++s->next_id == SERVER_CLIENT_DEPARTED)
			s->next_id = 1;
		c->id = s->next_id;
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->gid = cred.gid;
		len = sizeof(c->groups);
		/* Supplementary groups count for allow_gid (Linux >= 4.13). */
		if (!getsockopt(cfd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len))
			c->ngroups = (int)(len / sizeof(gid_t));
		c->acct = server_acct(s, c->uid);
		if (!c->acct) {
			log_warn("uid %u: %u uids connected already: refusing the connection",
				 (unsigned)c->uid, SERVER_MAX_UIDS);
			close(cfd);
			free(c);
			continue;
		}
		/* Over a connection limit: the client is told why in answer to
		 * its HELLO (an ERROR sent before it would be lost when its
		 * HELLO meets a closed socket).  Few such wait at once. */
		if (s->nclients - s->nrefused_conns >= s->conf->max_clients)
			snprintf(c->refuse, sizeof(c->refuse), "tierd serves %u clients, [daemon] max_clients",
				 s->conf->max_clients);
		else if (c->acct->conns >= s->conf->max_connections_per_uid)
			snprintf(c->refuse, sizeof(c->refuse),
				 "uid %u has %u connections, [client] max_connections_per_uid", (unsigned)c->uid,
				 c->acct->conns);
		if (c->refuse[0]) {
			s->connections_refused++;
			s->refused_by[refuse_reason(-EUSERS)]++;
			s->counters[TIERD_STAT_REFUSED]++;
			/* Few wait for their HELLO at once: the one waiting
			 * longest (the list's last) makes room, so that
			 * connections that never say HELLO cannot hold every
			 * place. */
			if (s->nrefused_conns >= SERVER_MAX_REFUSED_CONNS) {
				struct client *old = NULL;

				TAILQ_FOREACH_REVERSE(old, &s->clients, client_list, link)
					if (old->refuse[0])
						break;
				if (old)
					client_drop(old, "refused, and no HELLO came to be told why");
			}
			s->nrefused_conns++;
		}
		if (loop_add_fd(s->loop, cfd, EPOLLIN, client_event, c, &c->src)) {
			s->nrefused_conns -= c->refuse[0] != 0;
			close(cfd);
			free(c);
			continue;
		}
		c->acct->conns++;
		TAILQ_INSERT_HEAD(&s->clients, c, link);
		LIST_INSERT_HEAD(&s->byid[c->id & (s->nbyid - 1)], c, byid);
		s->nclients++;
	}
}

/* Binds conf->socket_path.  A socket file left by a dead daemon is replaced;
 * one a live daemon answers on is not. */
int server_bind(struct server *s, const struct tierd_conf *conf)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	bool bound = false;
	int fd, err;

	if (strlen(conf->socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, conf->socket_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int probe;
		bool live;
		struct stat st;

		if (errno != EADDRINUSE)
			goto fail;
		/* Non-blocking: a live daemon with a full backlog answers EAGAIN
		 * instead of holding this start up. */
		probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (probe < 0)
			goto fail;
		live = !connect(probe, (struct sockaddr *)&sa, sizeof(sa)) || errno == EAGAIN;
		close(probe);
		if (live) {
			close(fd);
			log_err("%s: another tierd is listening there", conf->socket_path);
			return -EADDRINUSE;
		}
		if (lstat(conf->socket_path, &st) || !S_ISSOCK(st.st_mode)) {
			close(fd);
			log_err("%s: exists and is not a socket", conf->socket_path);
			return -EEXIST;
		}
		unlink(conf->socket_path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
			goto fail;
	}
	bound = true;
	if (chmod(conf->socket_path, conf->socket_mode))
		goto fail;
	if (listen(fd, 128))
		goto fail;
	s->bound_path = strdup(conf->socket_path);
	if (!s->bound_path) {
		errno = ENOMEM;
		goto fail;
	}
	s->listen_fd = fd;
	return 0;
fail:
	err = -errno;
	log_err("%s: %s", conf->socket_path, strerror(-err));
	/* A socket file this call made and nobody listens on would only
	 * make the next start think it stale. */
	if (bound)
		unlink(conf->socket_path);
	close(fd);
	return err;
}
