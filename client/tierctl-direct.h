/* SPDX-License-Identifier: MIT */
/*
 * tierctl's commands that drive the engine in this process (no daemon):
 * fetch and demo (tierctl-engine.c), bench fetch (tierctl-bench-fetch.c).
 */
#ifndef TIERCTL_DIRECT_H
#define TIERCTL_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "engine.h"
#include "tierctl.h"

#define MiB (1ULL << 20)
#define CHUNK (2ULL << 20)

struct direct {
	struct tierd_conf conf;
	bool have_conf;
	bool conf_file;			/* -c given: its pool size is a floor */
	struct engine *e;
	const struct catalog *cat;
};

/* One acquire's outcome, filled by direct_on_acquired. */
struct acq {
	int done;
	int err;
	struct engine_slot_info info;
};

double tierctl_now_s(void);
/* A whole decimal number up to max / a size ("1M"); errors name opt. */
int tierctl_parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out);
int tierctl_parse_size(const char *opt, const char *s, uint64_t *out);

void direct_close(struct direct *d);
int direct_conf_prepare(struct direct *d, const struct tierctl_opts *o);
/* The engine on the checkpoint in dir, with a pool of at least slots slots. */
int direct_open(struct direct *d, const char *dir, uint64_t slots);
void direct_on_acquired(void *arg, int err, const struct engine_slot_info *info);
/* Drops the page cache of the checkpoint's files (cold reads). */
void direct_drop_caches(const struct direct *d);
int direct_acquire_range(struct direct *d, uint32_t first, uint32_t n, struct acq *a);
void direct_release_range(struct direct *d, uint32_t first, uint32_t n, bool evict);
int direct_verify_range(const struct direct *d, uint32_t first, uint32_t n, const struct acq *a);

#endif
