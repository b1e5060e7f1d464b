// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * NVMe driver tracepoints: per-controller admin and I/O command counts, and
 * host-initiated power-state changes (Set Features, power management and
 * APST).
 *
 * The tracepoints and the driver's types live in the nvme_core module, so
 * this object is only loaded where /sys/kernel/btf/nvme_core exists; libbpf
 * resolves the CO-RE relocations below against that module's BTF.  The
 * command itself is read as the 64 bytes of the NVMe submission queue entry,
 * whose layout the specification fixes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "nvmetrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time knobs. */
const volatile int targ_ctrl = -1;	/* controller instance; -1: all */

/* Only the fields read here, matched by name in nvme_core's BTF. */
struct nvme_ctrl___nt {
	int instance;
} __attribute__((preserve_access_index));

struct nvme_request___nt {
	struct nvme_ctrl___nt *ctrl;
	__u16 status;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NVMETRACE_MAX_CTRLS);
	__type(key, __u32);			/* controller instance */
	__type(value, struct nvmetrace_ctrl);
} ctrls SEC(".maps");

/* nvme_req(): the driver's per-request data follows struct request. */
static __always_inline struct nvme_request___nt *nvme_req(struct request *rq)
{
	return (void *)((char *)rq + bpf_core_type_size(struct request));
}

static __always_inline struct nvmetrace_ctrl *ctrl_get(struct request *rq)
{
	static const struct nvmetrace_ctrl zero;
	struct nvme_request___nt *nr = nvme_req(rq);
	struct nvmetrace_ctrl *c;
	__u32 id;

	id = (__u32)BPF_CORE_READ(nr, ctrl, instance);
	if (targ_ctrl >= 0 && id != (__u32)targ_ctrl)
		return NULL;
	c = bpf_map_lookup_elem(&ctrls, &id);
	if (c)
		return c;
	bpf_map_update_elem(&ctrls, &id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&ctrls, &id);
}

/* The admin queue has no namespace behind it (nvme_req_qid() in the driver). */
static __always_inline int is_admin(struct request *rq)
{
	return BPF_CORE_READ(rq, q, queuedata) == NULL;
}

SEC("tp_btf/nvme_setup_cmd")
int BPF_PROG(nvme_setup, struct request *rq, void *cmd)
{
	struct nvmetrace_ctrl *c = ctrl_get(rq);
	__u32 sqe[16];

	if (!c)
		return 0;
	if (!is_admin(rq)) {
		__sync_fetch_and_add(&c->io_cmds, 1);
		return 0;
	}
	__sync_fetch_and_add(&c->admin_cmds, 1);
	if (bpf_probe_read_kernel(sqe, sizeof(sqe), cmd))
		return 0;
	/* CDW0 bits 7:0 opcode; CDW10 bits 7:0 FID; CDW11 the value. */
	if ((sqe[0] & 0xff) != NVMETRACE_ADMIN_SET_FEATURES)
		return 0;
	switch (sqe[10] & 0xff) {
	case NVMETRACE_FID_POWER_MGMT:
		c->last_ps = sqe[11] & 0x1f;
		c->last_wh = (sqe[11] >> 5) & 0x7;
		c->last_power_mgmt_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&c->set_power_mgmt, 1);
		break;
	case NVMETRACE_FID_APST:
		c->last_apst_enable = sqe[11] & 1;
		c->last_apst_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&c->set_apst, 1);
		break;
	}
	return 0;
}

SEC("tp_btf/nvme_complete_rq")
int BPF_PROG(nvme_complete, struct request *rq)
{
	struct nvmetrace_ctrl *c = ctrl_get(rq);

	if (!c)
		return 0;
	if (is_admin(rq))
		__sync_fetch_and_add(&c->admin_done, 1);
	else
		__sync_fetch_and_add(&c->io_done, 1);
	if (BPF_CORE_READ(nvme_req(rq), status))
		__sync_fetch_and_add(&c->errors, 1);
	return 0;
}
