/* SPDX-License-Identifier: MIT */
/*
 * Prometheus text exposition (format 0.0.4) of tierd's counters, rendered
 * from a snapshot, and the two ways it leaves the process: an HTTP endpoint
 * (libmicrohttpd) and a node_exporter textfile written atomically.
 *
 * Names carry the tierd_ prefix, counters end in _total, units are base
 * units (bytes, seconds, joules).
 */
#ifndef TIERD_METRICS_H
#define TIERD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "energy.h"
#include "engine.h"
#include "nvme.h"
#include "probes.h"

/* A histogram the caller keeps (fetch latency): per-bucket counts with
 * upper bounds in seconds, ascending; values above the last go to +Inf. */
struct metrics_hist {
	unsigned n;
	const double *le;
	const uint64_t *counts;		/* n + 1 entries, the last for +Inf */
	double sum;
};

/* One NVMe controller and the disk it serves. */
struct metrics_nvme {
	const char *device;		/* "nvme0n1" */
	const struct nvmedev_info *info;
};

/* A served model's checkpoint state (engine_model_status). */
struct metrics_model {
	char *name;
	bool stale;
	uint64_t changes;
	uint64_t reloads;
};

/* One pool (NUMA node in use), as the engine counts it (engine.h). */
struct metrics_pool {
	int node;
	uint64_t size;
	struct engine_pool_stats st;
};

/* One connected client, as the service sees it. */
struct metrics_client {
	uint32_t id;
	int32_t pid;
	uint32_t uid;
	uint64_t pins;
	const char *name;
};

/* The service's counters: refusals by reason (an errno name), clients. */
struct metrics_service {
	size_t nreasons;
	const char *const *reason;
	const uint64_t *refused;
	uint64_t pins_save_errors;	/* operator pins that could not be saved */
	uint64_t clients_dropped;
	uint64_t connections_refused;	/* max_clients, max_connections_per_uid */
	size_t nclients;
	const struct metrics_client *clients;
};

/* Everything optional: NULL / 0 leaves those families out. */
struct metrics_input {
	const char *probes_mode;		/* "tp_btf", "raw_tp"; NULL: none */
	const struct probes_snapshot *probes;
	const struct energy *energy;
	const struct metrics_nvme *nvme;
	size_t nnvme;
	const struct engine_stats *engine;
	const struct metrics_hist *fetch_latency;
	const struct metrics_model *models;
	size_t nmodels;
	const struct metrics_service *service;
	const struct metrics_pool *pools;
	size_t npools;
};

/*
 * The two renderings of one sample set: the Prometheus text exposition, and
 * JSON for tierctl (no text to parse back): {"families": [{"name", "type",
 * "help", "samples": [{"name", "labels": {...}, "value"}]}]}, values as
 * integers where the text has integers.
 */
enum metrics_format {
	METRICS_TEXT,
	METRICS_JSON,
};

/* Renders into a malloc'd NUL-terminated buffer. */
int metrics_render_as(const struct metrics_input *in, enum metrics_format format, char **text, size_t *len);
/* The text exposition. */
int metrics_render(const struct metrics_input *in, char **text, size_t *len);

/* "major:minor" -> "vda" through sysfs; falls back to "major:minor". */
void metrics_device_name(uint32_t major, uint32_t minor, char *buf, size_t len);

/*
 * HTTP endpoint on listen ("127.0.0.1:9464", "[::1]:9464"; port 0 picks a
 * free one).  libmicrohttpd runs its own polling thread: the daemon's epoll
 * loop never waits on a slow scraper, and that thread only ever touches the
 * last text published with metrics_http_publish() (under a mutex), never
 * the daemon's state.
 */
struct metrics_http;
int metrics_http_create(struct metrics_http **out, const char *listen);
void metrics_http_destroy(struct metrics_http *h);
uint16_t metrics_http_port(const struct metrics_http *h);
int metrics_http_publish(struct metrics_http *h, const char *text, size_t len);

/* Writes path.tmp then renames it over path, so node_exporter never reads
 * half a file. */
int metrics_textfile_write(const char *path, const char *text, size_t len);

#endif
