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
 *
 * The kernel may not run a tracing program for an event at all: it skips a
 * nested run on the same CPU (and says so in the program's recursion_misses),
 * and some kernels run no BPF program while certain tasks are current, not even
 * for the interrupts and softirqs that come in on top of them, without a count
 * anywhere.  A request whose completion was not seen is found later, and its
 * bytes are added then (lost_reqs / lost_bytes say how many):
 *  - when its struct request is issued again while the old issue is still in
 *    the starts map (not requeued in between), or
 *  - by blk_sweep, which the user side runs before each read: a request the
 *    kernel has freed (MQ_RQ_IDLE) that is still in the map, issued longer ago
 *    than lost_age_ns, was completed unseen.
 * Exactly one of them takes an entry, by swapping its issue time for 0 with a
 * compare-and-swap; an entry with ts 0 is dead and waits for its struct
 * request to be issued again.
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
/* blk_sweep leaves younger entries alone: between block_rq_issue and the
 * kernel marking the request in flight it is still MQ_RQ_IDLE. */
const volatile __u64 lost_age_ns = 1000000000ULL;

/* Set by the user side just before attaching (bpf_ktime_get_ns() clock):
 * a device's first idle gap runs from here to its first request. */
__u64 attach_ns = 0;

struct blkstat_start {
	__u64 ts;		/* issue; 0: dead (already accounted) */
	__u64 bytes;		/* the request's size at issue */
	__u64 done_bytes;	/* partial completions seen so far */
	__u32 dev;
	__u32 op;		/* REQ_OP_* */
	__u32 requeued;		/* block_rq_requeue seen since the issue */
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

static __always_inline void add_bytes(struct blkstat_dev *d, __u32 op, __u64 bytes, int done)
{
	if (op == REQ_OP_READ) {
		__sync_fetch_and_add(&d->read_bytes, bytes);
		if (done)
			__sync_fetch_and_add(&d->read_reqs, 1);
	} else if (op == REQ_OP_WRITE) {
		__sync_fetch_and_add(&d->write_bytes, bytes);
		if (done)
			__sync_fetch_and_add(&d->write_reqs, 1);
	} else {
		__sync_fetch_and_add(&d->other_bytes, bytes);
		if (done)
			__sync_fetch_and_add(&d->other_reqs, 1);
	}
}

/* One request left flight: the busy period ends with the last one. */
static __always_inline void inflight_end(struct blkstat_dev *d, __u64 now)
{
	if (__sync_fetch_and_add(&d->inflight, -1) == 1) {
		__u64 start = d->busy_start_ns;

		if (now > start)
			__sync_fetch_and_add(&d->busy_ns, now - start);
		d->idle_start_ns = now;
	}
}

/*
 * The caller took st (its ts swapped for 0): the request finished without its
 * completion being seen.  Its bytes are the size at issue less the partial
 * completions seen; it ends now, which overstates busy time by the delay.
 */
static __always_inline void account_lost(struct blkstat_start *st, __u64 now)
{
	struct blkstat_dev *d = dev_get(st->dev);
	__u64 bytes = st->bytes > st->done_bytes ? st->bytes - st->done_bytes : 0;

	if (!d)
		return;
	add_bytes(d, st->op, bytes, 1);
	__sync_fetch_and_add(&d->lost_reqs, 1);
	__sync_fetch_and_add(&d->lost_bytes, bytes);
	inflight_end(d, now);
}

static __always_inline int handle_issue(struct request *rq)
{
	struct blkstat_start *st;
	struct blkstat_dev *d;
	__u64 key = (__u64)rq, now, ts;
	__u32 dev = rq_dev(rq);

	if (!dev)
		return 0;
	now = bpf_ktime_get_ns();
	st = bpf_map_lookup_elem(&starts, &key);
	if (st) {
		ts = st->ts;
		/* A requeued request is issued again: it is still the same one
		 * in flight, so only its first issue counts. */
		if (ts && st->requeued) {
			st->requeued = 0;
			return 0;
		}
		/* Still live: this struct request finished before without its
		 * completion being seen.  (Nothing else touches the entry of a
		 * request being issued but blk_sweep, hence the swap.) */
		if (ts && __sync_val_compare_and_swap(&st->ts, ts, 0) == ts)
			account_lost(st, now);
		st->bytes = BPF_CORE_READ(rq, __data_len);
		st->done_bytes = 0;
		st->dev = dev;
		st->op = BPF_CORE_READ(rq, cmd_flags) & BLKSTAT_REQ_OP_MASK;
		st->requeued = 0;
		st->ts = now;		/* live again, once the rest is set */
	} else {
		struct blkstat_start n = {};

		n.ts = now;
		n.bytes = BPF_CORE_READ(rq, __data_len);
		n.dev = dev;
		n.op = BPF_CORE_READ(rq, cmd_flags) & BLKSTAT_REQ_OP_MASK;
		/* Full map or a busy bucket: the completion will count the
		 * bytes but find no issue (unmatched). */
		if (bpf_map_update_elem(&starts, &key, &n, BPF_NOEXIST))
			return 0;
	}
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

static __always_inline int handle_requeue(struct request *rq)
{
	__u64 key = (__u64)rq;
	struct blkstat_start *st = bpf_map_lookup_elem(&starts, &key);

	/* Waiting on the requeue list the request is MQ_RQ_IDLE: blk_sweep
	 * must not take it for finished. */
	if (st && st->ts)
		st->requeued = 1;
	return 0;
}

static __always_inline int handle_complete(struct request *rq, unsigned int nr_bytes)
{
	struct blkstat_start *st;
	struct blkstat_dev *d;
	__u64 key = (__u64)rq, now, ts;
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
	add_bytes(d, op, nr_bytes, done);
	st = bpf_map_lookup_elem(&starts, &key);
	if (!done) {
		if (st && st->ts)
			__sync_fetch_and_add(&st->done_bytes, nr_bytes);
		return 0;
	}
	/* No live issue: issued before the probe attached, or its issue was
	 * not seen.  Its bytes are counted, its latency is not. */
	ts = st ? st->ts : 0;
	if (!ts || __sync_val_compare_and_swap(&st->ts, ts, 0) != ts) {
		__sync_fetch_and_add(&d->unmatched, 1);
		if (st)
			bpf_map_delete_elem(&starts, &key);
		return 0;
	}
	bpf_map_delete_elem(&starts, &key);
	now = bpf_ktime_get_ns();
	if (now > ts) {
		__u64 lat = now - ts;

		__sync_fetch_and_add(&d->lat_hist[log2_slot(lat)], 1);
		__sync_fetch_and_add(&d->lat_sum_ns, lat);
	}
	__sync_fetch_and_add(&d->lat_count, 1);
	inflight_end(d, now);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(blk_issue, struct request *rq)
{
	return handle_issue(rq);
}

SEC("tp_btf/block_rq_requeue")
int BPF_PROG(blk_requeue, struct request *rq)
{
	return handle_requeue(rq);
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

SEC("raw_tp/block_rq_requeue")
int BPF_PROG(blk_requeue_raw, struct request *rq)
{
	return handle_requeue(rq);
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(blk_complete_raw, struct request *rq, int error, unsigned int nr_bytes)
{
	return handle_complete(rq, nr_bytes);
}

struct sweep_ctx {
	__u64 now;
};

static long sweep_one(struct bpf_map *map, __u64 *key, struct blkstat_start *st,
		      struct sweep_ctx *c)
{
	struct request *rq = (struct request *)*key;
	__u64 ts = st->ts;
	__u32 state;

	if (!ts || st->requeued || c->now < ts + lost_age_ns)
		return 0;
	/* A struct request that cannot be read (its queue went away) stays. */
	if (bpf_core_read(&state, sizeof(state), &rq->state))
		return 0;
	if (state != MQ_RQ_IDLE)
		return 0;
	if (__sync_val_compare_and_swap(&st->ts, ts, 0) == ts)
		account_lost(st, c->now);
	return 0;
}

/* Run by the user side (BPF_PROG_TEST_RUN) before it reads the counters. */
SEC("syscall")
int blk_sweep(void *ctx)
{
	struct sweep_ctx c = { .now = bpf_ktime_get_ns() };

	bpf_for_each_map_elem(&starts, sweep_one, &c, 0);
	return 0;
}
