/* SPDX-License-Identifier: MIT */
/*
 * Telemetry: the one object the daemon (or tierctl, locally) holds to
 * measure and export energy.  It ties together the eBPF probes, the NVMe
 * controllers behind the configured checkpoints, the energy model and the
 * metrics exports (HTTP endpoint, node_exporter textfile).
 *
 * Use from the daemon:
 *   telemetry_create(&t, conf, pool_bytes, now)   at start-up (never fails
 *       for lack of privileges: it runs without probes and says so once)
 *   telemetry_tick(t, now)     on a timer, every telemetry_period_ms()
 *   energy_account_*(telemetry_energy(t), ...)    from the fetch and
 *       acquire paths and the clients' token reports
 *   telemetry_set_engine_stats() before a tick, to export cache counters
 */
#ifndef TIERD_TELEMETRY_H
#define TIERD_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "energy.h"
#include "engine.h"
#include "metrics.h"
#include "probes.h"

struct telemetry;

struct telemetry_opts {
	bool probes;			/* try to load eBPF probes (conf nvme.probes) */
	bool exports;			/* start HTTP / textfile exports from conf */
};

int telemetry_create(struct telemetry **out, const struct tierd_conf *conf,
		     const struct telemetry_opts *o, uint64_t pool_bytes, uint64_t now_ns);
void telemetry_destroy(struct telemetry *t);

/* How often telemetry_tick() wants to run. */
unsigned telemetry_period_ms(const struct telemetry *t);
/* Samples probes, refreshes NVMe when due, advances the energy model and
 * publishes the text to the exports. */
int telemetry_tick(struct telemetry *t, uint64_t now_ns);
/* The exposition text of the last tick's state (malloc'd). */
int telemetry_render(struct telemetry *t, char **text, size_t *len);
/* The same sample, as text or JSON (metrics.h). */
int telemetry_render_as(struct telemetry *t, enum metrics_format format, char **text, size_t *len);

struct energy *telemetry_energy(struct telemetry *t);
/* NULL when running without probes. */
const struct probes_snapshot *telemetry_probes(const struct telemetry *t);
/* Also exports the engine's fetch latency histogram (fetch_ns_hist), unless
 * telemetry_set_fetch_latency() gave another. */
void telemetry_set_engine_stats(struct telemetry *t, const struct engine_stats *st);
/* The daemon's tick: the engine's counters, then telemetry_tick(). */
int telemetry_refresh(struct telemetry *t, const struct engine *e, uint64_t now_ns);
/* Kept by pointer: the caller owns it and keeps it alive. */
void telemetry_set_fetch_latency(struct telemetry *t, const struct metrics_hist *h);
/* Who supplies the service's counters at each render (the server); fn NULL:
 * none.  What fn returns must stay valid until the next call. */
struct metrics_service;
typedef const struct metrics_service *(*telemetry_service_fn)(void *arg);
void telemetry_set_service_source(struct telemetry *t, telemetry_service_fn fn, void *arg);
/* Port of the HTTP endpoint (0: off). */
uint16_t telemetry_http_port(const struct telemetry *t);

/* CLOCK_MONOTONIC in ns, the clock every *_ns argument here uses. */
uint64_t telemetry_now_ns(void);

#endif
