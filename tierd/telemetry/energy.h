/* SPDX-License-Identifier: MIT */
/*
 * The energy model: joules per tier (HBM, DDR, SSD) and component (dynamic,
 * static), attributed to models and clients.
 *
 * Dynamic energy is bytes x 8 x pJ/bit of the path (reference: the
 * SSD-offloading energy paper, see doc/README-energy.md):
 *   SSD: bytes read from Flash x flash pJ/b.  Measured device bytes (eBPF)
 *        when probes run, tierd's own fetched bytes otherwise.
 *   DDR: bytes clients copy out of the pool x DDR pJ/b (the DDR read).
 *   HBM: the same bytes written into HBM and read once there: 2 x HBM pJ/b.
 * Static energy is power x time: DDR static W/GiB x pool GiB, GPU idle W x
 * GPUs (HBM tier), and the NVMe device's power in each power state x the time
 * in it.  NVMe residency is INFERRED: busy time is charged to the operational
 * state at its active power, and each idle gap walks the APST table (idle
 * time prior to transition, then the next state) with the descriptors' idle
 * powers.
 *
 * Attribution: dynamic energy follows the bytes of each (model, client);
 * static energy of each interval is split in proportion to the bytes tierd
 * fetched in that interval (or overall, when it fetched nothing).  Device
 * bytes tierd did not cause are reported as "other", never hidden.
 *
 * Every counter is monotonic and in base units (bytes, seconds, joules).
 * Not thread-safe: owned by the daemon's loop.
 */
#ifndef TIERD_ENERGY_H
#define TIERD_ENERGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "nvme.h"
#include "probes.h"

enum energy_tier {
	ENERGY_TIER_HBM,
	ENERGY_TIER_DDR,
	ENERGY_TIER_SSD,
};
#define ENERGY_TIERS 3

enum energy_component {
	ENERGY_DYNAMIC,
	ENERGY_STATIC,
};
#define ENERGY_COMPONENTS 2

/* Where the SSD tier's bytes come from. */
enum energy_source {
	ENERGY_SOURCE_TIERD,	/* tierd's own accounting (no probes) */
	ENERGY_SOURCE_EBPF,	/* block-layer probes */
};

#define ENERGY_CLIENT_NONE	0u		/* prefetches nobody asked for yet */
#define ENERGY_CLIENT_DEPARTED	UINT32_MAX	/* clients that went away, folded */

struct energy_params {
	double pj_hbm, pj_ddr, pj_flash;	/* pJ per bit */
	double ddr_static_w_per_gib;
	double gpu_idle_w;			/* per GPU, HBM included */
	unsigned gpus;				/* GPUs charged; 0: none */
	double nvme_default_w;			/* SSD power when no descriptor says */
};

/* NVMe power model of one device, from its descriptors and APST table. */
struct energy_nvme_model {
	unsigned nps;
	double busy_w[NVMEDEV_MAX_PS];	/* active power, else max power */
	double idle_w[NVMEDEV_MAX_PS];	/* idle power, else max power */
	bool apst_enabled;
	uint8_t itps[NVMEDEV_MAX_PS];
	uint32_t itpt_ms[NVMEDEV_MAX_PS];
	unsigned cur_ps;		/* operational state I/O runs in */
};

/* Read-only views for metrics. */
struct energy_attr {
	const char *model;		/* NULL in the client table */
	uint32_t client;
	uint64_t fetched_bytes;		/* SSD -> DDR, by tierd */
	uint64_t hbm_bytes;		/* DDR -> HBM, by the client */
	uint64_t tokens;
	double joules[ENERGY_TIERS][ENERGY_COMPONENTS];
};

struct energy_device {
	char name[NVMEDEV_NAME_MAX];
	uint32_t major, minor;
	bool is_nvme;
	uint64_t read_bytes, write_bytes;	/* measured (eBPF) */
	uint64_t busy_ns;
	unsigned nps;
	double state_s[NVMEDEV_MAX_PS];		/* inferred residency */
	double static_j;
	double dynamic_j;
};

struct energy;

void energy_params_from_conf(struct energy_params *p, const struct tierd_conf *c);
/* pool_bytes: DDR the pool holds (static power is charged on it). */
int energy_create(struct energy **out, const struct energy_params *p, uint64_t pool_bytes,
		  enum energy_source src, uint64_t now_ns);
void energy_destroy(struct energy *e);
enum energy_source energy_source(const struct energy *e);

/* Attribution inputs, from the engine and the service. */
int energy_account_fetch(struct energy *e, const char *model, uint32_t client, uint64_t bytes);
int energy_account_hbm(struct energy *e, const char *model, uint32_t client, uint64_t bytes);
/* model NULL: counted for the client only. */
int energy_account_tokens(struct energy *e, const char *model, uint32_t client, uint64_t n);
/* Folds a client that went away into ENERGY_CLIENT_DEPARTED. */
void energy_client_forget(struct energy *e, uint32_t client);

/* Devices that hold checkpoints.  Adding twice is a no-op. */
int energy_device_add(struct energy *e, const char *name, uint32_t major, uint32_t minor);
int energy_device_set_nvme(struct energy *e, uint32_t major, uint32_t minor,
			   const struct energy_nvme_model *m);
/* A probe sample (cumulative); energy works on the difference with the last. */
int energy_device_sample(struct energy *e, const struct probes_dev *d);
/* Integrates static power up to now_ns (CLOCK_MONOTONIC) and attributes. */
void energy_advance(struct energy *e, uint64_t now_ns);

/* Model from libnvme's facts. */
void energy_nvme_model_from_info(struct energy_nvme_model *m, const struct nvmedev_info *in);
/*
 * The inference itself, exposed for tests: adds to idle_s[] the seconds an
 * idle-gap histogram (count and summed ns per log2 slot) spends in each
 * power state, each gap starting in m->cur_ps and following APST.
 */
void energy_infer_idle(const struct energy_nvme_model *m, const uint64_t *gap_count,
		       const uint64_t *gap_sum_ns, unsigned nslots, double *idle_s);

/* Totals and views. */
double energy_joules(const struct energy *e, enum energy_tier t, enum energy_component c);
uint64_t energy_tierd_bytes(const struct energy *e);	/* fetched by tierd */
uint64_t energy_device_bytes(const struct energy *e);	/* read from the devices, measured */
uint64_t energy_other_bytes(const struct energy *e);	/* device reads not tierd's */
double energy_other_joules(const struct energy *e);
double energy_unattributed_joules(const struct energy *e);	/* static before any fetch */
uint64_t energy_hbm_bytes(const struct energy *e);
uint64_t energy_tokens(const struct energy *e);
double energy_static_seconds(const struct energy *e);

size_t energy_model_count(const struct energy *e);
const struct energy_attr *energy_model_at(const struct energy *e, size_t i);
size_t energy_client_count(const struct energy *e);
const struct energy_attr *energy_client_at(const struct energy *e, size_t i);
size_t energy_device_count(const struct energy *e);
const struct energy_device *energy_device_at(const struct energy *e, size_t i);

const char *energy_tier_name(enum energy_tier t);
const char *energy_component_name(enum energy_component c);
const char *energy_source_name(enum energy_source s);

#endif
