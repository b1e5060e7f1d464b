/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "probes.h"

#ifdef __clang_analyzer__
/*
 * For `make analyze` only.  The analyzer assumes a function declared in a
 * system header (libbpf.h) frees nothing, so it reports every error path of
 * the bpftool-generated skeleton as a leak.  This stand-in frees what
 * libbpf's does, so the generated code is judged on what it really does.
 */
static void analyzer_destroy_skeleton(struct bpf_object_skeleton *s)
{
	if (!s)
		return;
	free(s->maps);
	free(s->progs);
	free(s);
}
#define bpf_object__destroy_skeleton analyzer_destroy_skeleton
#endif

#include "blkstat.skel.h"
#include "nvmetrace.skel.h"

#define PROBES_NVME_BTF "/sys/kernel/btf/nvme_core"

/* Capability numbers from linux/capability.h (glibc has no libcap here). */
#define PROBES_CAP_SYS_ADMIN	21
#define PROBES_CAP_PERFMON	38
#define PROBES_CAP_BPF		39

struct probes_last {
	uint32_t dev;
	uint64_t busy_ns;
};

struct probes {
	struct blkstat *blk;
	struct nvmetrace *nvme;
	const char *mode;
	bool sweep;			/* blk_sweep loaded */
	bool sweep_warned;
	/* Busy time of each device at the last read: a busy period that is
	 * still running is estimated, and the estimate must never go back. */
	struct probes_last *last;
	size_t nlast;
};

static int probes_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char buf[1024];
	size_t n;
	int prio = LOG_DEBUG;

	switch (level) {
	case LIBBPF_WARN: prio = LOG_WARNING; break;
	case LIBBPF_INFO: prio = LOG_INFO; break;
	case LIBBPF_DEBUG: prio = LOG_DEBUG; break;
	}
	if (prio > log_get_level())
		return 0;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	log_msg(prio, "libbpf: %s", buf);
	return 0;
}

/* Checked up front so that an unprivileged daemon gets one clear -EPERM
 * instead of a page of libbpf warnings. */
static bool probes_privileged(void)
{
	unsigned long long eff = 0;
	char line[256];
	bool found = false;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return geteuid() == 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			found = true;
			break;
		}
	fclose(f);
	if (!found)
		return geteuid() == 0;
	if (eff & (1ULL << PROBES_CAP_SYS_ADMIN))
		return true;
	return (eff & (1ULL << PROBES_CAP_BPF)) && (eff & (1ULL << PROBES_CAP_PERFMON));
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int probes_blk_load(struct probes *p, const struct probes_opts *o, bool raw, bool sweep)
{
	struct blkstat *s;
	int r;

	s = blkstat__open();
	if (!s)
		return errno ? -errno : -ENOMEM;
	s->rodata->targ_dev = BLKSTAT_DEV(o->major, o->minor);
	s->rodata->lost_age_ns = (uint64_t)(o->lost_after_ms ? o->lost_after_ms :
					    PROBES_LOST_AFTER_MS) * 1000000ULL;
	bpf_program__set_autoload(s->progs.blk_issue, !raw);
	bpf_program__set_autoload(s->progs.blk_requeue, !raw);
	bpf_program__set_autoload(s->progs.blk_complete, !raw);
	bpf_program__set_autoload(s->progs.blk_issue_raw, raw);
	bpf_program__set_autoload(s->progs.blk_requeue_raw, raw);
	bpf_program__set_autoload(s->progs.blk_complete_raw, raw);
	bpf_program__set_autoload(s->progs.blk_sweep, sweep);
	r = blkstat__load(s);
	if (!r) {
		s->bss->attach_ns = mono_ns();
		r = blkstat__attach(s);
	}
	if (r) {
		blkstat__destroy(s);
		return r;
	}
	p->blk = s;
	p->mode = raw ? "raw_tp" : "tp_btf";
	p->sweep = sweep;
	return 0;
}

/*
 * tp_btf before raw_tp; each with blk_sweep first, which needs a kernel that
 * runs BPF_PROG_TYPE_SYSCALL programs with bpf_probe_read_kernel (without it,
 * an unseen completion is found only when its struct request is issued again).
 */
static int probes_blk_load_any(struct probes *p, const struct probes_opts *o)
{
	int r = -EOPNOTSUPP;

	for (int raw = o->force_raw_tp ? 1 : 0; raw <= 1; raw++) {
		r = probes_blk_load(p, o, raw, true);
		if (!r)
			return 0;
		log_info("probes: %s block programs with the sweep failed (%s), trying without",
			 raw ? "raw_tp" : "tp_btf", strerror(-r));
		r = probes_blk_load(p, o, raw, false);
		if (!r)
			return 0;
		log_info("probes: %s block programs failed (%s)", raw ? "raw_tp" : "tp_btf",
			 strerror(-r));
	}
	return r;
}

static int probes_nvme_load(struct probes *p, const struct probes_opts *o)
{
	struct nvmetrace *s;
	int r;

	s = nvmetrace__open();
	if (!s)
		return errno ? -errno : -ENOMEM;
	s->rodata->targ_ctrl = o->nvme_ctrl;
	r = nvmetrace__load(s);
	if (!r)
		r = nvmetrace__attach(s);
	if (r) {
		nvmetrace__destroy(s);
		return r;
	}
	p->nvme = s;
	return 0;
}

void probes_opts_init(struct probes_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->nvme = true;
	o->nvme_ctrl = -1;
}

int probes_create(struct probes **out, const struct probes_opts *o)
{
	struct probes *p;
	int r;

	*out = NULL;
	if (!probes_privileged())
		return -EPERM;
	libbpf_set_print(probes_libbpf_print);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = probes_blk_load_any(p, o);
	if (r) {
		log_err("probes: cannot load block programs: %s", strerror(-r));
		goto fail;
	}
	if (o->nvme && !access(PROBES_NVME_BTF, F_OK)) {
		int rn = probes_nvme_load(p, o);

		/* Not fatal: block accounting still works without it. */
		if (rn)
			log_warn("probes: nvme tracepoints not attached: %s", strerror(-rn));
	}
	log_info("probes: block accounting on %s%s%s", p->mode,
		 p->sweep ? "" : ", unseen completions found only on reissue",
		 p->nvme ? ", nvme tracepoints attached" : "");
	*out = p;
	return 0;
fail:
	probes_destroy(p);
	return r == -EACCES ? -EPERM : r;
}

void probes_destroy(struct probes *p)
{
	if (!p)
		return;
	nvmetrace__destroy(p->nvme);
	blkstat__destroy(p->blk);
	free(p->last);
	free(p);
}

const char *probes_block_mode(const struct probes *p)
{
	return p->mode;
}

bool probes_have_nvme(const struct probes *p)
{
	return p->nvme != NULL;
}

bool probes_have_sweep(const struct probes *p)
{
	return p->sweep;
}

int probes_pause_completions(struct probes *p, bool pause)
{
	bool raw = !strcmp(p->mode, "raw_tp");
	struct bpf_program *prog = raw ? p->blk->progs.blk_complete_raw : p->blk->progs.blk_complete;
	struct bpf_link **link = raw ? &p->blk->links.blk_complete_raw : &p->blk->links.blk_complete;
	int r;

	if (pause) {
		r = *link ? bpf_link__destroy(*link) : 0;
		*link = NULL;
		return r;
	}
	if (*link)
		return 0;
	*link = bpf_program__attach(prog);
	if (!*link) {
		r = errno ? -errno : -EINVAL;
		return r;
	}
	return 0;
}

static int cmp_dev(const void *a, const void *b)
{
	const struct probes_dev *x = a, *y = b;
	uint32_t dx = BLKSTAT_DEV(x->major, x->minor), dy = BLKSTAT_DEV(y->major, y->minor);

	return dx < dy ? -1 : dx > dy;
}

static int cmp_nvme(const void *a, const void *b)
{
	const struct probes_nvme *x = a, *y = b;

	return x->instance < y->instance ? -1 : x->instance > y->instance;
}

/* Keeps busy time monotonic even though a running period is estimated. */
static int probes_busy_clamp(struct probes *p, uint32_t dev, uint64_t *busy)
{
	struct probes_last *l;

	for (size_t i = 0; i < p->nlast; i++) {
		if (p->last[i].dev != dev)
			continue;
		if (*busy < p->last[i].busy_ns)
			*busy = p->last[i].busy_ns;
		p->last[i].busy_ns = *busy;
		return 0;
	}
	l = realloc(p->last, (p->nlast + 1) * sizeof(*l));
	if (!l)
		return -ENOMEM;
	p->last = l;
	p->last[p->nlast].dev = dev;
	p->last[p->nlast].busy_ns = *busy;
	p->nlast++;
	return 0;
}

static void dev_from_map(struct probes_dev *d, uint32_t dev, const struct blkstat_dev *v,
			 uint64_t now)
{
	d->major = BLKSTAT_DEV_MAJOR(dev);
	d->minor = BLKSTAT_DEV_MINOR(dev);
	d->read_bytes = v->read_bytes;
	d->write_bytes = v->write_bytes;
	d->other_bytes = v->other_bytes;
	d->read_reqs = v->read_reqs;
	d->write_reqs = v->write_reqs;
	d->other_reqs = v->other_reqs;
	d->issued = v->issued;
	d->busy_ns = v->busy_ns;
	d->inflight = v->inflight;
	/* Same clock as bpf_ktime_get_ns(). */
	if (v->inflight > 0 && v->busy_start_ns && now > v->busy_start_ns)
		d->busy_ns += now - v->busy_start_ns;
	d->busy_periods = v->busy_periods;
	d->lat_count = v->lat_count;
	d->lat_sum_ns = v->lat_sum_ns;
	memcpy(d->lat_hist, v->lat_hist, sizeof(d->lat_hist));
	memcpy(d->gap_hist, v->gap_hist, sizeof(d->gap_hist));
	memcpy(d->gap_sum_ns, v->gap_sum_ns, sizeof(d->gap_sum_ns));
	d->lost_reqs = v->lost_reqs;
	d->lost_bytes = v->lost_bytes;
	d->unmatched = v->unmatched;
}

static int probes_read_devs(struct probes *p, struct probes_snapshot *snap)
{
	int fd = bpf_map__fd(p->blk->maps.devs);
	uint32_t key, next, *prev = NULL;
	struct blkstat_dev v;
	size_t cap = 0;
	int r;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &v))
			continue;	/* removed meanwhile */
		if (snap->ndev == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct probes_dev *d = realloc(snap->dev, ncap * sizeof(*d));

			if (!d)
				return -ENOMEM;
			snap->dev = d;
			cap = ncap;
		}
		dev_from_map(&snap->dev[snap->ndev], key, &v, snap->mono_ns);
		r = probes_busy_clamp(p, key, &snap->dev[snap->ndev].busy_ns);
		if (r)
			return r;
		snap->ndev++;
	}
	if (snap->ndev)
		qsort(snap->dev, snap->ndev, sizeof(*snap->dev), cmp_dev);
	return 0;
}

static int probes_read_nvme(struct probes *p, struct probes_snapshot *snap)
{
	int fd;
	uint32_t key, next, *prev = NULL;
	struct nvmetrace_ctrl v;
	size_t cap = 0;

	if (!p->nvme)
		return 0;
	fd = bpf_map__fd(p->nvme->maps.ctrls);
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &v))
			continue;
		if (snap->nnvme == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct probes_nvme *n = realloc(snap->nvme, ncap * sizeof(*n));

			if (!n)
				return -ENOMEM;
			snap->nvme = n;
			cap = ncap;
		}
		snap->nvme[snap->nnvme].instance = key;
		snap->nvme[snap->nnvme].c = v;
		snap->nnvme++;
	}
	if (snap->nnvme)
		qsort(snap->nvme, snap->nnvme, sizeof(*snap->nvme), cmp_nvme);
	return 0;
}

/* The kernel's count of the program's skipped (nested) runs. */
static uint64_t prog_missed(const struct bpf_program *prog)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int fd = bpf_program__fd(prog);

	memset(&info, 0, sizeof(info));
	if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len))
		return 0;
	return info.recursion_misses;
}

/* Accounts the requests that finished with their completion unseen. */
static void probes_sweep(struct probes *p)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	int r;

	if (!p->sweep)
		return;
	r = bpf_prog_test_run_opts(bpf_program__fd(p->blk->progs.blk_sweep), &opts);
	if (r < 0)
		r = -errno;
	/* Said once: telemetry reads every second. */
	if (r && !p->sweep_warned)
		log_warn("probes: sweep of unseen completions failed: %s", strerror(-r));
	p->sweep_warned = r != 0;
}

int probes_read(struct probes *p, struct probes_snapshot *snap)
{
	int r;

	probes_sweep(p);
	memset(snap, 0, sizeof(*snap));
	snap->mono_ns = mono_ns();
	/* Only the loaded set has descriptors; the other adds 0. */
	snap->missed = prog_missed(p->blk->progs.blk_issue) + prog_missed(p->blk->progs.blk_complete) +
		       prog_missed(p->blk->progs.blk_requeue) +
		       prog_missed(p->blk->progs.blk_issue_raw) + prog_missed(p->blk->progs.blk_complete_raw) +
		       prog_missed(p->blk->progs.blk_requeue_raw);
	r = probes_read_devs(p, snap);
	if (!r)
		r = probes_read_nvme(p, snap);
	if (r)
		probes_snapshot_free(snap);
	return r;
}

void probes_snapshot_free(struct probes_snapshot *snap)
{
	free(snap->dev);
	free(snap->nvme);
	memset(snap, 0, sizeof(*snap));
}

const struct probes_dev *probes_snapshot_dev(const struct probes_snapshot *snap,
					     uint32_t major, uint32_t minor)
{
	for (size_t i = 0; i < snap->ndev; i++)
		if (snap->dev[i].major == major && snap->dev[i].minor == minor)
			return &snap->dev[i];
	return NULL;
}

const struct probes_nvme *probes_snapshot_nvme(const struct probes_snapshot *snap,
					       uint32_t instance)
{
	for (size_t i = 0; i < snap->nnvme; i++)
		if (snap->nvme[i].instance == instance)
			return &snap->nvme[i];
	return NULL;
}

void probes_log_unavailable(int err)
{
	if (err == -EPERM)
		log_notice("running without eBPF probes (needs CAP_BPF and CAP_PERFMON, or root): "
			   "device bytes and energy come from tierd's own accounting and the model");
	else
		log_notice("running without eBPF probes (%s): device bytes and energy come from "
			   "tierd's own accounting and the model", strerror(-err));
}
