/* SPDX-License-Identifier: MIT */
/*
 * The service side of tierd-proto.h.  Every client socket is non-blocking:
 * answers that the socket cannot take now wait in the client's output queue,
 * and a client whose queue grows past SERVER_MAX_QUEUED is dropped, so a
 * client that stops reading never blocks the daemon.  A malformed message
 * closes that client only, with the reason logged and sent back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "server.h"
#include "smallfile.h"
#include "telemetry.h"

#define SERVER_MAX_QUEUED	(4u << 20)	/* bytes of answers a client may leave unread */
/* Packets per client per wakeup.  One: epoll is level-triggered and comes
 * back for the rest, which costs less than the recvmsg that would find
 * nothing after a lone request (the common case: a blocking acquire). */
#define SERVER_READ_BURST	1
#define SERVER_WARM_WINDOW	16		/* experts a warm keeps in flight */
#define SERVER_MAX_GROUPS	64
/* Tokens one report may carry: far above any real batch, and low enough that
 * the 64-bit totals (Prometheus counters) cannot be wrapped by a client. */
#define SERVER_MAX_TOKEN_REPORT	(1ull << 32)
#define SERVER_REFUSE_LOG_S	10		/* at most one refusal logged per this */
#define SERVER_MAX_REFUSED_CONNS 64		/* refused connections waiting for their HELLO */
#define SERVER_ACCEPT_RETRY_MS	200		/* accept paused at the fd limit: retry after */
#define SERVER_MAX_UIDS		4096		/* distinct uids connected at once */

/* Reasons refusals are counted by (metrics label: the errno's name). */
static const int refuse_errs[] = {
	EACCES, EPERM, EDQUOT, ENOSPC, ENOENT, E2BIG, ERANGE, EBUSY, EIO, ENOMEM, ESTALE, EUSERS,
	EPROTONOSUPPORT, 0,
};
static const char *const refuse_names[] = {
	"EACCES", "EPERM", "EDQUOT", "ENOSPC", "ENOENT", "E2BIG", "ERANGE", "EBUSY", "EIO", "ENOMEM",
	"ESTALE", "EUSERS", "EPROTONOSUPPORT", "other",
};
#define SERVER_NREASONS (sizeof(refuse_errs) / sizeof(refuse_errs[0]))
_Static_assert(sizeof(refuse_names) / sizeof(refuse_names[0]) == SERVER_NREASONS, "one name per errno");

struct outmsg {
	struct outmsg *next;
	size_t len;
	int nfds;
	int fds[TIERD_PROTO_MAX_POOLS];	/* engine's pool fds: not owned */
	uint8_t data[];
};

struct pin {
	struct engine_key key;
	uint32_t count;
};

struct pinset {
	struct pin *v;
	size_t n, cap;
	uint64_t total;
};

struct client;

/* What the connections of one uid hold together: bounds that a uid cannot
 * escape by opening more connections. */
struct uidacct {
	uid_t uid;
	unsigned conns;
	uint64_t held;			/* pins + experts in pending acquires */
	uint64_t queued;		/* bytes of unread answers */
};

enum req_kind {
	REQ_ACQUIRE,		/* pins go to the client */
	REQ_PIN,		/* operator pins: go to the server */
};

struct req_ent {
	struct acq_req *req;
	struct engine_key key;
	int err;
	bool done;
	uint32_t pool;
	uint64_t offset;
	const struct catalog_expert *expert;
};

struct acq_req {
	struct server *srv;
	struct client *c;		/* NULL once the client is gone */
	enum req_kind kind;
	uint64_t id;
	uint32_t n;
	uint32_t pending;		/* completions still to come, +1 while submitting */
	struct acq_req *next;
	struct req_ent ents[];
};

struct warm {
	struct server *srv;
	struct client *c;		/* NULL once the client is gone */
	uint64_t id;
	uint32_t model;
	const struct catalog *cat;
	uint32_t next, end;		/* catalog expert indexes still to issue */
	uint32_t inflight;
	uint64_t done, total, failed;
	int first_err;
	unsigned last_pct;
	bool pumping;			/* in warm_pump: hits complete synchronously */
	struct warm *link;
};

struct client {
	struct server *srv;
	uint32_t id;			/* energy attribution; never 0 or UINT32_MAX */
	int fd;
	struct loop_source *src;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t groups[SERVER_MAX_GROUPS];
	int ngroups;
	bool hello;
	bool may_map;			/* allowed every model: may see the whole pool */
	bool operator;
	bool *allowed;			/* per engine model */
	char name[65];
	struct pinset pins;
	uint32_t inflight;		/* experts of this client's pending acquires */
	/* Fetches this client's PREFETCH started that have not completed:
	 * bounded by [client] max_prefetch_inflight. */
	struct pinset prefetching;
	/* Refused at accept (max_clients, max_connections_per_uid): told why
	 * when its HELLO comes, then closed. */
	char refuse[160];
	struct acq_req *reqs;
	struct warm *warms;
	struct outmsg *out_head, *out_tail;
	size_t out_bytes;
	bool want_out;
	bool dead;			/* dropped, waiting for server_reap() */
	struct uidacct *acct;		/* NULL only while it is set up at accept */
	struct client *prev, *next;
};

struct server {
	struct loop *loop;
	struct engine *engine;
	const struct tierd_conf *conf;
	int listen_fd;
	char *bound_path;		/* unlinked at destroy; NULL when systemd owns it */
	struct loop_source *listen_src;
	struct client *clients;
	struct client *dead;
	unsigned nclients;
	uint32_t next_id;
	struct telemetry *tel;		/* NULL: no energy accounting, no METRICS */
	uint64_t instance;
	struct timespec started;
	struct pinset opins;		/* operator pins */
	char *pins_path;		/* STATE_DIR/pins; NULL: no state_dir, pins in memory only */
	uint64_t pins_save_errors;
	uint64_t queued_bytes;		/* answers waiting in every client's queue */
	unsigned nrefused_conns;	/* connections waiting to be told they are refused */
	uint64_t connections_refused;
	struct loop_source *accept_timer;	/* re-arms accept after EMFILE */
	bool accept_paused;
	uint64_t accept_failures;	/* since accepting last worked */
	struct timespec accept_logged;
	uint64_t max_pins;		/* [client] max_pins, or what "auto" gives */
	struct uidacct *accts;		/* by uid; entries of uids without connections reused */
	size_t naccts;
	/* Refusals: counted by reason; logged one line per REFUSE_LOG_S, with
	 * how many were not logged. */
	uint64_t refused_by[SERVER_NREASONS];
	uint64_t refused_unlogged;
	struct timespec refuse_logged;
	struct metrics_service ms;
	struct metrics_client *msc;
	size_t msc_cap;
	struct acq_req *orphans;	/* requests of departed clients, still pending */
	struct warm *orphan_warms;
	uint64_t *tokens;		/* per model */
	/* Routing hints per model, indexed like the catalog's experts: what the
	 * routers chose and with what weight (statistics, and the input of a
	 * predictive policy). */
	struct hint_stats {
		uint64_t *count;
		double *weight;
	} *hints;
	uint64_t counters[TIERD_STAT_COUNT];
	alignas(8) uint8_t rx[TIERD_PROTO_MAX_MSG];
	alignas(8) uint8_t tx[TIERD_PROTO_MAX_MSG];
};

/* ---- pin sets ---- */

static struct pin *pinset_find(struct pinset *ps, const struct engine_key *k)
{
	for (size_t i = 0; i < ps->n; i++)
		if (ps->v[i].key.model == k->model && ps->v[i].key.layer == k->layer &&
		    ps->v[i].key.expert == k->expert)
			return &ps->v[i];
	return NULL;
}

static int pinset_add(struct pinset *ps, const struct engine_key *k)
{
	struct pin *p = pinset_find(ps, k);

	if (!p) {
		if (ps->n == ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 16;
			struct pin *v = realloc(ps->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			ps->v = v;
			ps->cap = cap;
		}
		p = &ps->v[ps->n++];
		p->key = *k;
		p->count = 0;
	}
	p->count++;
	ps->total++;
	return 0;
}

/* -ENOENT when the set holds no pin on k. */
static int pinset_drop(struct pinset *ps, const struct engine_key *k)
{
	struct pin *p = pinset_find(ps, k);

	if (!p)
		return -ENOENT;
	ps->total--;
	if (--p->count == 0)
		*p = ps->v[--ps->n];
	return 0;
}

static int pinset_clone(struct pinset *dst, const struct pinset *src)
{
	*dst = *src;
	dst->v = NULL;
	if (!src->cap)
		return 0;
	dst->v = malloc(src->cap * sizeof(*dst->v));
	if (!dst->v)
		return -ENOMEM;
	memcpy(dst->v, src->v, src->n * sizeof(*dst->v));
	return 0;
}

static void pinset_free(struct pinset *ps)
{
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

static void pinset_release_all(struct pinset *ps, struct engine *e)
{
	for (size_t i = 0; i < ps->n; i++)
		for (uint32_t j = 0; j < ps->v[i].count; j++)
			engine_release(e, &ps->v[i].key);
	free(ps->v);
	memset(ps, 0, sizeof(*ps));
}

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

/* ---- operator pins on disk ---- */

/*
 * STATE_DIR/pins keeps the operator pins across restarts, by model name (the
 * index of a model can change with the config):
 *
 *   tierd-pins 1
 *   MODEL LAYER EXPERT
 *
 * one line per pin (an expert pinned twice appears twice).  A model name may
 * hold spaces: the last two fields are the numbers.
 */
#define PINS_HEADER "tierd-pins 1"

/*
 * Writes ps as STATE_DIR/pins.  Returns 0, or a negative errno with the
 * reason in why: the caller then leaves the pins as they were, so that what
 * the daemon holds and what survives a restart never differ.  Every failure
 * is logged and counted until a save succeeds.
 */
static int server_pins_save(struct server *s, const struct pinset *ps, char *why, size_t whylen)
{
	char *tmp = NULL;
	FILE *f = NULL;
	int fd = -1, err = 0;

	if (!s->pins_path)
		return 0;
	if (asprintf(&tmp, "%s.tmp", s->pins_path) < 0) {
		tmp = NULL;
		err = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	f = fdopen(fd, "w");
	if (!f) {
		err = -errno;
		goto out;
	}
	fd = -1;
	fprintf(f, "%s\n", PINS_HEADER);
	for (size_t i = 0; i < ps->n; i++)
		for (uint32_t j = 0; j < ps->v[i].count; j++)
			fprintf(f, "%s %u %u\n", engine_model_name(s->engine, ps->v[i].key.model),
				ps->v[i].key.layer, ps->v[i].key.expert);
	/* The rename must not expose a file whose data is not on disk yet. */
	if (fflush(f) || fsync(fileno(f))) {
		err = -errno;
		goto out;
	}
	if (fclose(f)) {
		f = NULL;
		err = -errno;
		goto out;
	}
	f = NULL;
	if (rename(tmp, s->pins_path))
		err = -errno;
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (err && tmp)
		unlink(tmp);
	free(tmp);
	if (err) {
		s->pins_save_errors++;
		snprintf(why, whylen, "cannot save operator pins to %s: %s", s->pins_path, strerror(-err));
		log_warn("%s", why);
	}
	return err;
}

/* Parses one line "MODEL LAYER EXPERT" in place: -EINVAL if malformed. */
static int pins_parse_line(char *line, const char **model, uint32_t *layer, uint32_t *expert)
{
	char *num[2];
	unsigned long v[2];
	char *end = line + strlen(line);

	for (int i = 1; i >= 0; i--) {
		while (end > line && end[-1] == ' ')
			end--;
		*end = '\0';
		char *sp = strrchr(line, ' ');

		if (!sp)
			return -EINVAL;
		num[i] = sp + 1;
		end = sp;
	}
	while (end > line && end[-1] == ' ')
		end--;
	*end = '\0';
	if (!*line)
		return -EINVAL;
	for (int i = 0; i < 2; i++) {
		char *e;

		if (num[i][0] < '0' || num[i][0] > '9')
			return -EINVAL;
		errno = 0;
		v[i] = strtoul(num[i], &e, 10);
		if (errno || *e || v[i] > UINT32_MAX)
			return -EINVAL;
	}
	*model = line;
	*layer = (uint32_t)v[0];
	*expert = (uint32_t)v[1];
	return 0;
}

struct pin_restore {
	int err;
	bool done;
};

static void pin_restore_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct pin_restore *r = arg;

	(void)info;
	r->err = err;
	r->done = true;
}

/* Pins one entry of the file; a negative errno when it is dropped. */
static int server_pins_restore_one(struct server *s, const char *where, const char *model,
				   uint32_t layer, uint32_t expert)
{
	struct pin_restore *r;
	int idx = engine_model_index(s->engine, model);
	struct engine_key k;
	int err;

	if (idx < 0) {
		log_warn("%s: model %s is not configured: pin dropped", where, model);
		return idx;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	k = (struct engine_key){ (uint32_t)idx, layer, expert };
	err = engine_acquire_for(s->engine, &k, ENGINE_DEMAND, ENGINE_OWNER_NONE, pin_restore_done, r);
	/* Start-up is not served yet: waiting here makes the pinned experts
	 * resident before the daemon says it is ready. */
	if (!err && !r->done) {
		int e = engine_drain(s->engine);

		if (!r->done) {
			/* The engine may still call back into r: leave it allocated. */
			log_err("%s: waiting for model %s layer %u expert %u: %s", where, model, layer,
				expert, strerror(e ? -e : EIO));
			return e ? e : -EIO;
		}
	}
	if (!err)
		err = r->err;
	free(r);
	if (!err) {
		err = pinset_add(&s->opins, &k);
		if (err)
			engine_release(s->engine, &k);
	}
	if (err)
		log_warn("%s: model %s layer %u expert %u: %s: pin dropped", where, model, layer, expert,
			 err == -ENOENT ? "no such expert" : strerror(-err));
	return err;
}

/* Reads STATE_DIR/pins and pins what it names.  Never fails the start. */
static void server_pins_load(struct server *s)
{
	char *text = NULL, *check = NULL, *line, *next, *bad = NULL;
	char msg[512];
	size_t len;
	unsigned lineno = 0, ok = 0, dropped = 0;
	int err;

	err = smallfile_read(s->pins_path, 16u << 20, &text, &len, msg, sizeof(msg));
	if (err == -ENOENT)
		return;
	if (err) {
		log_err("%s: operator pins not restored", msg);
		return;
	}
	/* Check the whole file first (on a copy: parsing cuts the lines): a
	 * malformed one pins nothing. */
	check = strdup(text);
	if (!check) {
		log_err("%s: out of memory: operator pins not restored", s->pins_path);
		goto out;
	}
	for (line = check; line && *line; line = next) {
		const char *model;
		uint32_t l, x;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		if (lineno == 1) {
			if (strcmp(line, PINS_HEADER)) {
				snprintf(msg, sizeof(msg), "%s:1: expected the header \"%s\"", s->pins_path,
					 PINS_HEADER);
				goto malformed;
			}
			continue;
		}
		if (pins_parse_line(line, &model, &l, &x)) {
			/* line was cut by the parser: quote the original. */
			const char *orig = text + (line - check);

			snprintf(msg, sizeof(msg), "%s:%u: expected \"MODEL LAYER EXPERT\", got \"%.*s\"",
				 s->pins_path, lineno, (int)strcspn(orig, "\n") > 80 ? 80 : (int)strcspn(orig, "\n"),
				 orig);
			goto malformed;
		}
	}
	if (lineno == 0) {
		snprintf(msg, sizeof(msg), "%s:1: empty file, expected the header \"%s\"", s->pins_path,
			 PINS_HEADER);
		goto malformed;
	}
	lineno = 0;
	for (line = text; line && *line; line = next) {
		const char *model;
		uint32_t l, x;
		char where[64];

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (++lineno == 1 || pins_parse_line(line, &model, &l, &x))
			continue;
		snprintf(where, sizeof(where), "pins:%u", lineno);
		if (server_pins_restore_one(s, where, model, l, x))
			dropped++;
		else
			ok++;
	}
	log_notice("%s: %u operator pins restored, %u dropped", s->pins_path, ok, dropped);
	if (dropped)
		server_pins_save(s, &s->opins, msg, sizeof(msg));
	goto out;
malformed:
	log_err("%s: operator pins not restored", msg);
	if (asprintf(&bad, "%s.bad", s->pins_path) < 0)
		bad = NULL;
	if (!bad || rename(s->pins_path, bad))
		log_err("%s: cannot move aside to %s.bad: %s", s->pins_path, s->pins_path,
			bad ? strerror(errno) : "out of memory");
	else
		log_warn("%s: moved aside to %s", s->pins_path, bad);
out:
	free(bad);
	free(check);
	free(text);
}

/* Finds STATE_DIR/pins and pins what it names.  Without a state_dir, pins
 * live in memory only; with one that is not writable, every pin change is
 * refused until it is (an operator pin that silently does not survive a
 * restart is worse than one refused). */
static void server_pins_init(struct server *s)
{
	const char *dir = s->conf->state_dir;

	if (!dir || !*dir) {
		log_warn("state_dir not set: operator pins will not survive a restart");
		return;
	}
	if (access(dir, W_OK | X_OK))
		log_warn("state_dir %s: %s: operator pin changes are refused until it is writable",
			 dir, strerror(errno));
	if (asprintf(&s->pins_path, "%s/pins", dir) < 0) {
		s->pins_path = NULL;
		log_warn("out of memory: operator pins will not survive a restart");
		return;
	}
	server_pins_load(s);
}

/* ---- output ---- */

static void client_drop(struct client *c, const char *why);
static void server_accept_resume(struct server *s);
static void server_fetch_done(void *arg, const struct engine_key *key, uint32_t owner, int err,
			      uint64_t bytes);

static int client_update_events(struct client *c)
{
	bool want = c->out_head != NULL;

	if (want == c->want_out)
		return 0;
	c->want_out = want;
	return loop_modify_fd(c->src, EPOLLIN | (want ? EPOLLOUT : 0));
}

static ssize_t send_packet(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int) * TIERD_PROTO_MAX_POOLS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds > 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The client dropped when every client's queues together reach [daemon]
 * max_queued_bytes: the one with the most unread answers of the uid with the
 * most, so that a uid's many connections cannot get another uid's dropped. */
static struct client *server_biggest_queue(struct server *s)
{
	struct uidacct *top = NULL;
	struct client *big = NULL;

	for (size_t i = 0; i < s->naccts; i++)
		if (s->accts[i].conns && (!top || s->accts[i].queued > top->queued))
			top = &s->accts[i];
	for (struct client *c = s->clients; c; c = c->next)
		if (c->acct == top && (!big || c->out_bytes > big->out_bytes))
			big = c;
	return big;
}

/* Sends now if nothing waits, else queues.  The client may be dropped (its
 * queue overflowed or its socket failed): returns -ECONNRESET then, and c
 * must not be used. */
static int client_send(struct client *c, const void *buf, long len, const int *fds, int nfds)
{
	struct server *s = c->srv;
	struct outmsg *m;

	if (c->dead)
		return -ECONNRESET;
	if (len < 0) {
		log_err("encoding an answer for pid %d failed: %s", (int)c->pid, strerror((int)-len));
		client_drop(c, "internal error: answer too large");
		return -ECONNRESET;
	}
	if (!c->out_head) {
		ssize_t n = send_packet(c->fd, buf, (size_t)len, fds, nfds);

		if (n == len)
			return 0;
		if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			client_drop(c, n >= 0 ? "short send" : strerror(errno));
			return -ECONNRESET;
		}
	}
	if (c->out_bytes + (size_t)len > SERVER_MAX_QUEUED) {
		s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
		client_drop(c, "output queue full: the client does not read its answers");
		return -ECONNRESET;
	}
	/* The bound across clients: many connections that each stay under
	 * their own bound must not grow the daemon without limit.  The
	 * biggest reader-who-does-not-read goes first. */
	while (s->queued_bytes + (uint64_t)len > s->conf->max_queued_bytes) {
		struct client *big = server_biggest_queue(s);
		char why[160];

		if (!big || !big->out_bytes)
			big = c;
		snprintf(why, sizeof(why), "%zu bytes of answers unread while all clients' queues reach "
			 "[daemon] max_queued_bytes (%llu)", big->out_bytes,
			 (unsigned long long)s->conf->max_queued_bytes);
		s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
		client_drop(big, why);
		if (big == c)
			return -ECONNRESET;
	}
	m = malloc(sizeof(*m) + (size_t)len);
	if (!m) {
		client_drop(c, "out of memory");
		return -ECONNRESET;
	}
	m->next = NULL;
	m->len = (size_t)len;
	m->nfds = nfds;
	if (nfds)
		memcpy(m->fds, fds, sizeof(int) * (size_t)nfds);
	memcpy(m->data, buf, (size_t)len);
	if (c->out_tail)
		c->out_tail->next = m;
	else
		c->out_head = m;
	c->out_tail = m;
	c->out_bytes += (size_t)len;
	c->acct->queued += (size_t)len;
	s->queued_bytes += (size_t)len;
	if (client_update_events(c)) {
		client_drop(c, "cannot watch the socket");
		return -ECONNRESET;
	}
	return 0;
}

static void client_flush(struct client *c)
{
	while (c->out_head) {
		struct outmsg *m = c->out_head;
		ssize_t n = send_packet(c->fd, m->data, m->len, m->fds, m->nfds);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n != (ssize_t)m->len) {
			client_drop(c, n < 0 ? strerror(errno) : "short send");
			return;
		}
		c->out_head = m->next;
		if (!c->out_head)
			c->out_tail = NULL;
		c->out_bytes -= m->len;
		c->acct->queued -= m->len;
		c->srv->queued_bytes -= m->len;
		free(m);
	}
	if (client_update_events(c))
		client_drop(c, "cannot watch the socket");
}

static unsigned refuse_reason(int err)
{
	unsigned i;

	for (i = 0; i < SERVER_NREASONS - 1; i++)
		if (refuse_errs[i] == -err)
			break;
	return i;
}

/*
 * Counts a refusal and logs it, at most one line per SERVER_REFUSE_LOG_S
 * (a client retrying a refused request in a loop must not fill the
 * journal): the line says how many went unlogged since the last one.
 */
static void server_note_refusal(struct server *s, const struct client *c, uint64_t id, int err,
				const char *reason)
{
	struct timespec now;

	s->refused_by[refuse_reason(err)]++;
	s->counters[TIERD_STAT_REFUSED]++;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (s->refuse_logged.tv_sec && now.tv_sec - s->refuse_logged.tv_sec < SERVER_REFUSE_LOG_S) {
		s->refused_unlogged++;
		log_debug("client pid %d uid %u: request %llu refused: %s", (int)c->pid, (unsigned)c->uid,
			  (unsigned long long)id, reason);
		return;
	}
	if (s->refused_unlogged)
		log_notice("client pid %d uid %u: request %llu refused: %s (and %llu other refusals in the "
			   "last %lld s: see tierd_requests_refused_total)", (int)c->pid, (unsigned)c->uid,
			   (unsigned long long)id, reason, (unsigned long long)s->refused_unlogged,
			   (long long)(now.tv_sec - s->refuse_logged.tv_sec));
	else
		log_notice("client pid %d uid %u: request %llu refused: %s", (int)c->pid, (unsigned)c->uid,
			   (unsigned long long)id, reason);
	s->refused_unlogged = 0;
	s->refuse_logged = now;
}

static int client_error(struct client *c, uint64_t id, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Answers ERROR and returns err, a negative errno (or -ECONNRESET if the
 * client was dropped meanwhile): never 0, so that "return client_error()"
 * stops the request it refuses.
 */
static int client_error(struct client *c, uint64_t id, int err, const char *fmt, ...)
{
	char reason[TIERD_PROTO_MAX_REASON + 1];
	va_list ap;
	int r;

	if (err >= 0) {
		/* A caller bug: still refuse, never carry on. */
		log_err("internal error: refusing request %llu with errno %d", (unsigned long long)id, err);
		err = -EIO;
	}
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	server_note_refusal(c->srv, c, id, err, reason);
	r = client_send(c, c->srv->tx,
			tierd_proto_encode_error(c->srv->tx, sizeof(c->srv->tx), id, err, reason), NULL, 0);
	return r ? r : err;
}

static int client_ok(struct client *c, uint64_t id, uint16_t flags, uint64_t v)
{
	if (flags & TIERD_PROTO_F_NOREPLY)
		return 0;
	return client_send(c, c->srv->tx,
			   tierd_proto_encode_u64(c->srv->tx, sizeof(c->srv->tx), TIERD_MSG_OK, id, v),
			   NULL, 0);
}

/*
 * [client] max_pins, or with "auto" (0) half of the pool's slots of the
 * largest expert: one client can never pin the whole pool, and what it may
 * pin still grows with the pool.
 */
static uint64_t server_max_pins(const struct server *s, const struct tierd_conf *conf)
{
	uint64_t pool = 0, slot = 0;

	if (conf->max_pins)
		return conf->max_pins;
	for (int i = 0; i < engine_pool_count(s->engine); i++)
		pool += engine_pool_size(s->engine, (uint32_t)i);
	for (int i = 0; i < engine_model_count(s->engine); i++) {
		const struct catalog *cat = engine_model_catalog(s->engine, (uint32_t)i);

		if (cat->slot_bytes > slot)
			slot = cat->slot_bytes;
	}
	if (!slot || pool / slot < 2)
		return 1;
	return pool / slot / 2;
}

/* ---- authorization ---- */

static bool id_in(const unsigned *ids, size_t n, unsigned id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/*
 * Root and the daemon's own user may use every model: they can read the
 * checkpoints and the daemon's memory anyway, so refusing them protects
 * nothing.  Others need their uid, primary gid or a supplementary gid in the
 * model's allow lists; a model without allow lists is open to whoever can
 * reach the socket (its file mode or the socket unit's SocketMode= decide).
 */
static bool client_may_use(const struct client *c, const struct conf_model *m)
{
	if (c->uid == 0 || c->uid == geteuid())
		return true;
	if (!m)
		return false;		/* not in the config any more: fail closed */
	if (!m->nallow_uid && !m->nallow_gid)
		return true;
	if (id_in((const unsigned *)m->allow_uid, m->nallow_uid, c->uid) ||
	    id_in((const unsigned *)m->allow_gid, m->nallow_gid, c->gid))
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (id_in((const unsigned *)m->allow_gid, m->nallow_gid, c->groups[i]))
			return true;
	return false;
}

static void client_authorize(struct client *c)
{
	struct server *s = c->srv;
	int n = engine_model_count(s->engine);

	c->may_map = true;
	for (int i = 0; i < n; i++) {
		const struct conf_model *m = conf_model_find(s->conf, engine_model_name(s->engine, (uint32_t)i));

		c->allowed[i] = client_may_use(c, m);
		/* One pool holds every model's experts: a client that may not read
		 * one of them must not map it at all. */
		if (!c->allowed[i])
			c->may_map = false;
	}
	c->operator = c->uid == 0 || c->uid == geteuid();
}

/* Validates keys against the catalog and the client's rights.  Returns 0, or
 * answers the ERROR itself and returns its negative errno (or -ECONNRESET):
 * the caller must then do nothing more for the request. */
static int client_check_keys(struct client *c, uint64_t id, const struct tierd_proto_key *keys,
			     uint32_t n, bool need_map)
{
	struct server *s = c->srv;
	int nmodels = engine_model_count(s->engine);

	for (uint32_t i = 0; i < n; i++) {
		const struct tierd_proto_key *k = &keys[i];
		const struct catalog *cat;

		if (k->model >= (uint32_t)nmodels)
			return client_error(c, id, -ENOENT, "model index %u: no such model (%d served)",
					    k->model, nmodels);
		if (!c->allowed[k->model]) {
			return client_error(c, id, -EACCES, "model %s: uid %u is not allowed to use it",
					    engine_model_name(s->engine, k->model), (unsigned)c->uid);
		}
		if (need_map && !c->may_map) {
			return client_error(c, id, -EACCES,
					    "the pool also holds models uid %u may not read: run a separate tierd for them",
					    (unsigned)c->uid);
		}
		cat = engine_model_catalog(s->engine, k->model);
		if (!cat || !catalog_find(cat, k->layer, k->expert))
			return client_error(c, id, -ENOENT, "model %s has no layer %u expert %u",
					    engine_model_name(s->engine, k->model), k->layer, k->expert);
	}
	return 0;
}

/* ---- acquire and operator pins ---- */

static void req_unlink(struct acq_req **head, struct acq_req *r)
{
	for (struct acq_req **p = head; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			return;
		}
	}
}

static void req_release_done(struct acq_req *r)
{
	for (uint32_t i = 0; i < r->n; i++)
		if (r->ents[i].done && !r->ents[i].err)
			engine_release(r->srv->engine, &r->ents[i].key);
}

static long encode_acquired(struct server *s, struct acq_req *r)
{
	struct tierd_proto_buf b;

	tierd_proto_begin(&b, s->tx, sizeof(s->tx), TIERD_MSG_ACQUIRED, 0, r->id);
	tierd_proto_put_u32(&b, r->n);
	tierd_proto_put_u32(&b, 0);
	for (uint32_t i = 0; i < r->n; i++) {
		const struct req_ent *e = &r->ents[i];
		const struct catalog_expert *x = e->expert;

		tierd_proto_put_u32(&b, e->key.model);
		tierd_proto_put_u32(&b, e->key.layer);
		tierd_proto_put_u32(&b, e->key.expert);
		tierd_proto_put_u32(&b, x->ntensors);
		for (uint32_t j = 0; j < x->ntensors; j++) {
			const struct catalog_tensor *t = &x->tensors[j];

			tierd_proto_put_u32(&b, e->pool);
			tierd_proto_put_u32(&b, (uint32_t)t->dtype);
			tierd_proto_put_u64(&b, e->offset + t->slot_offset);
			tierd_proto_put_u64(&b, t->length);
			tierd_proto_put_u32(&b, t->ndim);
			for (uint32_t d = 0; d < t->ndim && d < CATALOG_MAX_DIMS; d++)
				tierd_proto_put_u64(&b, t->shape[d]);
			tierd_proto_put_str(&b, t->name);
		}
	}
	return tierd_proto_end(&b);
}

/* The bytes handed to the client: what it copies from DDR into HBM. */
static void server_account_hbm(struct server *s, const struct client *c, const struct acq_req *r)
{
	if (!s->tel)
		return;
	for (uint32_t i = 0; i < r->n; i++)
		energy_account_hbm(telemetry_energy(s->tel), engine_model_name(s->engine, r->ents[i].key.model),
				   c->id, r->ents[i].expert->bytes);
}

/*
 * Who holds the pins of a full pool, for the ENOSPC answer: the operator's
 * pins and the clients with the most pins (per-client counts are in the
 * tierd_client_pins metric and `tierctl status`).
 */
static void server_pin_holders(const struct server *s, const struct client *asker, char *buf,
			       size_t len)
{
	const struct client *top[3] = { NULL, NULL, NULL };
	size_t off;
	int n;

	for (const struct client *c = s->clients; c; c = c->next) {
		if (!c->pins.total)
			continue;
		for (int i = 0; i < 3; i++) {
			if (!top[i] || c->pins.total > top[i]->pins.total) {
				for (int j = 2; j > i; j--)
					top[j] = top[j - 1];
				top[i] = c;
				break;
			}
		}
	}
	n = snprintf(buf, len, "the pool is full of pinned experts (%llu operator pins",
		     (unsigned long long)s->opins.total);
	off = n > 0 && (size_t)n < len ? (size_t)n : len;
	for (int i = 0; i < 3 && top[i] && off < len; i++) {
		/* Other users' processes are named to operators only. */
		if (asker->operator || asker->uid == top[i]->uid)
			n = snprintf(buf + off, len - off, "; pid %d uid %u \"%.32s\" holds %llu",
				     (int)top[i]->pid, (unsigned)top[i]->uid, top[i]->name,
				     (unsigned long long)top[i]->pins.total);
		else
			n = snprintf(buf + off, len - off, "; client %u uid %u holds %llu", top[i]->id,
				     (unsigned)top[i]->uid, (unsigned long long)top[i]->pins.total);
		off = n > 0 && (size_t)n < len - off ? off + (size_t)n : len;
	}
	if (off < len)
		snprintf(buf + off, len - off, "): release some, or see `tierctl status`");
}

static void req_finish(struct acq_req *r)
{
	struct server *s = r->srv;
	struct client *c = r->c;
	const struct req_ent *bad = NULL;
	char why[320];

	if (!c) {
		req_unlink(&s->orphans, r);
		free(r);
		return;
	}
	req_unlink(&c->reqs, r);
	if (r->kind == REQ_ACQUIRE) {
		c->inflight -= r->n;
		c->acct->held -= r->n;
	}
	for (uint32_t i = 0; i < r->n && !bad; i++)
		if (r->ents[i].err)
			bad = &r->ents[i];
	if (bad) {
		/* All or nothing: a batch answered in part would leave the client
		 * guessing which pins it holds. */
		const char *stale = bad->err == -ESTALE ?
				    engine_model_stale_reason(s->engine, bad->key.model) : NULL;

		req_release_done(r);
		if (bad->err == -ENOSPC)
			server_pin_holders(s, c, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "%s", stale ? stale : strerror(-bad->err));
		client_error(c, r->id, bad->err, "model %s layer %u expert %u: %s",
			     engine_model_name(s->engine, bad->key.model), bad->key.layer,
			     bad->key.expert, why);
		free(r);
		return;
	}
	if (r->kind == REQ_PIN) {
		/* Saved first, applied after: a pin the file cannot keep is
		 * refused, not held in memory only. */
		struct pinset next;
		int err = pinset_clone(&next, &s->opins);

		for (uint32_t i = 0; i < r->n && !err; i++)
			err = pinset_add(&next, &r->ents[i].key);
		if (!err)
			err = server_pins_save(s, &next, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "out of memory recording pins");
		if (err) {
			pinset_free(&next);
			req_release_done(r);
			client_error(c, r->id, err, "%s: nothing pinned", why);
		} else {
			pinset_free(&s->opins);
			s->opins = next;
			client_ok(c, r->id, 0, r->n);
		}
		free(r);
		return;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		if (pinset_add(&c->pins, &r->ents[i].key)) {
			/* Keep the books right: undo what this batch added. */
			for (uint32_t j = 0; j < i; j++)
				pinset_drop(&c->pins, &r->ents[j].key);
			req_release_done(r);
			client_error(c, r->id, -ENOMEM, "out of memory recording pins");
			free(r);
			return;
		}
	}
	{
		long len = encode_acquired(s, r);

		if (len == -EMSGSIZE) {
			for (uint32_t i = 0; i < r->n; i++)
				pinset_drop(&c->pins, &r->ents[i].key);
			req_release_done(r);
			client_error(c, r->id, -E2BIG,
				     "the answer to %u experts exceeds %u bytes: acquire fewer at once",
				     r->n, TIERD_PROTO_MAX_MSG);
		} else {
			server_account_hbm(s, c, r);
			c->acct->held += r->n;
			/* Dropped on a failed send: its pins go with it. */
			client_send(c, s->tx, len, NULL, 0);
		}
	}
	free(r);
}

static void req_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct req_ent *e = arg;
	struct acq_req *r = e->req;

	e->done = true;
	e->err = err;
	if (!err) {
		e->pool = info->pool;
		e->offset = info->offset;
		e->expert = info->expert;
		if (!r->c)
			engine_release(r->srv->engine, &e->key);
	}
	if (--r->pending == 0)
		req_finish(r);
}

static void client_acquire(struct client *c, const struct tierd_msg_hdr *h,
			   const struct tierd_proto_key *keys, uint32_t n, enum req_kind kind)
{
	struct server *s = c->srv;
	struct acq_req *r;

	if (kind == REQ_ACQUIRE) {
		if (c->inflight + n > s->conf->max_inflight) {
			client_error(c, h->request_id, -EDQUOT,
				     "%u experts in flight with this batch, [client] max_inflight is %u",
				     c->inflight + n, s->conf->max_inflight);
			return;
		}
		/* An explicit max_pins bounds each connection; "auto" bounds
		 * all the connections of a uid together, so that no uid pins
		 * more than half of the pool by opening more of them. */
		if (s->conf->max_pins && c->pins.total + c->inflight + n > s->max_pins) {
			client_error(c, h->request_id, -EDQUOT,
				     "would hold %llu pins, [client] max_pins is %llu",
				     (unsigned long long)(c->pins.total + c->inflight + n),
				     (unsigned long long)s->max_pins);
			return;
		}
		if (!s->conf->max_pins && c->acct->held + n > s->max_pins) {
			client_error(c, h->request_id, -EDQUOT,
				     "uid %u would hold %llu pins over its connections, [client] max_pins is "
				     "%llu (auto: half the pool's slots per uid)", (unsigned)c->uid,
				     (unsigned long long)(c->acct->held + n), (unsigned long long)s->max_pins);
			return;
		}
	}
	r = calloc(1, sizeof(*r) + n * sizeof(r->ents[0]));
	if (!r) {
		client_error(c, h->request_id, -ENOMEM, "out of memory");
		return;
	}
	r->srv = s;
	r->c = c;
	r->kind = kind;
	r->id = h->request_id;
	r->n = n;
	r->pending = n + 1;
	r->next = c->reqs;
	c->reqs = r;
	if (kind == REQ_ACQUIRE) {
		c->inflight += n;
		c->acct->held += n;
		s->counters[TIERD_STAT_ACQUIRES] += n;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct req_ent *e = &r->ents[i];
		int err;

		e->req = r;
		e->key = (struct engine_key){ keys[i].model, keys[i].layer, keys[i].expert };
		err = engine_acquire_for(s->engine, &e->key, ENGINE_DEMAND, c->id, req_done, e);
		if (err) {
			e->done = true;
			e->err = err;
			r->pending--;
		}
	}
	if (--r->pending == 0)
		req_finish(r);
}

static void client_release(struct client *c, const struct tierd_msg_hdr *h,
			   const struct tierd_proto_key *keys, uint32_t n, struct pinset *ps)
{
	struct server *s = c->srv;
	struct pinset next;
	char why[320];
	int err;

	/* Check first, so that a bad batch releases nothing. */
	for (uint32_t i = 0; i < n; i++) {
		struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };
		struct pin *p = pinset_find(ps, &k);
		uint32_t same = 0;

		for (uint32_t j = 0; j < n; j++)
			same += keys[j].model == k.model && keys[j].layer == k.layer &&
				keys[j].expert == k.expert;
		if (!p || p->count < same) {
			client_error(c, h->request_id, -ENOENT,
				     "model %u layer %u expert %u: not pinned (%s)", k.model, k.layer,
				     k.expert, ps == &s->opins ? "operator pins" : "by this client");
			return;
		}
	}
	if (ps == &s->opins) {
		/* Operator pins: saved first, applied after (see req_finish). */
		err = pinset_clone(&next, ps);
		if (err) {
			client_error(c, h->request_id, err, "out of memory: nothing unpinned");
			return;
		}
		for (uint32_t i = 0; i < n; i++) {
			struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };

			pinset_drop(&next, &k);
		}
		err = server_pins_save(s, &next, why, sizeof(why));
		if (err) {
			pinset_free(&next);
			client_error(c, h->request_id, err, "%s: nothing unpinned", why);
			return;
		}
		pinset_free(ps);
		*ps = next;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };

		if (ps != &s->opins)
			pinset_drop(ps, &k);
		engine_release(s->engine, &k);
	}
	if (ps == &c->pins)
		c->acct->held -= n;
	s->counters[TIERD_STAT_RELEASES] += n;
	client_ok(c, h->request_id, h->flags, n);
}

/*
 * PREFETCH: fetch without pinning.  Each client may have at most [client]
 * max_prefetch_inflight fetches of its own prefetches in flight (a batch
 * over that is refused whole, before anything starts), and a prefetch evicts
 * at most [pool] max_evict_per_alloc experts for its slot: a client cannot
 * flush the pool of what others use by prefetching.  A prefetch the pool
 * has no room for is skipped, not an error: it was a guess.
 */
static void client_prefetch(struct client *c, const struct tierd_msg_hdr *h,
			    const struct tierd_proto_key *keys, uint32_t n)
{
	struct server *s = c->srv;
	uint32_t skipped = 0;

	if (c->prefetching.total + n > s->conf->max_prefetch_inflight) {
		client_error(c, h->request_id, -EDQUOT,
			     "%llu prefetches in flight with this batch, [client] max_prefetch_inflight is %u",
			     (unsigned long long)(c->prefetching.total + n), s->conf->max_prefetch_inflight);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };
		bool started;
		int r = engine_prefetch_started(s->engine, &k, c->id, &started);

		/* Skipped, not an error: the others of the batch may have
		 * started, and an ERROR must not follow work carried out. */
		if (r) {
			if (r != -ENOSPC && r != -EDQUOT)
				log_warn("prefetch of model %s layer %u expert %u: %s: skipped",
					 engine_model_name(s->engine, k.model), k.layer, k.expert, strerror(-r));
			skipped++;
			continue;
		}
		if (started && pinset_add(&c->prefetching, &k)) {
			/* Not counted against the budget: the fetch runs anyway. */
			log_warn("client pid %d: out of memory counting prefetches", (int)c->pid);
		}
	}
	s->counters[TIERD_STAT_PREFETCHES] += n - skipped;
	client_ok(c, h->request_id, h->flags, n - skipped);
}

/* ---- warm ---- */

static void warm_pump(struct warm *w);

static void warm_unlink(struct warm **head, struct warm *w)
{
	for (struct warm **p = head; *p; p = &(*p)->link) {
		if (*p == w) {
			*p = w->link;
			return;
		}
	}
}

static void warm_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct warm *w = arg;
	struct server *s = w->srv;
	const struct catalog_expert *x = NULL;

	w->inflight--;
	w->done++;
	if (err) {
		w->failed++;
		if (!w->first_err)
			w->first_err = err;
	} else {
		x = info->expert;
		struct engine_key k = { w->model, x->layer, x->expert };

		/* Warm loads, it does not hold: the pin only kept the slot while
		 * it was read. */
		engine_release(s->engine, &k);
	}
	/* A hit completes inside engine_acquire, inside warm_pump's loop: the
	 * loop goes on by itself, and recursing would grow the stack by one
	 * frame per resident expert. */
	if (!w->pumping)
		warm_pump(w);
}

/* Issues more work, reports progress, finishes. */
static void warm_pump(struct warm *w)
{
	struct server *s = w->srv;

	w->pumping = true;
	while (w->c && w->next < w->end && w->inflight < SERVER_WARM_WINDOW) {
		const struct catalog_expert *x = &w->cat->experts[w->next++];
		struct engine_key k = { w->model, x->layer, x->expert };
		int err;

		w->inflight++;
		err = engine_acquire(s->engine, &k, ENGINE_PREFETCH, warm_done, w);
		if (err) {
			/* Refused up front: no callback will come. */
			w->inflight--;
			w->done++;
			w->failed++;
			if (!w->first_err)
				w->first_err = err;
		}
	}
	w->pumping = false;
	if (w->c && w->total) {
		unsigned pct = (unsigned)(w->done * 100 / w->total);

		/* If the client is dropped here, w becomes an orphan (w->c NULL)
		 * and is finished below like one. */
		if (pct != w->last_pct && w->done < w->total) {
			w->last_pct = pct;
			client_send(w->c, s->tx,
				    tierd_proto_encode_progress(s->tx, sizeof(s->tx), w->id, w->done, w->total),
				    NULL, 0);
		}
	}
	if (w->inflight)
		return;
	if (w->c && w->next < w->end)
		return;
	if (w->c) {
		struct client *c = w->c;

		warm_unlink(&c->warms, w);
		if (w->failed)
			client_error(c, w->id, w->first_err, "%llu of %llu experts could not be loaded: %s",
				     (unsigned long long)w->failed, (unsigned long long)w->total,
				     strerror(-w->first_err));
		else
			client_ok(c, w->id, 0, w->done);
	} else {
		warm_unlink(&s->orphan_warms, w);
	}
	free(w);
}

static void client_warm(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_warm *m)
{
	struct server *s = c->srv;
	const struct catalog *cat;
	struct warm *w;

	if (m->model >= (uint32_t)engine_model_count(s->engine)) {
		client_error(c, h->request_id, -ENOENT, "model index %u: no such model", m->model);
		return;
	}
	cat = engine_model_catalog(s->engine, m->model);
	w = calloc(1, sizeof(*w));
	if (!w) {
		client_error(c, h->request_id, -ENOMEM, "out of memory");
		return;
	}
	w->srv = s;
	w->c = c;
	w->id = h->request_id;
	w->model = m->model;
	w->cat = cat;
	/* Experts are sorted by (layer, expert): the layers form one range. */
	w->next = cat->nexperts;
	w->end = 0;
	for (uint32_t i = 0; i < cat->nexperts; i++) {
		uint32_t L = cat->experts[i].layer;

		if (L >= m->first_layer && L <= m->last_layer) {
			if (w->next == cat->nexperts)
				w->next = i;
			w->end = i + 1;
		}
	}
	if (w->next >= w->end) {
		free(w);
		client_error(c, h->request_id, -ENOENT, "model %s has no experts in layers %u..%u",
			     engine_model_name(s->engine, m->model), m->first_layer, m->last_layer);
		return;
	}
	w->total = w->end - w->next;
	w->link = c->warms;
	c->warms = w;
	log_info("warming model %s: %llu experts for pid %d", engine_model_name(s->engine, m->model),
		 (unsigned long long)w->total, (int)c->pid);
	warm_pump(w);
}

/* ---- requests ---- */

static int client_welcome(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_hello *m)
{
	struct server *s = c->srv;
	struct tierd_msg_welcome *w = calloc(1, sizeof(*w));
	struct tierd_proto_buf b;
	int nmodels = engine_model_count(s->engine);
	int npools = engine_pool_count(s->engine);
	int fds[TIERD_PROTO_MAX_POOLS];
	int nfds;

	if (!w)
		return -ENOMEM;
	snprintf(c->name, sizeof(c->name), "%s", m->name);
	c->allowed = calloc((size_t)nmodels + 1, sizeof(bool));
	if (!c->allowed) {
		free(w);
		return -ENOMEM;
	}
	client_authorize(c);
	c->hello = true;
	w->instance = s->instance;
	w->nmodels = (uint32_t)nmodels;
	w->npools = c->may_map ? (uint32_t)npools : 0;
	for (uint32_t i = 0; i < w->npools; i++) {
		w->pool_size[i] = engine_pool_size(s->engine, i);
		fds[i] = engine_pool_fd(s->engine, i);
	}
	for (int i = 0; i < nmodels; i++) {
		const struct catalog *cat = engine_model_catalog(s->engine, (uint32_t)i);
		struct tierd_proto_model *pm = &w->models[i];

		pm->name = engine_model_name(s->engine, (uint32_t)i);
		pm->flags = c->allowed[i] ? TIERD_MODEL_F_ALLOWED : 0;
		pm->nlayers = cat->nlayers;
		pm->experts_per_layer = cat->experts_per_layer;
		pm->top_k = cat->top_k;
		pm->nexperts = cat->nexperts;
		pm->slot_bytes = cat->slot_bytes;
	}
	tierd_proto_begin(&b, s->tx, sizeof(s->tx), TIERD_MSG_WELCOME, 0, h->request_id);
	tierd_proto_put_welcome(&b, w);
	nfds = (int)w->npools;
	free(w);
	log_info("client %u: pid %d uid %u gid %u \"%s\" connected (%s)", c->id, (int)c->pid,
		 (unsigned)c->uid, (unsigned)c->gid, c->name, c->may_map ? "pool mapped" : "no pool access");
	return client_send(c, s->tx, tierd_proto_end(&b), fds, nfds);
}

static void client_stats(struct client *c, uint64_t id)
{
	uint64_t v[TIERD_STAT_COUNT];

	server_get_stats(c->srv, v);
	client_send(c, c->srv->tx, tierd_proto_encode_stats(c->srv->tx, sizeof(c->srv->tx), id, v,
							      TIERD_STAT_COUNT), NULL, 0);
}

/* EVICT: all or nothing, so that an error never comes after part of the
 * batch was carried out. */
static void client_evict(struct client *c, const struct tierd_msg_hdr *h,
			 const struct tierd_proto_key *keys, uint32_t n)
{
	struct server *s = c->srv;

	for (uint32_t i = 0; i < n; i++) {
		struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };
		int err = engine_evict_check(s->engine, &k);

		for (uint32_t j = 0; j < i && !err; j++)
			if (keys[j].model == k.model && keys[j].layer == k.layer && keys[j].expert == k.expert)
				err = -EINVAL;
		if (err) {
			client_error(c, h->request_id, err, "model %s layer %u expert %u: %s: nothing evicted",
				     engine_model_name(s->engine, k.model), k.layer, k.expert,
				     err == -EBUSY ? "pinned or being fetched" : err == -ENOENT ? "not resident" :
				     "named twice in the batch");
			return;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		struct engine_key k = { keys[i].model, keys[i].layer, keys[i].expert };

		engine_evict(s->engine, &k);
	}
	client_ok(c, h->request_id, h->flags, n);
}

/* METRICS: a fresh sample (probes read, energy advanced), rendered and sent
 * in chunks.  Open to every client, like STATS: the HTTP endpoint, when on,
 * serves the same text to anyone on the host. */
static int client_metrics(struct client *c, uint64_t id, const struct tierd_msg_metrics *m)
{
	struct server *s = c->srv;
	char *text = NULL;
	size_t len = 0;
	uint64_t off = 0;
	int r;

	if (m->format != TIERD_METRICS_PROMETHEUS)
		return client_error(c, id, -EOPNOTSUPP, "metrics format %u: unknown (0: Prometheus text)",
				    m->format);
	if (!s->tel)
		return client_error(c, id, -ENOTSUP, "this tierd runs without telemetry");
	telemetry_refresh(s->tel, s->engine, telemetry_now_ns());
	r = telemetry_render(s->tel, &text, &len);
	if (r)
		return client_error(c, id, r, "rendering metrics: %s", strerror(-r));
	/* The chunks are sent at once: what the socket cannot take waits in
	 * the client's queue, whose bound would drop the client instead. */
	_Static_assert(SERVER_MAX_QUEUED <= TIERD_PROTO_MAX_METRICS, "the queue is the tighter bound");
	if (len > SERVER_MAX_QUEUED) {
		free(text);
		return client_error(c, id, -E2BIG, "metrics of %zu bytes exceed what one answer may carry (%u)",
				    len, SERVER_MAX_QUEUED);
	}
	do {
		size_t n;
		long pl = tierd_proto_encode_metrics_data(s->tx, sizeof(s->tx), id, text, len, off, &n);

		r = client_send(c, s->tx, pl, NULL, 0);
		off += n;
	} while (!r && off < len);
	free(text);
	return r;
}

/* A protocol fault: log, tell the client why, close it.  The daemon goes on. */
static void client_malformed(struct client *c, const struct tierd_msg_hdr *h, int err, const char *why)
{
	char reason[256];

	snprintf(reason, sizeof(reason), "malformed %s message: %s",
		 h ? tierd_proto_type_name(h->type) : "", why);
	log_warn("client pid %d uid %u: %s: closing the connection", (int)c->pid, (unsigned)c->uid, reason);
	c->srv->counters[TIERD_STAT_PROTOCOL_ERRORS]++;
	/* Best effort, not queued: the connection is closing. */
	send_packet(c->fd, c->srv->tx,
		    (size_t)tierd_proto_encode_error(c->srv->tx, sizeof(c->srv->tx),
						     h ? h->request_id : 0, err, reason), NULL, 0);
	client_drop(c, reason);
}

/* Handles one packet.  Returns -ECONNRESET when the client was dropped. */
static int client_handle(struct client *c, const uint8_t *buf, size_t len)
{
	struct server *s = c->srv;
	struct tierd_msg_hdr h;
	const uint8_t *p = buf + sizeof(h);
	const struct tierd_proto_key *keys;
	const char *why = NULL;
	uint32_t n;
	int r;

	r = tierd_proto_decode_hdr(buf, len, &h, &why);
	if (r == -EPROTO) {
		char reason[160];

		snprintf(reason, sizeof(reason),
			 "client speaks protocol %u.%u, tierd speaks %u.%u: refused",
			 h.major, h.minor, TIERD_PROTO_MAJOR, TIERD_PROTO_MINOR);
		log_warn("client pid %d uid %u: %s", (int)c->pid, (unsigned)c->uid, reason);
		s->counters[TIERD_STAT_REFUSED]++;
		s->refused_by[refuse_reason(-EPROTONOSUPPORT)]++;
		send_packet(c->fd, s->tx, (size_t)tierd_proto_encode_error(s->tx, sizeof(s->tx),
									h.request_id, -EPROTONOSUPPORT, reason),
			    NULL, 0);
		client_drop(c, "protocol version mismatch");
		return -ECONNRESET;
	}
	if (r) {
		client_malformed(c, NULL, r, why);
		return -ECONNRESET;
	}
	if (!h.request_id) {
		client_malformed(c, &h, -EBADMSG, "request id 0 is reserved");
		return -ECONNRESET;
	}
	if (c->refuse[0]) {
		/* Refused at accept: told now, then closed. */
		send_packet(c->fd, s->tx, (size_t)tierd_proto_encode_error(s->tx, sizeof(s->tx), h.request_id,
									  -EUSERS, c->refuse), NULL, 0);
		client_drop(c, c->refuse);
		return -ECONNRESET;
	}
	if (!c->hello && h.type != TIERD_MSG_HELLO) {
		client_malformed(c, &h, -EBADMSG, "the first message must be HELLO");
		return -ECONNRESET;
	}
	s->counters[TIERD_STAT_REQUESTS]++;
	switch ((enum tierd_msg_type)h.type) {
	case TIERD_MSG_HELLO: {
		struct tierd_msg_hello m;

		if (c->hello)
			why = "HELLO sent twice";
		else if (!tierd_proto_decode_hello(p, h.length, &m, &why)) {
			r = client_welcome(c, &h, &m);
			if (r == -ENOMEM) {
				client_drop(c, "out of memory");
				return -ECONNRESET;
			}
			return r;
		}
		break;
	}
	case TIERD_MSG_PREFETCH:
	case TIERD_MSG_ACQUIRE:
	case TIERD_MSG_RELEASE:
	case TIERD_MSG_EVICT:
	case TIERD_MSG_PIN:
	case TIERD_MSG_UNPIN:
		if (tierd_proto_decode_keys(p, h.length, &keys, &n, &why))
			break;
		if (h.type == TIERD_MSG_RELEASE) {
			client_release(c, &h, keys, n, &c->pins);
			return 0;
		}
		if (h.type == TIERD_MSG_EVICT || h.type == TIERD_MSG_PIN || h.type == TIERD_MSG_UNPIN) {
			if (!c->operator) {
				return client_error(c, h.request_id, -EPERM,
						    "%s is for operators (root or the daemon's user), not uid %u",
						    tierd_proto_type_name(h.type), (unsigned)c->uid);
			}
			if (h.type == TIERD_MSG_UNPIN) {
				client_release(c, &h, keys, n, &s->opins);
				return 0;
			}
		}
		/* A prefetch moves experts into the pool others read from and
		 * may evict theirs: only for clients that may read the pool. */
		r = client_check_keys(c, h.request_id, keys, n,
				      h.type == TIERD_MSG_ACQUIRE || h.type == TIERD_MSG_PREFETCH);
		if (r)
			return r;
		if (h.type == TIERD_MSG_EVICT) {
			client_evict(c, &h, keys, n);
		} else if (h.type == TIERD_MSG_PREFETCH) {
			client_prefetch(c, &h, keys, n);
		} else {
			client_acquire(c, &h, keys, n, h.type == TIERD_MSG_PIN ? REQ_PIN : REQ_ACQUIRE);
		}
		return 0;
	case TIERD_MSG_ROUTING_HINT: {
		struct tierd_msg_hint m;

		if (tierd_proto_decode_hint(p, h.length, &m, &why))
			break;
		if (m.model >= (uint32_t)engine_model_count(s->engine) || !c->allowed[m.model])
			return client_error(c, h.request_id, -ENOENT, "routing hint for model index %u: not usable",
					    m.model);
		{
			const struct catalog *cat = engine_model_catalog(s->engine, m.model);
			struct hint_stats *hs = &s->hints[m.model];

			for (uint32_t i = 0; i < m.count; i++) {
				const struct catalog_expert *x = catalog_find(cat, m.layer, m.hints[i].expert);

				/* A hint about an expert the checkpoint lacks is the router's
				 * business, not a protocol fault: not counted per expert. */
				if (x && hs->count) {
					hs->count[x - cat->experts]++;
					hs->weight[x - cat->experts] += m.hints[i].weight;
				}
			}
		}
		s->counters[TIERD_STAT_HINTS] += m.count;
		return client_ok(c, h.request_id, h.flags, m.count);
	}
	case TIERD_MSG_TOKEN_REPORT: {
		struct tierd_msg_tokens m;

		if (tierd_proto_decode_tokens(p, h.length, &m, &why))
			break;
		if (m.model >= (uint32_t)engine_model_count(s->engine) || !c->allowed[m.model])
			return client_error(c, h.request_id, -ENOENT, "token report for model index %u: not usable",
					    m.model);
		if (m.tokens > SERVER_MAX_TOKEN_REPORT)
			return client_error(c, h.request_id, -ERANGE,
					    "token report of %llu tokens: at most %llu in one report",
					    (unsigned long long)m.tokens, SERVER_MAX_TOKEN_REPORT);
		s->tokens[m.model] += m.tokens;
		s->counters[TIERD_STAT_TOKENS] += m.tokens;
		if (s->tel)
			energy_account_tokens(telemetry_energy(s->tel), engine_model_name(s->engine, m.model),
					      c->id, m.tokens);
		return client_ok(c, h.request_id, h.flags, m.tokens);
	}
	case TIERD_MSG_STATS:
		if (h.length) {
			why = "STATS carries no payload";
			break;
		}
		client_stats(c, h.request_id);
		return 0;
	case TIERD_MSG_METRICS: {
		struct tierd_msg_metrics m;

		if (tierd_proto_decode_metrics(p, h.length, &m, &why))
			break;
		return client_metrics(c, h.request_id, &m);
	}
	case TIERD_MSG_WARM: {
		struct tierd_msg_warm m;

		if (tierd_proto_decode_warm(p, h.length, &m, &why))
			break;
		if (!c->operator) {
			return client_error(c, h.request_id, -EPERM, "WARM is for operators, not uid %u",
					    (unsigned)c->uid);
		}
		client_warm(c, &h, &m);
		return 0;
	}
	case TIERD_MSG_WELCOME:
	case TIERD_MSG_ERROR:
	case TIERD_MSG_OK:
	case TIERD_MSG_ACQUIRED:
	case TIERD_MSG_STATS_REPLY:
	case TIERD_MSG_PROGRESS:
	case TIERD_MSG_METRICS_DATA:
		why = "a daemon-to-client message sent to the daemon";
		break;
	}
	client_malformed(c, &h, -EBADMSG, why ? why : "unknown message type");
	return -ECONNRESET;
}

static void client_read(struct client *c)
{
	struct server *s = c->srv;

	for (int i = 0; i < SERVER_READ_BURST; i++) {
		struct iovec iov = { .iov_base = s->rx, .iov_len = sizeof(s->rx) };
		union {
			char buf[CMSG_SPACE(sizeof(int) * 8)];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
		};
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			client_drop(c, strerror(errno));
			return;
		}
		if (n == 0) {
			client_drop(c, NULL);
			return;
		}
		if (mh.msg_controllen) {
			/* Clients never send descriptors: close what came and go. */
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
				if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
					for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
						int fd;

						memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
						close(fd);
					}
			client_malformed(c, NULL, -EBADMSG, "ancillary data (file descriptors) sent to the daemon");
			return;
		}
		if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			client_malformed(c, NULL, -EMSGSIZE, "message larger than the protocol allows");
			return;
		}
		client_handle(c, s->rx, (size_t)n);
		if (c->dead)
			return;
	}
}

/* Dropped clients are freed here, when no callback can still hold them. */
static void server_reap(struct server *s)
{
	while (s->dead) {
		struct client *c = s->dead;

		s->dead = c->next;
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

static void client_drop(struct client *c, const char *why)
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
	/* Its energy is kept, folded into "departed"; its id is never reused. */
	if (s->tel)
		energy_client_forget(telemetry_energy(s->tel), c->id);
	/* Requests still waiting for the engine: their completions release what
	 * they pinned; pins already obtained are released now. */
	while (c->reqs) {
		struct acq_req *r = c->reqs;

		c->reqs = r->next;
		req_release_done(r);
		r->c = NULL;
		r->next = s->orphans;
		s->orphans = r;
	}
	while (c->warms) {
		struct warm *w = c->warms;

		c->warms = w->link;
		w->c = NULL;
		w->link = s->orphan_warms;
		s->orphan_warms = w;
	}
	while (c->out_head) {
		struct outmsg *m = c->out_head;

		c->out_head = m->next;
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
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nclients--;
	c->dead = true;
	c->next = s->dead;
	s->dead = c;
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

static void server_accept_retry(struct loop_source *src, void *arg)
{
	server_accept_resume(arg);
}

static void server_accept(struct loop_source *src, int fd, uint32_t events, void *arg)
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
		if (!c) {
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		/* 0 is "nobody in particular", UINT32_MAX "departed". */
		if (++s->next_id == ENERGY_CLIENT_DEPARTED)
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

				for (struct client *o = s->clients; o; o = o->next)
					if (o->refuse[0])
						old = o;
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
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->nclients++;
	}
}

/* Binds conf->socket_path.  A socket file left by a dead daemon is replaced;
 * one a live daemon answers on is not. */
static int server_bind(struct server *s, const struct tierd_conf *conf)
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

/* What the protocol's string decoder accepts. */
static bool name_ok(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n > 0 && n <= TIERD_PROTO_MAX_NAME;
}

int server_create(struct server **out, struct loop *loop, struct engine *engine,
		  const struct tierd_conf *conf, int listen_fd)
{
	struct server *s;
	int nmodels = engine_model_count(engine);
	int err;

	if (nmodels < 0 || (unsigned)nmodels > TIERD_PROTO_MAX_MODELS ||
	    engine_pool_count(engine) > (int)TIERD_PROTO_MAX_POOLS) {
		log_err("the protocol carries at most %u models and %u pools", TIERD_PROTO_MAX_MODELS,
			TIERD_PROTO_MAX_POOLS);
		return -E2BIG;
	}
	/* What the protocol cannot carry is refused here, naming it, rather
	 * than sent to clients that would reject it as malformed. */
	for (int i = 0; i < nmodels; i++) {
		const struct catalog *cat = engine_model_catalog(engine, (uint32_t)i);
		const char *name = engine_model_name(engine, (uint32_t)i);

		if (!name_ok(name)) {
			log_err("model name \"%.40s\": longer than %u bytes, empty or with control characters",
				name, TIERD_PROTO_MAX_NAME);
			return -EINVAL;
		}
		for (uint32_t j = 0; j < cat->nexperts; j++) {
			const struct catalog_expert *x = &cat->experts[j];

			if (x->ntensors > TIERD_PROTO_MAX_TENSORS) {
				log_err("model %s layer %u expert %u: %u tensors, the protocol carries %u",
					name, x->layer, x->expert, x->ntensors, TIERD_PROTO_MAX_TENSORS);
				return -E2BIG;
			}
			for (uint32_t k = 0; k < x->ntensors; k++) {
				if (!name_ok(x->tensors[k].name)) {
					log_err("model %s: tensor name \"%.40s\": longer than %u bytes, empty or with control characters",
						name, x->tensors[k].name, TIERD_PROTO_MAX_NAME);
					return -EINVAL;
				}
			}
		}
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->engine = engine;
	s->conf = conf;
	s->listen_fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &s->started);
	{
		struct timespec rt;

		/* Distinct across restarts: clients detect a new daemon by it. */
		clock_gettime(CLOCK_REALTIME, &rt);
		s->instance = ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) ^
			      ((uint64_t)getpid() << 48);
	}
	s->tokens = calloc((size_t)nmodels + 1, sizeof(*s->tokens));
	s->hints = calloc((size_t)nmodels + 1, sizeof(*s->hints));
	if (!s->tokens || !s->hints) {
		err = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < nmodels; i++) {
		uint32_t n = engine_model_catalog(engine, (uint32_t)i)->nexperts;

		s->hints[i].count = calloc((size_t)n + 1, sizeof(uint64_t));
		s->hints[i].weight = calloc((size_t)n + 1, sizeof(double));
		if (!s->hints[i].count || !s->hints[i].weight) {
			err = -ENOMEM;
			goto fail;
		}
	}
	if (listen_fd >= 0) {
		int fl = fcntl(listen_fd, F_GETFL);

		s->listen_fd = listen_fd;
		if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK)) {
			err = -errno;
			goto fail;
		}
	} else {
		err = server_bind(s, conf);
		if (err)
			goto fail;
	}
	err = loop_add_fd(loop, s->listen_fd, EPOLLIN, server_accept, s, &s->listen_src);
	if (err)
		goto fail;
	err = loop_add_timer(loop, 0, 0, server_accept_retry, s, &s->accept_timer);
	if (!err)
		err = loop_timer_stop(s->accept_timer);
	if (err)
		goto fail;
	s->max_pins = server_max_pins(s, conf);
	/* Always: prefetch budgets are settled when fetches end. */
	engine_set_fetch_observer(engine, server_fetch_done, s);
	server_pins_init(s);
	*out = s;
	return 0;
fail:
	server_destroy(s);
	return err;
}

void server_destroy(struct server *s)
{
	if (!s)
		return;
	engine_set_fetch_observer(s->engine, NULL, NULL);
	if (s->tel)
		telemetry_set_service_source(s->tel, NULL, NULL);
	while (s->clients)
		client_drop(s->clients, "tierd is stopping");
	server_reap(s);
	/* Requests of departed clients whose fetches never completed: the
	 * engine is drained (or being destroyed) by now. */
	while (s->orphans) {
		struct acq_req *r = s->orphans;

		s->orphans = r->next;
		free(r);
	}
	while (s->orphan_warms) {
		struct warm *w = s->orphan_warms;

		s->orphan_warms = w->link;
		free(w);
	}
	pinset_release_all(&s->opins, s->engine);
	free(s->pins_path);
	free(s->msc);
	free(s->accts);
	loop_remove(s->accept_timer);
	loop_remove(s->listen_src);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->bound_path) {
		unlink(s->bound_path);
		free(s->bound_path);
	}
	free(s->tokens);
	for (int i = 0; s->hints && i < engine_model_count(s->engine); i++) {
		free(s->hints[i].count);
		free(s->hints[i].weight);
	}
	free(s->hints);
	free(s);
}

/*
 * A reload may take rights away.  A client that loses a model, or the right
 * to map the pool, is dropped: its pins go, and a new connection is
 * authorised under the new lists (it gets no pool descriptor if it may not
 * read every model).  What a dropped process mapped before stays mapped in
 * it until it unmaps or exits: the kernel offers no way to take a mapping
 * back, so an operator revoking a running process's access also stops it.
 */
void server_set_conf(struct server *s, const struct tierd_conf *conf)
{
	int n = engine_model_count(s->engine);
	bool *was = calloc((size_t)n + 1, sizeof(bool));
	struct client *c, *next;

	s->conf = conf;
	s->max_pins = server_max_pins(s, conf);
	if (!was) {
		/* Without the old rights nothing tells who lost some: drop
		 * every client not allowed everything now (fail closed). */
		log_err("reload: out of memory: clients not allowed every model are dropped");
	}
	for (c = s->clients; c; c = next) {
		bool had_map = c->may_map;
		int lost = -1;

		next = c->next;
		if (!c->hello)
			continue;
		if (was)
			memcpy(was, c->allowed, (size_t)n * sizeof(bool));
		client_authorize(c);
		for (int i = 0; i < n && lost < 0; i++)
			if ((!was || was[i]) && !c->allowed[i])
				lost = i;
		if (lost >= 0 || (had_map && !c->may_map)) {
			char why[TIERD_PROTO_MAX_NAME + 96];

			if (lost >= 0)
				snprintf(why, sizeof(why), "access to model %s withdrawn by a reload",
					 engine_model_name(s->engine, (uint32_t)lost));
			else
				snprintf(why, sizeof(why), "pool access withdrawn by a reload");
			s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
			/* next stays valid: a drop unlinks only c. */
			client_drop(c, why);
		}
	}
	free(was);
}

void server_get_stats(const struct server *s, uint64_t *v)
{
	struct engine_stats st;
	struct timespec now;
	uint64_t pool_bytes = 0;
	int npools = engine_pool_count(s->engine);

	memcpy(v, s->counters, sizeof(s->counters));
	engine_get_stats(s->engine, &st);
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (int i = 0; i < npools; i++)
		pool_bytes += engine_pool_size(s->engine, (uint32_t)i);
	v[TIERD_STAT_UPTIME_MS] = (uint64_t)(now.tv_sec - s->started.tv_sec) * 1000 +
				  (uint64_t)((now.tv_nsec - s->started.tv_nsec) / 1000000);
	v[TIERD_STAT_PID] = (uint64_t)getpid();
	v[TIERD_STAT_CLIENTS] = s->nclients;
	v[TIERD_STAT_MODELS] = (uint64_t)engine_model_count(s->engine);
	v[TIERD_STAT_POOLS] = (uint64_t)npools;
	v[TIERD_STAT_POOL_BYTES] = pool_bytes;
	v[TIERD_STAT_BYTES_RESIDENT] = st.bytes_resident;
	v[TIERD_STAT_PINS] = st.pins;
	v[TIERD_STAT_OPERATOR_PINS] = s->opins.total;
	v[TIERD_STAT_HITS] = st.hits;
	v[TIERD_STAT_MISSES] = st.misses;
	v[TIERD_STAT_ACQUIRES_NOSPACE] = st.refused;
	v[TIERD_STAT_EVICTIONS] = st.evictions;
	v[TIERD_STAT_FETCHES] = st.fetches;
	v[TIERD_STAT_FETCH_ERRORS] = st.fetch_errors;
	v[TIERD_STAT_CANCELLED] = st.cancelled;
	v[TIERD_STAT_BYTES_READ] = st.bytes_read;
}

unsigned server_client_count(const struct server *s)
{
	return s->nclients;
}

uint64_t server_model_tokens(const struct server *s, uint32_t model)
{
	return model < (uint32_t)engine_model_count(s->engine) ? s->tokens[model] : 0;
}

int server_hint_stats(const struct server *s, uint32_t model, uint32_t layer, uint32_t expert,
		      uint64_t *count, double *weight_sum)
{
	const struct catalog *cat;
	const struct catalog_expert *x;

	if (model >= (uint32_t)engine_model_count(s->engine))
		return -ENOENT;
	cat = engine_model_catalog(s->engine, model);
	x = catalog_find(cat, layer, expert);
	if (!x)
		return -ENOENT;
	*count = s->hints[model].count[x - cat->experts];
	*weight_sum = s->hints[model].weight[x - cat->experts];
	return 0;
}

/* Fetches end here (engine observer): bytes read from SSD for their owner. */
static void server_fetch_done(void *arg, const struct engine_key *key, uint32_t owner, int err,
			      uint64_t bytes)
{
	struct server *s = arg;
	uint32_t who = owner;
	struct client *c = NULL;

	if (who != ENGINE_OWNER_NONE) {
		c = s->clients;
		while (c && c->id != who)
			c = c->next;
	}
	/* A prefetch of this client's has ended: room in its budget. */
	if (c)
		pinset_drop(&c->prefetching, key);
	if (!s->tel || !bytes)
		return;
	/* Bytes read are spent even when the fetch failed.  An owner gone
	 * since it asked is folded already: charge "departed". */
	if (who != ENGINE_OWNER_NONE && !c)
		who = ENERGY_CLIENT_DEPARTED;
	energy_account_fetch(telemetry_energy(s->tel), engine_model_name(s->engine, key->model), who, bytes);
}

/* The service's counters for the metrics, refreshed at each render. */
static const struct metrics_service *server_metrics(void *arg)
{
	struct server *s = arg;
	size_t n = 0;
	if (s->nclients > s->msc_cap) {
		struct metrics_client *v = realloc(s->msc, s->nclients * sizeof(*v));

		if (v) {
			s->msc = v;
			s->msc_cap = s->nclients;
		}
	}
	for (const struct client *c = s->clients; c && n < s->msc_cap; c = c->next) {
		if (!c->hello)
			continue;
		s->msc[n++] = (struct metrics_client){ c->id, (int32_t)c->pid, (uint32_t)c->uid,
						       c->pins.total, c->name };
	}
	s->ms = (struct metrics_service){
		.nreasons = SERVER_NREASONS, .reason = refuse_names, .refused = s->refused_by,
		.pins_save_errors = s->pins_save_errors,
		.clients_dropped = s->counters[TIERD_STAT_CLIENTS_DROPPED],
		.connections_refused = s->connections_refused,
		.nclients = n, .clients = s->msc,
	};
	return &s->ms;
}

void server_set_telemetry(struct server *s, struct telemetry *t)
{
	if (s->tel)
		telemetry_set_service_source(s->tel, NULL, NULL);
	s->tel = t;
	if (t)
		telemetry_set_service_source(t, server_metrics, s);
}

void server_count_reload(struct server *s)
{
	s->counters[TIERD_STAT_RELOADS]++;
}
