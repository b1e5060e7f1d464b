/* SPDX-License-Identifier: MIT */
/*
 * libtierd-client's private header: the client's state and the calls its
 * source files make to each other.  Not installed.
 *
 * The internal functions are hidden from the shared library's dynamic
 * symbol table (the version script exports only the public names as well);
 * their tdc_ prefix keeps them out of an application's way when it links
 * the static library, where hidden symbols are still global.
 */
#ifndef TIERD_CLIENT_INT_H
#define TIERD_CLIENT_INT_H

#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "tierd-client.h"
#include "tierd-fastpath.h"
#include "tierd-proto.h"

#define EXPORT __attribute__((visibility("default")))
#define HIDDEN __attribute__((visibility("hidden")))
/* Overridable so that the white-box test (tests/test-client.c) need not wait. */
#ifndef CONNECT_TIMEOUT_MS
#define CONNECT_TIMEOUT_MS	5000
#endif
/* Calls without a timeout argument, and sends that find the socket full. */
#ifndef REQUEST_TIMEOUT_MS
#define REQUEST_TIMEOUT_MS	TIERD_CLIENT_DEFAULT_TIMEOUT_MS
#endif


struct mapping {
	void *base;
	uint64_t size;
	unsigned refs;
};

/* Requests: c->pending waits for an answer, c->completed for its callback;
 * a request is in one of the two at most (one link serves both). */
SLIST_HEAD(pending_list, pending);

struct pending {
	SLIST_ENTRY(pending) link;
	uint64_t id;
	uint16_t answer;		/* the message type that answers it (or ERROR) */
	bool warm;			/* PROGRESS may come before the answer */
	bool done;
	bool abandoned;			/* the waiter timed out: clean up on arrival */
	int err;
	char reason[TIERD_PROTO_MAX_REASON + 1];
	uint64_t value;
	struct tierd_msg_acquired *acq;
	struct tierd_msg_stats stats;
	bool progress_new;
	uint64_t progress_done, progress_total;
	char *mbuf;			/* METRICS: the text so far (NUL-terminated) */
	uint64_t mtotal, mgot;
	size_t nkeys;			/* acquire: what was asked, to check the answer */
	struct tierd_key *keys;
	tierd_acquire_fn fn;		/* async acquire */
	void *arg;
	struct tierd_acquisition *result;
};

/* Arrays of an acquisition that a reconnection replaced, and the old
 * daemon's pool mappings its tensors point into: the application may still
 * hold those pointers (a GPU copy in flight, a Python memoryview), so they
 * live until release. */
struct retired {
	SLIST_ENTRY(retired) link;
	struct tierd_msg_acquired *raw;
	struct tierd_expert *experts;
	struct tierd_tensor *tensors;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS];
};

struct tierd_acquisition {
	LIST_ENTRY(tierd_acquisition) link;	/* in c->acqs */
	int status;
	size_t n;
	struct tierd_key *keys;
	char **model_names;		/* per expert: models are found again by name */
	struct tierd_msg_acquired *raw;
	struct tierd_expert *experts;
	struct tierd_tensor *tensors;
	struct mapping *maps[TIERD_PROTO_MAX_POOLS];
	SLIST_HEAD(, retired) retired;
	/* Acquired through the residency table: pins in the pin area of
	 * connection fast_seq (entries fidx), no daemon pin. */
	bool fast;
	uint64_t fast_seq;
	uint32_t *fidx;
	/* Per expert, a reference on the layout its tensors' names are in
	 * (those arrays may be retired by a reconnection, the names are still
	 * read): dropped when the acquisition is freed. */
	struct fast_layout **lay;
};

/* An expert's tensors as a socket ACQUIRED laid them out, offsets relative
 * to its slot: what a fast acquire of it hands out.  Counted references:
 * the entry of the connection's fast path that uses it, and each fast
 * acquisition whose tensors name it; freed at the last, so that a client of
 * a daemon that restarts or reloads does not keep every layout it ever
 * learnt. */
struct fast_layout {
	LIST_ENTRY(fast_layout) link;	/* in c->layouts */
	unsigned refs;
	uint32_t layout;		/* the table's layout version it holds for */
	uint32_t ntensors;
	uint64_t span;			/* bytes from the slot's start it covers */
	struct tierd_tensor tensors[];	/* data NULL, offset from the slot */
};

/* The mappings of one connection's fast path (tierd-client-fast.c). */
struct fastpath {
	uint64_t seq;			/* which connection */
	const struct tierd_fast_hdr *hdr;
	uint64_t table_size;
	const struct tierd_fast_entry *ent;
	uint32_t nentries;
	struct tierd_fast_pin *pins;
	const struct tierd_fast_area_tail *tail;	/* revoked: the daemon dropped us */
	uint32_t max_pins;		/* the connection's bound (WELCOME); 0: none said */
	uint64_t area_size;
	struct tierd_fast_model models[TIERD_PROTO_MAX_MODELS];	/* copied, checked */
	struct fast_layout **lay;	/* per entry, NULL: learn it from a socket acquire */
};

struct model {
	char *name;
	struct tierd_proto_model info;
};

struct tierd_client {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *path;
	char name[65];
	int numa_node;			/* said in HELLO; TIERD_NODE_UNSAID: not */
	int fd;				/* -1: broken, reconnect on next use */
	bool reading;			/* a thread reads the socket (others wait) */
	bool reader_blocked;		/* ... in a system call, without the lock */
	int stale_fd;			/* broken while the reader was blocked on it */
	uint64_t next_id;
	uint64_t instance;
	uint32_t nmodels;
	struct model *models;
	uint32_t npools;
	struct mapping *pools[TIERD_PROTO_MAX_POOLS];
	struct pending_list pending;
	struct pending_list completed;	/* async ones whose callbacks are due */
	LIST_HEAD(, tierd_acquisition) acqs;
	size_t held;			/* experts in acqs: against the daemon's max_pins */
	char last_error[TIERD_PROTO_MAX_REASON + 1];
	tierd_reconnect_fn reconnect_fn;
	void *reconnect_arg;
	unsigned flags;			/* TIERD_CLIENT_F_* */
	struct fastpath *fast;		/* NULL: socket only */
	uint64_t conn_seq;
	LIST_HEAD(, fast_layout) layouts;	/* alive */
	alignas(8) uint8_t rx[TIERD_PROTO_MAX_MSG];
	alignas(8) uint8_t tx[TIERD_PROTO_MAX_MSG];
};

static inline int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- tierd-client-acq.c: acquisition objects ---- */

HIDDEN void tdc_mapping_unref(struct mapping *m);
HIDDEN void tdc_acq_free(struct tierd_acquisition *a);
HIDDEN int tdc_acq_fill(struct tierd_client *c, struct tierd_acquisition *a, struct tierd_msg_acquired *m,
			const struct tierd_key *asked, size_t n);
HIDDEN int tdc_acq_new(struct tierd_client *c, struct tierd_key *keys, size_t n, struct tierd_msg_acquired *m,
		       struct tierd_acquisition **out);

/* ---- tierd-client-mux.c: the request multiplexer ---- */

HIDDEN void tdc_set_error(struct tierd_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
HIDDEN void tdc_pending_list_free(struct pending_list *l);
HIDDEN struct pending *tdc_pending_new(struct tierd_client *c, uint16_t answer);
HIDDEN void tdc_pending_unlink(struct tierd_client *c, struct pending *p);
HIDDEN void tdc_conn_lost(struct tierd_client *c, const char *why);
HIDDEN int tdc_send_locked(struct tierd_client *c, long len, int timeout_ms);
HIDDEN void tdc_release_keys_noreply(struct tierd_client *c, const struct tierd_key *keys, size_t n);
HIDDEN int tdc_run_completed(struct tierd_client *c);
HIDDEN void tdc_read_round(struct tierd_client *c, int timeout_ms);
HIDDEN int tdc_wait_pending(struct tierd_client *c, struct pending *p, int timeout_ms,
			    tierd_progress_fn progress, void *arg);

/* ---- tierd-client-fast.c: acquire without a system call ---- */

/* Maps what WELCOME handed over (lock held); on any doubt the fast path
 * stays off for this connection and 0 is returned. */
HIDDEN int tdc_fast_open(struct tierd_client *c, const struct tierd_msg_welcome *w, int table_fd, int area_fd);
HIDDEN void tdc_fast_close(struct tierd_client *c);
/* 0 with *out, or -EAGAIN: take the socket. */
HIDDEN int tdc_fast_acquire(struct tierd_client *c, const struct tierd_key *keys, size_t n,
			    struct tierd_acquisition **out);
/* After a socket acquire: learns the layouts the fast path lacks. */
HIDDEN void tdc_fast_learn(struct tierd_client *c, const struct tierd_acquisition *a);
/* Drops a fast acquisition's pins (if its connection is the current one). */
HIDDEN void tdc_fast_release(struct tierd_client *c, struct tierd_acquisition *a);
/* Drops a reference on a layout (lock held); frees it at the last. */
HIDDEN void tdc_fast_layout_put(struct fast_layout *l);

/* ---- tierd-client-conn.c: connect and reconnect ---- */

HIDDEN int tdc_conn_open(struct tierd_client *c);
HIDDEN int tdc_ensure_conn(struct tierd_client *c);

/* tierd-client-numa.c: the node of PCI device addr under root ("/sys"),
 * and the node to say when the application names none (environment). */
int tdc_pci_numa_node(const char *root, const char *addr);
int tdc_numa_node_default(void);

#endif
