#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs INSIDE the Debian 12 guest with systemd as PID 1 (tests/vm/deb.sh):
# installs the Debian packages of this tree with apt, then checks what the
# package promises: the tierd system user, no daemon started before the
# operator configured one, `systemctl enable --now tierd.socket`, a client
# served through socket activation, reload (same process) and stop (drained,
# the socket stays and activates it again), every metric the Grafana
# dashboard names exported (the checkpoint on the emulated NVMe drive), and
# `apt-get purge` removing what the package created.  Prints TAP.
set -u
here=$(pwd)
SOCK=/run/tierd/tierd.sock
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() {
	what=$1
	shift
	if "$@" >/tmp/guest-deb.out 2>&1; then ok "$what"; else notok "$what"; sed 's/^/# /' /tmp/guest-deb.out | tail -15; fi
}
journal() { journalctl -u tierd.service --no-pager -o cat 2>/dev/null; }
stamp() { echo "# $(cut -d' ' -f1 /proc/uptime) s since boot: $1"; }
wait_for() { i=0; while [ $i -lt 100 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; i=$((i + 1)); done; return 1; }
# The prefix of the VM harness (a build under /usr/local) is not ours.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

echo "1..17"
stamp "package checks begin"
# 1: apt installs the packages from files (no network: their dependencies are
# in the image).  python3-tierd needs python3, which the image lacks.
check "apt-get install tierd libtierd-client0 libtierd-client-dev (.deb files)" \
	env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	"$here"/debs/tierd_*.deb "$here"/debs/libtierd-client0_*.deb "$here"/debs/libtierd-client-dev_*.deb

# 2: the user, from sysusers.d: a system user with no login.
ent=$(getent passwd tierd)
uid=$(echo "$ent" | cut -d: -f3)
if [ -n "$ent" ] && [ "$uid" -lt 1000 ] && getent group tierd >/dev/null &&
	case $(echo "$ent" | cut -d: -f7) in */nologin) true ;; *) false ;; esac; then
	ok "system user tierd exists ($ent)"
else
	notok "system user tierd exists (${ent:-none})"
fi

# 3: the NVMe controller readable by the tierd group (debian/tierd.udev), so
# that the daemon can read power states and SMART; nothing started or
# enabled before the operator configures a model.
i=0
while [ "$(stat -c %G /dev/nvme0)" != tierd ] && [ $i -lt 10 ]; do sleep 0.5; i=$((i + 1)); done
nvme_perm=$(stat -c %G:%a /dev/nvme0 2>&1)
if [ "$(systemctl is-enabled tierd.socket 2>&1)" = disabled ] && [ "$nvme_perm" = tierd:640 ] &&
	! systemctl is-active --quiet tierd.socket && ! systemctl is-active --quiet tierd.service; then
	ok "installed, not enabled, not started; /dev/nvme0 group tierd, mode 0640"
else
	notok "installed, not enabled, not started; /dev/nvme0 group tierd, mode 0640 ($nvme_perm, $(systemctl is-enabled tierd.socket 2>&1), $(systemctl is-active tierd.socket tierd.service | tr '\n' ' '))"
fi

stamp "installed"
# The operator's part: a checkpoint on the NVMe drive, a configuration.
# Under the state directory, as the example configuration has it.
mkdir -p /var/lib/tierd/models
mkfs.ext4 -q -F /dev/nvme0n1 >/dev/null 2>&1 && mount /dev/nvme0n1 /var/lib/tierd/models &&
	tierctl demo-store /var/lib/tierd/models/demo --layers 2 --experts 8 --hidden 64 --ffn 128 >/dev/null 2>&1 ||
	echo "# could not write a demo checkpoint on /dev/nvme0n1"
cat >/etc/tierd/tierd.conf <<CONF
[daemon]
log_level = info
[pool]
size = 16M
hugepages = no
lock = yes
[metrics]
listen = 127.0.0.1:9464
[nvme]
refresh_s = 1
[model demo]
path = /var/lib/tierd/models/demo
CONF

stamp "checkpoint written"
# 4-5: the socket, enabled and started; the service waits for a client.
check "systemctl enable --now tierd.socket" systemctl enable --now tierd.socket
if [ -S $SOCK ] && [ "$(stat -c %U:%G:%a $SOCK)" = tierd:tierd:660 ] && ! systemctl is-active --quiet tierd.service; then
	ok "$SOCK listens (tierd:tierd 0660); tierd.service not started yet"
else
	notok "$SOCK listens (tierd:tierd 0660); tierd.service not started yet"
	ls -l $SOCK 2>&1 | sed 's/^/# /'
fi

# 6-7: a client is served through socket activation, by the tierd user.
check "a client (tierctl acquire demo 0 0-1) served through socket activation" \
	wait_for tierctl -s $SOCK acquire demo 0 0-1
pid=$(systemctl show -p MainPID --value tierd.service)
puid=$(awk '/^Uid:/ { print $2 }' /proc/"$pid"/status 2>/dev/null)
if systemctl is-active --quiet tierd.service && [ -n "$puid" ] && [ "$puid" = "$uid" ]; then
	ok "tierd.service active, pid $pid, running as tierd (uid $puid)"
else
	notok "tierd.service active, running as tierd (pid ${pid:-?}, uid ${puid:-?})"
	journal | tail -15 | sed 's/^/# /'
fi

# 8: the operator's pins: state the daemon writes, which purge removes.
check "tierctl pin demo 1 0 (saved in /var/lib/tierd/pins)" \
	sh -c "tierctl -s $SOCK pin demo 1 0 && test -f /var/lib/tierd/pins"

stamp "client served"
# 9: every metric the Grafana dashboard names is exported here (the SMART
# figures after the first refresh: [nvme] refresh_s = 1 above).
dash_missing() {
	missing=""
	tierctl -s $SOCK metrics >/tmp/metrics 2>&1 || { missing=" (tierctl metrics failed)"; return 1; }
	for m in $(grep -o 'tierd_[a-z0-9_]*' "$here/tierd-dashboard.json" | sort -u); do
		f=$m
		case $m in *_bucket | *_count | *_sum) grep -q "^# TYPE ${m%_*} histogram" /tmp/metrics && f=${m%_*} ;; esac
		grep -q "^# TYPE $f " /tmp/metrics || missing="$missing $m"
	done
	[ -z "$missing" ]
}
i=0
while ! dash_missing && [ $i -lt 5 ]; do sleep 2; i=$((i + 1)); done
if [ -z "$missing" ]; then
	ok "every metric the Grafana dashboard names is exported ($(grep -c '^# TYPE' /tmp/metrics) families)"
else
	notok "every metric the Grafana dashboard names is exported (missing:$missing)"
	ls -l /dev/nvme0 /dev/nvme0n1 2>&1 | sed 's/^/# /'
	journal | grep -i 'nvme\|smart\|probe' | tail -8 | sed 's/^/# tierd: /'
fi

stamp "metrics checked"
# 10-11: reload (ExecReload=kill -HUP): the same process, the reload counted.
check "systemctl reload tierd.service" systemctl reload tierd.service
if [ "$(systemctl show -p MainPID --value tierd.service)" = "$pid" ] &&
	wait_for sh -c "tierctl -s $SOCK stats | awk '\$1 == \"reloads\" && \$2 == 1 { f = 1 } END { exit !f }'"; then
	ok "after reload: the same process (pid $pid), one reload counted"
else
	notok "after reload: the same process (pid $pid), one reload counted"
fi

# 12-13: stop drains and exits with success; the socket stays, and the next
# client activates the service again.
check "systemctl stop tierd.service" systemctl stop tierd.service
if [ "$(systemctl show -p Result --value tierd.service)" = success ] && ! systemctl is-active --quiet tierd.service &&
	journal | grep -q drained && systemctl is-active --quiet tierd.socket &&
	wait_for tierctl -s $SOCK status && systemctl is-active --quiet tierd.service; then
	ok "stopped with result success after draining; the socket stayed and activated it again"
else
	notok "stopped with result success after draining; the socket stayed and activated it again"
	journal | tail -10 | sed 's/^/# /'
fi

stamp "stopped"
# 14-17: purge removes what the package created; it keeps the user and the
# operator's checkpoints.
check "apt-get purge tierd libtierd-client0 libtierd-client-dev" \
	env DEBIAN_FRONTEND=noninteractive apt-get purge -y tierd libtierd-client0 libtierd-client-dev
gone=""
systemctl is-active --quiet tierd.service && gone="$gone tierd.service-active"
systemctl is-active --quiet tierd.socket && gone="$gone tierd.socket-active"
[ -e $SOCK ] && gone="$gone $SOCK"
[ -e /run/tierd ] && gone="$gone /run/tierd"
i=0
while [ "$(stat -c %G:%a /dev/nvme0)" != root:600 ] && [ $i -lt 10 ]; do sleep 0.5; i=$((i + 1)); done
[ "$(stat -c %G:%a /dev/nvme0)" = root:600 ] || gone="$gone /dev/nvme0-group-$(stat -c %G:%a /dev/nvme0)"
[ -n "$(systemctl list-unit-files 'tierd.*' --no-legend 2>/dev/null)" ] && gone="$gone unit-files"
if [ -z "$gone" ]; then
	ok "after purge: units stopped and gone, no socket, no /run/tierd, /dev/nvme0 root's again"
else
	notok "after purge: units stopped and gone, no socket, no /run/tierd, /dev/nvme0 root's again (left:$gone)"
fi
left=""
for f in /usr/sbin/tierd /usr/bin/tierctl /lib/systemd/system/tierd.service /lib/systemd/system/tierd.socket \
	/usr/lib/sysusers.d/tierd.conf /etc/tierd /var/lib/tierd/pins /usr/include/tierd-client.h \
	/etc/systemd/system/sockets.target.wants/tierd.socket /var/lib/systemd/deb-systemd-helper-enabled/tierd.socket.dsh-also; do
	[ -e "$f" ] && left="$left $f"
done
ls /usr/lib/*/libtierd-client* >/dev/null 2>&1 && left="$left libtierd-client"
dpkg-query -W -f='${db:Status-Abbrev}\n' tierd libtierd-client0 2>/dev/null | grep -q '^[^u]' && left="$left dpkg-record"
[ -z "$left" ] && ok "after purge: programs, units, sysusers.d, /etc/tierd, pins, headers, libraries gone" ||
	notok "after purge: left behind:$left"
if getent passwd tierd >/dev/null && [ -d /var/lib/tierd/models/demo ]; then
	ok "after purge: kept the tierd user and the operator's checkpoint"
else
	notok "after purge: kept the tierd user and the operator's checkpoint"
fi
stamp "purged"
[ $failed = 0 ]
