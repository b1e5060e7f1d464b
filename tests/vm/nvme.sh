#!/bin/bash
# VM suite: tierd's NVMe and eBPF checks against a real (emulated) NVMe
# controller.  Boots Debian 12's kernel under qemu (TCG) with an initramfs
# holding busybox, nvme-cli, the programs under test and tests/vm/guest-nvme.sh,
# and reports the guest's TAP lines after its own.  Needs root.
#
# TIERD_VM_GUEST_PROGS: the guest programs, ';'-separated command lines whose
# first word is a file (found in $top_builddir, then $PATH); the default is
# tierd's checks when built, plus nvme-cli's identify.
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
vm_workdir || exit 1

if [ -z "${TIERD_VM_GUEST_PROGS+set}" ]; then
	TIERD_VM_GUEST_PROGS="nvme id-ctrl /dev/nvme0 -o json"
	for p in "tests/nvme-info /dev/nvme0" "tests/bpf-nvme-check /dev/nvme0"; do
		[ -x "$top_builddir/${p%% *}" ] && TIERD_VM_GUEST_PROGS="$TIERD_VM_GUEST_PROGS;$p"
	done
fi

vm_tap_check "Debian kernel fetched and unpacked" vm_kernel || { vm_tap_done; exit 1; }
vm_log "kernel $VM_KVER from $VM_KDIR"

ird=$VM_WORK/initramfs
build_initramfs() {
	local cmd file path
	vm_simple_initrd "$VM_WORK" "$top_srcdir/tests/vm/guest-nvme.sh" || return 1
	: >"$ird/guest/progs"
	IFS=';' read -ra cmds <<<"$TIERD_VM_GUEST_PROGS"
	for cmd in "${cmds[@]}"; do
		file=${cmd%% *}
		[ -n "$file" ] || continue
		if [ -x "$top_builddir/$file" ]; then
			path=$top_builddir/$file
		else
			path=$(PATH=$PATH:/usr/sbin:/sbin command -v "$file") || { vm_log "no program $file"; return 1; }
		fi
		vm_initramfs_add_bin "$ird" "$path" "/usr/local/bin/$(basename "$file")" || return 1
		echo "/usr/local/bin/$(basename "$file")${cmd#"$file"}" >>"$ird/guest/progs"
	done
	vm_initramfs_pack "$ird" "$VM_WORK/initrd.gz"
}
vm_tap_check "initramfs built (busybox, nvme-cli, modules, $(echo "$TIERD_VM_GUEST_PROGS" | tr ';' '\n' | wc -l) guest programs)" \
	build_initramfs || { vm_tap_done; exit 1; }

# A sparse 1 GiB namespace; what it holds does not matter to the checks.
truncate -s 1G "$VM_WORK/nvme.img"
vm_run "$VM_WORK" "$VM_WORK/initrd.gz" \
	-drive "file=$VM_WORK/nvme.img,if=none,id=nvm,format=raw" \
	-device nvme,serial=tierd0001,drive=nvm
rc=$?
vm_tap_run_result "$rc" "VM booted and ran the guest script in $VM_RUN_SECONDS s" 8
vm_tap_done
