/* SPDX-License-Identifier: MIT */
/*
 * nvme-info PATH: prints as JSON what tierd/telemetry/nvme.c reads for a file, a block
 * device or a controller node (/dev/nvme0): the device it maps to, the
 * controller's power state descriptors, APST, current power state and SMART
 * log.  Exit 0 also for "not NVMe" (that is an answer); 1 on errors.
 */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nvme.h"

static json_object *power_or_null(double w)
{
	return w < 0 ? NULL : json_object_new_double(w);
}

static json_object *info_json(const struct nvmedev_info *in)
{
	json_object *o = json_object_new_object(), *ps = json_object_new_array();
	json_object *apst = json_object_new_array(), *smart;
	char t[32];

	json_object_object_add(o, "controller", json_object_new_string(in->ctrl));
	json_object_object_add(o, "model", json_object_new_string(in->model));
	json_object_object_add(o, "serial", json_object_new_string(in->serial));
	json_object_object_add(o, "firmware", json_object_new_string(in->firmware));
	for (unsigned i = 0; i < in->nps; i++) {
		const struct nvmedev_psd *p = &in->ps[i];
		json_object *x = json_object_new_object();

		json_object_object_add(x, "state", json_object_new_int((int)i));
		json_object_object_add(x, "max_w", json_object_new_double(p->max_w));
		json_object_object_add(x, "max_power_scale_fine", json_object_new_boolean(p->mxps));
		json_object_object_add(x, "idle_w", power_or_null(p->idle_w));
		json_object_object_add(x, "active_w", power_or_null(p->active_w));
		json_object_object_add(x, "entry_latency_us", json_object_new_int64(p->entry_lat_us));
		json_object_object_add(x, "exit_latency_us", json_object_new_int64(p->exit_lat_us));
		json_object_object_add(x, "non_operational", json_object_new_boolean(p->nonop));
		json_object_array_add(ps, x);
	}
	json_object_object_add(o, "power_states", ps);
	json_object_object_add(o, "apst_supported", json_object_new_boolean(in->apst_supported));
	json_object_object_add(o, "apst_enabled", json_object_new_boolean(in->apst_enabled));
	for (unsigned i = 0; i < NVMEDEV_MAX_PS; i++) {
		json_object *x;

		if (!in->apst[i].itpt_ms)
			continue;
		x = json_object_new_object();
		json_object_object_add(x, "state", json_object_new_int((int)i));
		json_object_object_add(x, "idle_transition_state", json_object_new_int(in->apst[i].itps));
		json_object_object_add(x, "idle_time_ms", json_object_new_int64(in->apst[i].itpt_ms));
		json_object_array_add(apst, x);
	}
	json_object_object_add(o, "apst", apst);
	json_object_object_add(o, "current_power_state", json_object_new_int(in->cur_ps));
	json_object_object_add(o, "workload_hint", json_object_new_int((int)in->workload_hint));
	if (in->have_smart) {
		smart = json_object_new_object();
		json_object_object_add(smart, "data_units_read", json_object_new_int64((int64_t)in->data_units_read));
		json_object_object_add(smart, "data_units_written",
				       json_object_new_int64((int64_t)in->data_units_written));
		json_object_object_add(smart, "data_unit_bytes", json_object_new_int64((int64_t)NVMEDEV_DATA_UNIT));
		json_object_object_add(smart, "host_read_commands", json_object_new_int64((int64_t)in->host_read_cmds));
		json_object_object_add(smart, "host_write_commands",
				       json_object_new_int64((int64_t)in->host_write_cmds));
		json_object_object_add(smart, "power_on_hours", json_object_new_int64((int64_t)in->power_on_hours));
		json_object_object_add(smart, "power_cycles", json_object_new_int64((int64_t)in->power_cycles));
		snprintf(t, sizeof(t), "%.2f", in->temperature_c);
		json_object_object_add(smart, "temperature_c", json_object_new_double_s(in->temperature_c, t));
		json_object_object_add(o, "smart", smart);
	}
	return o;
}

int main(int argc, char **argv)
{
	struct nvmedev_map m;
	struct nvmedev *d = NULL;
	json_object *root;
	int r;

	log_init("nvme-info", LOG_WARNING);
	if (argc != 2) {
		fprintf(stderr, "Usage: nvme-info PATH|/dev/nvmeX\n");
		return 2;
	}
	root = json_object_new_object();
	json_object_object_add(root, "path", json_object_new_string(argv[1]));
	r = nvmedev_map_path(argv[1], &m);
	if (r) {
		json_object_object_add(root, "error", json_object_new_string(strerror(-r)));
		goto out;
	}
	if (m.disk[0]) {
		json_object_object_add(root, "disk", json_object_new_string(m.disk));
		json_object_object_add(root, "major", json_object_new_int((int)m.major));
		json_object_object_add(root, "minor", json_object_new_int((int)m.minor));
	}
	json_object_object_add(root, "nvme", json_object_new_boolean(m.is_nvme));
	if (!m.is_nvme) {
		json_object_object_add(root, "reason", json_object_new_string("not NVMe"));
		goto out;
	}
	if (!m.ctrl[0]) {
		r = -ENODEV;
		json_object_object_add(root, "error", json_object_new_string("no controller found"));
		goto out;
	}
	r = nvmedev_open(&d, m.ctrl);
	if (!r)
		r = nvmedev_refresh(d);
	if (r) {
		json_object_object_add(root, "error", json_object_new_string(strerror(-r)));
		goto out;
	}
	json_object_object_add(root, "controller", info_json(nvmedev_info(d)));
out:
	puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	nvmedev_close(d);
	return r ? 1 : 0;
}
