#!/bin/bash
# SPDX-License-Identifier: MIT
# Load test of the service: the real daemon, a pool smaller than the working
# set, and two rounds of LOAD_CLIENTS (64) processes of tests/load-client,
# each running LOAD_OPS (500) random acquire/verify/release ops.  Every byte
# is checked by the clients; the daemon's RSS and fd count are sampled while
# they run and bounded; at the end the daemon's counters must add up with
# what the clients did.  LOAD_SEED reproduces a run (it is printed).  TAP.
# Conditions are passed to check() unexpanded, to be shown when they fail.
# shellcheck disable=SC2016
set -u
b=${top_builddir:-.}
TIERD=$b/tierd/tierd
TIERCTL=$b/client/tierctl
CL=$b/tests/load-client
clients=${LOAD_CLIENTS:-64}
ops=${LOAD_OPS:-500}
seed=${LOAD_SEED:-$RANDOM}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-load.XXXXXX")
sock=$tmp/tierd.sock
conf=$tmp/tierd.conf
log=$tmp/tierd.log
daemon=
sampler=
n=0
failed=0

cleanup() {
	[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	jobs -p | while read -r p; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
	n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
	[ -f "$log" ] && sed 's/^/# tierd: /' "$log" | tail -15
}
# check WHAT CONDITION: the condition is shown when it does not hold.
check() { if eval "$2"; then ok "$1"; else notok "$1"; echo "# failed: $2"; fi; }

tierctl() { "$TIERCTL" -s "$sock" "$@"; }
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$daemon/status" 2>/dev/null; }
nfds() { find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

echo "1..13"

# 8 x 32 experts of 52 KiB slots (13 MiB) against a 4 MiB pool (78 slots):
# most acquires miss and evict, and 64 clients holding up to 4 pins each
# can pin every slot, so some batches are refused with ENOSPC.
if ! "$TIERCTL" demo-store "$tmp/demo" --layers 8 --experts 32 --hidden 64 --ffn 128 >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
cat >"$conf" <<EOF
[daemon]
socket = $sock
log_level = notice
state_dir = $tmp
[pool]
size = 4M
hugepages = no
lock = no
[client]
# Batches are 1..4 experts and a client holds one at a time: only the
# clients' deliberate 5-expert batches are over this quota.
max_pins = 4
# Every client runs as root: one uid, more connections than the default 64.
max_connections_per_uid = $((clients + 8))
[model demo]
path = $tmp/demo
allow_uid = 0
EOF

# ASan keeps freed memory in a quarantine of up to 256 MiB, which grows the
# RSS under load like a leak, in steps, until full (measured: not yet full
# after 20000 ops).  4 MiB is full within the first round (measured: by 6400
# ops) and still catches a use after free of anything freed during the last
# few thousand ops.
san_opts=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=4
ASAN_OPTIONS=$san_opts "$TIERD" -c "$conf" >>"$log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
	grep -q "ready on" "$log" && break
	sleep 0.1
done
# Counted before any client connected: the fds the daemon keeps for itself.
fd0=$(nfds)
rss0=$(rss_kb)
if grep -q "ready on" "$log" && tierctl status >/dev/null 2>&1; then
	ok "daemon starts (RSS ${rss0} kB, $fd0 fds)"
else
	notok "daemon starts"; echo "Bail out!"; exit 1
fi

# Sampled every 0.2 s while the clients run: "RSS_kB FDS" lines.
(
	while [ ! -e "$tmp/stop" ]; do
		echo "$(rss_kb) $(nfds)"
		sleep 0.2
	done
) >"$tmp/samples" &
sampler=$!

# One round: the clients, each its own seed, waited for; then until the
# daemon has seen every one hang up (its fd count is back to the start).
round() {
	local r=$1 t0 i
	t0=$(date +%s)
	pids=()
	for i in $(seq "$clients"); do
		# One op in 16 asks for 5 experts, over max_pins: refused with EDQUOT.
		"$CL" "$sock" "$i" "$ops" $((seed * 1000 + r * 100 + i)) 16 >"$tmp/client.$r.$i" 2>&1 &
		pids+=($!)
	done
	for i in "${!pids[@]}"; do
		if ! wait "${pids[$i]}"; then
			bad=$((bad + 1))
			sed 's/^/# /' "$tmp/client.$r.$((i + 1))" | tail -5
		fi
	done
	for _ in $(seq 200); do
		[ "$(nfds)" -le "$fd0" ] && break
		sleep 0.1
	done
	echo "# round $r: $clients clients x $ops ops done in $(($(date +%s) - t0)) s, seed $seed"
}

# Two rounds: the first brings the daemon's memory to its steady state
# (allocator arenas, ASan's quarantine filled), the second must not grow it.
bad=0
round 1
rss1=$(rss_kb)
round 2
fd_end=$(nfds)
rss_end=$(rss_kb)
touch "$tmp/stop"
wait "$sampler"
sampler=

# The clients' totals, summed by key.
sum() { cat "$tmp"/client.* | awk -v k="$1" '/^load-client/ { for (i = 3; i < NF; i++) if ($i == k) s += $(i + 1) } END { printf "%.0f\n", s }'; }
c_ops=$(sum ops); c_acq=$(sum acquired); c_exp=$(sum experts)
c_nospace=$(sum nospace); c_nospace_exp=$(sum nospace_experts); c_quota=$(sum quota); c_bytes=$(sum bytes)
echo "# clients: ops $c_ops acquired $c_acq (experts $c_exp, $c_bytes bytes verified)" \
	"ENOSPC $c_nospace (experts $c_nospace_exp) EDQUOT $c_quota"
check "2 x $clients clients exited 0, every byte of every acquired tensor verified" \
	'[ $bad = 0 ] && [ "$c_ops" = $((2 * clients * ops)) ] && [ "$c_acq" -gt 0 ]'

rss_max=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$tmp/samples")
fd_max=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$tmp/samples")
echo "# daemon RSS: $rss0 kB at start, $rss1 kB after round 1, $rss_end kB after round 2," \
	"$rss_max kB at most ($(wc -l <"$tmp/samples") samples)"
echo "# daemon fds: $fd0 at start, $fd_max at most, $fd_end at the end"

# The pool is resident from the start (RssShmem counts it), so the growth is
# the daemon's own state: 64 connections (each client has one request in
# flight, so its output queue holds one answer), requests and fetches in
# flight, the cache index of 256 experts, and the 4 MiB quarantine under
# ASan.  Measured under ASan: 6 MiB of growth by the end of the first round,
# then flat.  32 MiB bounds that with room for other allocators; a daemon
# that buffers or keeps per-op state without bound crosses it.
check "daemon RSS stays below start + 32 MiB" '[ "$rss_max" -le $((rss0 + 32 * 1024)) ]'
# Measured: within 0.6 MiB between the rounds, either way.  2 MiB over the
# second round's ops (32000 by default) catches a leak of 64 bytes per
# acquire (an ASan chunk of 112 bytes: measured 3.3 MiB of growth) even
# where LeakSanitizer cannot see it (memory still referenced).
check "daemon RSS does not grow over the second round (by at most 2 MiB)" \
	'[ "$rss_end" -le $((rss1 + 2 * 1024)) ]'
# One socket per client; 8 for what the daemon opens for a moment (the pool
# reopened read-only to pass it, a tierctl connection).
check "daemon fds stay below start + $clients clients + 8" '[ "$fd_max" -le $((fd0 + clients + 8)) ]'
check "daemon fds back to the start count once the clients are gone" '[ "$fd_end" = "$fd0" ]'

tierctl stats >"$tmp/stats" 2>&1
st() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/stats"; }
echo "# daemon: acquires $(st acquires) hits $(st hits) misses $(st misses) releases $(st releases)" \
	"refused $(st refused) acquires_nospace $(st acquires_nospace) evictions $(st evictions) fetches $(st fetches) pins $(st pins)" \
	"clients $(st clients) bytes_resident $(st bytes_resident) pool_bytes $(st pool_bytes)"
check "the load evicted (the pool is smaller than the working set)" '[ "$(st evictions)" -gt 0 ]'
check "acquires == hits + misses + acquires_nospace" '[ "$(st acquires)" = $(($(st hits) + $(st misses) + $(st acquires_nospace))) ]'
check "acquires == experts the clients were granted + refused with ENOSPC" \
	'[ "$(st acquires)" = $((c_exp + c_nospace_exp)) ]'
check "releases == experts the clients were granted; refused == their EDQUOT + ENOSPC refusals" \
	'[ "$(st releases)" = "$c_exp" ] && [ "$(st refused)" = $((c_quota + c_nospace)) ]'
# tierctl stats is the one client left.
check "no pins and no clients left; resident bytes within the pool" \
	'[ "$(st pins)" = 0 ] && [ "$(st clients)" = 1 ] && [ "$(st bytes_resident)" -le "$(st pool_bytes)" ]'

if "$CL" "$sock" 0 20 "$seed" 0 >"$tmp/after" 2>&1; then
	ok "the daemon still serves: a new client acquires and verifies"
else
	notok "the daemon still serves"; sed 's/^/# /' "$tmp/after"
fi

kill -TERM "$daemon"
wait "$daemon"; rc=$?
echo "# daemon exit status $rc"
daemon=
check "SIGTERM: clean exit, no sanitizer report in the daemon log" \
	'[ $rc = 0 ] && ! grep -Eq "Sanitizer|runtime error" "$log"'
grep -E "dropp|closing|revok|over max_pins" "$log" | head -5 | sed "s/^/# tierd: /"

[ $failed = 0 ]
