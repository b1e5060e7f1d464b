/* SPDX-License-Identifier: MIT */
/*
 * bpf-nvme-check [CTRL [NAMESPACE]]: run as root where an NVMe controller
 * and the nvme_core module's BTF exist (the VM suite's emulated drive).
 * Prints TAP:
 *   - the nvme tracepoints attach (nvmetrace loads);
 *   - libnvme reads the controller's power state descriptors;
 *   - a Set Features power-management command issued here is seen by the
 *     probe with the power state it asked for;
 *   - reads from the namespace show up as I/O commands;
 *   - SMART data units read advance consistently with the eBPF byte count
 *     of the same reads (units of 512,000 bytes, rounded up by the device).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <nvme/ioctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"
#include "nvme.h"
#include "probes.h"

#define READ_BYTES	(32ULL << 20)
#define CHUNK		(1ULL << 20)

static int n_test;

static void tap(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tap(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", ok ? "" : "not ", ++n_test);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int snap_ctrl(struct probes *p, uint32_t inst, struct nvmetrace_ctrl *c,
		     uint32_t ma, uint32_t mi, uint64_t *blk_read)
{
	struct probes_snapshot s;
	const struct probes_nvme *n;
	const struct probes_dev *d;
	int r = probes_read(p, &s);

	if (r)
		return r;
	n = probes_snapshot_nvme(&s, inst);
	if (n)
		*c = n->c;
	else
		memset(c, 0, sizeof(*c));
	d = probes_snapshot_dev(&s, ma, mi);
	*blk_read = d ? d->read_bytes : 0;
	probes_snapshot_free(&s);
	return 0;
}

static int read_ns(const char *ns, uint64_t bytes)
{
	void *buf;
	int fd, r = 0;

	if (posix_memalign(&buf, 4096, CHUNK))
		return -ENOMEM;
	fd = open(ns, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		r = -errno;
		free(buf);
		return r;
	}
	for (uint64_t off = 0; off < bytes; off += CHUNK) {
		ssize_t n = pread(fd, buf, CHUNK, (off_t)off);

		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
	}
	close(fd);
	free(buf);
	return r;
}

int main(int argc, char **argv)
{
	const char *ctrl = argc > 1 ? argv[1] : "/dev/nvme0";
	const char *ns = argc > 2 ? argv[2] : "/dev/nvme0n1";
	struct nvmetrace_ctrl a, b;
	struct probes_opts o;
	struct probes *p = NULL;
	struct nvmedev *d = NULL;
	struct nvmedev_map cm, nm;
	struct stat st;
	uint64_t blk0 = 0, blk1 = 0, units0, units1;
	__u32 result = 0;
	int r;

	log_init("bpf-nvme-check", LOG_WARNING);
	printf("1..5\n");
	r = nvmedev_map_path(ctrl, &cm);
	if (r || !cm.is_nvme || stat(ns, &st) || nvmedev_map_path(ns, &nm)) {
		printf("Bail out! %s / %s: no NVMe controller and namespace here\n", ctrl, ns);
		return 1;
	}
	probes_opts_init(&o);
	r = probes_create(&p, &o);
	tap(!r && probes_have_nvme(p), "nvme tracepoints attach (block programs: %s)",
	    r ? strerror(-r) : probes_block_mode(p));
	if (r || !probes_have_nvme(p)) {
		printf("Bail out! nvmetrace not loaded (is /sys/kernel/btf/nvme_core there?)\n");
		probes_destroy(p);
		return 1;
	}

	r = nvmedev_open(&d, cm.ctrl);
	if (!r)
		r = nvmedev_refresh(d);
	tap(!r && nvmedev_info(d)->nps > 0 && nvmedev_info(d)->ps[0].max_w > 0,
	    "libnvme reads %s: %u power states, PS0 max %.2f W, current PS %d",
	    cm.ctrl, d ? nvmedev_info(d)->nps : 0, d ? nvmedev_info(d)->ps[0].max_w : 0.0,
	    d ? nvmedev_info(d)->cur_ps : -1);
	if (r) {
		printf("Bail out! %s: %s\n", cm.ctrl, strerror(-r));
		goto out;
	}

	/* Set Features 02h to the state the controller is in (always valid). */
	snap_ctrl(p, (uint32_t)cm.instance, &a, nm.major, nm.minor, &blk0);
	r = nvme_set_features_power_mgmt(nvmedev_fd(d), 0, 0, false, &result);
	snap_ctrl(p, (uint32_t)cm.instance, &b, nm.major, nm.minor, &blk0);
	tap(b.set_power_mgmt == a.set_power_mgmt + 1 && b.last_ps == 0 &&
	    b.admin_cmds > a.admin_cmds,
	    "Set Features power management seen (status %d, count %llu -> %llu, PS %u)", r,
	    (unsigned long long)a.set_power_mgmt, (unsigned long long)b.set_power_mgmt, b.last_ps);

	/* The SMART log before and after a read of the namespace. */
	r = nvmedev_refresh(d);
	units0 = nvmedev_info(d)->data_units_read;
	snap_ctrl(p, (uint32_t)cm.instance, &a, nm.major, nm.minor, &blk0);
	if (!r)
		r = read_ns(ns, READ_BYTES);
	snap_ctrl(p, (uint32_t)cm.instance, &b, nm.major, nm.minor, &blk1);
	tap(!r && b.io_cmds >= a.io_cmds + READ_BYTES / (4ULL << 20),
	    "I/O commands counted: %llu for %llu MiB read",
	    (unsigned long long)(b.io_cmds - a.io_cmds), READ_BYTES >> 20);
	if (!r)
		r = nvmedev_refresh(d);
	units1 = nvmedev_info(d)->data_units_read;
	{
		uint64_t ebpf = blk1 - blk0;
		uint64_t smart = (units1 - units0) * NVMEDEV_DATA_UNIT;
		uint64_t diff = smart > ebpf ? smart - ebpf : ebpf - smart;

		/* Rounding up on each side of the interval: at most a unit
		 * each, plus our own reads of the log (no data units). */
		tap(!r && ebpf >= READ_BYTES && diff <= 2 * NVMEDEV_DATA_UNIT,
		    "SMART data units read %llu -> %llu (%llu bytes) vs eBPF %llu bytes",
		    (unsigned long long)units0, (unsigned long long)units1,
		    (unsigned long long)smart, (unsigned long long)ebpf);
	}
out:
	nvmedev_close(d);
	probes_destroy(p);
	return 0;
}
