/* SPDX-License-Identifier: MIT */
/*
 * Test helper for tests/metrics-promtool.sh: renders metrics from a
 * synthetic snapshot that fills every family (models, clients, NVMe
 * descriptors, probes, engine counters, fetch latency), then
 *   (no option)      prints the text;
 *   -t PATH          writes it as a node_exporter textfile;
 *   -s               serves it on 127.0.0.1 (ephemeral port), prints the
 *                    port on stdout and serves until stdin closes.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "energy.h"
#include "log.h"
#include "metrics.h"

#define S 1000000000ULL

static int build(struct energy **e, struct probes_snapshot *snap, struct nvmedev_info *nv)
{
	struct energy_params p = {
		.pj_hbm = 4.2, .pj_ddr = 9.2, .pj_flash = 102.4,
		.ddr_static_w_per_gib = 57.0 / 256, .gpu_idle_w = 70, .gpus = 1,
	};
	struct energy_nvme_model m;
	int r;

	memset(nv, 0, sizeof(*nv));
	snprintf(nv->ctrl, sizeof(nv->ctrl), "nvme0");
	nv->nps = 3;
	nv->ps[0] = (struct nvmedev_psd){ .max_w = 8, .idle_w = -1, .active_w = 6, .exit_lat_us = 0 };
	nv->ps[1] = (struct nvmedev_psd){ .max_w = 4, .idle_w = -1, .active_w = -1 };
	nv->ps[2] = (struct nvmedev_psd){ .max_w = 0.05, .idle_w = 0.004, .active_w = -1,
					  .entry_lat_us = 2000, .exit_lat_us = 5000, .nonop = true };
	nv->apst_supported = nv->apst_enabled = true;
	nv->apst[0] = (struct nvmedev_apst_entry){ .itps = 2, .itpt_ms = 100 };
	nv->have_smart = true;
	nv->data_units_read = 1234;
	nv->data_units_written = 56;
	nv->power_on_hours = 10;
	nv->temperature_c = 36.85;
	nv->refreshes = 2;

	r = energy_create(e, &p, 4ULL << 30, ENERGY_SOURCE_EBPF, 0);
	if (r)
		return r;
	memset(snap, 0, sizeof(*snap));
	snap->dev = calloc(1, sizeof(*snap->dev));
	snap->nvme = calloc(1, sizeof(*snap->nvme));
	if (!snap->dev || !snap->nvme)
		return -ENOMEM;
	snap->ndev = 1;
	snap->nnvme = 1;
	/* 4095:4095 resolves to no sysfs entry: the name falls back to it. */
	snap->dev[0].major = 4095;
	snap->dev[0].minor = 4095;
	energy_device_add(*e, "nvme0n1", 4095, 4095);
	energy_nvme_model_from_info(&m, nv);
	r = energy_device_set_nvme(*e, 4095, 4095, &m);
	if (r)
		return r;
	energy_device_sample(*e, &snap->dev[0]);
	/* A model name that needs escaping in a label value. */
	energy_account_fetch(*e, "mix\"tral\\8x7b", 1, 3 << 20);
	energy_account_fetch(*e, "olmoe", ENERGY_CLIENT_NONE, 1 << 20);
	energy_account_hbm(*e, "olmoe", 2, 1 << 20);
	energy_account_tokens(*e, "olmoe", 2, 17);
	energy_account_fetch(*e, "olmoe", 3, 1 << 20);
	energy_client_forget(*e, 3);
	snap->dev[0].read_bytes = 6 << 20;
	snap->dev[0].write_bytes = 4096;
	snap->dev[0].read_reqs = 6;
	snap->dev[0].write_reqs = 1;
	snap->dev[0].busy_ns = S / 10;
	snap->dev[0].lat_hist[20] = 7;
	snap->dev[0].lat_count = 7;
	snap->dev[0].lat_sum_ns = 7 << 20;
	snap->dev[0].gap_hist[28] = 3;
	snap->dev[0].gap_sum_ns[28] = 3 * 300000000ULL;
	energy_device_sample(*e, &snap->dev[0]);
	snap->nvme[0].instance = 0;
	snap->nvme[0].c.admin_cmds = 12;
	snap->nvme[0].c.io_cmds = 7;
	snap->nvme[0].c.set_power_mgmt = 1;
	snap->nvme[0].c.last_ps = 1;
	energy_advance(*e, 2 * S);
	return 0;
}

int main(int argc, char **argv)
{
	static const double le[] = { 0.001, 0.01, 0.1 };
	static const uint64_t counts[] = { 3, 5, 1, 0 };
	struct metrics_hist h = { .n = 3, .le = le, .counts = counts, .sum = 0.123 };
	struct engine_stats st = { .hits = 10, .misses = 4, .evictions = 1, .fetches = 4,
				   .bytes_read = 5 << 20, .bytes_resident = 3 << 20, .pins = 2,
				   .evict_age_hist = { 1 }, .evict_age_ns_sum = 250000000 };
	struct nvmedev_info nv;
	struct metrics_nvme mn = { .device = "nvme0n1", .info = &nv };
	struct metrics_model models[] = {
		{ .name = (char *)"mixtral", .stale = true, .changes = 2, .reloads = 1 },
		{ .name = (char *)"qwen \"moe\"", .stale = false },
		/* What a hand-written reader of the text gets wrong. */
		{ .name = (char *)"a,tier=\"ssd\"\\x", .stale = false, .changes = 7 },
	};
	struct probes_snapshot snap;
	struct metrics_input in = { 0 };
	struct energy *e = NULL;
	const char *textfile = NULL;
	int serve = 0, json = 0, opt, r;
	char *text = NULL;
	size_t len = 0;

	log_init("metrics-dump", LOG_WARNING);
	while ((opt = getopt(argc, argv, "jst:")) != -1) {
		switch (opt) {
		case 'j': json = 1; break;
		case 's': serve = 1; break;
		case 't': textfile = optarg; break;
		default:
			fprintf(stderr, "Usage: metrics-dump [-j] [-s] [-t PATH]\n");
			return 2;
		}
	}
	r = build(&e, &snap, &nv);
	if (!r) {
		in.probes_mode = "tp_btf";
		in.probes = &snap;
		in.energy = e;
		in.nvme = &mn;
		in.nnvme = 1;
		in.engine = &st;
		in.fetch_latency = &h;
		in.models = models;
		in.nmodels = sizeof(models) / sizeof(models[0]);
		r = metrics_render_as(&in, json ? METRICS_JSON : METRICS_TEXT, &text, &len);
	}
	if (r) {
		fprintf(stderr, "metrics-dump: %s\n", strerror(-r));
		goto out;
	}
	if (textfile) {
		r = metrics_textfile_write(textfile, text, len);
		if (r)
			fprintf(stderr, "metrics-dump: %s: %s\n", textfile, strerror(-r));
	} else if (serve) {
		struct metrics_http *hs;
		char buf[64];

		r = metrics_http_create(&hs, "127.0.0.1:0");
		if (!r)
			r = metrics_http_publish(hs, text, len);
		if (!r) {
			printf("%u\n", metrics_http_port(hs));
			fflush(stdout);
			while (fgets(buf, sizeof(buf), stdin))
				;
		}
		metrics_http_destroy(hs);
	} else {
		fwrite(text, 1, len, stdout);
	}
out:
	free(text);
	probes_snapshot_free(&snap);
	energy_destroy(e);
	return r ? 1 : 0;
}
