/* SPDX-License-Identifier: MIT */
/*
 * NVMe facts for energy accounting, read with libnvme: which block device and
 * controller a checkpoint file lives on, the controller's power state
 * descriptors, APST table and state, current power state, and the SMART /
 * health log.
 *
 * The prefix is nvmedev_ because libnvme owns nvme_.
 *
 * Reading the SMART log is an admin command: on a controller that sits in a
 * non-operational power state it wakes the device, which costs the very
 * energy we measure.  So refreshes are spaced (nvme.refresh_s, long by
 * default) and nvmedev_refresh_due() skips a refresh when the device moved no
 * I/O since the last one: its counters cannot have changed then.
 */
#ifndef TIERD_NVME_H
#define TIERD_NVME_H

#include <stdbool.h>
#include <stdint.h>

#define NVMEDEV_MAX_PS		32
#define NVMEDEV_NAME_MAX	32
/* SMART data units are thousands of 512-byte units. */
#define NVMEDEV_DATA_UNIT	512000ULL

/* Where a path lives.  A file maps to the whole disk of its filesystem
 * (partitions resolve to their parent). */
struct nvmedev_map {
	char disk[NVMEDEV_NAME_MAX];	/* "nvme0n1", "vda" */
	uint32_t major, minor;		/* of the whole disk */
	bool is_nvme;
	char ctrl[NVMEDEV_NAME_MAX];	/* "nvme0"; "" when not NVMe */
	int instance;			/* 0 for nvme0; -1 when not NVMe */
};

struct nvmedev_psd {
	double max_w;			/* MP scaled by MXPS */
	double idle_w;			/* IDLP scaled by IPS; < 0: not reported */
	double active_w;		/* ACTP scaled by APWS; < 0: not reported */
	uint32_t entry_lat_us, exit_lat_us;
	bool nonop;			/* non-operational state */
	bool mxps;			/* MP in 0.0001 W units (else 0.01 W) */
};

struct nvmedev_apst_entry {
	uint8_t itps;			/* idle transition power state */
	uint32_t itpt_ms;		/* idle time prior to transition; 0: none */
};

struct nvmedev_info {
	char ctrl[NVMEDEV_NAME_MAX];
	char model[41], serial[21], firmware[9];
	unsigned nps;			/* NPSS + 1 */
	struct nvmedev_psd ps[NVMEDEV_MAX_PS];
	bool apst_supported;
	bool apst_enabled;		/* Get Features 0Ch */
	struct nvmedev_apst_entry apst[NVMEDEV_MAX_PS];
	int cur_ps;			/* Get Features 02h; -1 unknown */
	unsigned workload_hint;
	bool have_smart;
	uint64_t data_units_read;	/* NVMEDEV_DATA_UNIT each */
	uint64_t data_units_written;
	uint64_t host_read_cmds, host_write_cmds;
	uint64_t power_on_hours;
	uint64_t power_cycles;
	double temperature_c;
	uint64_t refreshes;		/* successful nvmedev_refresh() calls */
	uint64_t refresh_mono_ns;	/* CLOCK_MONOTONIC of the last one */
};

struct nvmedev;

/*
 * Resolves a file, a block device node or a controller node (/dev/nvme0).
 * Returns 0 with m filled (is_nvme false for other disks), -ENODEV when the
 * path is not backed by a block device (tmpfs, overlay), or an errno of
 * stat/sysfs.
 */
int nvmedev_map_path(const char *path, struct nvmedev_map *m);

/* Opens /dev/CTRL ("nvme0") and reads Identify Controller. */
int nvmedev_open(struct nvmedev **out, const char *ctrl);
void nvmedev_close(struct nvmedev *d);
int nvmedev_fd(const struct nvmedev *d);

/* Reads the current power state, APST and the SMART log. */
int nvmedev_refresh(struct nvmedev *d);
/*
 * Whether a refresh is due at now_ns (CLOCK_MONOTONIC): interval_s passed
 * since the last one and io_counter (any monotonic count of I/O to this
 * device: eBPF requests, or tierd's own reads) moved.  io_counter
 * UINT64_MAX means unknown: only the interval counts.
 */
bool nvmedev_refresh_due(const struct nvmedev *d, uint64_t now_ns, unsigned interval_s,
			 uint64_t io_counter);
/* The policy itself, for tests: last_ns and io_at_last describe the last
 * attempt (attempted false: none yet). */
bool nvmedev_refresh_policy(bool attempted, uint64_t last_ns, uint64_t io_at_last,
			    uint64_t now_ns, unsigned interval_s, uint64_t io_counter);
/* Records the counter a refresh was taken at (call after nvmedev_refresh). */
void nvmedev_refresh_mark(struct nvmedev *d, uint64_t io_counter);
const struct nvmedev_info *nvmedev_info(const struct nvmedev *d);

/* Decoders, exposed for tests: power in watts from a descriptor's fields. */
double nvmedev_max_power_w(uint16_t mp, uint8_t flags);
/* scale: the two high bits of IPS / APWS; < 0 when not reported. */
double nvmedev_scaled_power_w(uint16_t value, uint8_t scale_byte);
/* 128-bit little-endian SMART counter, saturated to 64 bits. */
uint64_t nvmedev_le128(const uint8_t v[16]);

#endif
