#!/bin/bash
# SPDX-License-Identifier: MIT
# Operator pins survive a restart: the real daemon with a temporary state_dir,
# tierctl pin/unpin, restarts, malformed pins files and the upgrade from the
# text format of version 1.  TAP output.
set -u
b=${top_builddir:-.}
TIERD=$b/tierd/tierd
TIERCTL=$b/client/tierctl

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-pins.XXXXXX")
sock=$tmp/tierd.sock
conf=$tmp/tierd.conf
log=$tmp/tierd.log
state=$tmp/state
daemon=
n=0
failed=0

cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
	n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
	[ -f "$log" ] && sed 's/^/# tierd: /' "$log" | tail -15
}

tierctl() { "$TIERCTL" -s "$sock" "$@"; }
stat() { tierctl stats | awk -v k="$1" '$1 == k { print $2 }'; }

start_daemon() {
	: >"$log"
	"$TIERD" -c "$conf" "$@" >>"$log" 2>&1 &
	daemon=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && tierctl status >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

stop_daemon() {
	kill -TERM "$daemon" && wait "$daemon"
	local st=$?
	daemon=
	return $st
}

# Whether layer $1 expert $2 of demo is resident and pinned: evicting it is
# refused as pinned (one not resident is refused as absent).
pinned() { tierctl evict demo "$1" "$2" 2>&1 | grep -q ": pinned"; }

# The pins file as sorted "MODEL LAYER EXPERT COUNT" lines; fails unless it
# is JSON of format tierd-pins, version 2.
pins_lines() {
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "tierd-pins" and d["version"] == 2, d
for p in d["pins"]:
    print(p["model"], p["layer"], p["expert"], p["count"])' "$state/pins" | sort
}

echo "1..20"

if ! "$TIERCTL" demo-store "$tmp/demo" --layers 4 --experts 16 --hidden 64 --ffn 128 >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
mkdir "$state"
cat >"$conf" <<EOF
[daemon]
socket = $sock
log_level = info
state_dir = $state
[pool]
size = 2M
hugepages = no
lock = no
[model demo]
path = $tmp/demo
EOF

resident=
if start_daemon && tierctl pin demo 1 2,5 >/dev/null && [ "$(stat operator_pins)" = 2 ] &&
   resident=$(stat bytes_resident) && [ "${resident:-0}" -gt 0 ] &&
   [ "$(pins_lines)" = "$(printf 'demo 1 2 1\ndemo 1 5 1')" ]; then
	ok "tierctl pin: 2 operator pins, written to state_dir/pins"
else
	notok "pin and write state_dir/pins"; sed 's/^/# /' "$state/pins" 2>/dev/null
fi

if stop_daemon && start_daemon && [ "$(stat operator_pins)" = 2 ]; then
	ok "after a restart: operator_pins 2"
else
	notok "pins restored after a restart"
fi
# A fresh pool holds exactly the restored experts, as before the restart.
if pinned 1 2 && pinned 1 5 && ! pinned 1 3 && [ "$(stat bytes_resident)" = "$resident" ]; then
	ok "restored pins are resident and pinned"
else
	notok "restored pins resident: bytes_resident $(stat bytes_resident)"
fi
if grep -q "2 operator pins restored, 0 dropped" "$log"; then ok "the restore is logged"
else notok "restore logged"; fi

if tierctl unpin demo 1 5 >/dev/null && stop_daemon && start_daemon && [ "$(stat operator_pins)" = 1 ] &&
   pinned 1 2 && ! pinned 1 5; then
	ok "unpin one, restart: 1 operator pin left"
else
	notok "unpin persists"
fi

# A pin of a model that is no longer configured, and one out of range: dropped
# at start, the file rewritten without them.
stop_daemon
cat >"$state/pins" <<EOF
{ "format": "tierd-pins", "version": 2, "pins": [
  { "model": "demo", "layer": 1, "expert": 2, "count": 1 },
  { "model": "gone", "layer": 0, "expert": 0, "count": 1 },
  { "model": "demo", "layer": 9, "expert": 0 } ] }
EOF
if start_daemon && [ "$(stat operator_pins)" = 1 ] && grep -q "pins\[1\]: model gone is not configured" "$log" &&
   grep -q "pins\[2\]: model demo layer 9 expert 0: no such expert" "$log" &&
   grep -q "1 operator pins restored, 2 dropped" "$log" && [ "$(pins_lines)" = "demo 1 2 1" ]; then
	ok "unknown model and out-of-range expert: logged, dropped, file rewritten"
else
	notok "stale entries dropped"; sed 's/^/# /' "$state/pins"
fi

# A malformed file: the error says what is wrong and where, the daemon starts
# without the pins and moves the file aside.
# $1: what the case is, $2: the log line expected (grep -F), the file on stdin.
malformed() {
	stop_daemon
	rm -f "$state/pins.bad"
	cat >"$state/pins"
	if start_daemon && [ "$(stat operator_pins)" = 0 ] && grep -qF -- "$2" "$log" &&
	   grep -q "operator pins not restored" "$log" && [ -f "$state/pins.bad" ] && [ ! -e "$state/pins" ]; then
		ok "$1: \"$2\" logged, daemon starts, pins.bad kept"
	else
		notok "$1"
	fi
}
head='"format": "tierd-pins", "version": 2'
malformed "layer of the wrong type" \
	"$state/pins: pins[1]: key \"layer\": expected an integer from 0 to 4294967295, got string \"1\"" <<EOF
{ $head, "pins": [ { "model": "demo", "layer": 1, "expert": 2 },
  { "model": "demo", "layer": "1", "expert": 3 } ] }
EOF
malformed "a missing key" "$state/pins: pins[0]: missing key \"expert\"" <<EOF
{ $head, "pins": [ { "model": "demo", "layer": 1 } ] }
EOF
malformed "a misspelt key" "$state/pins: pins[0]: unknown key \"expret\"" <<EOF
{ $head, "pins": [ { "model": "demo", "layer": 1, "expret": 2 } ] }
EOF
malformed "a model name cut by a NUL" "$state/pins: pins[0]: key \"model\": expected a model name, got string \"demo\\u0000x\"" <<EOF
{ $head, "pins": [ { "model": "demo\u0000x", "layer": 1, "expert": 2 } ] }
EOF
malformed "count 0" "$state/pins: pins[0]: key \"count\": expected an integer from 1 to 4294967295, got int 0" <<EOF
{ $head, "pins": [ { "model": "demo", "layer": 1, "expert": 2, "count": 0 } ] }
EOF
malformed "trailing garbage" "$state/pins:2:1: not valid JSON: unexpected character at byte 99, near \"trailing\"" <<EOF
{ $head, "pins": [ { "model": "demo", "layer": 1, "expert": 2 } ] }
trailing
EOF
malformed "a cut file" "$state/pins:2:1: not valid JSON: unexpected end at byte 50: operator" <<EOF
{ $head, "pins": [
EOF
malformed "another version" "$state/pins: key \"version\": expected 2 (this tierd's), got 3" <<EOF
{ "format": "tierd-pins", "version": 3, "pins": [] }
EOF
malformed "format 1 with a malformed line" "$state/pins:3: expected \"MODEL LAYER EXPERT\", got \"demo one 2\"" <<EOF
tierd-pins 1
demo 1 2
demo one 2
EOF

# A file of the text format 1 (the previous version's) is restored and
# rewritten as JSON, an expert pinned twice once with count 2.
stop_daemon
rm -f "$state/pins.bad"
printf 'tierd-pins 1\ndemo 1 2\ndemo 1 5\ndemo 1 2\n' >"$state/pins"
if start_daemon && [ "$(stat operator_pins)" = 3 ] && pinned 1 2 && pinned 1 5 &&
   grep -q "format 1 read: rewritten as JSON" "$log" && [ "$(pins_lines)" = "$(printf 'demo 1 2 2\ndemo 1 5 1')" ] &&
   stop_daemon && start_daemon && [ "$(stat operator_pins)" = 3 ] && ! grep -q "format 1" "$log"; then
	ok "format 1 upgraded: 3 pins restored, rewritten as JSON with count 2, restored from it again"
else
	notok "format 1 upgrade"; sed 's/^/# /' "$state/pins"
fi

# state_dir missing: said at start, and every pin change is refused with the
# reason (a pin that would not survive a restart is not taken).
stop_daemon
if start_daemon -o "daemon.state_dir=$tmp/nonexistent" &&
   ! tierctl pin demo 2 3 >"$tmp/out" 2>&1 && grep -q "cannot save operator pins to $tmp/nonexistent/pins" "$tmp/out" &&
   [ "$(stat operator_pins)" = 0 ] && [ "$(grep -c "state_dir $tmp/nonexistent" "$log")" = 1 ]; then
	ok "state_dir missing: warned at start, tierctl pin refused naming the file, nothing pinned"
else
	notok "missing state_dir"; sed 's/^/# /' "$tmp/out"
fi

# state_dir unusable even for root: a regular file, not a directory.
stop_daemon
: >"$tmp/afile"
if start_daemon -o "daemon.state_dir=$tmp/afile" && ! tierctl pin demo 2 3 >"$tmp/out" 2>&1 &&
   grep -q "Not a directory: nothing pinned" "$tmp/out" && [ "$(stat operator_pins)" = 0 ]; then
	ok "state_dir not a directory: tierctl pin refused, nothing pinned"
else
	notok "state_dir not a directory"; sed 's/^/# /' "$tmp/out"
fi

# A full file system: every failed save is an error to the command, logged
# and counted, until one succeeds; what is pinned is what the file says.
# pins.tmp as a link to /dev/full makes the write fail with ENOSPC.
stop_daemon
rm -rf "$state"; mkdir -p "$state"
start_daemon
tierctl pin demo 1 1 >/dev/null
ln -s /dev/full "$state/pins.tmp"
r1=0; tierctl pin demo 1 2 >"$tmp/out" 2>&1 || r1=1
ln -sf /dev/full "$state/pins.tmp"
r2=0; tierctl unpin demo 1 1 >>"$tmp/out" 2>&1 || r2=1
if [ $r1 = 1 ] && [ $r2 = 1 ] && [ "$(grep -c "No space left on device" "$tmp/out")" = 2 ] &&
   [ "$(grep -c "cannot save operator pins" "$log")" -ge 2 ] && [ "$(stat operator_pins)" = 1 ] &&
   tierctl metrics | grep -q '^tierd_operator_pins_save_errors_total 2$'; then
	ok "full state_dir: pin and unpin refused with ENOSPC each time, logged, counted; pins unchanged"
else
	notok "full state_dir"; sed 's/^/# /' "$tmp/out"
fi
rm -f "$state/pins.tmp"
if tierctl pin demo 1 2 >/dev/null && stop_daemon && start_daemon && [ "$(stat operator_pins)" = 2 ] &&
   pinned 1 1 && pinned 1 2; then
	ok "space again: the next pin is saved and both pins survive a restart"
else
	notok "pins after the file system has space again"
fi

[ $failed = 0 ]
