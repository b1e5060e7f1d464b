#!/bin/bash
# SPDX-License-Identifier: MIT
# systemd integration without systemd as PID 1: the units pass
# systemd-analyze verify, tierd takes its socket from systemd-socket-activate,
# and it speaks sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING) to a
# NOTIFY_SOCKET this test listens on.  TAP output.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
TIERD=$(cd "$b" && pwd)/tierd/tierd
TIERCTL=$b/client/tierctl
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-systemd.XXXXXX")
pids=()
n=0
failed=0
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

echo "1..9"

"$TIERCTL" demo-store "$tmp/demo" --layers 2 --experts 4 --hidden 64 --ffn 128 >/dev/null || { echo "Bail out! demo-store"; exit 1; }
cat >"$tmp/tierd.conf" <<CONF
[daemon]
socket = $tmp/unused.sock
state_dir = $tmp
log_level = info
[pool]
size = 2M
hugepages = no
lock = no
[model demo]
path = $tmp/demo
CONF

# 1-2: the units.
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$tmp/units"
	sed "s|@sbindir@|$(dirname "$TIERD")|" "$s/contrib/systemd/tierd.service.in" >"$tmp/units/tierd.service"
	cp "$s/contrib/systemd/tierd.socket" "$tmp/units/"
	# verify prints parse problems without failing: any output is a failure.
	if (cd "$tmp/units" && systemd-analyze verify --man=no ./tierd.socket ./tierd.service) >"$tmp/verify" 2>&1 &&
	   [ ! -s "$tmp/verify" ]; then
		ok "systemd-analyze verify tierd.service tierd.socket"
	else
		notok "systemd-analyze verify"; sed 's/^/# /' "$tmp/verify"
	fi
else
	skip "systemd-analyze not installed"
fi
if grep -q '^ListenSequentialPacket=/run/tierd/tierd.sock$' "$s/contrib/systemd/tierd.socket" &&
   grep -q '^Type=notify$' "$s/contrib/systemd/tierd.service.in" &&
   grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$s/contrib/systemd/tierd.service.in"; then
	ok "units: SOCK_SEQPACKET on the default path, Type=notify, reload by SIGHUP"
else
	notok "units: socket type, Type=notify, ExecReload"
fi

# 3-4: socket activation.
if command -v systemd-socket-activate >/dev/null; then
	systemd-socket-activate --seqpacket -l "$tmp/act.sock" "$TIERD" -c "$tmp/tierd.conf" >"$tmp/act.log" 2>&1 &
	pids+=($!)
	up=no
	for _ in $(seq 100); do
		"$TIERCTL" -s "$tmp/act.sock" status >/dev/null 2>&1 && { up=yes; break; }
		sleep 0.1
	done
	if [ $up = yes ] && grep -q "using the socket passed by systemd" "$tmp/act.log"; then
		ok "systemd-socket-activate: a client connection reaches tierd on the passed socket"
	else
		notok "socket activation"; sed 's/^/# /' "$tmp/act.log"
	fi
	if [ ! -e "$tmp/unused.sock" ]; then ok "with a passed socket, tierd does not bind its own"
	else notok "with a passed socket, tierd bound [daemon] socket too"; fi
	kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null
else
	skip "systemd-socket-activate not installed"; skip "systemd-socket-activate not installed"
fi

# 5-9: sd_notify.
if ! command -v python3 >/dev/null; then
	for _ in 1 2 3 4 5; do skip "python3 needed for the NOTIFY_SOCKET listener"; done
	[ $failed = 0 ]; exit
fi
python3 - "$tmp/notify.sock" "$tmp/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode(errors="replace").replace("\n", "|") + "\n")
PY
pids+=($!)
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
sed -i "s|^socket = .*|socket = $tmp/n.sock|" "$tmp/tierd.conf"
NOTIFY_SOCKET=$tmp/notify.sock WATCHDOG_USEC=400000 "$TIERD" -c "$tmp/tierd.conf" >"$tmp/n.log" 2>&1 &
tierd=$!
pids+=($tierd)
wait_line() { for _ in $(seq 100); do grep -q "$1" "$tmp/notify.log" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
if wait_line 'READY=1|STATUS=.*models.*resident'; then ok "READY=1 with a one-line STATUS= summary"
else notok "READY=1 + STATUS"; sed 's/^/# /' "$tmp/notify.log" "$tmp/n.log"; fi
if wait_line '^WATCHDOG=1$'; then ok "WATCHDOG=1 when WATCHDOG_USEC is set"; else notok "WATCHDOG=1"; fi
kill -HUP "$tierd"
if wait_line 'RELOADING=1|MONOTONIC_USEC=' && [ "$(grep -c 'READY=1' "$tmp/notify.log")" -ge 2 ]; then
	ok "SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again"
else
	notok "SIGHUP notifications"; sed 's/^/# /' "$tmp/notify.log"
fi
kill -TERM "$tierd"
wait "$tierd"; st=$?
if wait_line '^STOPPING=1'; then ok "SIGTERM: STOPPING=1"; else notok "STOPPING=1"; fi
if [ $st = 0 ] && grep -q "drained" "$tmp/n.log"; then ok "SIGTERM: in-flight fetches drained, exit status 0"
else notok "SIGTERM exit status $st"; sed 's/^/# /' "$tmp/n.log"; fi
[ $failed = 0 ]
