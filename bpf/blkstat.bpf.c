// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Block-layer accounting per device: completed bytes, requests, busy time,
 * request latency and idle gaps between busy periods.
 *
 * tp_btf programs are the default; raw_tp copies of the same handlers are
 * loaded instead on kernels where tp_btf fails (the user side switches their
 * autoload on).  Every field access goes through BPF_CORE_READ so that one
 * handler serves both program types.
 *
 * Counters are updated with atomic adds so the same map works from every CPU
 * without bpf_spin_lock (which raw_tp programs may not use).  The busy-period
 * bookkeeping (in-flight count and the timestamp of its last 0 <-> 1 change)
 * can race when one CPU ends a busy period while another starts the next one
 * in the same instant; the error is bounded by that instant.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "blkstat.h"

/* REQ_OP_* live in the low bits of cmd_flags (include/linux/blk_types.h). */
#define BLKSTAT_REQ_OP_MASK	0xff

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time knobs. */
const volatile __u32 targ_dev = 0;	/* kernel dev_t of one disk; 0: every disk */

/* Set by the user side just before attaching (bpf_ktime_get_ns() clock):
 * a device's first idle gap runs from here to its first request. */
__u64 attach_ns = 0;

struct blkstat_start {
	__u64 ts;
	__u32 dev;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLKSTAT_MAX_INFLIGHT);
	__type(key, __u64);			/* struct request * */
	__type(value, struct blkstat_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLKSTAT_MAX_DEVS);
	__type(key, __u32);			/* kernel dev_t of the disk */
	__type(value, struct blkstat_dev);
} devs SEC(".maps");

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0;

	if (v >= (1ULL << 32)) { v >>= 32; r += 32; }
	if (v >= (1ULL << 16)) { v >>= 16; r += 16; }
	if (v >= (1ULL << 8)) { v >>= 8; r += 8; }
	if (v >= (1ULL << 4)) { v >>= 4; r += 4; }
	if (v >= (1ULL << 2)) { v >>= 2; r += 2; }
	if (v >= (1ULL << 1)) r += 1;
	if (r >= BLKSTAT_SLOTS)
		r = BLKSTAT_SLOTS - 1;
	return r;
}

/* 0 when the request has no disk (the NVMe admin queue) or is filtered out. */
static __always_inline __u32 rq_dev(struct request *rq)
{
	struct gendisk *disk = BPF_CORE_READ(rq, q, disk);
	__u32 dev;

	if (!disk)
		return 0;
	dev = BLKSTAT_DEV(BPF_CORE_READ(disk, major), BPF_CORE_READ(disk, first_minor));
	if (targ_dev && dev != targ_dev)
		return 0;
	return dev;
}

static __always_inline struct blkstat_dev *dev_get(__u32 dev)
{
	static const struct blkstat_dev zero;
	struct blkstat_dev *d = bpf_map_lookup_elem(&devs, &dev);

	if (d)
		return d;
	bpf_map_update_elem(&devs, &dev, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&devs, &dev);
}

static __always_inline int handle_issue(struct request *rq)
{
	struct blkstat_start st = {};
	struct blkstat_dev *d;
	__u64 key = (__u64)rq, now;
	__u32 dev = rq_dev(rq);

	if (!dev)
		return 0;
	now = bpf_ktime_get_ns();
	st.ts = now;
	st.dev = dev;
	/* A requeued request is issued again: it is still the same one in
	 * flight, so only its first issue counts. */
	if (bpf_map_update_elem(&starts, &key, &st, BPF_NOEXIST))
		return 0;
	d = dev_get(dev);
	if (!d)
		return 0;
	__sync_fetch_and_add(&d->issued, 1);
	if (__sync_fetch_and_add(&d->inflight, 1) == 0) {
		__u64 idle = d->idle_start_ns ? d->idle_start_ns : attach_ns;

		if (idle && now > idle) {
			__u64 gap = now - idle;
			__u32 s = log2_slot(gap);

			__sync_fetch_and_add(&d->gap_hist[s], 1);
			__sync_fetch_and_add(&d->gap_sum_ns[s], gap);
		}
		d->busy_start_ns = now;
		__sync_fetch_and_add(&d->busy_periods, 1);
	}
	return 0;
}

static __always_inline int handle_complete(struct request *rq, unsigned int nr_bytes)
{
	struct blkstat_start *st;
	struct blkstat_dev *d;
	__u64 key = (__u64)rq, now;
	__u32 dev = rq_dev(rq), op, left;
	int done;

	if (!dev)
		return 0;
	d = dev_get(dev);
	if (!d)
		return 0;
	op = BPF_CORE_READ(rq, cmd_flags) & BLKSTAT_REQ_OP_MASK;
	/* The tracepoint fires before __data_len drops by nr_bytes: the
	 * request is finished when this completion covers what is left. */
	left = BPF_CORE_READ(rq, __data_len);
	done = nr_bytes >= left;
	if (op == REQ_OP_READ) {
		__sync_fetch_and_add(&d->read_bytes, nr_bytes);
		if (done)
			__sync_fetch_and_add(&d->read_reqs, 1);
	} else if (op == REQ_OP_WRITE) {
		__sync_fetch_and_add(&d->write_bytes, nr_bytes);
		if (done)
			__sync_fetch_and_add(&d->write_reqs, 1);
	} else {
		__sync_fetch_and_add(&d->other_bytes, nr_bytes);
		if (done)
			__sync_fetch_and_add(&d->other_reqs, 1);
	}
	if (!done)
		return 0;
	/* Requests issued before the probe attached were never counted in
	 * flight: they end nothing. */
	st = bpf_map_lookup_elem(&starts, &key);
	if (!st)
		return 0;
	now = bpf_ktime_get_ns();
	if (now > st->ts) {
		__u64 lat = now - st->ts;

		__sync_fetch_and_add(&d->lat_hist[log2_slot(lat)], 1);
		__sync_fetch_and_add(&d->lat_sum_ns, lat);
	}
	__sync_fetch_and_add(&d->lat_count, 1);
	bpf_map_delete_elem(&starts, &key);
	if (__sync_fetch_and_add(&d->inflight, -1) == 1) {
		__u64 start = d->busy_start_ns;

		if (now > start)
			__sync_fetch_and_add(&d->busy_ns, now - start);
		d->idle_start_ns = now;
	}
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(blk_issue, struct request *rq)
{
	return handle_issue(rq);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(blk_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	return handle_complete(rq, nr_bytes);
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(blk_issue_raw, struct request *rq)
{
	return handle_issue(rq);
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(blk_complete_raw, struct request *rq, int error, unsigned int nr_bytes)
{
	return handle_complete(rq, nr_bytes);
}
