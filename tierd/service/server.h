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
/* Tokens reported by clients for a model (engine model index). */
uint64_t server_model_tokens(const struct server *s, uint32_t model);
/* Routing hints received for one expert: how often the routers chose it
 * and the sum of the weights they gave it.  -ENOENT if unknown. */
int server_hint_stats(const struct server *s, uint32_t model, uint32_t layer, uint32_t expert,
		      uint64_t *count, double *weight_sum);
void server_count_reload(struct server *s);
/*
 * Energy accounting and METRICS answers (NULL: off).  The server then
 * charges fetched bytes to the client that asked first (engine observer),
 * bytes of acquires to the acquiring client (HBM) and token reports, and
 * folds a client's figures into "departed" when it goes.  t must outlive
 * the server or be unset first.
 */
void server_set_telemetry(struct server *s, struct telemetry *t);

#endif
