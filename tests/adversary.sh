#!/bin/bash
# SPDX-License-Identifier: MIT
# The service tried as an attacker would: refused requests must do nothing,
# revoked clients must lose access, one client or uid must not exhaust the
# daemon, and the daemon must hold up at its fd limit.  The real daemon, raw
# protocol clients (tests/rawclient.py) of other uids through setpriv.  TAP.
set -u
s=${top_srcdir:-.}
. "$s/tests/service-lib.sh"
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=${PYTHON:-python3}; fi
RAW="$PY $s/tests/rawclient.py"
svc_init adversary

metric() { tierctl metrics | awk -v k="$1" '$1 == k { print $2 }'; }
# A uid allowed nothing, and one allowed the demo model.
as_stranger() { setpriv --reuid=65533 --regid=65533 --clear-groups "$@"; }
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }


if ! command -v setpriv >/dev/null; then echo "1..0 # SKIP setpriv not installed"; exit 0; fi
echo "1..22"

"$TIERCTL" demo-store "$tmp/demo" --layers 4 --experts 16 --hidden 64 --ffn 128 >/dev/null &&
	"$TIERCTL" demo-store "$tmp/secret" --layers 2 --experts 4 --hidden 64 --ffn 128 >/dev/null ||
	{ echo "Bail out! cannot write the demo checkpoints"; exit 1; }
write_conf() {
	cat >"$conf" <<EOF
[daemon]
socket = $sock
socket_mode = 0666
log_level = info
state_dir = $tmp
max_queued_bytes = 4M
[pool]
size = 2M
hugepages = no
lock = no
# A prefetch may evict nothing: checked below.
max_evict_per_alloc = 0
[client]
max_pins = $1
max_prefetch_inflight = 4
max_connections_per_uid = 8
[model demo]
path = $tmp/demo
allow_uid = 0 65534
[model secret]
path = $tmp/secret
allow_uid = 0 $2
EOF
}
write_conf 1000 ""
start_daemon || { echo "Bail out! daemon does not start"; cat "$log"; exit 1; }

# 1-2: a refused request does nothing: one ERROR, no fetch, no pin, no ACQUIRED.
before=$(stat fetches)
if as_stranger $RAW "$sock" refused acquire EACCES 0 0 0 0 0 1 >"$tmp/out" 2>&1 &&
   [ "$(stat fetches)" = "$before" ] && [ "$(stat pins)" = 0 ] && [ "$(stat acquires)" = 0 ]; then
	ok "ACQUIRE refused for a uid not allowed: one ERROR, nothing fetched, pinned or answered"
else
	notok "refused ACQUIRE (fetches $before -> $(stat fetches), pins $(stat pins))"
fi
if as_stranger $RAW "$sock" refused prefetch EACCES 0 1 0 0 1 1 >"$tmp/out" 2>&1 &&
   [ "$(stat fetches)" = "$before" ]; then
	ok "PREFETCH refused for a uid not allowed: nothing fetched"
else
	notok "refused PREFETCH (fetches $before -> $(stat fetches))"
fi

# 3: an unknown model index: one ERROR, and no second one quoting a NULL name.
if $RAW "$sock" refused acquire ENOENT 7 0 0 >"$tmp/out" 2>&1 && ! grep -q "(null)" "$log"; then
	ok "ACQUIRE of an unknown model: exactly one ERROR (ENOENT)"
else
	notok "unknown model"
fi

# 4: nobody may use demo only, so it gets no pool and may not prefetch into it.
if as_nobody $RAW "$sock" refused prefetch EACCES 0 2 0 >"$tmp/out" 2>&1 &&
   [ "$(stat fetches)" = "$before" ]; then
	ok "PREFETCH by a client without pool access is refused: it cannot evict others' experts"
else
	notok "PREFETCH without pool access"
fi

# 5: the per-client prefetch budget: a batch over it is refused whole.
if $RAW "$sock" refused prefetch EDQUOT 0 2 0 0 2 1 0 2 2 0 2 3 0 2 4 >"$tmp/out" 2>&1 &&
   [ "$(stat fetches)" = "$before" ] && grep -q "max_prefetch_inflight is 4" "$tmp/out"; then
	ok "PREFETCH over [client] max_prefetch_inflight is refused whole, naming the key"
else
	notok "prefetch budget"
fi

# the budget is given back as the prefetches complete.
if $RAW "$sock" prefetch-twice 0 2 4 5 6 7 8 9 10 11 >"$tmp/out" 2>&1; then
	ok "the prefetch budget is given back as prefetches complete"
else
	notok "prefetch budget given back"
fi

# 6: a prefetch may evict at most max_evict_per_alloc (0 here) experts: with
# the pool full of others' experts, it evicts nothing.
tierctl acquire demo 0 0-15 >/dev/null 2>&1
tierctl acquire demo 1 0-15 >/dev/null 2>&1
tierctl acquire demo 2 0-15 >/dev/null 2>&1
ev=$(stat evictions)
tierctl prefetch demo 3 0-3 >"$tmp/out" 2>&1
if [ "$(stat evictions)" = "$ev" ] && [ "$(stat bytes_resident)" -gt 1800000 ]; then
	ok "a prefetch into a full pool evicts at most [pool] max_evict_per_alloc (0) experts"
else
	notok "prefetch eviction bound (evictions $ev -> $(stat evictions))"
fi

# 7: ENOSPC says the pool is full of pinned experts, and who holds them; the
# refused acquires are not counted as misses.
$RAW "$sock" acquire-until-full 0 4 16 "$tmp/full-done" >"$tmp/full" 2>&1 &
holder=$!
for _ in $(seq 100); do grep -q refused "$tmp/full" && break; sleep 0.1; done
misses=$(stat misses)
tierctl acquire demo 3 15 >"$tmp/out" 2>&1
if grep -q "ENOSPC.*pool is full of pinned experts.*uid 0 \"rawclient\" holds" "$tmp/full" &&
   grep -q "pool is full of pinned experts" "$tmp/out" && [ "$(stat misses)" = "$misses" ] &&
   [ "$(metric tierd_cache_refused_total)" -ge 2 ]; then
	ok "ENOSPC names the pin holders; refused acquires are not misses"
else
	notok "ENOSPC (misses $misses -> $(stat misses))"; sed 's/^/# /' "$tmp/full"
fi
if tierctl metrics | grep -q '^tierd_client_pins{client="[0-9]*",uid="0"} [1-9]' &&
   tierctl status | grep -A3 "pins by client" | grep -Eq '^ +[1-9][0-9]* +client [0-9]+ uid 0$'; then
	ok "per-client pins are exported (tierd_client_pins) and listed by tierctl status"
else
	notok "tierd_client_pins"
fi
touch "$tmp/full-done"; wait $holder

# 9: connections per uid are bounded, with the reason.
if as_nobody $RAW "$sock" conn-limit 8 >"$tmp/out" 2>&1 &&
   grep -q "uid 65534 has 8 connections, \[client\] max_connections_per_uid" "$tmp/out"; then
	ok "the 9th connection of a uid is refused (EUSERS) naming max_connections_per_uid"
else
	notok "connections per uid"
fi

# 10: replies nobody reads are bounded across clients (max_queued_bytes).
dropped=$(stat clients_dropped)
as_stranger $RAW "$sock" flood-unread 8 12000 >"$tmp/out" 2>&1
if [ "$(stat clients_dropped)" -gt "$dropped" ] && grep -q "max_queued_bytes" "$log" && tierctl status >/dev/null; then
	ok "8 connections that never read: dropped at [daemon] max_queued_bytes; the daemon goes on"
else
	notok "total output bound (dropped $dropped -> $(stat clients_dropped))"
fi

# 11: refusals are counted by reason and logged at most once per 10 s.
lines=$(grep -c "refused" "$log")
eacces=$(metric 'tierd_requests_refused_total{reason="EACCES"}')
for _ in $(seq 5); do as_stranger $RAW "$sock" refused acquire EACCES 0 0 0 >/dev/null 2>&1; done
if [ "$(metric 'tierd_requests_refused_total{reason="EACCES"}')" -ge $((eacces + 5)) ] &&
   [ "$(($(grep -c "refused" "$log") - lines))" -le 1 ]; then
	ok "refusals counted in tierd_requests_refused_total by reason; the log is rate-limited"
else
	notok "refusal counting ($(grep -c refused "$log") lines)"
fi

# 12: max_pins "auto" is half the pool's slots: one client cannot pin it all.
write_conf auto 65534
kill -HUP "$daemon"
for _ in $(seq 50); do [ "$(stat reloads)" = 1 ] && break; sleep 0.1; done
$RAW "$sock" acquire-until-full 0 4 16 "$tmp/auto-done" >"$tmp/auto" 2>&1 &
holder=$!
for _ in $(seq 100); do grep -q refused "$tmp/auto" && break; sleep 0.1; done
if grep -q "EDQUOT uid 0 would hold [0-9]* pins over its connections, \[client\] max_pins is [0-9]* (auto: half the pool's slots per uid)" "$tmp/auto"; then
	ok "[client] max_pins = auto: a client is refused at half the pool's slots"
else
	notok "max_pins auto"; sed 's/^/# /' "$tmp/auto"
fi
# A second connection of the same uid gets no more.
if $RAW "$sock" refused acquire EDQUOT 0 3 15 >"$tmp/out" 2>&1; then
	ok "max_pins = auto bounds all the connections of a uid together"
else
	notok "max_pins auto across connections"
fi
touch "$tmp/auto-done"; wait $holder

# 13-14: revocation.  nobody may use both models (the reload above), holds a pin, then a reload
# takes the secret model away: its connection is closed and its pins go; a
# new connection gets no pool descriptor and is refused.
as_nobody $RAW "$sock" hold-then-revoked 1 0 0 "$tmp/revoked" >"$tmp/rev" 2>&1 &
rc=$!
for _ in $(seq 100); do grep -q held "$tmp/rev" && break; sleep 0.1; done
write_conf auto ""
kill -HUP "$daemon"
for _ in $(seq 50); do [ "$(stat reloads)" = 2 ] && break; sleep 0.1; done
touch "$tmp/revoked"
if wait $rc; then ok "a reload that withdraws a model drops its connected clients; reconnecting gets no pool"
else notok "revocation"; sed 's/^/# /' "$tmp/rev"; fi
if grep -q "access to model secret withdrawn by a reload" "$log" && [ "$(stat pins)" = 0 ]; then
	ok "the revoked client's pins are released and the drop is logged with the reason"
else
	notok "revocation: log or pins ($(stat pins))"
fi
kill "$daemon"; wait "$daemon"; daemon=

# 15-16: at the fd limit the daemon stops polling the listener instead of
# spinning, says so once, and serves again when fds are free.
: >"$log"
write_conf auto 65534
start_daemon
fds=$(ls /proc/"$daemon"/fd | wc -l)
hard=$(prlimit --pid "$daemon" --nofile --noheadings --output HARD --raw)
# Only the soft limit: raising it back needs no privilege.
prlimit --pid "$daemon" --nofile=$((fds + 4)):"$hard"
cpu() { awk '{ print $14 + $15 }' /proc/"$daemon"/stat; }
"$PY" - "$sock" >"$tmp/out" 2>&1 <<'EOF' &
import socket, sys, time
conns = []
for i in range(40):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    conns.append(s)
time.sleep(2)
EOF
py=$!
sleep 0.5
# CPU ticks (1/100 s) the daemon spends over 1 s with connections waiting: a
# listener polled at the limit spins the whole second (about 100).
c0=$(cpu); sleep 1; c1=$(cpu)
spin=$(grep -c "accept: Too many open files" "$log")
wait $py
prlimit --pid "$daemon" --nofile="$hard":"$hard"
if [ "$spin" = 1 ] && grep -q "LimitNOFILE" "$log" && [ $((c1 - c0)) -lt 50 ]; then
	ok "accept at the fd limit: logged once with the hint to raise LimitNOFILE, no busy loop ($((c1 - c0)) ticks in 1 s)"
else
	notok "accept at the fd limit ($spin log lines, $((c1 - c0)) CPU ticks in 1 s)"
fi
served=0
for _ in $(seq 50); do tierctl status >/dev/null 2>&1 && { served=1; break; }; sleep 0.1; done
if [ $served = 1 ] && grep -q "accepting connections again" "$log"; then
	ok "connections are accepted again once fds are free"
else
	notok "accept resumes"
fi

# 17: EVICT is all or nothing: one pinned expert in the batch evicts none.
tierctl pin demo 0 1 >/dev/null 2>&1
tierctl acquire demo 0 0 >/dev/null 2>&1
if ! tierctl evict demo 0 0-1 >"$tmp/out" 2>&1 && grep -q "nothing evicted" "$tmp/out" &&
   tierctl evict demo 0 0 >/dev/null 2>&1; then
	ok "EVICT of a batch with a pinned expert evicts nothing and says so"
else
	notok "EVICT all or nothing"
fi

# 18: a stopped daemon: tierctl's waits end at --timeout with the reason.
kill -STOP "$daemon"
r=0; timeout 30 "$TIERCTL" -s "$sock" --timeout 300 pin demo 0 2 >"$tmp/out" 2>&1 || r=$?
r2=0; timeout 30 "$TIERCTL" -s "$sock" --timeout 300 stats >>"$tmp/out" 2>&1 || r2=$?
kill -CONT "$daemon"
if [ $r = 1 ] && [ $r2 = 1 ] && [ "$(grep -c "timed out" "$tmp/out")" = 2 ]; then
	ok "tierctl pin and stats on a stopped daemon end at --timeout, saying so"
else
	notok "tierctl --timeout (pin $r, stats $r2)"
fi

# 21: command-line numbers are checked, naming the option.
r=0; tierctl acquire --hold abc demo 0 0 >"$tmp/out" 2>&1 || r=$?
r2=0; tierctl bench acquire --clients 2x >>"$tmp/out" 2>&1 || r2=$?
if [ $r = 2 ] && [ $r2 = 2 ] && grep -q -- '--hold "abc": expected a number' "$tmp/out" &&
   grep -q -- '--clients "2x": expected a whole number' "$tmp/out"; then
	ok "tierctl refuses malformed numbers, naming the option"
else
	notok "tierctl number parsing ($r, $r2)"
fi

# 22: batches naming a key more than once: RELEASE and UNPIN refused whole
# when a key is named more often than held, EVICT when one is named twice,
# each naming the batch's first bad key.
if $RAW "$sock" duplicates 0 3 >"$tmp/out" 2>&1; then
	ok "RELEASE, UNPIN and EVICT batches with repeated keys: refused whole, naming the first bad key"
else
	notok "repeated keys in a batch"
fi

[ $failed = 0 ]
