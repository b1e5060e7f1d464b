/* SPDX-License-Identifier: MIT */
/*
 * The metrics: one sample set (probes, energy, NVMe, engine, service)
 * rendered as the Prometheus text exposition or as JSON through the sink of
 * metrics-sink.c; metrics-export.c serves and writes the text.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics-int.h"
#include "metrics.h"

/* log2 slots exported as histogram buckets: 2^10 ns (about 1 us) up to
 * 2^41 ns (about 37 min); the slots below fold into the first bucket. */
#define SLOT_LO		9
#define SLOT_HI		40


void metrics_device_name(uint32_t major, uint32_t minor, char *buf, size_t len)
{
	char sys[64], real[PATH_MAX];
	const char *slash;

	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major, minor);
	if (realpath(sys, real) && (slash = strrchr(real, '/')) && slash[1]) {
		snprintf(buf, len, "%s", slash + 1);
		return;
	}
	snprintf(buf, len, "%u:%u", major, minor);
}

static void client_label(char *buf, size_t len, uint32_t id)
{
	if (id == ENERGY_CLIENT_NONE)
		snprintf(buf, len, "none");
	else if (id == ENERGY_CLIENT_DEPARTED)
		snprintf(buf, len, "departed");
	else
		snprintf(buf, len, "%u", id);
}

/* Histogram from log2 ns slots, with one label (key="value"). */
static void log2_hist(struct msink *s, const char *name, const char *key, const char *value,
		      const uint64_t *slots, double sum_s)
{
	double le[SLOT_HI - SLOT_LO + 1];
	uint64_t cum[SLOT_HI - SLOT_LO + 2], c = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < SLOT_LO; i++)
		c += slots[i];
	for (unsigned i = SLOT_LO; i <= SLOT_HI && i < BLKSTAT_SLOTS; i++) {
		c += slots[i];
		le[n] = (double)probes_slot_upper_ns(i) / 1e9;
		cum[n++] = c;
	}
	for (unsigned i = SLOT_HI + 1; i < BLKSTAT_SLOTS; i++)
		c += slots[i];
	cum[n] = c;
	ms_hist_tail(s, name, key, value, le, cum, n, sum_s);
}

struct devnames {
	char (*name)[NVMEDEV_NAME_MAX];
	size_t n;
};

static void render_info(struct msink *s, const struct metrics_input *in)
{
	ms_family(s, "tierd_info", "gauge",
	       "tierd build and how it measures: probes (tp_btf, raw_tp, none) and the source of "
	       "the SSD tier's bytes (ebpf, or tierd's own accounting).");
	ms_sample_u(s, "tierd_info", 1, "version", PACKAGE_VERSION, "probes",
		 in->probes_mode ? in->probes_mode : "none", "energy_source",
		 in->energy ? energy_source_name(energy_source(in->energy)) : (in->probes_mode ? "ebpf" : "tierd"),
		 NULL);
}

static void bytes_line(struct msink *s, const char *tier, const char *device, const char *dir,
		       const char *source, uint64_t v)
{
	ms_sample_u(s, "tierd_bytes_total", v, "tier", tier, "device", device, "direction", dir, "source", source,
		 NULL);
}

static void render_bytes(struct msink *s, const struct metrics_input *in, const struct devnames *dn)
{
	ms_family(s, "tierd_bytes_total", "counter",
	       "Bytes moved, by tier, device, direction and source: ebpf (block layer, every "
	       "process), tierd (what tierd itself read or handed out), smart (the device's SMART "
	       "data units, 512000 bytes each).");
	if (in->probes)
		for (size_t i = 0; i < in->probes->ndev; i++) {
			const struct probes_dev *d = &in->probes->dev[i];

			bytes_line(s, "ssd", dn->name[i], "read", "ebpf", d->read_bytes);
			bytes_line(s, "ssd", dn->name[i], "write", "ebpf", d->write_bytes);
		}
	if (in->energy) {
		bytes_line(s, "ssd", "all", "read", "tierd", energy_tierd_bytes(in->energy));
		bytes_line(s, "ddr", "pool", "read", "tierd", energy_hbm_bytes(in->energy));
		bytes_line(s, "hbm", "gpu", "write", "tierd", energy_hbm_bytes(in->energy));
	} else if (in->engine) {
		bytes_line(s, "ssd", "all", "read", "tierd", in->engine->bytes_read);
	}
	for (size_t i = 0; i < in->nnvme; i++) {
		const struct nvmedev_info *n = in->nvme[i].info;

		if (!n->have_smart)
			continue;
		bytes_line(s, "ssd", in->nvme[i].device, "read", "smart",
			   n->data_units_read * NVMEDEV_DATA_UNIT);
		bytes_line(s, "ssd", in->nvme[i].device, "write", "smart",
			   n->data_units_written * NVMEDEV_DATA_UNIT);
	}
}

/* Per device, one counter of struct probes_dev. */
static void per_device(struct msink *s, const struct probes_snapshot *ps, const struct devnames *dn,
		       const char *name, size_t off)
{
	for (size_t i = 0; i < ps->ndev; i++)
		ms_sample_u(s, name, *(const uint64_t *)((const char *)&ps->dev[i] + off), "device", dn->name[i],
			 NULL);
}

static void render_probes(struct msink *s, const struct probes_snapshot *ps, const struct devnames *dn)
{
	char ctl[32];

	/* Said, not hidden: what the eBPF counters lack. */
	ms_family(s, "tierd_probe_missed_runs_total", "counter",
	       "Runs of the block-layer eBPF programs the kernel skipped because one was already "
	       "running on that CPU; a skipped completion is accounted later "
	       "(tierd_probe_lost_requests_total), a skipped issue leaves its request without a "
	       "latency (tierd_probe_unmatched_completions_total).");
	ms_sample_u(s, "tierd_probe_missed_runs_total", ps->missed, NULL);
	if (!ps->ndev)
		goto nvme;
	ms_family(s, "tierd_probe_lost_requests_total", "counter",
	       "Block requests whose completion the eBPF programs did not see (the kernel did not "
	       "run them), found finished later: from then on their requests and bytes are in the "
	       "eBPF device counters, without a latency.");
	per_device(s, ps, dn, "tierd_probe_lost_requests_total", offsetof(struct probes_dev, lost_reqs));
	ms_family(s, "tierd_probe_lost_bytes_total", "counter",
	       "Bytes of the requests in tierd_probe_lost_requests_total.");
	per_device(s, ps, dn, "tierd_probe_lost_bytes_total", offsetof(struct probes_dev, lost_bytes));
	ms_family(s, "tierd_probe_unmatched_completions_total", "counter",
	       "Block requests completed with no issue seen by eBPF (in flight when the probes "
	       "attached, or the kernel did not run the issue program): counted, without a "
	       "latency.");
	per_device(s, ps, dn, "tierd_probe_unmatched_completions_total", offsetof(struct probes_dev, unmatched));
	ms_family(s, "tierd_device_requests_total", "counter",
	       "Block requests completed, measured by eBPF at the block layer.");
	for (size_t i = 0; i < ps->ndev; i++) {
		ms_sample_u(s, "tierd_device_requests_total", ps->dev[i].read_reqs, "device", dn->name[i],
			 "direction", "read", NULL);
		ms_sample_u(s, "tierd_device_requests_total", ps->dev[i].write_reqs, "device", dn->name[i],
			 "direction", "write", NULL);
		ms_sample_u(s, "tierd_device_requests_total", ps->dev[i].other_reqs, "device", dn->name[i],
			 "direction", "other", NULL);
	}
	ms_family(s, "tierd_device_busy_seconds_total", "counter",
	       "Time with at least one request in flight, measured by eBPF.");
	for (size_t i = 0; i < ps->ndev; i++)
		ms_sample_d(s, "tierd_device_busy_seconds_total", (double)ps->dev[i].busy_ns / 1e9, "device",
			 dn->name[i], NULL);
	ms_family(s, "tierd_device_inflight_requests", "gauge", "Requests in flight now.");
	for (size_t i = 0; i < ps->ndev; i++)
		ms_sample_i(s, "tierd_device_inflight_requests", ps->dev[i].inflight > 0 ? ps->dev[i].inflight : 0,
			 "device", dn->name[i], NULL);
	ms_family(s, "tierd_device_request_duration_seconds", "histogram",
	       "Block request latency, issue to completion, measured by eBPF.");
	for (size_t i = 0; i < ps->ndev; i++)
		log2_hist(s, "tierd_device_request_duration_seconds", "device", dn->name[i],
			  ps->dev[i].lat_hist, (double)ps->dev[i].lat_sum_ns / 1e9);
	ms_family(s, "tierd_device_idle_gap_seconds", "histogram",
	       "Idle gaps between busy periods of the device, measured by eBPF; the input of the "
	       "power-state inference.");
	for (size_t i = 0; i < ps->ndev; i++) {
		double sum = 0;

		for (unsigned k = 0; k < BLKSTAT_SLOTS; k++)
			sum += (double)ps->dev[i].gap_sum_ns[k] / 1e9;
		log2_hist(s, "tierd_device_idle_gap_seconds", "device", dn->name[i], ps->dev[i].gap_hist, sum);
	}
nvme:
	if (!ps->nnvme)
		return;
	ms_family(s, "tierd_nvme_commands_total", "counter",
	       "NVMe commands set up by the driver, by controller and queue (nvme tracepoints).");
	for (size_t i = 0; i < ps->nnvme; i++) {
		snprintf(ctl, sizeof(ctl), "nvme%u", ps->nvme[i].instance);
		ms_sample_u(s, "tierd_nvme_commands_total", ps->nvme[i].c.admin_cmds, "controller", ctl, "queue",
			 "admin", NULL);
		ms_sample_u(s, "tierd_nvme_commands_total", ps->nvme[i].c.io_cmds, "controller", ctl, "queue", "io",
			 NULL);
	}
	ms_family(s, "tierd_nvme_command_errors_total", "counter",
	       "NVMe commands completed with a non-zero status.");
	for (size_t i = 0; i < ps->nnvme; i++) {
		snprintf(ctl, sizeof(ctl), "nvme%u", ps->nvme[i].instance);
		ms_sample_u(s, "tierd_nvme_command_errors_total", ps->nvme[i].c.errors, "controller", ctl, NULL);
	}
	ms_family(s, "tierd_nvme_set_features_total", "counter",
	       "Host-initiated power changes seen: Set Features power management (02h) and APST (0Ch).");
	for (size_t i = 0; i < ps->nnvme; i++) {
		snprintf(ctl, sizeof(ctl), "nvme%u", ps->nvme[i].instance);
		ms_sample_u(s, "tierd_nvme_set_features_total", ps->nvme[i].c.set_power_mgmt, "controller", ctl,
			 "feature", "power_management", NULL);
		ms_sample_u(s, "tierd_nvme_set_features_total", ps->nvme[i].c.set_apst, "controller", ctl,
			 "feature", "apst", NULL);
	}
	ms_family(s, "tierd_nvme_requested_power_state", "gauge",
	       "Power state the host last requested with Set Features 02h (-1: none seen).");
	for (size_t i = 0; i < ps->nnvme; i++) {
		snprintf(ctl, sizeof(ctl), "nvme%u", ps->nvme[i].instance);
		ms_sample_i(s, "tierd_nvme_requested_power_state",
			 ps->nvme[i].c.set_power_mgmt ? (int64_t)ps->nvme[i].c.last_ps : -1, "controller", ctl, NULL);
	}
}

/* Per device and power state: what the descriptor says (which: a field). */
enum ps_field { PS_MAX_W, PS_IDLE_W, PS_ACTIVE_W, PS_EXIT_S, PS_OPERATIONAL };

static void per_state(struct msink *s, const struct metrics_nvme *nv, size_t n, const char *name,
		      enum ps_field which)
{
	char st[16];

	for (size_t i = 0; i < n; i++)
		for (unsigned k = 0; k < nv[i].info->nps; k++) {
			const struct nvmedev_psd *p = &nv[i].info->ps[k];

			snprintf(st, sizeof(st), "ps%u", k);
			switch (which) {
			case PS_MAX_W:
				ms_sample_d(s, name, p->max_w, "device", nv[i].device, "state", st, NULL);
				break;
			case PS_IDLE_W:
				if (p->idle_w >= 0)
					ms_sample_d(s, name, p->idle_w, "device", nv[i].device, "state", st, NULL);
				break;
			case PS_ACTIVE_W:
				if (p->active_w >= 0)
					ms_sample_d(s, name, p->active_w, "device", nv[i].device, "state", st, NULL);
				break;
			case PS_EXIT_S:
				ms_sample_d(s, name, p->exit_lat_us / 1e6, "device", nv[i].device, "state", st, NULL);
				break;
			case PS_OPERATIONAL:
				ms_sample_i(s, name, !p->nonop, "device", nv[i].device, "state", st, NULL);
				break;
			}
		}
}

static void render_nvme_info(struct msink *s, const struct metrics_nvme *nv, size_t n)
{
	if (!n)
		return;
	ms_family(s, "tierd_nvme_power_state_max_watts", "gauge",
	       "Maximum power of each power state (Identify Controller descriptor, MP and MXPS).");
	per_state(s, nv, n, "tierd_nvme_power_state_max_watts", PS_MAX_W);
	ms_family(s, "tierd_nvme_power_state_idle_watts", "gauge",
	       "Idle power of each power state, where the descriptor reports it (IDLP, IPS).");
	per_state(s, nv, n, "tierd_nvme_power_state_idle_watts", PS_IDLE_W);
	ms_family(s, "tierd_nvme_power_state_active_watts", "gauge",
	       "Active power of each power state, where the descriptor reports it (ACTP, APWS).");
	per_state(s, nv, n, "tierd_nvme_power_state_active_watts", PS_ACTIVE_W);
	ms_family(s, "tierd_nvme_power_state_exit_latency_seconds", "gauge",
	       "Exit latency of each power state (EXLAT).");
	per_state(s, nv, n, "tierd_nvme_power_state_exit_latency_seconds", PS_EXIT_S);
	ms_family(s, "tierd_nvme_power_state_operational", "gauge",
	       "1 for operational power states, 0 for non-operational ones (NOPS).");
	per_state(s, nv, n, "tierd_nvme_power_state_operational", PS_OPERATIONAL);
	ms_family(s, "tierd_nvme_current_power_state", "gauge",
	       "Power state reported by Get Features 02h at the last refresh (-1: unknown).");
	for (size_t i = 0; i < n; i++)
		ms_sample_i(s, "tierd_nvme_current_power_state", nv[i].info->cur_ps, "device", nv[i].device, NULL);
	ms_family(s, "tierd_nvme_apst_enabled", "gauge",
	       "1 when autonomous power state transitions are on (Get Features 0Ch).");
	for (size_t i = 0; i < n; i++)
		ms_sample_i(s, "tierd_nvme_apst_enabled", nv[i].info->apst_enabled, "device", nv[i].device, NULL);
	ms_family(s, "tierd_nvme_temperature_celsius", "gauge",
	       "Composite temperature from the SMART / health log at the last refresh.");
	for (size_t i = 0; i < n; i++)
		if (nv[i].info->have_smart)
			ms_sample_d(s, "tierd_nvme_temperature_celsius", nv[i].info->temperature_c, "device",
				 nv[i].device, NULL);
	ms_family(s, "tierd_nvme_power_on_seconds_total", "counter",
	       "Power-on time from the SMART / health log (reported in hours).");
	for (size_t i = 0; i < n; i++)
		if (nv[i].info->have_smart)
			ms_sample_u(s, "tierd_nvme_power_on_seconds_total", nv[i].info->power_on_hours * 3600ULL,
				 "device", nv[i].device, NULL);
	ms_family(s, "tierd_nvme_smart_refreshes_total", "counter",
	       "SMART log reads; skipped while the device is idle so as not to wake it.");
	for (size_t i = 0; i < n; i++)
		ms_sample_u(s, "tierd_nvme_smart_refreshes_total", nv[i].info->refreshes, "device", nv[i].device,
			 NULL);
}

static void render_attr(struct msink *s, const char *name, const char *key, const char *value,
			const struct energy_attr *a)
{
	for (int t = 0; t < ENERGY_TIERS; t++)
		for (int c = 0; c < ENERGY_COMPONENTS; c++)
			ms_sample_d(s, name, a->joules[t][c], key, value, "tier", energy_tier_name((enum energy_tier)t),
				 "component", energy_component_name((enum energy_component)c), NULL);
}

static void render_energy(struct msink *s, const struct energy *e)
{
	char cl[32];

	ms_family(s, "tierd_energy_joules_total", "counter",
	       "Energy by tier and component: dynamic = bytes x energy per bit of the path, static "
	       "= power x time (NVMe part from inferred power-state residency).");
	for (int t = 0; t < ENERGY_TIERS; t++)
		for (int c = 0; c < ENERGY_COMPONENTS; c++)
			ms_sample_d(s, "tierd_energy_joules_total",
				 energy_joules(e, (enum energy_tier)t, (enum energy_component)c), "tier",
				 energy_tier_name((enum energy_tier)t), "component",
				 energy_component_name((enum energy_component)c), NULL);
	ms_family(s, "tierd_energy_other_joules_total", "counter",
	       "Dynamic SSD energy of device reads that tierd did not cause (eBPF bytes beyond tierd's).");
	ms_sample_d(s, "tierd_energy_other_joules_total", energy_other_joules(e), NULL);
	ms_family(s, "tierd_other_bytes_total", "counter",
	       "Device read bytes that tierd did not cause.");
	ms_sample_u(s, "tierd_other_bytes_total", energy_other_bytes(e), NULL);
	ms_family(s, "tierd_energy_unattributed_joules_total", "counter",
	       "Static energy spent before tierd fetched anything for anyone.");
	ms_sample_d(s, "tierd_energy_unattributed_joules_total", energy_unattributed_joules(e), NULL);

	ms_family(s, "tierd_model_energy_joules_total", "counter",
	       "Energy attributed to each model, in proportion to the bytes tierd fetched for it.");
	for (size_t i = 0; i < energy_model_count(e); i++)
		render_attr(s, "tierd_model_energy_joules_total", "model", energy_model_at(e, i)->model,
			    energy_model_at(e, i));
	ms_family(s, "tierd_model_fetched_bytes_total", "counter", "Bytes tierd fetched from SSD per model.");
	for (size_t i = 0; i < energy_model_count(e); i++)
		ms_sample_u(s, "tierd_model_fetched_bytes_total", energy_model_at(e, i)->fetched_bytes, "model",
			 energy_model_at(e, i)->model, NULL);
	ms_family(s, "tierd_model_tokens_total", "counter", "Tokens clients reported per model.");
	for (size_t i = 0; i < energy_model_count(e); i++)
		ms_sample_u(s, "tierd_model_tokens_total", energy_model_at(e, i)->tokens, "model",
			 energy_model_at(e, i)->model, NULL);
	ms_family(s, "tierd_client_energy_joules_total", "counter",
	       "Energy attributed to each client (none: prefetches; departed: clients gone).");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		render_attr(s, "tierd_client_energy_joules_total", "client", cl, energy_client_at(e, i));
	}
	ms_family(s, "tierd_client_fetched_bytes_total", "counter", "Bytes tierd fetched from SSD per client.");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		ms_sample_u(s, "tierd_client_fetched_bytes_total", energy_client_at(e, i)->fetched_bytes, "client",
			 cl, NULL);
	}
	ms_family(s, "tierd_client_tokens_total", "counter", "Tokens each client reported.");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		ms_sample_u(s, "tierd_client_tokens_total", energy_client_at(e, i)->tokens, "client", cl, NULL);
	}
	ms_family(s, "tierd_tokens_total", "counter", "Tokens reported by all clients.");
	ms_sample_u(s, "tierd_tokens_total", energy_tokens(e), NULL);

	if (!energy_device_count(e))
		return;
	ms_family(s, "tierd_nvme_power_state_seconds_total", "counter",
	       "Time in each NVMe power state, INFERRED (not measured): busy time in the operational "
	       "state, idle gaps measured by eBPF walked through the APST table.");
	for (size_t i = 0; i < energy_device_count(e); i++) {
		const struct energy_device *d = energy_device_at(e, i);
		char st[16];

		for (unsigned k = 0; k < d->nps; k++) {
			snprintf(st, sizeof(st), "ps%u", k);
			ms_sample_d(s, "tierd_nvme_power_state_seconds_total", d->state_s[k], "device", d->name,
				 "state", st, NULL);
		}
	}
	ms_family(s, "tierd_device_energy_joules_total", "counter",
	       "Energy of each checkpoint device: dynamic from measured reads, static from inferred "
	       "power-state residency.");
	for (size_t i = 0; i < energy_device_count(e); i++) {
		const struct energy_device *d = energy_device_at(e, i);

		ms_sample_d(s, "tierd_device_energy_joules_total", d->dynamic_j, "device", d->name, "component",
			 "dynamic", NULL);
		ms_sample_d(s, "tierd_device_energy_joules_total", d->static_j, "device", d->name, "component",
			 "static", NULL);
	}
}

static void render_engine(struct msink *s, const struct engine_stats *st)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} c[] = {
		{ "tierd_cache_hits_total", "Acquires served from the DDR pool.",
		  offsetof(struct engine_stats, hits) },
		{ "tierd_cache_misses_total", "Acquires that had to fetch from SSD.",
		  offsetof(struct engine_stats, misses) },
		{ "tierd_cache_evictions_total", "Experts evicted from the DDR pool.",
		  offsetof(struct engine_stats, evictions) },
		{ "tierd_fetches_total", "Expert fetches from SSD completed.",
		  offsetof(struct engine_stats, fetches) },
		{ "tierd_fetch_errors_total", "Expert fetches that failed.",
		  offsetof(struct engine_stats, fetch_errors) },
		{ "tierd_fetch_cancelled_total", "Prefetches cancelled before they ran.",
		  offsetof(struct engine_stats, cancelled) },
		{ "tierd_fetch_submit_errors_total",
		  "io_uring_submit refusals: the reads were retried later or their fetches failed.",
		  offsetof(struct engine_stats, submit_errors) },
		{ "tierd_cache_refused_total",
		  "Acquires refused up front: no slot could be freed (every resident expert pinned, a quota).",
		  offsetof(struct engine_stats, refused) },
	};
	uint64_t age_cum[ENGINE_EVICT_AGE_BUCKETS + 1], age_n = 0;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		ms_family(s, c[i].name, "counter", c[i].help);
		ms_sample_u(s, c[i].name, *(const uint64_t *)((const char *)st + c[i].off), NULL);
	}
	ms_family(s, "tierd_cache_eviction_age_seconds", "histogram",
		  "Evicted experts by how long they had been resident: evictions in the lowest "
		  "buckets are experts fetched moments before, a pool too small for its working set.");
	for (unsigned i = 0; i <= ENGINE_EVICT_AGE_BUCKETS; i++)
		age_cum[i] = age_n += st->evict_age_hist[i];
	ms_hist_tail(s, "tierd_cache_eviction_age_seconds", NULL, NULL, engine_evict_age_le, age_cum,
		     ENGINE_EVICT_AGE_BUCKETS, (double)st->evict_age_ns_sum / 1e9);
	ms_family(s, "tierd_pool_resident_bytes", "gauge", "Bytes of experts resident in the DDR pool.");
	ms_sample_u(s, "tierd_pool_resident_bytes", st->bytes_resident, NULL);
	ms_family(s, "tierd_pool_pins", "gauge", "Pins held by clients on pool slots.");
	ms_sample_u(s, "tierd_pool_pins", st->pins, NULL);
}

/* Placement per model: counters, and the ratios operators ask for (since
 * the daemon started; rates over a window come from the counters). */
static void render_placement(struct msink *s, const struct metrics_model *m, size_t n)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} ctr[] = {
		{ "tierd_model_cache_hits_total", "Acquires of the model served from the DDR pool.",
		  offsetof(struct metrics_model, hits) },
		{ "tierd_model_cache_misses_total", "Acquires of the model that waited for a fetch.",
		  offsetof(struct metrics_model, misses) },
		{ "tierd_model_prefetch_issued_total", "Fetches started by a prefetch (a client's or tierd's own).",
		  offsetof(struct metrics_model, prefetch_issued) },
		{ "tierd_model_prefetch_ahead_total", "Of those, started by tierd's own prefetch ([cache] prefetch).",
		  offsetof(struct metrics_model, prefetch_ahead) },
		{ "tierd_model_prefetch_used_total", "Prefetched experts an acquire then found (resident or arriving).",
		  offsetof(struct metrics_model, prefetch_used) },
		{ "tierd_model_prefetch_wasted_total", "Prefetched experts evicted before any acquire used them.",
		  offsetof(struct metrics_model, prefetch_wasted) },
		{ "tierd_model_prefetch_wasted_bytes_total", "Bytes of prefetched experts evicted unused.",
		  offsetof(struct metrics_model, prefetch_wasted_bytes) },
		{ "tierd_model_prefetch_cancelled_total",
		  "tierd's prefetches cancelled before they were read: the acquire showed them wrong.",
		  offsetof(struct metrics_model, prefetch_cancelled) },
	};

	for (size_t k = 0; k < sizeof(ctr) / sizeof(ctr[0]); k++) {
		ms_family(s, ctr[k].name, "counter", ctr[k].help);
		for (size_t i = 0; i < n; i++)
			ms_sample_u(s, ctr[k].name, *(const uint64_t *)((const char *)&m[i] + ctr[k].off), "model",
				 m[i].name, NULL);
	}
	ms_family(s, "tierd_model_cache_hit_ratio", "gauge", "Hits / acquires of the model since start (0: none).");
	for (size_t i = 0; i < n; i++) {
		uint64_t acq = m[i].hits + m[i].misses;

		ms_sample_d(s, "tierd_model_cache_hit_ratio", acq ? (double)m[i].hits / (double)acq : 0.0, "model",
			 m[i].name, NULL);
	}
	ms_family(s, "tierd_model_prefetch_precision", "gauge",
	       "Prefetches used / issued since start (0: none issued).");
	for (size_t i = 0; i < n; i++)
		ms_sample_d(s, "tierd_model_prefetch_precision",
			 m[i].prefetch_issued ? (double)m[i].prefetch_used / (double)m[i].prefetch_issued : 0.0,
			 "model", m[i].name, NULL);
	ms_family(s, "tierd_model_prefetch_recall", "gauge",
	       "Acquires a prefetch had brought in / all acquires since start (0: none).");
	for (size_t i = 0; i < n; i++) {
		uint64_t acq = m[i].hits + m[i].misses;

		ms_sample_d(s, "tierd_model_prefetch_recall", acq ? (double)m[i].prefetch_used / (double)acq : 0.0,
			 "model", m[i].name, NULL);
	}
}

static void render_models(struct msink *s, const struct metrics_model *m, size_t n)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "tierd_model_stale", "gauge",
		  "1 while a model is not served because its checkpoint files changed on disk, until a reload." },
		{ "tierd_checkpoint_changes_total", "counter",
		  "Changes of a model's checkpoint files found on disk (each stops serving it until a reload)." },
		{ "tierd_model_reloads_total", "counter",
		  "Reloads that served a model again after its checkpoint files changed." },
	};

	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		ms_family(s, fam[k].name, fam[k].type, fam[k].help);
		for (size_t i = 0; i < n; i++)
			ms_sample_u(s, fam[k].name, k == 0 ? m[i].stale : k == 1 ? m[i].changes : m[i].reloads,
				 "model", m[i].name, NULL);
	}
	render_placement(s, m, n);
}

static void render_pools(struct msink *s, const struct metrics_pool *p, size_t n)
{
	char node[16];

	ms_family(s, "tierd_pool_node_size_bytes", "gauge", "Bytes of the DDR pool on a NUMA node.");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_size_bytes", p[i].size, "node", node, NULL);
	}
	ms_family(s, "tierd_pool_node_resident_bytes", "gauge",
	       "Bytes of experts resident in the pool on a NUMA node (the sum over nodes is tierd_pool_resident_bytes).");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_resident_bytes", p[i].st.bytes_resident, "node", node, NULL);
	}
	ms_family(s, "tierd_pool_node_resident_experts", "gauge", "Experts resident in the pool on a NUMA node.");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_resident_experts", p[i].st.experts_resident, "node", node, NULL);
	}
	ms_family(s, "tierd_pool_node_fetches_total", "counter", "Expert reads started into the pool on a NUMA node.");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_fetches_total", p[i].st.fetches, "node", node, NULL);
	}
	ms_family(s, "tierd_pool_node_evictions_total", "counter", "Experts evicted from the pool on a NUMA node.");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_evictions_total", p[i].st.evictions, "node", node, NULL);
	}
	ms_family(s, "tierd_pool_node_acquires_total", "counter",
	       "Acquires by clients of a NUMA node, served from that node's pool (local) or from another's "
	       "(remote: an expert another node fetched first).");
	for (size_t i = 0; i < n; i++) {
		snprintf(node, sizeof(node), "%d", p[i].node);
		ms_sample_u(s, "tierd_pool_node_acquires_total", p[i].st.served_local, "node", node, "from",
			 "local", NULL);
		ms_sample_u(s, "tierd_pool_node_acquires_total", p[i].st.served_remote, "node", node, "from",
			 "remote", NULL);
	}
}

static void render_service(struct msink *s, const struct metrics_service *sv)
{
	char id[16], uid[16];

	ms_family(s, "tierd_requests_refused_total", "counter",
	       "Requests answered with an error, by reason (an errno name): access, quotas, a full pool.");
	for (size_t i = 0; i < sv->nreasons; i++)
		ms_sample_u(s, "tierd_requests_refused_total", sv->refused[i], "reason", sv->reason[i], NULL);
	ms_family(s, "tierd_operator_pins_save_errors_total", "counter",
	       "Operator pin changes refused because STATE_DIR/pins could not be written.");
	ms_sample_u(s, "tierd_operator_pins_save_errors_total", sv->pins_save_errors, NULL);
	ms_family(s, "tierd_clients_dropped_total", "counter",
	       "Clients disconnected by the daemon (unread answers, access withdrawn, protocol faults).");
	ms_sample_u(s, "tierd_clients_dropped_total", sv->clients_dropped, NULL);
	ms_family(s, "tierd_connections_refused_total", "counter",
	       "Connections refused at max_clients or max_connections_per_uid, or at the fd limit.");
	ms_sample_u(s, "tierd_connections_refused_total", sv->connections_refused, NULL);
	ms_family(s, "tierd_trace_events_total", "counter",
	       "Events (acquire batches by layer, routing hints) recorded into traces.");
	ms_sample_u(s, "tierd_trace_events_total", sv->trace_events, NULL);
	ms_family(s, "tierd_trace_events_dropped_total", "counter",
	       "Events a trace lost: its writer fell behind, its size limit, a write error.");
	ms_sample_u(s, "tierd_trace_events_dropped_total", sv->trace_dropped, NULL);
	ms_family(s, "tierd_trace_recording", "gauge", "1 while a trace is being recorded.");
	ms_sample_u(s, "tierd_trace_recording", sv->trace_active ? 1 : 0, NULL);
	ms_family(s, "tierd_client_pins", "gauge", "Pins each connected client holds.");
	for (size_t i = 0; i < sv->nclients; i++) {
		const struct metrics_client *c = &sv->clients[i];

		/* By id and uid, like the per-client energy: pids and names
		 * are in the daemon's log ("client N: pid P uid U ..."), not
		 * for every reader of the metrics. */
		snprintf(id, sizeof(id), "%u", c->id);
		snprintf(uid, sizeof(uid), "%u", c->uid);
		ms_sample_u(s, "tierd_client_pins", c->pins, "client", id, "uid", uid, NULL);
	}
}

static void render_fetch_hist(struct msink *s, const struct metrics_hist *h)
{
	uint64_t *cum = calloc(h->n + 1, sizeof(*cum)), c = 0;

	ms_family(s, "tierd_fetch_duration_seconds", "histogram",
	       "Expert fetch latency, request to data resident in the pool.");
	if (!cum) {
		s->nomem = true;
		return;
	}
	for (unsigned i = 0; i <= h->n; i++)
		cum[i] = c += h->counts[i];
	ms_hist_tail(s, "tierd_fetch_duration_seconds", NULL, NULL, h->le, cum, h->n, h->sum);
	free(cum);
}

static void render_all(struct msink *s, const struct metrics_input *in, const struct devnames *dn)
{
	render_info(s, in);
	render_bytes(s, in, dn);
	if (in->probes)
		render_probes(s, in->probes, dn);
	render_nvme_info(s, in->nvme, in->nnvme);
	if (in->energy)
		render_energy(s, in->energy);
	if (in->engine)
		render_engine(s, in->engine);
	if (in->fetch_latency)
		render_fetch_hist(s, in->fetch_latency);
	if (in->nmodels)
		render_models(s, in->models, in->nmodels);
	if (in->npools)
		render_pools(s, in->pools, in->npools);
	if (in->service)
		render_service(s, in->service);
}

static int render_text(const struct metrics_input *in, const struct devnames *dn, char **text, size_t *len)
{
	struct msink s = { 0 };
	char *buf = NULL;
	size_t sz = 0;
	int r = 0;

	s.f = open_memstream(&buf, &sz);
	if (!s.f)
		return -errno;
	render_all(&s, in, dn);
	if (ferror(s.f))
		r = -ENOMEM;
	if (fclose(s.f) && !r)
		r = -ENOMEM;
	if (r) {
		free(buf);
		return r;
	}
	*text = buf;
	*len = sz;
	return 0;
}

static int render_json(const struct metrics_input *in, const struct devnames *dn, char **text, size_t *len)
{
	struct msink s = { 0 };
	json_object *root = json_object_new_object();
	const char *str;
	int r = -ENOMEM;

	s.fams = json_object_new_array();
	if (!root || !s.fams || json_object_object_add(root, "families", s.fams)) {
		json_object_put(s.fams);
		goto out;
	}
	render_all(&s, in, dn);
	if (s.nomem)
		goto out;
	str = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!str)
		goto out;
	*text = strdup(str);
	if (!*text)
		goto out;
	*len = strlen(*text);
	r = 0;
out:
	json_object_put(root);
	return r;
}

int metrics_render_as(const struct metrics_input *in, enum metrics_format format, char **text, size_t *len)
{
	struct devnames dn = { 0 };
	int r = -EINVAL;

	*text = NULL;
	*len = 0;
	if (in->probes && in->probes->ndev) {
		dn.name = calloc(in->probes->ndev, sizeof(*dn.name));
		if (!dn.name)
			return -ENOMEM;
		dn.n = in->probes->ndev;
		for (size_t i = 0; i < dn.n; i++)
			metrics_device_name(in->probes->dev[i].major, in->probes->dev[i].minor,
					    dn.name[i], sizeof(dn.name[i]));
	}
	switch (format) {
	case METRICS_TEXT:
		r = render_text(in, &dn, text, len);
		break;
	case METRICS_JSON:
		r = render_json(in, &dn, text, len);
		break;
	}
	free(dn.name);
	return r;
}

int metrics_render(const struct metrics_input *in, char **text, size_t *len)
{
	return metrics_render_as(in, METRICS_TEXT, text, len);
}
