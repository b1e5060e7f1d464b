/* SPDX-License-Identifier: MIT */
/*
 * The service: one Unix SOCK_SEQPACKET socket speaking tierd-proto.h, per
 * client state (pins, quotas, output queue), authorization by peer
 * credentials, and the operator commands of tierctl.
 *
 * Runs on the daemon's loop; the engine's completions arrive through
 * engine_process(), which the owner of the loop calls when engine_fd() is
 * readable.
 */
#ifndef TIERD_SERVER_H
#define TIERD_SERVER_H

#include <stdint.h>

#include "conf.h"
#include "engine.h"
#include "loop.h"
#include "tierd-proto.h"

struct server;
struct telemetry;

/*
 * listen_fd: a listening socket handed over by systemd (sd_listen_fds), owned
 * by the server from now on; or -1 to create conf->socket_path (mode
 * conf->socket_mode, stale socket replaced, a live one refused with -EADDRINUSE).
 * conf must outlive the server or be replaced with server_set_conf().
 */
int server_create(struct server **out, struct loop *loop, struct engine *engine,
		  const struct tierd_conf *conf, int listen_fd);
/* Closes every client (releasing their pins) and the socket. */
void server_destroy(struct server *s);
/* After a reload: quotas and allow lists of the new conf apply to new
 * requests; connected clients' model permissions are recomputed. */
void server_set_conf(struct server *s, const struct tierd_conf *conf);
/* Counters of STATS_REPLY (TIERD_STAT_COUNT values). */
void server_get_stats(const struct server *s, uint64_t *values);
unsigned server_client_count(const struct server *s);
void server_count_reload(struct server *s);
/* METRICS answers and the service's metrics (NULL: off).  t must outlive
 * the server or be unset first. */
void server_set_telemetry(struct server *s, struct telemetry *t);

/*
 * Who hears what clients do, for bookkeeping the service itself does not
 * keep (tierd/telemetry/usage.c: hints, tokens, energy).  Clients are named
 * by their id; SERVER_CLIENT_NONE for work nobody in particular asked for
 * (warm, operator pins), SERVER_CLIENT_DEPARTED for a client gone since.
 * Every member may be NULL.
 */
#define SERVER_CLIENT_NONE	0u
#define SERVER_CLIENT_DEPARTED	UINT32_MAX

struct tierd_proto_hint;

struct server_observer {
	/* An expert's bytes read from SSD for client (its first asker). */
	void (*fetched)(void *arg, uint32_t client, uint32_t model, uint64_t bytes);
	/* An expert handed to client in an ACQUIRED: what it copies to HBM. */
	void (*acquired)(void *arg, uint32_t client, uint32_t model, uint64_t bytes);
	/* A ROUTING_HINT of client, as received (experts not checked). */
	void (*hints)(void *arg, uint32_t client, uint32_t model, uint32_t layer,
		      const struct tierd_proto_hint *h, uint32_t n);
	void (*tokens)(void *arg, uint32_t client, uint32_t model, uint64_t n);
	/* client disconnected: its id is never reused. */
	void (*client_gone)(void *arg, uint32_t client);
};

/* o NULL: nobody.  o and arg must outlive the server or be unset first. */
void server_set_observer(struct server *s, const struct server_observer *o, void *arg);

#endif
