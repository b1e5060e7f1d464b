/* SPDX-License-Identifier: MIT */
/*
 * Structures shared by blkstat.bpf.c and its user side (tierd/telemetry/probes.c).
 *
 * Per block device (the whole disk, keyed by its kernel dev_t: major << 20 |
 * minor), counters in base units: bytes, requests, nanoseconds.  The device
 * value is only ever added to, so every counter is monotonic.
 */
#ifndef TIERD_BLKSTAT_H
#define TIERD_BLKSTAT_H

/* log2 buckets: slot i counts values v (ns) with 2^i <= v < 2^(i+1); slot 0
 * also holds v < 2.  48 slots reach 2^48 ns, about 3.2 days. */
#define BLKSTAT_SLOTS		48
#define BLKSTAT_MAX_DEVS	256
#define BLKSTAT_MAX_INFLIGHT	65536

#define BLKSTAT_MINORBITS	20
#define BLKSTAT_DEV(ma, mi)	(((__u32)(ma) << BLKSTAT_MINORBITS) | (__u32)(mi))
#define BLKSTAT_DEV_MAJOR(d)	((__u32)(d) >> BLKSTAT_MINORBITS)
#define BLKSTAT_DEV_MINOR(d)	((__u32)(d) & ((1U << BLKSTAT_MINORBITS) - 1))

struct blkstat_dev {
	/* Completed bytes (partial completions add what they completed). */
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 other_bytes;		/* discard, write-zeroes, passthrough */
	/* Requests fully completed, by direction. */
	__u64 read_reqs;
	__u64 write_reqs;
	__u64 other_reqs;
	__u64 issued;			/* requests issued to the driver */
	/* Time with at least one request in flight.  A busy period still
	 * running is not in busy_ns yet: the reader adds now - busy_start_ns
	 * while inflight > 0. */
	__u64 busy_ns;
	__u64 busy_start_ns;
	__u64 idle_start_ns;		/* 0 until the first busy period ends (then
					 * the gap runs from attach_ns) */
	__s64 inflight;
	__u64 busy_periods;
	/* Issue -> full completion latency. */
	__u64 lat_count;
	__u64 lat_sum_ns;
	__u64 lat_hist[BLKSTAT_SLOTS];
	/* Idle gaps between busy periods: count and summed length per slot, so
	 * that inference works on the real mean of each slot. */
	__u64 gap_hist[BLKSTAT_SLOTS];
	__u64 gap_sum_ns[BLKSTAT_SLOTS];
	/* Requests whose completion the programs did not see (the kernel did
	 * not run them), found finished later; their bytes and requests are in
	 * the counters above from then on, without a latency. */
	__u64 lost_reqs;
	__u64 lost_bytes;
	/* Completions with no issue seen: in flight when the programs attached,
	 * or their issue was not seen.  Counted, without a latency. */
	__u64 unmatched;
};

#endif
