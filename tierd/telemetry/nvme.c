/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <nvme/ioctl.h>
#include <nvme/linux.h>
#include <nvme/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "nvme.h"

struct nvmedev {
	int fd;
	struct nvmedev_info info;
	uint64_t io_at_refresh;
	/* Failed refreshes count as attempts too: a controller that refuses
	 * a command is not asked again every tick. */
	bool attempted;
	uint64_t attempt_ns;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* "nvme12" -> 12; -EINVAL when name is not a controller name. */
static int ctrl_instance(const char *name)
{
	char *end;
	long v;

	if (strncmp(name, "nvme", 4) || !isdigit((unsigned char)name[4]))
		return -EINVAL;
	v = strtol(name + 4, &end, 10);
	if (*end || v < 0 || v > INT_MAX)
		return -EINVAL;
	return (int)v;
}

static int read_sysfs_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int r = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f))
		r = ferror(f) ? -EIO : -ENODATA;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return r;
}

/* The controller behind disk directory sysdisk (a /sys/block/X path). */
static void map_find_ctrl(const char *sysdisk, struct nvmedev_map *m)
{
	char path[PATH_MAX + 32], link[PATH_MAX];
	ssize_t n;
	DIR *dir;
	struct dirent *de;
	unsigned a, b;

	/* Without native multipath the disk's device is the controller. */
	snprintf(path, sizeof(path), "%s/device", sysdisk);
	n = readlink(path, link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = '\0';
		if (ctrl_instance(basename(link)) >= 0) {
			snprintf(m->ctrl, sizeof(m->ctrl), "%s", basename(link));
			m->instance = ctrl_instance(m->ctrl);
			return;
		}
	}
	/* A multipath head's device is the subsystem: take its first controller. */
	dir = opendir(path);
	if (dir) {
		int best = -1;

		while ((de = readdir(dir)))
			if (ctrl_instance(de->d_name) >= 0 &&
			    (best < 0 || ctrl_instance(de->d_name) < best))
				best = ctrl_instance(de->d_name);
		closedir(dir);
		if (best >= 0) {
			snprintf(m->ctrl, sizeof(m->ctrl), "nvme%d", best);
			m->instance = best;
			return;
		}
	}
	/* Last resort: the naming convention nvme<ctrl>n<ns>. */
	if (sscanf(m->disk, "nvme%un%u", &a, &b) == 2) {
		snprintf(m->ctrl, sizeof(m->ctrl), "nvme%u", a);
		m->instance = (int)a;
	}
}

int nvmedev_map_path(const char *path, struct nvmedev_map *m)
{
	char sys[PATH_MAX + 32], real[PATH_MAX], buf[64];
	struct stat st;
	dev_t dev;
	unsigned ma, mi, a, b, c;

	memset(m, 0, sizeof(*m));
	m->instance = -1;
	if (stat(path, &st))
		return -errno;
	if (S_ISCHR(st.st_mode)) {
		char tmp[PATH_MAX];

		snprintf(tmp, sizeof(tmp), "%s", path);
		if (ctrl_instance(basename(tmp)) < 0)
			return -ENODEV;
		/* A controller node: no disk of its own. */
		snprintf(m->ctrl, sizeof(m->ctrl), "%s", basename(tmp));
		m->instance = ctrl_instance(m->ctrl);
		m->is_nvme = true;
		return 0;
	}
	dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	if (!realpath(sys, real))
		return errno == ENOENT ? -ENODEV : -errno;
	/* A partition's directory sits inside its disk's. */
	snprintf(sys, sizeof(sys), "%s/partition", real);
	if (!access(sys, F_OK))
		*strrchr(real, '/') = '\0';
	snprintf(m->disk, sizeof(m->disk), "%s", strrchr(real, '/') + 1);
	snprintf(sys, sizeof(sys), "%s/dev", real);
	if (read_sysfs_line(sys, buf, sizeof(buf)) || sscanf(buf, "%u:%u", &ma, &mi) != 2)
		return -ENODEV;
	m->major = ma;
	m->minor = mi;
	if (sscanf(m->disk, "nvme%un%u", &a, &b) == 2 ||
	    sscanf(m->disk, "nvme%uc%un%u", &a, &b, &c) == 3) {
		m->is_nvme = true;
		map_find_ctrl(real, m);
	}
	return 0;
}

double nvmedev_max_power_w(uint16_t mp, uint8_t flags)
{
	/* MXPS (flags bit 0): 0.0001 W units when set, 0.01 W otherwise. */
	return mp * ((flags & NVME_PSD_FLAGS_MXPS) ? 0.0001 : 0.01);
}

double nvmedev_scaled_power_w(uint16_t value, uint8_t scale_byte)
{
	switch (scale_byte >> 6) {
	case 1: return value * 0.0001;
	case 2: return value * 0.01;
	}
	return -1.0;		/* 00b: not reported; 11b reserved */
}

uint64_t nvmedev_le128(const uint8_t v[16])
{
	uint64_t lo = 0;

	for (int i = 15; i >= 8; i--)
		if (v[i])
			return UINT64_MAX;
	for (int i = 7; i >= 0; i--)
		lo = (lo << 8) | v[i];
	return lo;
}

static void copy_trim(char *dst, size_t dlen, const char *src, size_t slen)
{
	size_t n = slen < dlen - 1 ? slen : dlen - 1;

	memcpy(dst, src, n);
	dst[n] = '\0';
	while (n && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		dst[--n] = '\0';
}

/* libnvme returns an NVMe status (> 0) or -1 with errno. */
static int nvme_err(int r)
{
	if (r < 0)
		return errno ? -errno : -EIO;
	return r ? -EIO : 0;
}

static int nvmedev_identify(struct nvmedev *d)
{
	struct nvme_id_ctrl *id;
	struct nvmedev_info *in = &d->info;
	int r;

	/* Identify data is 4 KiB; the heap keeps it off small thread stacks. */
	id = calloc(1, sizeof(*id));
	if (!id)
		return -ENOMEM;
	r = nvme_err(nvme_identify_ctrl(d->fd, id));
	if (r) {
		log_warn("nvme: %s: Identify Controller failed: %s", in->ctrl, strerror(-r));
		goto out;
	}
	copy_trim(in->model, sizeof(in->model), id->mn, sizeof(id->mn));
	copy_trim(in->serial, sizeof(in->serial), id->sn, sizeof(id->sn));
	copy_trim(in->firmware, sizeof(in->firmware), id->fr, sizeof(id->fr));
	in->nps = (unsigned)id->npss + 1;
	if (in->nps > NVMEDEV_MAX_PS)
		in->nps = NVMEDEV_MAX_PS;
	in->apst_supported = id->apsta & NVME_CTRL_APSTA_APST;
	for (unsigned i = 0; i < in->nps; i++) {
		const struct nvme_id_psd *p = &id->psd[i];
		struct nvmedev_psd *o = &in->ps[i];

		o->max_w = nvmedev_max_power_w(le16toh(p->mp), p->flags);
		o->idle_w = nvmedev_scaled_power_w(le16toh(p->idlp), p->ips);
		o->active_w = nvmedev_scaled_power_w(le16toh(p->actp), p->apws);
		o->entry_lat_us = le32toh(p->enlat);
		o->exit_lat_us = le32toh(p->exlat);
		o->nonop = p->flags & NVME_PSD_FLAGS_NOPS;
		o->mxps = p->flags & NVME_PSD_FLAGS_MXPS;
	}
out:
	free(id);
	return r;
}

int nvmedev_open(struct nvmedev **out, const char *ctrl)
{
	struct nvmedev *d;
	int r;

	*out = NULL;
	if (ctrl_instance(ctrl) < 0)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	snprintf(d->info.ctrl, sizeof(d->info.ctrl), "%s", ctrl);
	d->info.cur_ps = -1;
	d->fd = nvme_open(ctrl);
	if (d->fd < 0) {
		r = -errno;
		free(d);
		return r;
	}
	/* libnvme opens without O_CLOEXEC: no descriptor of ours may leak
	 * into a child. */
	if (fcntl(d->fd, F_SETFD, FD_CLOEXEC)) {
		r = -errno;
		nvmedev_close(d);
		return r;
	}
	r = nvmedev_identify(d);
	if (r) {
		nvmedev_close(d);
		return r;
	}
	*out = d;
	return 0;
}

void nvmedev_close(struct nvmedev *d)
{
	if (!d)
		return;
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

int nvmedev_fd(const struct nvmedev *d)
{
	return d->fd;
}

int nvmedev_refresh(struct nvmedev *d)
{
	struct nvmedev_info *in = &d->info;
	struct nvme_feat_auto_pst *apst = NULL;
	struct nvme_smart_log *smart = NULL;
	__u32 result = 0;
	int r;

	d->attempted = true;
	d->attempt_ns = mono_ns();
	r = nvme_err(nvme_get_features_power_mgmt(d->fd, NVME_GET_FEATURES_SEL_CURRENT, &result));
	if (r) {
		log_warn("nvme: %s: Get Features (power management) failed: %s",
			 in->ctrl, strerror(-r));
		goto out;
	}
	in->cur_ps = (int)(result & 0x1f);
	in->workload_hint = (result >> 5) & 0x7;

	if (in->apst_supported) {
		apst = calloc(1, sizeof(*apst));
		if (!apst) {
			r = -ENOMEM;
			goto out;
		}
		r = nvme_err(nvme_get_features_auto_pst(d->fd, NVME_GET_FEATURES_SEL_CURRENT,
							 apst, &result));
		if (r) {
			log_warn("nvme: %s: Get Features (APST) failed: %s", in->ctrl, strerror(-r));
			goto out;
		}
		in->apst_enabled = result & 1;
		for (unsigned i = 0; i < NVMEDEV_MAX_PS; i++) {
			uint64_t e = le64toh(apst->apst_entry[i]);

			in->apst[i].itps = (uint8_t)((e >> 3) & 0x1f);
			in->apst[i].itpt_ms = (uint32_t)((e >> 8) & 0xffffff);
		}
	}

	smart = calloc(1, sizeof(*smart));
	if (!smart) {
		r = -ENOMEM;
		goto out;
	}
	r = nvme_err(nvme_get_log_smart(d->fd, NVME_NSID_ALL, true, smart));
	if (r) {
		log_warn("nvme: %s: SMART log failed: %s", in->ctrl, strerror(-r));
		goto out;
	}
	in->have_smart = true;
	in->data_units_read = nvmedev_le128(smart->data_units_read);
	in->data_units_written = nvmedev_le128(smart->data_units_written);
	in->host_read_cmds = nvmedev_le128(smart->host_reads);
	in->host_write_cmds = nvmedev_le128(smart->host_writes);
	in->power_on_hours = nvmedev_le128(smart->power_on_hours);
	in->power_cycles = nvmedev_le128(smart->power_cycles);
	/* Composite temperature, kelvin, little-endian. */
	in->temperature_c = (double)(smart->temperature[0] | (smart->temperature[1] << 8)) - 273.15;
	in->refreshes++;
	in->refresh_mono_ns = d->attempt_ns;
out:
	free(apst);
	free(smart);
	return r;
}

bool nvmedev_refresh_policy(bool attempted, uint64_t last_ns, uint64_t io_at_last,
			    uint64_t now_ns, unsigned interval_s, uint64_t io_counter)
{
	if (!attempted)
		return true;
	if (now_ns < last_ns || now_ns - last_ns < (uint64_t)interval_s * 1000000000ULL)
		return false;
	/* No I/O since the last read: nothing changed, and asking would wake
	 * an idle device. */
	return io_counter == UINT64_MAX || io_counter != io_at_last;
}

bool nvmedev_refresh_due(const struct nvmedev *d, uint64_t now_ns, unsigned interval_s,
			 uint64_t io_counter)
{
	return nvmedev_refresh_policy(d->attempted, d->attempt_ns, d->io_at_refresh, now_ns,
				      interval_s, io_counter);
}

void nvmedev_refresh_mark(struct nvmedev *d, uint64_t io_counter)
{
	d->io_at_refresh = io_counter;
}

const struct nvmedev_info *nvmedev_info(const struct nvmedev *d)
{
	return &d->info;
}
