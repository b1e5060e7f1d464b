#!/bin/bash
# SPDX-License-Identifier: MIT
# The no-system-call acquire path against the real daemon: engaged by
# default and counted right, the socket switch, pins that hold a slot
# against eviction and die with their client, garbage in a pin area, and
# threads and processes (one built with ThreadSanitizer) acquiring under
# eviction pressure with every byte checked.  TAP output.
set -u
. "${top_srcdir:-.}/tests/service-lib.sh"
svc_init fastpath
FC=$b/tests/fastpath-client
FCT=$b/tests/fastpath-client-tsan
# ThreadSanitizer refuses some address-space layouts (high mmap
# randomisation on newer kernels): then it runs with randomisation off.
TSAN_RUN=
if "$FCT" 2>&1 | grep -q "FATAL: ThreadSanitizer"; then TSAN_RUN="setarch $(uname -m) -R"; fi

wait_for() {
	for _ in $(seq 300); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

echo "1..12"

if ! "$TIERCTL" demo-store "$tmp/demo" --layers 4 --experts 16 --hidden 64 --ffn 128 >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
# 64 experts of 52 KiB do not fit a 2 MiB pool: eviction pressure.
cat >"$conf" <<EOF
[daemon]
socket = $sock
socket_mode = 0666
log_level = info
state_dir = $tmp
[pool]
size = 2M
hugepages = no
lock = no
[client]
max_pins = 32
[model demo]
path = $tmp/demo
allow_uid = 0
EOF

if start_daemon; then ok "daemon starts"; else notok "daemon starts"; echo "Bail out!"; exit 1; fi

# After one socket acquire (the layout learnt), every acquire goes through
# the table: no request but the STATS itself; hits and acquires exact.
check "acquires of resident experts make no request, hits and acquires counted" \
	"$FC" engaged "$sock" 200
check "TIERD_NO_FASTPATH=1 sends every acquire through the socket" \
	env TIERD_NO_FASTPATH=1 "$FC" engaged "$sock" 50
check "tierd_client_set_flags(TIERD_CLIENT_F_SOCKET) does the same" \
	"$FC" engaged "$sock" 50 socket

# A fast pin keeps the slot: operator evict refused, eviction pressure
# (stress below) leaves its bytes alone; once the holder dies, its area
# goes with its socket and the expert can be evicted.
rm -f "$tmp/out"
"$FC" hold "$sock" 1 5 "$tmp/release" >"$tmp/hold" 2>&1 &
hold=$!
if wait_for "$tmp/hold" held && ! tierctl evict demo 1 5 >"$tmp/out" 2>&1 && grep -q "EBUSY\|pinned" "$tmp/out"; then
	ok "an expert pinned through the table is not evicted"
else
	notok "an expert pinned through the table is not evicted"
fi

# The checkpoint touched on disk: the model goes stale, the held expert's
# slot is kept for its fast pin (a zombie, as for socket pins) while the
# reload below serves the model again, with a new layout version that the
# clients of the stress learn anew.
touch "$tmp"/demo/*.safetensors
stale=bad
for _ in $(seq 100); do
	grep -q "model demo: checkpoint file .* on disk" "$log" && stale=ok && break
	sleep 0.1
done
kill -HUP "$daemon"
for _ in $(seq 100); do
	grep -q "model demo: reloaded" "$log" && break
	sleep 0.1
done
if [ $stale = ok ] && grep -q "model demo: reloaded" "$log"; then
	ok "the model went stale under a fast pin and was reloaded"
else
	notok "stale and reload under a fast pin"
fi

# Two ASan processes and one ThreadSanitizer process, threads each, some
# sharing a client: acquire, verify, yield, verify, release, while the
# daemon evicts to make room.
ev0=$(stat evictions)
"$FC" stress "$sock" 4 400 >"$tmp/s1" 2>&1 &
s1=$!
"$FC" stress "$sock" 4 400 >"$tmp/s2" 2>&1 &
s2=$!
TSAN_OPTIONS="halt_on_error=1 exitcode=66" $TSAN_RUN "$FCT" stress "$sock" 3 150 >"$tmp/s3" 2>&1 &
s3=$!
r=0
wait $s1 || r=1
wait $s2 || r=1
wait $s3 || r=1
cat "$tmp/s1" "$tmp/s2" "$tmp/s3" >"$tmp/out"
if [ $r = 0 ] && [ "$(stat evictions)" -gt "$ev0" ]; then
	ok "threads and processes (one under ThreadSanitizer) acquire under eviction, every byte right"
else
	notok "stress under eviction pressure"
fi
sed 's/^/# /' "$tmp/out"

touch "$tmp/release"
if wait $hold; then
	ok "the held expert's bytes survived the pressure"
else
	cp "$tmp/hold" "$tmp/out"
	notok "the held expert's bytes survived the pressure"
fi

# A holder killed: its pins go with its socket.
rm -f "$tmp/release" "$tmp/hold"
"$FC" hold "$sock" 2 7 "$tmp/release" >"$tmp/hold" 2>&1 &
hold=$!
dead=bad
if wait_for "$tmp/hold" held && ! tierctl evict demo 2 7 >/dev/null 2>&1; then
	kill -9 $hold
	wait $hold 2>/dev/null
	for _ in $(seq 100); do
		if tierctl evict demo 2 7 >/dev/null 2>&1; then dead=ok; break; fi
		sleep 0.1
	done
fi
if [ $dead = ok ]; then ok "a killed client's pins are dropped with its socket"; else notok "a killed client's pins are dropped"; fi

# Random bytes in a pin area: that connection is dropped (pins over
# max_pins), the daemon and the others carry on.
rm -f "$tmp/out"
if "$FC" garbage "$sock" >"$tmp/out" 2>&1 && grep -q dropped "$tmp/out" && grep -q revoked "$tmp/out" &&
   "$FC" engaged "$sock" 20 >>"$tmp/out" 2>&1 && grep -q 'over max_pins' "$log"; then
	ok "a garbage pin area ends its client only, its area revoked: no acquire through the table after"
else
	notok "a garbage pin area ends its client only"
fi

# bench acquire: several client counts give a JSON list with the figures
# of both paths and the floor.
rm -f "$tmp/out"
if tierctl --json bench acquire --ops 50 --clients 1,2 >"$tmp/out" 2>&1 &&
   python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
keys = ("clients", "floor_p50_us", "socket_p50_us", "fast_p50_us", "fast_p99_us", "fast_ops_per_s")
assert isinstance(d, list) and [x["clients"] for x in d] == [1, 2]
assert all(k in x and x[k] >= 0 for x in d for k in keys)
' "$tmp/out"; then
	ok "bench acquire --clients 1,2 --json: a list with floor, socket and fast figures"
else
	notok "bench acquire --json"
fi

# 512 experts in one operation: their ACQUIRED answer would pass the
# 128 KiB packet (E2BIG); bench acquire batches them.
kill "$daemon"
wait "$daemon" 2>/dev/null
"$TIERCTL" demo-store "$tmp/wide" --layers 8 --experts 64 --hidden 16 --ffn 16 >/dev/null
cat >"$conf" <<EOF
[daemon]
socket = $sock
socket_mode = 0666
state_dir = $tmp
[pool]
size = 8M
hugepages = no
lock = no
[client]
max_pins = 1024
[model wide]
path = $tmp/wide
allow_uid = 0
EOF
rm -f "$tmp/out"
if start_daemon && tierctl bench acquire --model wide --experts 512 --ops 10 >"$tmp/out" 2>&1; then
	ok "bench acquire --experts 512 (answers over 128 KiB) works"
else
	notok "bench acquire --experts 512"
fi

[ "$failed" = 0 ]
