/* SPDX-License-Identifier: MIT */
/*
 * Inside the service: the structures its parts share and the functions one
 * part calls in another.  Not installed, not used outside tierd/service:
 * server.h is the service's API.
 *
 *   server.c    create, destroy, set_conf, statistics, fetch observer, metrics
 *   pinset.c    pin sets (pinset.h)
 *   opins.c     operator pins kept in STATE_DIR/pins
 *   outq.c      answers: the output queue and its bounds, ERROR and OK, refusals
 *   auth.c      authorisation, and rights revoked by a reload
 *   acquire.c   ACQUIRE, PIN, RELEASE, UNPIN, PREFETCH, EVICT
 *   warm.c      WARM
 *   dispatch.c  reading and dispatching requests, HELLO, STATS, METRICS, hints, tokens
 *   conn.c      bind, accept (and its pause at the fd limit), drop, reap, per-uid accounting
 *
 * Everything runs on the daemon's loop thread.
 */
#ifndef TIERD_SERVER_INT_H
#define TIERD_SERVER_INT_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <time.h>

#include "metrics.h"
#include "pinset.h"
#include "server.h"

#define SERVER_MAX_QUEUED	(4u << 20)	/* bytes of answers a client may leave unread */
#define SERVER_MAX_GROUPS	64
/* Reasons refusals are counted by (metrics label: the errno's name), the
 * last "other"; refuse_errs and refuse_names are in outq.c. */
#define SERVER_NREASONS		14

struct outmsg {
	STAILQ_ENTRY(outmsg) link;
	size_t len;
	int nfds;
	int fds[TIERD_PROTO_MAX_FDS];	/* the engine's and the pin area's: not owned */
	uint8_t data[];
};

struct client;
struct residency_area;

/* A key of a batch and its position there. */
struct key_pos {
	struct tierd_key key;
	uint32_t pos;
};

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
	struct tierd_key key;
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
	LIST_ENTRY(acq_req) link;	/* in its client's reqs, or the server's orphans */
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
	LIST_ENTRY(warm) link;		/* in its client's warms, or the server's orphan_warms */
};

enum client_node_how {
	CLIENT_NODE_DEFAULT,		/* unknown: pool 0 */
	CLIENT_NODE_SAID,		/* in its HELLO */
	CLIENT_NODE_CPUS,		/* its CPU affinity */
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
	/* numa.c: its NUMA node (-1: unknown), how it was found, its pool. */
	int node;
	enum client_node_how node_how;
	uint32_t pool;
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
	LIST_HEAD(, acq_req) reqs;
	LIST_HEAD(, warm) warms;
	STAILQ_HEAD(, outmsg) out;	/* answers the socket could not take yet */
	size_t out_bytes;
	bool want_out;
	bool dead;			/* dropped, waiting for server_reap() */
	struct uidacct *acct;		/* NULL only while it is set up at accept */
	TAILQ_ENTRY(client) link;	/* in the server's clients, or once dropped its dead */
	LIST_ENTRY(client) byid;	/* in its bucket of the server's byid */
	struct residency_area *fast;	/* its pin area (fastpath.c); NULL: none */
};

struct server {
	struct loop *loop;
	struct engine *engine;
	const struct tierd_conf *conf;
	int listen_fd;
	char *bound_path;		/* unlinked at destroy; NULL when systemd owns it */
	struct loop_source *listen_src;
	TAILQ_HEAD(client_list, client) clients;	/* the newest first */
	struct client_list dead;
	/* Clients by id (the engine names a fetch's owner by it): nbyid
	 * buckets, a power of two, at least nclients. */
	LIST_HEAD(client_bucket, client) *byid;
	size_t nbyid;
	unsigned nclients;
	uint32_t next_id;
	struct telemetry *tel;		/* NULL: no METRICS */
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
	LIST_HEAD(, acq_req) orphans;	/* requests of departed clients, still pending */
	LIST_HEAD(, warm) orphan_warms;
	struct loop_source *fast_timer;	/* sweeps pin areas while there are some */
	unsigned nfast;
	const struct server_observer *obs;	/* NULL: nobody listens */
	void *obs_arg;
	uint64_t counters[TIERD_STAT_COUNT];
	struct key_pos batch[TIERD_PROTO_MAX_BATCH];	/* acquire.c: a batch sorted */
	alignas(8) uint8_t rx[TIERD_PROTO_MAX_MSG];
	alignas(8) uint8_t tx[TIERD_PROTO_MAX_MSG];
};

/* ---- numa.c ---- */

extern const char *const client_node_how[];

/* Tells the engine clients' pools, when there are several. */
void server_numa_init(struct server *s);
/* Sets c->node, node_how and pool from its HELLO's node (or its CPUs). */
void client_numa_choose(struct client *c, int32_t said);

/* ---- outq.c ---- */

extern const int refuse_errs[];
extern const char *const refuse_names[];

ssize_t send_packet(int fd, const void *buf, size_t len, const int *fds, int nfds);
int client_send(struct client *c, const void *buf, long len, const int *fds, int nfds);
void client_flush(struct client *c);
unsigned refuse_reason(int err);
int client_error(struct client *c, uint64_t id, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int client_ok(struct client *c, uint64_t id, uint16_t flags, uint64_t v);

/* ---- opins.c ---- */

int server_pins_save(struct server *s, const struct pinset *ps, char *why, size_t whylen);
void server_pins_init(struct server *s);

/* ---- auth.c ---- */

void client_authorize(struct client *c);
int client_check_keys(struct client *c, uint64_t id, const struct tierd_key *keys,
		      uint32_t n, bool need_map);
void server_reauthorize(struct server *s);

/* ---- acquire.c ---- */

void req_release_done(struct acq_req *r);
void client_acquire(struct client *c, const struct tierd_msg_hdr *h,
		    const struct tierd_key *keys, uint32_t n, enum req_kind kind);
void client_release(struct client *c, const struct tierd_msg_hdr *h,
		    const struct tierd_key *keys, uint32_t n, struct pinset *ps);
void client_prefetch(struct client *c, const struct tierd_msg_hdr *h,
		     const struct tierd_key *keys, uint32_t n);
void client_evict(struct client *c, const struct tierd_msg_hdr *h,
		  const struct tierd_key *keys, uint32_t n);

/* ---- warm.c ---- */

void client_warm(struct client *c, const struct tierd_msg_hdr *h, const struct tierd_msg_warm *m);

/* ---- dispatch.c ---- */

void client_read(struct client *c);

/* ---- fastpath.c: the no-system-call path's areas ---- */

struct tierd_msg_welcome;
int server_fast_init(struct server *s);
void server_fast_fini(struct server *s);
/* A 1.3 client that may map the pool gets a pin area: its fields in w and
 * two fds appended to fds (the table's, the area's). */
int client_fast_open(struct client *c, uint16_t minor, struct tierd_msg_welcome *w, int *fds, int *nfds);
/* After WELCOME: the area's descriptor is closed once it went out (one fd
 * per client less); one still queued keeps it until the client leaves. */
void client_fast_sent(struct client *c);
void client_fast_close(struct client *c);
/* Reads every area's counters into the statistics and the policy; drops
 * clients whose area pins more than max_pins experts. */
void server_fast_sweep(struct server *s);

/* ---- conn.c ---- */

void server_reap(struct server *s);
void client_drop(struct client *c, const char *why);
void server_accept(struct loop_source *src, int fd, uint32_t events, void *arg);
void server_accept_retry(struct loop_source *src, void *arg);
struct client *server_client_by_id(const struct server *s, uint32_t id);
int server_bind(struct server *s, const struct tierd_conf *conf);

#endif
