/* SPDX-License-Identifier: MIT */
/*
 * eBPF probes: block-layer accounting per device (bpf/blkstat.bpf.c) and,
 * where the nvme_core module and its BTF are present, NVMe driver accounting
 * per controller (bpf/nvmetrace.bpf.c).
 *
 * Loading needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).  Without them
 * probes_create() returns -EPERM; the daemon then runs without probes and its
 * energy figures come from its own accounting (say so once with
 * probes_log_unavailable()).
 *
 * Snapshots are cumulative; every counter in them is monotonic across
 * snapshots of one struct probes.
 */
#ifndef TIERD_PROBES_H
#define TIERD_PROBES_H

#include <stdbool.h>
#include <linux/types.h>
#include <stdint.h>

#include "../bpf/blkstat.h"
#include "../bpf/nvmetrace.h"

struct probes;

struct probes_opts {
	/* Only this disk (whole-disk major:minor); 0:0 counts every disk. */
	uint32_t major, minor;
	/* Load nvmetrace where /sys/kernel/btf/nvme_core exists. */
	bool nvme;
	/* Only this controller instance (nvmeX); -1: all. */
	int nvme_ctrl;
	/* Skip tp_btf and load the raw_tp fallback (tests). */
	bool force_raw_tp;
	/* A request the kernel has finished but whose completion the probes
	 * did not see is accounted once it was issued this long ago; 0:
	 * PROBES_LOST_AFTER_MS. */
	uint32_t lost_after_ms;
};

#define PROBES_LOST_AFTER_MS	1000

struct probes_dev {
	uint32_t major, minor;		/* of the whole disk */
	uint64_t read_bytes, write_bytes, other_bytes;
	uint64_t read_reqs, write_reqs, other_reqs, issued;
	uint64_t busy_ns;		/* includes a busy period still running */
	int64_t inflight;
	uint64_t busy_periods;
	uint64_t lat_count, lat_sum_ns;
	uint64_t lat_hist[BLKSTAT_SLOTS];	/* log2 ns, see blkstat.h */
	uint64_t gap_hist[BLKSTAT_SLOTS];
	uint64_t gap_sum_ns[BLKSTAT_SLOTS];
	/* Completions the programs did not see, accounted later (their
	 * requests and bytes are in the counters above); see blkstat.h. */
	uint64_t lost_reqs, lost_bytes;
	uint64_t unmatched;		/* completions without a seen issue */
};

struct probes_nvme {
	uint32_t instance;		/* X of /dev/nvmeX */
	struct nvmetrace_ctrl c;
};

struct probes_snapshot {
	uint64_t mono_ns;		/* CLOCK_MONOTONIC when taken */
	/* Runs of the block programs the kernel skipped because one already
	 * ran on that CPU (a completion interrupting a completion); a skipped
	 * completion is accounted later, in lost_reqs.  0 where the kernel
	 * does not say (before 5.12). */
	uint64_t missed;
	size_t ndev;
	struct probes_dev *dev;
	size_t nnvme;
	struct probes_nvme *nvme;
};

/* Default options: every disk, nvmetrace where possible. */
void probes_opts_init(struct probes_opts *o);
/* -EPERM when not privileged; other negative errnos when loading fails. */
int probes_create(struct probes **out, const struct probes_opts *o);
void probes_destroy(struct probes *p);

/* "tp_btf" or "raw_tp": which block programs were attached. */
const char *probes_block_mode(const struct probes *p);
bool probes_have_nvme(const struct probes *p);
/* Whether unseen completions are found within lost_after_ms of their issue
 * (the sweep program loaded); without it only when the struct request is
 * issued again. */
bool probes_have_sweep(const struct probes *p);
/* Tests only: detach (pause) or attach again the completion program, so
 * that requests complete unseen. */
int probes_pause_completions(struct probes *p, bool pause);

/* Fills snap (free with probes_snapshot_free()).  Devices sorted by dev.
 * Accounts first the requests found finished with their completion unseen. */
int probes_read(struct probes *p, struct probes_snapshot *snap);
void probes_snapshot_free(struct probes_snapshot *snap);
const struct probes_dev *probes_snapshot_dev(const struct probes_snapshot *snap,
					     uint32_t major, uint32_t minor);
const struct probes_nvme *probes_snapshot_nvme(const struct probes_snapshot *snap,
					       uint32_t instance);

/* The one notice the daemon prints when it runs without probes. */
void probes_log_unavailable(int err);

/* Upper bound (ns) of log2 slot i: values in slot i are < 2^(i+1). */
static inline uint64_t probes_slot_upper_ns(unsigned i)
{
	return i + 1 >= 64 ? UINT64_MAX : (1ULL << (i + 1));
}

#endif
