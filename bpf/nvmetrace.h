/* SPDX-License-Identifier: MIT */
/*
 * Structures shared by nvmetrace.bpf.c and its user side (tierd/telemetry/probes.c):
 * per NVMe controller (keyed by its instance, the X of /dev/nvmeX) command
 * counts and the last host-initiated power-state change seen.
 */
#ifndef TIERD_NVMETRACE_H
#define TIERD_NVMETRACE_H

#define NVMETRACE_MAX_CTRLS	64

/* NVMe base specification values the program decodes. */
#define NVMETRACE_ADMIN_SET_FEATURES	0x09
#define NVMETRACE_FID_POWER_MGMT	0x02
#define NVMETRACE_FID_APST		0x0c

struct nvmetrace_ctrl {
	__u64 admin_cmds;		/* commands set up on the admin queue */
	__u64 io_cmds;			/* on I/O queues */
	__u64 admin_done;		/* completions */
	__u64 io_done;
	__u64 errors;			/* completions with a non-zero status */
	/* Set Features, Power Management (FID 02h): CDW11 PS and WH. */
	__u64 set_power_mgmt;
	__u64 last_power_mgmt_ns;
	__u32 last_ps;
	__u32 last_wh;
	/* Set Features, Autonomous Power State Transition (FID 0Ch): CDW11
	 * APSTE.  The table itself is in the data buffer, not traced. */
	__u64 set_apst;
	__u64 last_apst_ns;
	__u32 last_apst_enable;
	__u32 pad;
};

#endif
