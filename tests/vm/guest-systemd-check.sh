#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs INSIDE a Debian 12 guest booted with systemd as PID 1 (the VM harness
# of tests/vm/ copies it in and runs it as root).  Assumes tierd and tierctl
# are installed under /usr/local, tierd.service and tierd.socket in
# /etc/systemd/system, and a demo checkpoint (tierctl demo-store) in
# /var/lib/tierd/demo.  Checks socket activation, Type=notify readiness and
# status, reload, stop with drain, hardening, and journal priorities.  TAP.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:$PATH
SOCK=/run/tierd/tierd.sock
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { local what=$1; shift; if "$@" >/tmp/guest-check.out 2>&1; then ok "$what"; else notok "$what"; sed 's/^/# /' /tmp/guest-check.out; fi; }
journal() { journalctl -u tierd.service --no-pager -o cat "$@" 2>/dev/null; }
wait_for() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }

# The harness installs only a build configured for /usr/local (not, e.g.,
# make distcheck's private prefix): without one there is nothing to check.
if ! command -v tierd >/dev/null 2>&1 || ! command -v tierctl >/dev/null 2>&1 ||
   ! systemctl cat tierd.service >/dev/null 2>&1; then
	# A counted skip, so that the totals show the checks did not run.
	echo "1..1"
	echo "ok 1 # SKIP tierd and its units are not installed in this guest"
	exit 0
fi

echo "1..13"

# libtierd-client.so in /usr/local/lib for tierctl.
ldconfig 2>/dev/null || true
# The service's own user, and a configuration if the image has none.
id tierd >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin tierd
if [ ! -f /etc/tierd/tierd.conf ]; then
	mkdir -p /etc/tierd
	cat >/etc/tierd/tierd.conf <<CONF
[daemon]
log_level = info
[pool]
size = 16M
hugepages = no
lock = yes
[model demo]
path = /var/lib/tierd/demo
CONF
fi
# A sanitizer build: LeakSanitizer stops the world with ptrace at exit, which
# the unit's SystemCallFilter (~@debug) forbids; leaks are checked by make
# check, not here.
export ASAN_OPTIONS=detect_leaks=0
if ldd /usr/local/sbin/tierd 2>/dev/null | grep -q libasan; then
	mkdir -p /etc/systemd/system/tierd.service.d
	printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' \
		>/etc/systemd/system/tierd.service.d/sanitizers.conf
fi
systemctl daemon-reload

# 1-2: socket first, service not yet.
check "systemctl start tierd.socket" systemctl start tierd.socket
if systemctl is-active --quiet tierd.socket && ! systemctl is-active --quiet tierd.service && [ -S $SOCK ]; then
	ok "the socket listens on $SOCK and tierd.service is not started yet"
else
	notok "socket active, service inactive"
fi

# 3-4: a client connection activates the service (Type=notify: active = READY=1 sent).
check "a client connection (tierctl status) activates tierd.service" wait_for tierctl -s $SOCK status
if systemctl is-active --quiet tierd.service && systemctl show -p StatusText --value tierd.service | grep -q "models"; then
	ok "tierd.service is active with a STATUS= summary: $(systemctl show -p StatusText --value tierd.service)"
else
	notok "tierd.service active with STATUS="
fi

# 5: hardening: its own user, the capabilities of the unit, io_uring allowed.
pid=$(systemctl show -p MainPID --value tierd.service)
uid=$(awk '/^Uid:/ { print $2 }' /proc/"$pid"/status 2>/dev/null)
if [ -n "$uid" ] && [ "$uid" = "$(id -u tierd)" ]; then ok "tierd runs as user tierd (uid $uid)"
else notok "tierd runs as user tierd (uid ${uid:-?})"; fi
check "an acquire through the hardened service (io_uring, mlock allowed)" \
	tierctl -s $SOCK acquire demo 0 0-1

# 7: the unit's capabilities and system call filter let the eBPF probes load.
if tierctl -s $SOCK metrics >/tmp/guest-metrics 2>&1 &&
   grep -Eq '^tierd_info\{.*probes="(tp_btf|raw_tp)",energy_source="ebpf"' /tmp/guest-metrics; then
	ok "eBPF probes load under the hardened unit ($(grep -o 'probes="[a-z_]*"' /tmp/guest-metrics))"
else
	notok "eBPF probes load under the hardened unit"
	grep '^tierd_info' /tmp/guest-metrics | sed 's/^/# /'; journal | grep -i 'probe\|bpf' | sed 's/^/# /'
fi

# 8-9: reload keeps the process and its resident experts.
resident=$(tierctl -s $SOCK stats | awk '$1 == "bytes_resident" { print $2 }')
check "systemctl reload tierd" systemctl reload tierd.service
if [ "$(systemctl show -p MainPID --value tierd.service)" = "$pid" ] &&
   [ "$(tierctl -s $SOCK stats | awk '$1 == "reloads" { print $2 }')" = 1 ] &&
   [ "$(tierctl -s $SOCK stats | awk '$1 == "bytes_resident" { print $2 }')" -ge "${resident:-0}" ]; then
	ok "after reload: same process, reload counted, resident experts kept"
else
	notok "after reload: same process, reload counted, resident experts kept"
fi

# 10-11: stop drains and exits cleanly.
check "systemctl stop tierd.service" systemctl stop tierd.service
if ! systemctl is-active --quiet tierd.service && [ "$(systemctl show -p Result --value tierd.service)" = success ]; then
	ok "tierd.service stopped with result success"
else
	notok "tierd.service stopped with result success ($(systemctl show -p Result --value tierd.service))"
fi

# 12-13: journald kept the <N> priorities.
if journal -p notice..notice | grep -q "ready on" && journal -p info..info | grep -q "client pid"; then
	ok "journal: the ready line at priority notice, client lines at info"
else
	notok "journal priorities"; journal | tail -20 | sed 's/^/# /'
fi
if journal | grep -q "stopping" && journal | grep -q "drained"; then
	ok "journal: SIGTERM logged and in-flight fetches drained"
else
	notok "journal: stop and drain"
fi
systemctl stop tierd.socket >/dev/null 2>&1
[ $failed = 0 ]
