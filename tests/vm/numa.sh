#!/bin/bash
# VM suite: pools per NUMA node.  Boots Debian 12's kernel under qemu with
# two NUMA nodes (one vCPU and half the memory each, -numa with memory
# backends) and an initramfs holding tierd, tests/numa-check and a small
# demo checkpoint; tests/vm/guest-numa.sh runs tierd with [pool] nodes =
# auto and checks with move_pages(2) that each pool is on its node, that
# clients of each node (said in HELLO, or by CPU affinity) get slots on
# their node, and that the per-node counters add up.  Needs root.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
# shellcheck source=tests/vm/vm-lib.sh
. "$top_srcdir/tests/vm/vm-lib.sh"

why=$(vm_unavailable)
if [ -n "$why" ]; then
	echo "1..0 # SKIP $why"
	exit 0
fi
for p in tierd/tierd tests/numa-check client/tierctl; do
	if [ ! -x "$top_builddir/$p" ]; then
		echo "1..0 # SKIP $p not built"
		exit 0
	fi
done
vm_workdir || exit 1

vm_tap_check "Debian kernel fetched and unpacked" vm_kernel || { vm_tap_done; exit 1; }

ird=$VM_WORK/initramfs
build_initramfs() {
	local f
	"$top_builddir/client/tierctl" demo-store "$VM_WORK/demo" --layers 3 --experts 4 --hidden 64 \
		--ffn 128 >/dev/null || return 1
	vm_simple_initrd "$VM_WORK" "$top_srcdir/tests/vm/guest-numa.sh" \
		"$top_builddir/tierd/tierd" "$top_builddir/tests/numa-check" || return 1
	# No NVMe drive to wait for: the checkpoint is in the initramfs.
	: >"$ird/etc/tierd-vm.wait"
	for f in "$VM_WORK"/demo/*; do
		vm_initramfs_add_file "$ird" "$f" "/guest/demo/$(basename "$f")" || return 1
	done
	vm_initramfs_pack "$ird" "$VM_WORK/initrd.gz"
}
vm_tap_check "initramfs built (tierd, numa-check, a demo checkpoint)" build_initramfs ||
	{ vm_tap_done; exit 1; }

# Two nodes of one vCPU each; the guest's memory is the two backends.
half=$((${VM_MEM%G} * 512))M
VM_SMP=2
vm_run "$VM_WORK" "$VM_WORK/initrd.gz" \
	-object "memory-backend-ram,id=m0,size=$half" -object "memory-backend-ram,id=m1,size=$half" \
	-numa "node,nodeid=0,cpus=0,memdev=m0" -numa "node,nodeid=1,cpus=1,memdev=m1"
rc=$?
vm_tap_run_result "$rc" "VM with two NUMA nodes booted and ran the guest script in $VM_RUN_SECONDS s" 8
vm_tap_done
