#!/bin/sh
# Installs, from Debian 12's packages, everything tierd needs to build, test and
# run its demo.  Run as root.  Safe to run again.
set -e
PKGS="build-essential autoconf automake libtool pkg-config git
liburing-dev libnuma-dev libnvme-dev libsystemd-dev libbpf-dev bpftool clang llvm
libclang-rt-14-dev libjson-c-dev libinih-dev libmicrohttpd-dev libcmocka-dev
libxxhash-dev libfuse3-dev fuse3 fio prometheus qemu-system-x86 qemu-utils
busybox-static debootstrap nvme-cli systemd python3 python3-numpy python3-torch cpio
kmod e2fsprogs procps psmisc iproute2 curl python3-prometheus-client spin
debhelper dh-python lintian python3-yaml python3-kubernetes"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
