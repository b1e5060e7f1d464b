#!/bin/bash
# VM suite: tierd under real systemd 252.  Boots the cached debootstrapped
# Debian 12 root file system (built on the first run on a machine) under qemu
# (TCG) with this build installed (make install DESTDIR, carried in by the
# initramfs), and runs tests/vm/guest-systemd.sh there from a unit; that in
# turn runs the service checks, tests/vm/guest-systemd-check.sh, when present.
# Prints the guest's TAP lines after its own.  Needs root.
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

vm_tap_check "Debian kernel fetched and unpacked" vm_kernel || { vm_tap_done; exit 1; }
vm_tap_check "Debian 12 root file system ready (cached in $VM_CACHE)" vm_rootfs || { vm_tap_done; exit 1; }

# The guest scripts travel together: the harness's check runs the service's.
gdir=$VM_WORK/guest
mkdir -p "$gdir"
cp "$top_srcdir/tests/vm/guest-systemd.sh" "$gdir/guest.sh"
if [ -f "$top_srcdir/tests/vm/guest-systemd-check.sh" ]; then
	cp "$top_srcdir/tests/vm/guest-systemd-check.sh" "$gdir/"
fi
build() {
	vm_full_initrd "$VM_WORK" "$gdir/guest.sh" "$top_builddir" || return 1
	[ -f "$gdir/guest-systemd-check.sh" ] || return 0
	vm_initramfs_add_file "$VM_WORK/initramfs" "$gdir/guest-systemd-check.sh" \
		/payload/usr/local/libexec/tierd-vm/guest-systemd-check.sh &&
		vm_initramfs_pack "$VM_WORK/initramfs" "$VM_WORK/initrd.gz"
}
vm_tap_check "this build installed into the guest's payload" build || { vm_tap_done; exit 1; }

# An emulated NVMe drive too, so the service can find a controller.
truncate -s 1G "$VM_WORK/nvme.img"
vm_run_full "$VM_WORK" \
	-drive "file=$VM_WORK/nvme.img,if=none,id=nvm,format=raw" \
	-device nvme,serial=tierd0001,drive=nvm
rc=$?
vm_tap_run_result "$rc" "systemd booted and ran the guest script; VM ran $VM_RUN_SECONDS s" 9
vm_tap_done
