#!/bin/bash
# SPDX-License-Identifier: MIT
# VM suite: the Debian packages that tests/deb.sh built, installed with apt
# into the cached Debian 12 guest with systemd 252 as PID 1 and an emulated
# NVMe drive; tests/vm/guest-deb.sh checks there the tierd user, socket
# activation, reload, stop, the metrics the Grafana dashboard names, and
# apt-get purge.  Skips when tests/deb.sh built no packages (make distcheck,
# no dpkg-buildpackage).  Needs root.  Prints TAP.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
debs=$top_builddir/tests/debs
# shellcheck source=tests/vm/vm-lib.sh
. "$top_srcdir/tests/vm/vm-lib.sh"

why=$(vm_unavailable)
[ -n "$why" ] || ls "$debs"/tierd_*.deb >/dev/null 2>&1 || why="no packages in $debs (tests/deb.sh did not build them)"
if [ -n "$why" ]; then
	echo "1..0 # SKIP $why"
	exit 0
fi
vm_workdir || exit 1

vm_tap_check "Debian kernel fetched and unpacked" vm_kernel || { vm_tap_done; exit 1; }
vm_tap_check "Debian 12 root file system ready (cached in $VM_CACHE)" vm_rootfs || { vm_tap_done; exit 1; }

# The payload: the packages, the dashboard, the guest script; no build.
build() {
	vm_full_initrd "$VM_WORK" "$top_srcdir/tests/vm/guest-deb.sh" || return 1
	local d=$VM_WORK/initramfs f
	for f in "$debs"/*.deb; do
		vm_initramfs_add_file "$d" "$f" "/payload/usr/local/libexec/tierd-vm/debs/$(basename "$f")" || return 1
	done
	vm_initramfs_add_file "$d" "$top_srcdir/contrib/grafana/tierd-dashboard.json" \
		/payload/usr/local/libexec/tierd-vm/tierd-dashboard.json &&
		vm_initramfs_pack "$d" "$VM_WORK/initrd.gz"
}
vm_tap_check "packages $(cd "$debs" && echo *.deb) carried into the guest" build || { vm_tap_done; exit 1; }

truncate -s 1G "$VM_WORK/nvme.img"
vm_run_full "$VM_WORK" \
	-drive "file=$VM_WORK/nvme.img,if=none,id=nvm,format=raw" \
	-device nvme,serial=tierd0001,drive=nvm
rc=$?
vm_tap_run_result "$rc" "systemd booted and ran the package checks; VM ran $VM_RUN_SECONDS s" 12
vm_tap_done
