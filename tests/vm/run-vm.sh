#!/bin/bash
# Boots the tierd test VM by hand and runs one guest script in it.
#
#   tests/vm/run-vm.sh [options] GUEST-SCRIPT
#     -b FILE      copy FILE (and its shared libraries) into the guest's
#                  /usr/local/bin (initramfs mode; repeatable)
#     -f           full mode: Debian 12 root file system with systemd as PID 1
#     -i BUILDDIR  full mode: install this build (make install DESTDIR) first
#     -N           no emulated NVMe drive
#     -t SECONDS   limit for the whole VM run (default 600)
#     -k           keep the scratch directory (logs, images) for inspection
# The guest script's output goes to stdout; the exit status is the script's
# (124 when the VM timed out, 125 when the guest reported nothing).
# TIERD_VM_CACHE names the cache directory (default /var/cache/tierd-vm).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/vm-lib.sh
. "$here/vm-lib.sh"

full=0 nvme=1 builddir="" bins=()
usage() { sed -n '2,14s/^# \{0,1\}//p' "$0" >&2; exit 2; }
while getopts "b:fi:Nt:kh" o; do
	case $o in
	b) bins+=("$OPTARG") ;;
	f) full=1 ;;
	i) builddir=$OPTARG ;;
	N) nvme=0 ;;
	t) VM_TIMEOUT=$OPTARG ;;
	k) TIERD_VM_KEEP=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
script=$1

why=$(vm_unavailable)
[ -z "$why" ] || { vm_log "cannot run: $why"; exit 77; }
vm_workdir || exit 1
vm_kernel || exit 1

disk=()
if [ "$nvme" = 1 ]; then
	truncate -s 1G "$VM_WORK/nvme.img"
	disk=(-drive "file=$VM_WORK/nvme.img,if=none,id=nvm,format=raw" -device nvme,serial=tierd0001,drive=nvm)
fi
if [ "$full" = 1 ]; then
	vm_full_initrd "$VM_WORK" "$script" "$builddir" || exit 1
	vm_run_full "$VM_WORK" "${disk[@]}"
else
	vm_simple_initrd "$VM_WORK" "$script" "${bins[@]}" || exit 1
	vm_initramfs_pack "$VM_WORK/initramfs" "$VM_WORK/initrd.gz" || exit 1
	vm_run "$VM_WORK" "$VM_WORK/initrd.gz" "${disk[@]}"
fi
rc=$?
[ -f "$VM_WORK/guest.out" ] && grep -v '^TIERD-VM-' "$VM_WORK/guest.out"
exit $rc
