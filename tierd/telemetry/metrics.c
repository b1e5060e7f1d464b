/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

/* log2 slots exported as histogram buckets: 2^10 ns (about 1 us) up to
 * 2^41 ns (about 37 min); the slots below fold into the first bucket. */
#define SLOT_LO		9
#define SLOT_HI		40

#define CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

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

/* Label values escape backslash, double quote and newline. */
static void put_label(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*v, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
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

/* Histogram from log2 ns slots; labels is "" or 'name="v"'. */
static void log2_hist(FILE *f, const char *name, const char *labels, const uint64_t *slots,
		      double sum_s)
{
	const char *sep = labels[0] ? "," : "";
	uint64_t cum = 0;

	for (unsigned i = 0; i < SLOT_LO; i++)
		cum += slots[i];
	for (unsigned i = SLOT_LO; i <= SLOT_HI && i < BLKSTAT_SLOTS; i++) {
		cum += slots[i];
		fprintf(f, "%s_bucket{%s%sle=\"%.9g\"} %llu\n", name, labels, sep,
			(double)probes_slot_upper_ns(i) / 1e9, (unsigned long long)cum);
	}
	for (unsigned i = SLOT_HI + 1; i < BLKSTAT_SLOTS; i++)
		cum += slots[i];
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
	fprintf(f, "%s_sum{%s} %.9g\n", name, labels, sum_s);
	fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

struct devnames {
	char (*name)[NVMEDEV_NAME_MAX];
	size_t n;
};

static void render_info(FILE *f, const struct metrics_input *in)
{
	family(f, "tierd_info", "gauge",
	       "tierd build and how it measures: probes (tp_btf, raw_tp, none) and the source of "
	       "the SSD tier's bytes (ebpf, or tierd's own accounting).");
	fprintf(f, "tierd_info{version=\"%s\",probes=\"%s\",energy_source=\"%s\"} 1\n",
		PACKAGE_VERSION, in->probes_mode ? in->probes_mode : "none",
		in->energy ? energy_source_name(energy_source(in->energy)) :
			     (in->probes_mode ? "ebpf" : "tierd"));
}

static void bytes_line(FILE *f, const char *tier, const char *device, const char *dir,
		       const char *source, uint64_t v)
{
	fprintf(f, "tierd_bytes_total{tier=\"%s\",device=\"", tier);
	put_label(f, device);
	fprintf(f, "\",direction=\"%s\",source=\"%s\"} %llu\n", dir, source, (unsigned long long)v);
}

static void render_bytes(FILE *f, const struct metrics_input *in, const struct devnames *dn)
{

	family(f, "tierd_bytes_total", "counter",
	       "Bytes moved, by tier, device, direction and source: ebpf (block layer, every "
	       "process), tierd (what tierd itself read or handed out), smart (the device's SMART "
	       "data units, 512000 bytes each).");
	if (in->probes)
		for (size_t i = 0; i < in->probes->ndev; i++) {
			const struct probes_dev *d = &in->probes->dev[i];

			bytes_line(f, "ssd", dn->name[i], "read", "ebpf", d->read_bytes);
			bytes_line(f, "ssd", dn->name[i], "write", "ebpf", d->write_bytes);
		}
	if (in->energy) {
		bytes_line(f, "ssd", "all", "read", "tierd", energy_tierd_bytes(in->energy));
		bytes_line(f, "ddr", "pool", "read", "tierd", energy_hbm_bytes(in->energy));
		bytes_line(f, "hbm", "gpu", "write", "tierd", energy_hbm_bytes(in->energy));
	} else if (in->engine) {
		bytes_line(f, "ssd", "all", "read", "tierd", in->engine->bytes_read);
	}
	for (size_t i = 0; i < in->nnvme; i++) {
		const struct nvmedev_info *n = in->nvme[i].info;

		if (!n->have_smart)
			continue;
		bytes_line(f, "ssd", in->nvme[i].device, "read", "smart",
			   n->data_units_read * NVMEDEV_DATA_UNIT);
		bytes_line(f, "ssd", in->nvme[i].device, "write", "smart",
			   n->data_units_written * NVMEDEV_DATA_UNIT);
	}
}

static void render_probes(FILE *f, const struct probes_snapshot *s, const struct devnames *dn)
{
	char labels[96];

	/* Said, not hidden: what the eBPF counters lack. */
	family(f, "tierd_probe_missed_runs_total", "counter",
	       "Runs of the block-layer eBPF programs the kernel skipped because one was already "
	       "running on that CPU; a skipped completion is accounted later "
	       "(tierd_probe_lost_requests_total), a skipped issue leaves its request without a "
	       "latency (tierd_probe_unmatched_completions_total).");
	fprintf(f, "tierd_probe_missed_runs_total %llu\n", (unsigned long long)s->missed);
	if (!s->ndev)
		goto nvme;
	family(f, "tierd_probe_lost_requests_total", "counter",
	       "Block requests whose completion the eBPF programs did not see (the kernel did not "
	       "run them), found finished later: from then on their requests and bytes are in the "
	       "eBPF device counters, without a latency.");
	for (size_t i = 0; i < s->ndev; i++)
		fprintf(f, "tierd_probe_lost_requests_total{device=\"%s\"} %llu\n", dn->name[i],
			(unsigned long long)s->dev[i].lost_reqs);
	family(f, "tierd_probe_lost_bytes_total", "counter",
	       "Bytes of the requests in tierd_probe_lost_requests_total.");
	for (size_t i = 0; i < s->ndev; i++)
		fprintf(f, "tierd_probe_lost_bytes_total{device=\"%s\"} %llu\n", dn->name[i],
			(unsigned long long)s->dev[i].lost_bytes);
	family(f, "tierd_probe_unmatched_completions_total", "counter",
	       "Block requests completed with no issue seen by eBPF (in flight when the probes "
	       "attached, or the kernel did not run the issue program): counted, without a "
	       "latency.");
	for (size_t i = 0; i < s->ndev; i++)
		fprintf(f, "tierd_probe_unmatched_completions_total{device=\"%s\"} %llu\n",
			dn->name[i], (unsigned long long)s->dev[i].unmatched);
	family(f, "tierd_device_requests_total", "counter",
	       "Block requests completed, measured by eBPF at the block layer.");
	for (size_t i = 0; i < s->ndev; i++) {
		fprintf(f, "tierd_device_requests_total{device=\"%s\",direction=\"read\"} %llu\n",
			dn->name[i], (unsigned long long)s->dev[i].read_reqs);
		fprintf(f, "tierd_device_requests_total{device=\"%s\",direction=\"write\"} %llu\n",
			dn->name[i], (unsigned long long)s->dev[i].write_reqs);
		fprintf(f, "tierd_device_requests_total{device=\"%s\",direction=\"other\"} %llu\n",
			dn->name[i], (unsigned long long)s->dev[i].other_reqs);
	}
	family(f, "tierd_device_busy_seconds_total", "counter",
	       "Time with at least one request in flight, measured by eBPF.");
	for (size_t i = 0; i < s->ndev; i++)
		fprintf(f, "tierd_device_busy_seconds_total{device=\"%s\"} %.9f\n", dn->name[i],
			(double)s->dev[i].busy_ns / 1e9);
	family(f, "tierd_device_inflight_requests", "gauge", "Requests in flight now.");
	for (size_t i = 0; i < s->ndev; i++)
		fprintf(f, "tierd_device_inflight_requests{device=\"%s\"} %lld\n", dn->name[i],
			(long long)(s->dev[i].inflight > 0 ? s->dev[i].inflight : 0));
	family(f, "tierd_device_request_duration_seconds", "histogram",
	       "Block request latency, issue to completion, measured by eBPF.");
	for (size_t i = 0; i < s->ndev; i++) {
		snprintf(labels, sizeof(labels), "device=\"%s\"", dn->name[i]);
		log2_hist(f, "tierd_device_request_duration_seconds", labels, s->dev[i].lat_hist,
			  (double)s->dev[i].lat_sum_ns / 1e9);
	}
	family(f, "tierd_device_idle_gap_seconds", "histogram",
	       "Idle gaps between busy periods of the device, measured by eBPF; the input of the "
	       "power-state inference.");
	for (size_t i = 0; i < s->ndev; i++) {
		double sum = 0;

		for (unsigned k = 0; k < BLKSTAT_SLOTS; k++)
			sum += (double)s->dev[i].gap_sum_ns[k] / 1e9;
		snprintf(labels, sizeof(labels), "device=\"%s\"", dn->name[i]);
		log2_hist(f, "tierd_device_idle_gap_seconds", labels, s->dev[i].gap_hist, sum);
	}
nvme:
	if (!s->nnvme)
		return;
	family(f, "tierd_nvme_commands_total", "counter",
	       "NVMe commands set up by the driver, by controller and queue (nvme tracepoints).");
	for (size_t i = 0; i < s->nnvme; i++) {
		fprintf(f, "tierd_nvme_commands_total{controller=\"nvme%u\",queue=\"admin\"} %llu\n",
			s->nvme[i].instance, (unsigned long long)s->nvme[i].c.admin_cmds);
		fprintf(f, "tierd_nvme_commands_total{controller=\"nvme%u\",queue=\"io\"} %llu\n",
			s->nvme[i].instance, (unsigned long long)s->nvme[i].c.io_cmds);
	}
	family(f, "tierd_nvme_command_errors_total", "counter",
	       "NVMe commands completed with a non-zero status.");
	for (size_t i = 0; i < s->nnvme; i++)
		fprintf(f, "tierd_nvme_command_errors_total{controller=\"nvme%u\"} %llu\n",
			s->nvme[i].instance, (unsigned long long)s->nvme[i].c.errors);
	family(f, "tierd_nvme_set_features_total", "counter",
	       "Host-initiated power changes seen: Set Features power management (02h) and APST (0Ch).");
	for (size_t i = 0; i < s->nnvme; i++) {
		fprintf(f, "tierd_nvme_set_features_total{controller=\"nvme%u\",feature=\"power_management\"} %llu\n",
			s->nvme[i].instance, (unsigned long long)s->nvme[i].c.set_power_mgmt);
		fprintf(f, "tierd_nvme_set_features_total{controller=\"nvme%u\",feature=\"apst\"} %llu\n",
			s->nvme[i].instance, (unsigned long long)s->nvme[i].c.set_apst);
	}
	family(f, "tierd_nvme_requested_power_state", "gauge",
	       "Power state the host last requested with Set Features 02h (-1: none seen).");
	for (size_t i = 0; i < s->nnvme; i++)
		fprintf(f, "tierd_nvme_requested_power_state{controller=\"nvme%u\"} %d\n",
			s->nvme[i].instance,
			s->nvme[i].c.set_power_mgmt ? (int)s->nvme[i].c.last_ps : -1);
}

static void render_nvme_info(FILE *f, const struct metrics_nvme *nv, size_t n)
{
	if (!n)
		return;
	family(f, "tierd_nvme_power_state_max_watts", "gauge",
	       "Maximum power of each power state (Identify Controller descriptor, MP and MXPS).");
	for (size_t i = 0; i < n; i++)
		for (unsigned s = 0; s < nv[i].info->nps; s++)
			fprintf(f, "tierd_nvme_power_state_max_watts{device=\"%s\",state=\"ps%u\"} %.6g\n",
				nv[i].device, s, nv[i].info->ps[s].max_w);
	family(f, "tierd_nvme_power_state_idle_watts", "gauge",
	       "Idle power of each power state, where the descriptor reports it (IDLP, IPS).");
	for (size_t i = 0; i < n; i++)
		for (unsigned s = 0; s < nv[i].info->nps; s++)
			if (nv[i].info->ps[s].idle_w >= 0)
				fprintf(f, "tierd_nvme_power_state_idle_watts{device=\"%s\",state=\"ps%u\"} %.6g\n",
					nv[i].device, s, nv[i].info->ps[s].idle_w);
	family(f, "tierd_nvme_power_state_active_watts", "gauge",
	       "Active power of each power state, where the descriptor reports it (ACTP, APWS).");
	for (size_t i = 0; i < n; i++)
		for (unsigned s = 0; s < nv[i].info->nps; s++)
			if (nv[i].info->ps[s].active_w >= 0)
				fprintf(f, "tierd_nvme_power_state_active_watts{device=\"%s\",state=\"ps%u\"} %.6g\n",
					nv[i].device, s, nv[i].info->ps[s].active_w);
	family(f, "tierd_nvme_power_state_exit_latency_seconds", "gauge",
	       "Exit latency of each power state (EXLAT).");
	for (size_t i = 0; i < n; i++)
		for (unsigned s = 0; s < nv[i].info->nps; s++)
			fprintf(f, "tierd_nvme_power_state_exit_latency_seconds{device=\"%s\",state=\"ps%u\"} %.6g\n",
				nv[i].device, s, nv[i].info->ps[s].exit_lat_us / 1e6);
	family(f, "tierd_nvme_power_state_operational", "gauge",
	       "1 for operational power states, 0 for non-operational ones (NOPS).");
	for (size_t i = 0; i < n; i++)
		for (unsigned s = 0; s < nv[i].info->nps; s++)
			fprintf(f, "tierd_nvme_power_state_operational{device=\"%s\",state=\"ps%u\"} %d\n",
				nv[i].device, s, !nv[i].info->ps[s].nonop);
	family(f, "tierd_nvme_current_power_state", "gauge",
	       "Power state reported by Get Features 02h at the last refresh (-1: unknown).");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "tierd_nvme_current_power_state{device=\"%s\"} %d\n", nv[i].device,
			nv[i].info->cur_ps);
	family(f, "tierd_nvme_apst_enabled", "gauge",
	       "1 when autonomous power state transitions are on (Get Features 0Ch).");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "tierd_nvme_apst_enabled{device=\"%s\"} %d\n", nv[i].device,
			nv[i].info->apst_enabled);
	family(f, "tierd_nvme_temperature_celsius", "gauge",
	       "Composite temperature from the SMART / health log at the last refresh.");
	for (size_t i = 0; i < n; i++)
		if (nv[i].info->have_smart)
			fprintf(f, "tierd_nvme_temperature_celsius{device=\"%s\"} %.2f\n", nv[i].device,
				nv[i].info->temperature_c);
	family(f, "tierd_nvme_power_on_seconds_total", "counter",
	       "Power-on time from the SMART / health log (reported in hours).");
	for (size_t i = 0; i < n; i++)
		if (nv[i].info->have_smart)
			fprintf(f, "tierd_nvme_power_on_seconds_total{device=\"%s\"} %llu\n", nv[i].device,
				(unsigned long long)nv[i].info->power_on_hours * 3600ULL);
	family(f, "tierd_nvme_smart_refreshes_total", "counter",
	       "SMART log reads; skipped while the device is idle so as not to wake it.");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "tierd_nvme_smart_refreshes_total{device=\"%s\"} %llu\n", nv[i].device,
			(unsigned long long)nv[i].info->refreshes);
}

static void render_attr(FILE *f, const char *name, const char *key, const char *value,
			const struct energy_attr *a)
{
	for (int t = 0; t < ENERGY_TIERS; t++)
		for (int c = 0; c < ENERGY_COMPONENTS; c++) {
			fprintf(f, "%s{%s=\"", name, key);
			put_label(f, value);
			fprintf(f, "\",tier=\"%s\",component=\"%s\"} %.9g\n",
				energy_tier_name((enum energy_tier)t),
				energy_component_name((enum energy_component)c), a->joules[t][c]);
		}
}

static void render_energy(FILE *f, const struct energy *e)
{
	char cl[32];

	family(f, "tierd_energy_joules_total", "counter",
	       "Energy by tier and component: dynamic = bytes x energy per bit of the path, static "
	       "= power x time (NVMe part from inferred power-state residency).");
	for (int t = 0; t < ENERGY_TIERS; t++)
		for (int c = 0; c < ENERGY_COMPONENTS; c++)
			fprintf(f, "tierd_energy_joules_total{tier=\"%s\",component=\"%s\"} %.9g\n",
				energy_tier_name((enum energy_tier)t),
				energy_component_name((enum energy_component)c),
				energy_joules(e, (enum energy_tier)t, (enum energy_component)c));
	family(f, "tierd_energy_other_joules_total", "counter",
	       "Dynamic SSD energy of device reads that tierd did not cause (eBPF bytes beyond tierd's).");
	fprintf(f, "tierd_energy_other_joules_total %.9g\n", energy_other_joules(e));
	family(f, "tierd_other_bytes_total", "counter",
	       "Device read bytes that tierd did not cause.");
	fprintf(f, "tierd_other_bytes_total %llu\n", (unsigned long long)energy_other_bytes(e));
	family(f, "tierd_energy_unattributed_joules_total", "counter",
	       "Static energy spent before tierd fetched anything for anyone.");
	fprintf(f, "tierd_energy_unattributed_joules_total %.9g\n", energy_unattributed_joules(e));

	family(f, "tierd_model_energy_joules_total", "counter",
	       "Energy attributed to each model, in proportion to the bytes tierd fetched for it.");
	for (size_t i = 0; i < energy_model_count(e); i++)
		render_attr(f, "tierd_model_energy_joules_total", "model", energy_model_at(e, i)->model,
			    energy_model_at(e, i));
	family(f, "tierd_model_fetched_bytes_total", "counter", "Bytes tierd fetched from SSD per model.");
	for (size_t i = 0; i < energy_model_count(e); i++) {
		fputs("tierd_model_fetched_bytes_total{model=\"", f);
		put_label(f, energy_model_at(e, i)->model);
		fprintf(f, "\"} %llu\n", (unsigned long long)energy_model_at(e, i)->fetched_bytes);
	}
	family(f, "tierd_model_tokens_total", "counter", "Tokens clients reported per model.");
	for (size_t i = 0; i < energy_model_count(e); i++) {
		fputs("tierd_model_tokens_total{model=\"", f);
		put_label(f, energy_model_at(e, i)->model);
		fprintf(f, "\"} %llu\n", (unsigned long long)energy_model_at(e, i)->tokens);
	}
	family(f, "tierd_client_energy_joules_total", "counter",
	       "Energy attributed to each client (none: prefetches; departed: clients gone).");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		render_attr(f, "tierd_client_energy_joules_total", "client", cl, energy_client_at(e, i));
	}
	family(f, "tierd_client_fetched_bytes_total", "counter", "Bytes tierd fetched from SSD per client.");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		fprintf(f, "tierd_client_fetched_bytes_total{client=\"%s\"} %llu\n", cl,
			(unsigned long long)energy_client_at(e, i)->fetched_bytes);
	}
	family(f, "tierd_client_tokens_total", "counter", "Tokens each client reported.");
	for (size_t i = 0; i < energy_client_count(e); i++) {
		client_label(cl, sizeof(cl), energy_client_at(e, i)->client);
		fprintf(f, "tierd_client_tokens_total{client=\"%s\"} %llu\n", cl,
			(unsigned long long)energy_client_at(e, i)->tokens);
	}
	family(f, "tierd_tokens_total", "counter", "Tokens reported by all clients.");
	fprintf(f, "tierd_tokens_total %llu\n", (unsigned long long)energy_tokens(e));

	if (!energy_device_count(e))
		return;
	family(f, "tierd_nvme_power_state_seconds_total", "counter",
	       "Time in each NVMe power state, INFERRED (not measured): busy time in the operational "
	       "state, idle gaps measured by eBPF walked through the APST table.");
	for (size_t i = 0; i < energy_device_count(e); i++) {
		const struct energy_device *d = energy_device_at(e, i);

		for (unsigned s = 0; s < d->nps; s++)
			fprintf(f, "tierd_nvme_power_state_seconds_total{device=\"%s\",state=\"ps%u\"} %.9f\n",
				d->name, s, d->state_s[s]);
	}
	family(f, "tierd_device_energy_joules_total", "counter",
	       "Energy of each checkpoint device: dynamic from measured reads, static from inferred "
	       "power-state residency.");
	for (size_t i = 0; i < energy_device_count(e); i++) {
		const struct energy_device *d = energy_device_at(e, i);

		fprintf(f, "tierd_device_energy_joules_total{device=\"%s\",component=\"dynamic\"} %.9g\n",
			d->name, d->dynamic_j);
		fprintf(f, "tierd_device_energy_joules_total{device=\"%s\",component=\"static\"} %.9g\n",
			d->name, d->static_j);
	}
}

static void render_engine(FILE *f, const struct engine_stats *st)
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
	uint64_t cum;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		family(f, c[i].name, "counter", c[i].help);
		fprintf(f, "%s %llu\n", c[i].name,
			(unsigned long long)*(const uint64_t *)((const char *)st + c[i].off));
	}
	family(f, "tierd_cache_eviction_age_seconds", "histogram",
	       "Evicted experts by how long they had been resident: evictions in the lowest "
	       "buckets are experts fetched moments before, a pool too small for its working set.");
	cum = 0;
	for (unsigned i = 0; i < ENGINE_EVICT_AGE_BUCKETS; i++) {
		cum += st->evict_age_hist[i];
		fprintf(f, "tierd_cache_eviction_age_seconds_bucket{le=\"%g\"} %llu\n",
			engine_evict_age_le[i], (unsigned long long)cum);
	}
	cum += st->evict_age_hist[ENGINE_EVICT_AGE_BUCKETS];
	fprintf(f, "tierd_cache_eviction_age_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	fprintf(f, "tierd_cache_eviction_age_seconds_sum %.9g\n", (double)st->evict_age_ns_sum / 1e9);
	fprintf(f, "tierd_cache_eviction_age_seconds_count %llu\n", (unsigned long long)cum);
	family(f, "tierd_pool_resident_bytes", "gauge", "Bytes of experts resident in the DDR pool.");
	fprintf(f, "tierd_pool_resident_bytes %llu\n", (unsigned long long)st->bytes_resident);
	family(f, "tierd_pool_pins", "gauge", "Pins held by clients on pool slots.");
	fprintf(f, "tierd_pool_pins %llu\n", (unsigned long long)st->pins);
}

static void render_models(FILE *f, const struct metrics_model *m, size_t n)
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
		family(f, fam[k].name, fam[k].type, fam[k].help);
		for (size_t i = 0; i < n; i++) {
			uint64_t v = k == 0 ? m[i].stale : k == 1 ? m[i].changes : m[i].reloads;

			fprintf(f, "%s{model=\"", fam[k].name);
			put_label(f, m[i].name);
			fprintf(f, "\"} %llu\n", (unsigned long long)v);
		}
	}
}

static void render_service(FILE *f, const struct metrics_service *sv)
{
	family(f, "tierd_requests_refused_total", "counter",
	       "Requests answered with an error, by reason (an errno name): access, quotas, a full pool.");
	for (size_t i = 0; i < sv->nreasons; i++)
		fprintf(f, "tierd_requests_refused_total{reason=\"%s\"} %llu\n", sv->reason[i],
			(unsigned long long)sv->refused[i]);
	family(f, "tierd_operator_pins_save_errors_total", "counter",
	       "Operator pin changes refused because STATE_DIR/pins could not be written.");
	fprintf(f, "tierd_operator_pins_save_errors_total %llu\n", (unsigned long long)sv->pins_save_errors);
	family(f, "tierd_clients_dropped_total", "counter",
	       "Clients disconnected by the daemon (unread answers, access withdrawn, protocol faults).");
	fprintf(f, "tierd_clients_dropped_total %llu\n", (unsigned long long)sv->clients_dropped);
	family(f, "tierd_connections_refused_total", "counter",
	       "Connections refused at max_clients or max_connections_per_uid, or at the fd limit.");
	fprintf(f, "tierd_connections_refused_total %llu\n", (unsigned long long)sv->connections_refused);
	family(f, "tierd_client_pins", "gauge", "Pins each connected client holds.");
	for (size_t i = 0; i < sv->nclients; i++) {
		const struct metrics_client *c = &sv->clients[i];

		/* By id and uid, like the per-client energy: pids and names
		 * are in the daemon's log ("client N: pid P uid U ..."), not
		 * for every reader of the metrics. */
		fprintf(f, "tierd_client_pins{client=\"%u\",uid=\"%u\"} %llu\n", c->id, c->uid,
			(unsigned long long)c->pins);
	}
}

static void render_fetch_hist(FILE *f, const struct metrics_hist *h)
{
	uint64_t cum = 0;

	family(f, "tierd_fetch_duration_seconds", "histogram",
	       "Expert fetch latency, request to data resident in the pool.");
	for (unsigned i = 0; i < h->n; i++) {
		cum += h->counts[i];
		fprintf(f, "tierd_fetch_duration_seconds_bucket{le=\"%.9g\"} %llu\n", h->le[i],
			(unsigned long long)cum);
	}
	cum += h->counts[h->n];
	fprintf(f, "tierd_fetch_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	fprintf(f, "tierd_fetch_duration_seconds_sum %.9g\n", h->sum);
	fprintf(f, "tierd_fetch_duration_seconds_count %llu\n", (unsigned long long)cum);
}

int metrics_render(const struct metrics_input *in, char **text, size_t *len)
{
	struct devnames dn = { 0 };
	char *buf = NULL;
	size_t sz = 0;
	FILE *f;
	int r = 0;

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
	f = open_memstream(&buf, &sz);
	if (!f) {
		r = -errno;
		goto out;
	}
	render_info(f, in);
	render_bytes(f, in, &dn);
	if (in->probes)
		render_probes(f, in->probes, &dn);
	render_nvme_info(f, in->nvme, in->nnvme);
	if (in->energy)
		render_energy(f, in->energy);
	if (in->engine)
		render_engine(f, in->engine);
	if (in->fetch_latency)
		render_fetch_hist(f, in->fetch_latency);
	if (in->nmodels)
		render_models(f, in->models, in->nmodels);
	if (in->service)
		render_service(f, in->service);
	if (ferror(f))
		r = -ENOMEM;
	if (fclose(f) && !r)
		r = -ENOMEM;
	if (r) {
		free(buf);
		goto out;
	}
	*text = buf;
	*len = sz;
out:
	free(dn.name);
	return r;
}

struct metrics_http {
	struct MHD_Daemon *d;
	pthread_mutex_t lock;
	char *text;
	size_t len;
	uint16_t port;
};

static enum MHD_Result metrics_http_handle(void *cls, struct MHD_Connection *conn, const char *url,
					   const char *method, const char *version,
					   const char *upload_data, size_t *upload_data_size,
					   void **con_cls)
{
	struct metrics_http *h = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	char *copy = NULL;
	size_t len = 0;

	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics")) {
		status = MHD_HTTP_NOT_FOUND;
	} else {
		/* Copied under the lock; the response owns the copy. */
		pthread_mutex_lock(&h->lock);
		len = h->len;
		copy = malloc(len ? len : 1);
		if (copy && len)
			memcpy(copy, h->text, len);
		pthread_mutex_unlock(&h->lock);
		if (!copy)
			status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	if (status != MHD_HTTP_OK) {
		static const char wrong[] = "tierd: only GET /metrics is served\n";
		static const char nomem[] = "tierd: out of memory\n";
		const char *msg = status == MHD_HTTP_INTERNAL_SERVER_ERROR ? nomem : wrong;

		resp = MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
	} else {
		resp = MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_MUST_FREE);
	}
	if (!resp) {
		free(copy);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* "127.0.0.1:9464", "[::1]:9464", ":9464" (all addresses) */
static int parse_listen(const char *listen, struct sockaddr_storage *ss)
{
	char host[128];
	const char *colon;
	char *end;
	unsigned long port;
	size_t hl;

	memset(ss, 0, sizeof(*ss));
	colon = strrchr(listen, ':');
	if (!colon)
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || colon[1] == '\0' || port > 65535)
		return -EINVAL;
	hl = (size_t)(colon - listen);
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, listen, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		host[hl - 1] = '\0';
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host + 1, &a->sin6_addr) == 1 ? 0 : -EINVAL;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;

	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (!hl) {
		a->sin_addr.s_addr = htonl(INADDR_ANY);
		return 0;
	}
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}

int metrics_http_create(struct metrics_http **out, const char *listen)
{
	struct sockaddr_storage ss;
	struct metrics_http *h;
	const union MHD_DaemonInfo *info;
	/* AUTO: epoll or poll, not select, which refuses descriptors above
	 * FD_SETSIZE, numbers a daemon with many clients connected reaches. */
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	int r;

	*out = NULL;
	r = parse_listen(listen, &ss);
	if (r) {
		log_err("metrics: listen \"%s\": expected HOST:PORT or [V6]:PORT", listen);
		return r;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	h->d = MHD_start_daemon(flags, 0, NULL, NULL, metrics_http_handle, h,
				MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				MHD_OPTION_END);
	if (!h->d) {
		r = errno ? -errno : -EADDRNOTAVAIL;
		log_err("metrics: cannot listen on %s: %s", listen, strerror(-r));
		metrics_http_destroy(h);
		return r;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : 0;
	*out = h;
	return 0;
}

void metrics_http_destroy(struct metrics_http *h)
{
	if (!h)
		return;
	if (h->d)
		MHD_stop_daemon(h->d);
	pthread_mutex_destroy(&h->lock);
	free(h->text);
	free(h);
}

uint16_t metrics_http_port(const struct metrics_http *h)
{
	return h->port;
}

int metrics_http_publish(struct metrics_http *h, const char *text, size_t len)
{
	char *copy = malloc(len ? len : 1);

	if (!copy)
		return -ENOMEM;
	memcpy(copy, text, len);
	pthread_mutex_lock(&h->lock);
	free(h->text);
	h->text = copy;
	h->len = len;
	pthread_mutex_unlock(&h->lock);
	return 0;
}

int metrics_textfile_write(const char *path, const char *text, size_t len)
{
	char tmp[PATH_MAX];
	size_t off = 0;
	int fd, r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		off += (size_t)n;
	}
	if (!r && fsync(fd))
		r = -errno;
	if (close(fd) && !r)
		r = -errno;
	if (!r && rename(tmp, path))
		r = -errno;
	if (r)
		unlink(tmp);
	return r;
}
