# shellcheck shell=bash
# VM harness for tests that need a real NVMe controller or a real systemd as
# PID 1, neither of which a development machine or CI has.  Sourced by
# tests/vm/run-vm.sh and the VM suites (tests/vm/nvme.sh, tests/vm/systemd.sh).
#
# It boots Debian 12's own kernel (fetched with apt-get download, unpacked
# with dpkg-deb) under qemu with TCG: a KVM guest hung at boot on these
# machines.  Two guest kinds:
#   initramfs  busybox, chosen binaries with their shared libraries, the
#              NVMe modules; runs one guest script and powers off (seconds).
#   full       a debootstrapped Debian 12 root file system on a virtio disk,
#              real systemd as PID 1; the tierd build and a guest script are
#              carried in by the initramfs, a unit runs the script.
# Either way the guest script's output comes back on a second serial port
# (ttyS1), kept apart from the kernel console (ttyS0), so kernel messages
# cannot interleave with TAP lines.
#
# Downloads and the root file system are cached in $TIERD_VM_CACHE
# (default /var/cache/tierd-vm): one debootstrap per machine.

VM_CACHE=${TIERD_VM_CACHE:-/var/cache/tierd-vm}
# Whole-VM wall-clock limit (seconds); a hung guest must not hang make check.
VM_TIMEOUT=${TIERD_VM_TIMEOUT:-600}
VM_MEM=${TIERD_VM_MEM:-2G}
VM_SMP=${TIERD_VM_SMP:-2}
# Bump when the root file system recipe changes, so caches are rebuilt.
VM_ROOTFS_RECIPE=4
# Packages of the full guest: systemd as PID 1 and the runtime libraries of
# tierd's build (host and guest are both Debian 12, so the same packages).
VM_ROOTFS_PACKAGES=(systemd systemd-sysv udev kmod dbus procps iproute2
	util-linux e2fsprogs libpam-systemd nvme-cli
	liburing2 libnuma1 libnvme1 libbpf1 libelf1 zlib1g libjson-c5 libinih1
	libmicrohttpd12 libsystemd0 libxxhash0 libfuse3-3 libcmocka0 libasan8
	libubsan1 libgcc-s1 libstdc++6)
# Their dependencies come along (modprobe --show-depends); named here is the
# order a hand-made initramfs would use.
VM_NVME_MODULES=(crct10dif_common crc-t10dif crc64 crc64-rocksoft t10-pi nvme-core nvme)

vm_log() {
	printf 'vm: %s\n' "$*" >&2
}

vm_die() {
	printf 'vm: error: %s\n' "$*" >&2
	return 1
}

# Why the VM cannot run here, or nothing when it can.  Only a missing tool
# counts: TCG needs no /dev/kvm.
vm_unavailable() {
	local t
	for t in qemu-system-x86_64 dpkg-deb apt-get apt-cache timeout flock depmod modprobe gzip; do
		PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null 2>&1 || { echo "$t not installed"; return 0; }
	done
	# The initramfs needs a busybox that runs without libraries.
	if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
		echo "busybox-static not installed"
		return 0
	fi
	[ "$(id -u)" = 0 ] || echo "needs root (debootstrap, device nodes in the image)"
}

# vm_workdir: a scratch directory for one run, removed at exit together with
# any qemu still running.
vm_workdir() {
	VM_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tierd-vm.XXXXXX") || return 1
	trap vm_cleanup EXIT
	trap 'exit 130' INT TERM
}

vm_cleanup() {
	if [ -n "${VM_QEMU_PID:-}" ]; then
		kill "$VM_QEMU_PID" 2>/dev/null
		wait "$VM_QEMU_PID" 2>/dev/null
	fi
	if [ -n "${VM_WORK:-}" ] && [ "${TIERD_VM_KEEP:-0}" != 1 ]; then
		rm -rf "$VM_WORK"
	elif [ -n "${VM_WORK:-}" ]; then
		vm_log "kept $VM_WORK"
	fi
}

# Runs "$@" with the cache lock held, so concurrent suites (make check -j)
# do not fetch or build the same thing twice.  Under the lock, scratch
# directories that an interrupted run left behind are removed.
vm_locked() {
	mkdir -p "$VM_CACHE" || return 1
	(
		flock 9 || exit 1
		find "$VM_CACHE" -maxdepth 1 -type d \( -name 'kernel.*' -o -name 'rootfs.*' \) \
			-exec rm -rf {} +
		"$@"
	) 9>"$VM_CACHE/lock"
}

# --- kernel -----------------------------------------------------------------

# Sets VM_KVER and VM_KDIR (an unpacked linux-image package with modules.dep).
vm_kernel() {
	vm_locked vm__kernel_fetch || return 1
	VM_KDIR=$(cat "$VM_CACHE/kernel/current") || return 1
	VM_KVER=$(basename "$(ls -d "$VM_KDIR"/lib/modules/*/)")
	[ -f "$VM_KDIR/boot/vmlinuz-$VM_KVER" ] || vm_die "no kernel in $VM_KDIR"
}

vm__kernel_fetch() {
	local pkg ver dir tmp
	export PATH=$PATH:/usr/sbin:/sbin
	# linux-image-amd64 names the current 6.1 ABI package.
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$pkg" ] && [ ! -f "$VM_CACHE/kernel/current" ]; then
		vm_log "apt-cache knows no linux-image-amd64; running apt-get update"
		apt-get update -q >&2 || true
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	fi
	if [ -z "$pkg" ]; then
		# Offline, but a kernel was fetched before: use it.
		[ -f "$VM_CACHE/kernel/current" ] && return 0
		vm_die "cannot find Debian's kernel package (linux-image-amd64)"
		return 1
	fi
	ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '/^Version:/{print $2; exit}')
	dir="$VM_CACHE/kernel/${pkg}_$ver"
	if [ ! -f "$dir/.done" ]; then
		vm_log "fetching $pkg $ver"
		tmp=$(mktemp -d "$VM_CACHE/kernel.XXXXXX") || return 1
		# Stale package lists name a version the mirror no longer has:
		# refresh them once.
		if ! (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -q "$pkg=$ver" >&2) &&
			! { apt-get update -q >&2 &&
				pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}') &&
				ver=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/{print $2; exit}') &&
				dir="$VM_CACHE/kernel/${pkg}_$ver" &&
				(cd "$tmp" && apt-get -o APT::Sandbox::User=root download -q "$pkg=$ver" >&2); }; then
			rm -rf "$tmp"
			[ -f "$VM_CACHE/kernel/current" ] && { vm_log "download failed; using the cached kernel"; return 0; }
			vm_die "apt-get download $pkg failed"
			return 1
		fi
		mkdir -p "$tmp/root"
		dpkg-deb -x "$tmp"/*.deb "$tmp/root" || { rm -rf "$tmp"; return 1; }
		# The package has no modules.dep (its postinst runs depmod).
		depmod -b "$tmp/root" "${pkg#linux-image-}" || { rm -rf "$tmp"; return 1; }
		rm -f "$tmp"/*.deb
		rm -rf "$dir"
		mkdir -p "$(dirname "$dir")"
		mv "$tmp/root" "$dir" && rmdir "$tmp"
		touch "$dir/.done"
	fi
	echo "$dir" >"$VM_CACHE/kernel/current.tmp" && mv "$VM_CACHE/kernel/current.tmp" "$VM_CACHE/kernel/current"
}

# Prints the module files (paths) for the named modules and their
# dependencies, in load order; built-in modules print nothing.
vm_kernel_modules() {
	local m
	for m in "$@"; do
		PATH=$PATH:/usr/sbin:/sbin modprobe -d "$VM_KDIR" -S "$VM_KVER" --show-depends "$m" 2>/dev/null |
			awk '$1 == "insmod" {print $2}'
	done | awk '!seen[$0]++'
}

# --- initramfs ----------------------------------------------------------------

# vm_initramfs_new DIR: a busybox tree with a merged /usr, as Debian 12 has.
vm_initramfs_new() {
	local d=$1 x
	rm -rf "$d"
	mkdir -p "$d"/usr/bin "$d"/usr/sbin "$d"/usr/lib "$d"/usr/lib64 "$d"/etc \
		"$d"/proc "$d"/sys "$d"/dev "$d"/tmp "$d"/run "$d"/newroot "$d"/guest \
		"$d"/lib/modules "$d"/usr/local/bin "$d"/usr/local/lib || return 1
	for x in bin sbin lib64; do ln -s "usr/$x" "$d/$x"; done
	# /lib holds the modules directory of the initramfs; libraries go to
	# /usr/lib and /lib/x86_64-linux-gnu points there.
	ln -s ../usr/lib/x86_64-linux-gnu "$d/lib/x86_64-linux-gnu"
	mkdir -p "$d/usr/lib/x86_64-linux-gnu"
	cp /bin/busybox "$d/usr/bin/busybox" || return 1
	ln -s busybox "$d/usr/bin/sh"
	: >"$d/etc/tierd-vm.modules"
}

# vm_initramfs_add_lib DIR LIB: copies LIB, resolving symbolic links, to
# the same path.
vm__copy_same_path() {
	local d=$1 f=$2
	[ -e "$d$f" ] && return 0
	mkdir -p "$d$(dirname "$f")" && cp -L "$f" "$d$f"
}

# vm_initramfs_add_bin DIR FILE [DEST]: FILE and the shared libraries it
# needs (by ldd), each library at its host path.  A libtool wrapper script
# is replaced by the real program under .libs.
vm_initramfs_add_bin() {
	local d=$1 f=$2 dest=${3:-$2} lib
	if head -c 200 "$f" 2>/dev/null | grep -q '^#! */bin/.*sh' &&
		grep -q 'libtool' "$f" 2>/dev/null && [ -x "$(dirname "$f")/.libs/$(basename "$f")" ]; then
		f="$(dirname "$f")/.libs/$(basename "$f")"
	fi
	mkdir -p "$d$(dirname "$dest")" && cp -L "$f" "$d$dest" || return 1
	ldd "$f" 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' |
		while read -r lib; do
			vm__copy_same_path "$d" "$lib" || exit 1
		done
}

# vm_initramfs_add_file DIR SRC DEST
vm_initramfs_add_file() {
	mkdir -p "$1$(dirname "$3")" && cp -a "$2" "$1$3"
}

# vm_initramfs_add_modules DIR MODULE...: the modules and their dependencies,
# appended to the load list.  Modules built into the kernel add nothing.
vm_initramfs_add_modules() {
	local d=$1 ko rel
	shift
	for ko in $(vm_kernel_modules "$@"); do
		rel=${ko#"$VM_KDIR"}
		grep -qxF "$rel" "$d/etc/tierd-vm.modules" && continue
		mkdir -p "$d$(dirname "$rel")" && cp "$ko" "$d$rel" || return 1
		echo "$rel" >>"$d/etc/tierd-vm.modules"
	done
}

# vm_initramfs_init DIR MODE [ROOTDEV]: writes /init.  MODE "run" runs
# /guest/guest.sh in the initramfs; MODE "switch" mounts ROOTDEV, copies
# /payload over it and switches to its systemd.
vm_initramfs_init() {
	local d=$1 mode=$2 root=${3:-}
	{
		echo "VM_MODE=$mode"
		echo "VM_ROOT=$root"
	} >"$d/etc/tierd-vm.conf"
	cat >"$d/init" <<'EOF'
#!/bin/sh
# Init of the tierd test VM (written by tests/vm/vm-lib.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
/usr/bin/busybox --install -s /usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /etc/tierd-vm.conf
# Modules in dependency order; one that is built in or already loaded fails
# harmlessly.
while read -r ko; do
	insmod "$ko" 2>/dev/null || echo "tierd-vm: insmod $ko failed (built in?)"
done </etc/tierd-vm.modules
# Device nodes appear asynchronously after the driver probes.
wait_dev() {
	i=0
	while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$1" ]
}
out=/dev/ttyS1
finish() {
	sync
	poweroff -f
	sleep 5
	exit 1
}
if [ "$VM_MODE" = run ]; then
	mkdir -p /sys/fs/bpf /sys/kernel/tracing /dev/shm /dev/pts
	mount -t bpf bpf /sys/fs/bpf
	mount -t tracefs tracefs /sys/kernel/tracing
	mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
	mount -t tmpfs tmpfs /tmp
	mount -t tmpfs tmpfs /dev/shm
	mount -t devpts devpts /dev/pts
	for dev in $(cat /etc/tierd-vm.wait 2>/dev/null); do
		wait_dev "$dev" || echo "tierd-vm: $dev did not appear"
	done
	echo "TIERD-VM-BEGIN" >$out
	(cd /guest && sh /guest/guest.sh) >$out 2>&1
	echo "TIERD-VM-EXIT $?" >$out
	finish
fi
# switch: boot the root file system's systemd with the payload installed.
wait_dev "$VM_ROOT" || { echo "TIERD-VM-EXIT 120 no root device $VM_ROOT" >$out; finish; }
mount -t ext4 -o rw "$VM_ROOT" /newroot || { echo "TIERD-VM-EXIT 121 cannot mount $VM_ROOT" >$out; finish; }
cp -a /payload/. /newroot/ || { echo "TIERD-VM-EXIT 122 cannot install payload" >$out; finish; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
	chmod 755 "$d/init"
}

# vm_initramfs_pack DIR OUT
vm_initramfs_pack() {
	(cd "$1" && find . -print | sort | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$2"
}

# --- root file system (full mode) --------------------------------------------

# The mirror configured for this machine's apt (deb822 or one-line format).
vm_mirror() {
	local m=""
	if [ -n "${TIERD_VM_MIRROR:-}" ]; then
		echo "$TIERD_VM_MIRROR"
		return 0
	fi
	if [ -f /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" && $3 ~ /^(bookworm|stable)$/ {print $2; exit}' /etc/apt/sources.list)
	fi
	if [ -z "$m" ]; then
		m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
			/^URIs:/ {u = $2}
			/^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print u; exit}}')
	fi
	[ -n "$m" ] || m=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list.d/*.list 2>/dev/null)
	[ -n "$m" ] || { vm_die "no Debian mirror in /etc/apt (set TIERD_VM_MIRROR)"; return 1; }
	echo "$m"
}

# Sets VM_ROOTFS: a cached ext4 image of Debian 12 with systemd, keyed by the
# package list and the recipe.  The image is never written by a test run
# (qemu -snapshot), so one image serves every run on the machine.
vm_rootfs() {
	local key
	key=$(printf '%s\n' "$VM_ROOTFS_RECIPE" "${VM_ROOTFS_PACKAGES[@]}" | sha256sum | cut -c1-16)
	VM_ROOTFS="$VM_CACHE/rootfs-$key.ext4"
	[ -f "$VM_ROOTFS" ] && return 0
	vm_locked vm__rootfs_build "$VM_ROOTFS"
}

vm__rootfs_build() {
	local img=$1 mirror tmp t0 size pkgs
	[ -f "$img" ] && return 0
	export PATH=$PATH:/usr/sbin:/sbin
	command -v debootstrap >/dev/null || { vm_die "debootstrap not installed"; return 1; }
	command -v mkfs.ext4 >/dev/null || { vm_die "mkfs.ext4 not installed"; return 1; }
	mirror=$(vm_mirror) || return 1
	tmp=$(mktemp -d "$VM_CACHE/rootfs.XXXXXX") || return 1
	pkgs=$(IFS=,; echo "${VM_ROOTFS_PACKAGES[*]}")
	t0=$(date +%s)
	vm_log "debootstrap bookworm from $mirror (once per machine; a few minutes)"
	if ! debootstrap --variant=minbase --include="$pkgs" bookworm "$tmp/root" "$mirror" \
		>"$tmp/debootstrap.log" 2>&1; then
		tail -20 "$tmp/debootstrap.log" >&2
		tail -20 "$tmp/root/debootstrap/debootstrap.log" >&2 2>/dev/null
		rm -rf "$tmp"
		vm_die "debootstrap failed"
		return 1
	fi
	vm_log "debootstrap took $(($(date +%s) - t0)) s"
	vm__rootfs_configure "$tmp/root" || { rm -rf "$tmp"; return 1; }
	# Room for what the tests write; unused blocks cost nothing (sparse).
	size=$(( $(du -sm "$tmp/root" | cut -f1) + 1024 ))
	mkfs.ext4 -q -F -L tierd-vm -d "$tmp/root" "$tmp/img" "${size}M" >/dev/null || { rm -rf "$tmp"; return 1; }
	find "$tmp/root" -xdev -printf '/%P\n' | sort >"${img%.ext4}.files"
	mv "$tmp/img" "$img"
	rm -rf "$tmp"
	# Images of other recipes or package lists are stale.
	find "$VM_CACHE" -maxdepth 1 -name 'rootfs-*' ! -name "$(basename "${img%.ext4}").*" -delete
	vm_log "root file system ready: $img ($(($(date +%s) - t0)) s)"
}

# The guest configuration that does not change between runs.
vm__rootfs_configure() {
	local r=$1
	echo tierd-vm >"$r/etc/hostname"
	printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$r/etc/fstab"
	# Empty: systemd makes a transient machine id at each boot.
	: >"$r/etc/machine-id"
	# No prompts on the console at first boot, no password for root.
	ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
	# nvme-cli's NVMe-over-Fabrics boot connection has nothing to connect to
	# and would leave the system "degraded".
	ln -sf /dev/null "$r/etc/systemd/system/nvmf-autoconnect.service"
	sed -i 's/^root:[^:]*:/root::/' "$r/etc/shadow"
	# Units of the harness are enabled here; their files come with the payload.
	mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
	ln -sf /etc/systemd/system/tierd-vm-test.service \
		"$r/etc/systemd/system/multi-user.target.wants/tierd-vm-test.service"
	rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/* "$r/debootstrap"
}

# vm_payload_add_tree DIR TREE: copies an install tree (make install DESTDIR)
# into the payload, and any shared library one of its programs needs that
# the root file system lacks (at the host's path: both are Debian 12).
vm_payload_add_tree() {
	local d=$1 tree=$2 files=${VM_ROOTFS%.ext4}.files f lib
	mkdir -p "$d/payload" && cp -a "$tree/." "$d/payload/" || return 1
	# The guest has a merged /usr: /lib, /bin, /sbin are links into /usr,
	# which copying a real /lib directory over would break.
	for x in bin sbin lib lib64; do
		if [ ! -d "$d/payload/$x" ] || [ -L "$d/payload/$x" ]; then continue; fi
		mkdir -p "$d/payload/usr/$x" && cp -a "$d/payload/$x/." "$d/payload/usr/$x/" &&
			rm -rf "${d:?}/payload/$x" || return 1
	done
	find "$tree" -type f -perm -u+x | while read -r f; do
		ldd "$f" 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}'
	done | sort -u | while read -r lib; do
		case $lib in "$tree"/*) continue ;; esac
		grep -qxF "$lib" "$files" && continue
		# /lib is /usr/lib in the guest (merged /usr).
		grep -qxF "/usr$lib" "$files" && continue
		vm_log "payload: adding $lib (not in the root file system)"
		mkdir -p "$d/payload$(dirname "$lib")" && cp -L "$lib" "$d/payload$lib" || exit 1
	done
}

# A build configured with another prefix than /usr/local (make distcheck's,
# say) installs where the guest does not look: the guest script gets that
# prefix on its PATH, and units installed outside systemd's directories are
# copied into /etc/systemd/system.  A prefix under /tmp must survive the boot
# and stay visible to services with PrivateTmp=.
vm__payload_fixups() {
	local d=$1 builddir=$2 stage=$3 prefix u
	prefix=$(sed -n 's/^prefix = //p' "$builddir/Makefile")
	mkdir -p "$d/payload/usr/local/libexec/tierd-vm" "$d/payload/etc/systemd/system"
	{
		echo "PATH=$prefix/sbin:$prefix/bin:\$PATH"
		echo "LD_LIBRARY_PATH=$prefix/lib"
		echo "export PATH LD_LIBRARY_PATH"
	} >"$d/payload/usr/local/libexec/tierd-vm/env"
	# Nor must the boot's tmpfiles clean-up empty /tmp (D /tmp) under it.
	case $prefix in
	/tmp/*)
		mkdir -p "$d/payload/etc/tmpfiles.d" &&
			printf '# Added by the VM harness: the build lives under %s.\nd /tmp 1777 root root -\n' \
				"$prefix" >"$d/payload/etc/tmpfiles.d/tmp.conf" || return 1
		;;
	esac
	find "$stage" -path '*/systemd/system/*' -type f | while read -r u; do
		case ${u#"$stage"} in
		/lib/systemd/system/* | /usr/lib/systemd/system/* | /etc/systemd/system/*) ;;
		*)
			cp "$u" "$d/payload/etc/systemd/system/" || exit 1
			# A service with PrivateTmp= cannot see a program under /tmp.
			case $prefix in
			/tmp/* | /var/tmp/*)
				case $u in *.service) ;; *) continue ;; esac
				mkdir -p "$d/payload/etc/systemd/system/$(basename "$u").d" &&
					printf '# Added by the VM harness: the build lives under %s.\n[Service]\nPrivateTmp=no\n' \
						"$prefix" >"$d/payload/etc/systemd/system/$(basename "$u").d/50-vm-prefix.conf" || exit 1
				;;
			esac
			;;
		esac
	done
	vm__payload_sanitizers "$d" "$stage"
}

# A sanitizer build's leak check at exit ptraces the process's own threads,
# which a hardened unit's SystemCallFilter (~@debug) forbids: LeakSanitizer
# then fails the service at every stop.  For such builds only, a drop-in lets
# the installed services call ptrace, so their leaks are still checked.
vm__payload_sanitizers() {
	local d=$1 stage=$2 u
	find "$stage" -type f -perm -u+x -exec ldd {} + 2>/dev/null | grep -q libasan || return 0
	find "$stage" -path '*/systemd/system/*.service' -type f | while read -r u; do
		u=$(basename "$u")
		mkdir -p "$d/payload/etc/systemd/system/$u.d" || exit 1
		printf '# Added by the VM harness: sanitizer build (see tests/vm/vm-lib.sh).\n[Service]\nSystemCallFilter=ptrace\n' \
			>"$d/payload/etc/systemd/system/$u.d/50-vm-sanitizers.conf" || exit 1
	done
}

# vm_payload_runner DIR: the unit that runs /usr/local/libexec/tierd-vm/guest.sh
# once the system is up, with its output on ttyS1, then powers off.
vm_payload_runner() {
	local d=$1/payload
	mkdir -p "$d/etc/systemd/system" "$d/usr/local/libexec/tierd-vm"
	# Type=simple, not oneshot: the script waits for the boot to finish
	# (is-system-running --wait), which a oneshot still activating would block.
	cat >"$d/etc/systemd/system/tierd-vm-test.service" <<'EOF'
[Unit]
Description=tierd VM test runner
After=basic.target

[Service]
Type=simple
ExecStart=/usr/local/libexec/tierd-vm/runner
StandardInput=null
StandardOutput=journal+console
StandardError=inherit
EOF
	cat >"$d/usr/local/libexec/tierd-vm/runner" <<'EOF'
#!/bin/sh
# Runs the guest test script with its output on the second serial port.
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
ldconfig
state=$(timeout 180 systemctl is-system-running --wait 2>&1)
{
	echo "TIERD-VM-BEGIN"
	echo "# system state after boot: $state"
	cd /usr/local/libexec/tierd-vm || exit 1
	[ -f ./env ] && . ./env
	sh ./guest.sh
	echo "TIERD-VM-EXIT $?"
} >$out 2>&1
sync
systemctl poweroff --no-block || poweroff -f
EOF
	chmod 755 "$d/usr/local/libexec/tierd-vm/runner"
}

# --- the two guest kinds -------------------------------------------------------

# vm_simple_initrd WORK SCRIPT [FILE...]: WORK/initramfs with busybox, nvme-cli,
# the NVMe modules, SCRIPT as /guest/guest.sh and each FILE (with its shared
# libraries) in /usr/local/bin.  Pack it with vm_initramfs_pack once done.
vm_simple_initrd() {
	local w=$1 script=$2 f d=$1/initramfs
	shift 2
	vm_initramfs_new "$d" &&
		vm_initramfs_add_bin "$d" "$(PATH=$PATH:/usr/sbin command -v nvme)" &&
		vm_initramfs_add_modules "$d" "${VM_NVME_MODULES[@]}" &&
		vm_initramfs_add_file "$d" "$script" /guest/guest.sh &&
		vm_initramfs_init "$d" run || return 1
	echo /dev/nvme0n1 >"$d/etc/tierd-vm.wait"
	for f in "$@"; do
		vm_initramfs_add_bin "$d" "$f" "/usr/local/bin/$(basename "$f")" || return 1
	done
}

# vm_full_initrd WORK SCRIPT [BUILDDIR]: WORK/initrd.gz that mounts the cached
# Debian root file system, installs into it the build in BUILDDIR (make
# install DESTDIR) and SCRIPT as /usr/local/libexec/tierd-vm/guest.sh, and
# boots its systemd, where a unit runs SCRIPT.
vm_full_initrd() {
	local w=$1 script=$2 builddir=${3:-} d=$1/initramfs
	vm_rootfs || return 1
	vm_initramfs_new "$d" &&
		vm_initramfs_add_modules "$d" virtio_pci virtio_blk ext4 autofs4 "${VM_NVME_MODULES[@]}" &&
		vm_initramfs_init "$d" switch /dev/vda || return 1
	mkdir -p "$d/payload"
	if [ -n "$builddir" ]; then
		vm_log "installing the build of $builddir"
		rm -rf "$w/stage"
		# A make of its own, not a job of the make check that runs us.
		if ! env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s -C "$builddir" install \
			DESTDIR="$w/stage" >"$w/install.log" 2>&1; then
			tail -20 "$w/install.log" >&2
			vm_die "make install failed"
			return 1
		fi
		vm_payload_add_tree "$d" "$w/stage" || return 1
		vm__payload_fixups "$d" "$builddir" "$w/stage" || return 1
	fi
	vm_payload_runner "$d" &&
		vm_initramfs_add_file "$d" "$script" /payload/usr/local/libexec/tierd-vm/guest.sh &&
		vm_initramfs_pack "$d" "$w/initrd.gz"
}

# vm_run_full WORK [QEMU ARGS...]: vm_run with the root file system as a
# virtio disk whose writes go to a throw-away overlay.
vm_run_full() {
	local w=$1
	shift
	vm_run "$w" "$w/initrd.gz" -drive "file=$VM_ROOTFS,if=virtio,format=raw,snapshot=on" "$@"
}

# --- running ------------------------------------------------------------------

# vm_run WORKDIR INITRD [QEMU ARGS...]: boots the kernel with INITRD, waits at
# most VM_TIMEOUT seconds, leaves the console log in WORKDIR/console.log and
# the guest script's output in WORKDIR/guest.log.  Returns the guest
# script's exit status, or 124 on timeout, 125 when the guest said nothing.
vm_run() {
	local w=$1 initrd=$2 append rc t0
	shift 2
	append="console=ttyS0 panic=-1 quiet ${VM_APPEND:-}"
	: >"$w/console.log"
	: >"$w/guest.log"
	t0=$(date +%s)
	vm_log "booting qemu (TCG, $VM_SMP vCPUs, $VM_MEM, limit ${VM_TIMEOUT} s)"
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -m "$VM_MEM" -smp "$VM_SMP" \
		-nographic -monitor none -no-reboot -nic none \
		-serial "file:$w/console.log" -serial "file:$w/guest.log" \
		-kernel "$VM_KDIR/boot/vmlinuz-$VM_KVER" -initrd "$initrd" \
		-append "$append" "$@" </dev/null >"$w/qemu.log" 2>&1 &
	# vm_cleanup (at exit) kills it if this shell ends first.
	VM_QEMU_PID=$!
	wait "$VM_QEMU_PID"
	rc=$?
	VM_QEMU_PID=
	VM_RUN_SECONDS=$(($(date +%s) - t0))
	vm_log "qemu exited ($rc) after $VM_RUN_SECONDS s"
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		vm_log "timed out after $VM_TIMEOUT s; console tail:"
		tail -30 "$w/console.log" | tr -d '\r' >&2
		vm_log "the guest script's last lines:"
		tr -d '\r' <"$w/guest.log" | tail -20 >&2
		return 124
	fi
	tr -d '\r' <"$w/guest.log" >"$w/guest.out"
	rc=$(awk '/^TIERD-VM-EXIT/ {print $2}' "$w/guest.out" | tail -1)
	if [ -z "$rc" ]; then
		vm_log "the guest reported nothing; qemu said:"
		cat "$w/qemu.log" >&2
		vm_log "console tail:"
		tail -40 "$w/console.log" | tr -d '\r' >&2
		return 125
	fi
	return "$rc"
}

# --- TAP ----------------------------------------------------------------------

# The host scripts number their own checks first, then the guest's.
VM_TAP_N=0
VM_TAP_FAILED=0

vm_tap_ok() {
	VM_TAP_N=$((VM_TAP_N + 1))
	echo "ok $VM_TAP_N - $*"
}

vm_tap_not_ok() {
	VM_TAP_N=$((VM_TAP_N + 1))
	VM_TAP_FAILED=$((VM_TAP_FAILED + 1))
	echo "not ok $VM_TAP_N - $*"
}

# vm_tap_check DESCRIPTION COMMAND...
vm_tap_check() {
	local what=$1
	shift
	if "$@"; then vm_tap_ok "$what"; else vm_tap_not_ok "$what"; fi
}

# vm_tap_guest FILE: the guest's TAP lines, renumbered after the host's.  The
# guest may print several TAP streams one after another (the harness's checks,
# then a suite's); the sum of their plans must match what was printed.
vm_tap_guest() {
	local f=$1 line desc n=0 planned=0 plans=0
	while IFS= read -r line; do
		case $line in
		"ok "* | "not ok "*)
			n=$((n + 1))
			desc=$(printf '%s\n' "$line" | sed -E 's/^(not )?ok [0-9]* *-? *//')
			case $line in
			"not ok"*) vm_tap_not_ok "guest: $desc" ;;
			*) vm_tap_ok "guest: $desc" ;;
			esac
			;;
		1..*)
			line=${line#1..}
			planned=$((planned + ${line%%[!0-9]*}))
			plans=$((plans + 1))
			;;
		"Bail out!"*) vm_tap_not_ok "guest: ${line#Bail out! }" ;;
		"#"*) echo "$line" ;;
		esac
	done <"$f"
	if [ "$plans" -gt 0 ] && [ "$planned" != "$n" ]; then
		vm_tap_not_ok "guest planned $planned tests and ran $n"
	fi
	# shellcheck disable=SC2034 # read by the suites
	VM_GUEST_TESTS=$n
}

# TAP for a finished VM run: vm_tap_run_result RC "TEXT WHEN BOOTED" MIN_GUEST_TESTS
# RC is vm_run's status (124: timed out, 125: no report from the guest).
vm_tap_run_result() {
	case $1 in
	124) vm_tap_not_ok "VM finished within ${VM_TIMEOUT} s" ;;
	125) vm_tap_not_ok "guest script ran and reported" ;;
	*) vm_tap_ok "$2" ;;
	esac
	if [ "$1" != 124 ] && [ "$1" != 125 ]; then
		vm_tap_guest "$VM_WORK/guest.out"
		vm_tap_check "guest script exited 0" [ "$1" = 0 ]
		vm_tap_check "guest ran its checks" [ "$VM_GUEST_TESTS" -ge "$3" ]
	fi
}

vm_tap_done() {
	echo "1..$VM_TAP_N"
	[ "$VM_TAP_FAILED" -eq 0 ]
}
