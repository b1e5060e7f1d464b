#!/bin/bash
# SPDX-License-Identifier: MIT
# Integration test of the service: the real daemon on a temporary socket with
# a demo checkpoint, and several client processes (tests/svc-client, tierctl).
# TAP output.
set -u
. "${top_srcdir:-.}/tests/service-lib.sh"
svc_init service

# Waits until a background client printed "held".
wait_held() {
	for _ in $(seq 300); do
		grep -q held "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

wait_stat() {
	for _ in $(seq 100); do
		[ "$(stat "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

echo "1..22"

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
# Not the system's /var/lib/tierd: operator pins are saved there.
state_dir = $tmp
[pool]
size = 2M
hugepages = no
lock = no
[client]
max_pins = 8
[model demo]
path = $tmp/demo
allow_uid = 0
EOF

if start_daemon; then ok "daemon starts and answers tierctl status"; else notok "daemon starts"; echo "Bail out!"; exit 1; fi

# Operator views in JSON parse and carry what the text shows.
if tierctl stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["models"] == 1 and d["clients"] == 1 else 1)' &&
   tierctl models --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[0]["name"] == "demo" and d[0]["experts"] == 64 else 1)' &&
   tierctl status --json | python3 -c 'import json,sys; json.load(sys.stdin)'; then
	ok "tierctl stats, models and status --json"
else
	notok "tierctl --json output"
fi

# Concurrent acquires of the same experts, bytes verified.
pids=()
for i in 1 2 3 4; do "$CL" "$sock" verify 0 0-3 10 >"$tmp/same.$i" 2>&1 & pids+=($!); done
r=0; for p in "${pids[@]}"; do wait "$p" || r=1; done
if [ $r = 0 ]; then ok "4 clients acquire the same experts concurrently, bytes verified"
else notok "concurrent acquires of the same experts"; cat "$tmp"/same.* | sed 's/^/# /'; fi

# Concurrent acquires of different experts (more than the pool holds in all).
pids=()
for L in 0 1 2 3; do "$CL" "$sock" verify "$L" 8-15 5 >"$tmp/diff.$L" 2>&1 & pids+=($!); done
r=0; for p in "${pids[@]}"; do wait "$p" || r=1; done
if [ $r = 0 ]; then ok "4 clients acquire different experts concurrently, bytes verified"
else notok "concurrent acquires of different experts"; cat "$tmp"/diff.* | sed 's/^/# /'; fi

# Pins held under eviction pressure.
"$CL" "$sock" hold 0 0-5 3 >"$tmp/hold" 2>&1 &
hold=$!
if wait_held "$tmp/hold"; then
	for L in 1 2 3; do "$CL" "$sock" verify "$L" 0-7 1 >/dev/null 2>&1; "$CL" "$sock" verify "$L" 8-15 1 >/dev/null 2>&1; done
	if tierctl evict demo 0 3 >"$tmp/evict" 2>&1; then evict=bad; else evict=refused; fi
	if wait "$hold" && [ $evict = refused ] && [ "$(stat evictions)" -gt 0 ]; then
		ok "pinned experts survive eviction pressure and operator evict is refused"
	else
		notok "pins under eviction pressure (evict $evict)"; sed 's/^/# /' "$tmp/hold" "$tmp/evict"
	fi
else
	notok "pins under eviction pressure: holder did not start"; sed 's/^/# /' "$tmp/hold"
fi

# A client killed while holding pins: its pins are released.
"$CL" "$sock" hold 1 0-5 100 >"$tmp/victim" 2>&1 &
victim=$!
if wait_held "$tmp/victim" && wait_stat pins 6; then
	kill -9 "$victim"; wait "$victim" 2>/dev/null
	if wait_stat pins 0; then ok "pins of a killed client are released"
	else notok "pins of a killed client are released (pins $(stat pins))"; fi
else
	notok "killed client: holder did not pin 6 experts"; kill -9 "$victim" 2>/dev/null
fi

check "quota: acquiring more than [client] max_pins is refused with EDQUOT" \
	"$CL" "$sock" expect EDQUOT 0 0-9

if command -v setpriv >/dev/null; then
	check "a client of another uid (nobody) is refused by allow_uid" \
		setpriv --reuid=65534 --regid=65534 --clear-groups "$CL" "$sock" expect EACCES 0 0
else
	n=$((n + 1)); echo "ok $n # SKIP setpriv not installed"
fi

check "a client of protocol major version 2 is refused with a reason" "$CL" "$sock" version 2
check "malformed messages close only their connection; other clients go on" "$CL" "$sock" malformed
if "$CL" "$sock" slow >"$tmp/out" 2>&1 && [ "$(stat clients_dropped)" -ge 1 ]; then
	ok "a client that does not read its answers is dropped; the daemon goes on"
else
	notok "slow client"; sed 's/^/# /' "$tmp/out"
fi
if [ "$(stat protocol_errors)" -ge 4 ]; then ok "protocol errors are counted"; else notok "protocol errors are counted"; fi
check "non-blocking acquire through the fd and a completion callback" "$CL" "$sock" async 2 0-3
check "the pool mapping cannot be made writable and a write to it faults" "$CL" "$sock" write-pool
# 4 threads x 2 pins: exactly the quota of the connection.
check "4 threads of one process share a client, bytes verified" "$CL" "$sock" threads 4 50
# Layer and expert lists: digits and ranges only, within the model; each bad
# one is a usage error naming the list, and nothing is sent.
bad=""
for args in "prefetch demo 0- 1" "prefetch demo 1,,2 1" "prefetch demo 0, 1" "prefetch demo -1 1" \
	    "prefetch demo 0 +1" "prefetch demo 0 4294967297" "prefetch demo 4 1" "prefetch demo 0 16" \
	    "prefetch demo 3-1 0" "warm demo 4294967296" "warm demo 2-" "warm demo 2-9" "warm demo x"; do
	# shellcheck disable=SC2086
	tierctl $args >"$tmp/list" 2>&1
	rc=$?
	{ [ $rc -eq 2 ] && grep -Eq '^tierctl: (layers|experts) ".*": ' "$tmp/list"; } || bad="$bad [$args: rc $rc $(head -1 "$tmp/list")]"
done
if [ -z "$bad" ] && tierctl prefetch demo 0,2-3 all >/dev/null 2>&1; then
	ok "layer and expert lists: bad ones are usage errors that name the list"
else
	notok "layer and expert lists:$bad"
fi

if tierctl warm demo 2-3 >"$tmp/warm" 2>&1 && grep -q "warmed model demo layers 2-3" "$tmp/warm"; then
	ok "tierctl warm loads layers and reports completion"
else
	notok "tierctl warm"; sed 's/^/# /' "$tmp/warm"
fi

# Reload on SIGHUP: a larger quota applies, resident experts stay.
resident=$(stat bytes_resident)
sed -i 's/^max_pins = 8/max_pins = 16/' "$conf"
kill -HUP "$daemon"
if wait_stat reloads 1 && "$CL" "$sock" verify 0 0-9 1 >"$tmp/out" 2>&1 && [ "$(stat bytes_resident)" -ge "$resident" ]; then
	ok "SIGHUP reloads the configuration and keeps resident experts"
else
	notok "SIGHUP reload"; sed 's/^/# /' "$tmp/out"
fi
sed -i 's/^max_pins = .*/max_pins = 8/' "$conf"
printf '[daemon]\nsocket = %s\nbogus_key = 1\n' "$sock" >"$tmp/bad.conf"
cp "$conf" "$tmp/good.conf"; cp "$tmp/bad.conf" "$conf"
kill -HUP "$daemon"
wait_stat reloads 1
sleep 0.3
if tierctl status >/dev/null 2>&1 && grep -q "bogus_key" "$log"; then ok "a bad file at reload is refused, naming the key; the daemon goes on"
else notok "bad reload"; fi
cp "$tmp/good.conf" "$conf"

# The daemon restarted under a running client: pins re-established.
"$CL" "$sock" restart 2 0-3 "$tmp/restarted" >"$tmp/restart" 2>&1 &
rc=$!
if wait_held "$tmp/restart"; then
	kill -TERM "$daemon"; wait "$daemon"; st=$?
	daemon=
	if [ $st = 0 ] && [ ! -e "$sock" ]; then ok "SIGTERM: clean exit, socket removed"
	else notok "SIGTERM: exit status $st"; fi
	start_daemon
	touch "$tmp/restarted"
	if wait "$rc" && grep -q "re-established, bytes verified" "$tmp/restart"; then
		ok "daemon restarted under a client: pins re-established, bytes verified"
	else
		notok "daemon restart under a client"; sed 's/^/# /' "$tmp/restart"
	fi
else
	notok "restart: holder did not start"; n=$((n + 1)); echo "not ok $n - restart"
fi

# Restart into a configuration without the model: the pins are reported lost.
"$CL" "$sock" restart 2 0-3 "$tmp/restarted2" >"$tmp/restart2" 2>&1 &
rc=$!
if wait_held "$tmp/restart2"; then
	kill -TERM "$daemon"; wait "$daemon"; daemon=
	sed -i 's/^\[model demo\]/[model other]/' "$conf"
	start_daemon
	touch "$tmp/restarted2"
	if wait "$rc" && grep -q "reported lost" "$tmp/restart2"; then
		ok "pins that cannot be re-established are reported lost, not served"
	else
		notok "lost pins after restart"; sed 's/^/# /' "$tmp/restart2"
	fi
else
	notok "restart2: holder did not start"
fi

[ $failed = 0 ]
