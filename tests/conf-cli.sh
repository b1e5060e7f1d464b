#!/bin/bash
# SPDX-License-Identifier: MIT
# tierd -t on bad configurations: each fails with a message naming file:line
# and what to do; the open file limit is checked and raised; a reload that
# points a model at a missing path is refused, logged and shown in STATUS=,
# and the daemon goes on serving.  TAP output.
set -u
b=${top_builddir:-.}
TIERD=$b/tierd/tierd
TIERCTL=$b/client/tierctl
tmp=$(mktemp -d "${TMPDIR:-/tmp}/conf-cli.XXXXXX") || exit 99
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
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; [ -f "$tmp/out" ] && sed 's/^/# /' "$tmp/out"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# expect STATUS PATTERN DESCRIPTION -- COMMAND...: exit status (0 or not) and a
# fixed-string pattern in the output.
expect() {
	local want=$1 pattern=$2 what=$3 got
	shift 4
	"$@" >"$tmp/out" 2>&1
	got=$?
	if { [ "$want" = 0 ] && [ $got = 0 ]; } || { [ "$want" != 0 ] && [ $got != 0 ]; }; then
		if grep -qF -e "$pattern" "$tmp/out"; then ok "$what"; else notok "$what (no \"$pattern\")"; fi
	else
		notok "$what (exit status $got)"
	fi
}

echo "1..17"

"$TIERCTL" demo-store "$tmp/demo" --layers 2 --experts 4 --hidden 64 --ffn 128 >/dev/null ||
	{ echo "Bail out! demo-store"; exit 1; }
mkdir "$tmp/empty"
base="[daemon]
socket = $tmp/tierd.sock
state_dir = $tmp
log_level = info
[pool]
size = 2M
hugepages = no
lock = no
[nvme]
probes = no"
# conf NAME TEXT: the base sections, then TEXT from line 12 on.
conf() { printf '%s\n\n%s\n' "$base" "$2" >"$tmp/$1"; }

conf good.conf "[model demo]
path = $tmp/demo"
expect 0 "good.conf: configuration ok" "tierd -t accepts a good configuration" -- \
	"$TIERD" -t -c "$tmp/good.conf"

conf missing.conf "[model demo]
path = $tmp/nope"
expect 1 "missing.conf:12: [model demo] path = $tmp/nope: No such file or directory" \
	"a missing model path is an error at the section's line" -- "$TIERD" -t -c "$tmp/missing.conf"

shard=$(ls "$tmp/demo"/*.safetensors | head -1)
conf file.conf "[model demo]
path = $shard"
expect 1 "file.conf:12: [model demo] path = $shard: not a directory" \
	"a model path that is a file is an error" -- "$TIERD" -t -c "$tmp/file.conf"

conf empty.conf "[model demo]
path = $tmp/empty"
expect 1 "empty.conf:12: [model demo] path = $tmp/empty: " \
	"tierd -t opens the checkpoint: an empty directory is an error at the section's line" -- \
	"$TIERD" -t -c "$tmp/empty.conf"

conf nopath.conf "[model other]

[model demo]
path = $tmp/demo"
expect 1 "nopath.conf:12: [model other] path: missing: add path = DIR" \
	"a [model] section without path is an error, not dropped" -- "$TIERD" -t -c "$tmp/nopath.conf"

conf dup.conf "[model demo]
path = $tmp/demo
[pool]
size = 4M"
expect 1 "dup.conf:14: [pool] repeats the section at $tmp/dup.conf:5" \
	"a repeated section is an error naming both lines" -- "$TIERD" -t -c "$tmp/dup.conf"

conf dupmodel.conf "[model demo]
path = $tmp/demo
[model demo]
quota = 1M"
expect 1 "dupmodel.conf:14: [model demo] repeats the section at $tmp/dupmodel.conf:12" \
	"a repeated [model] section is an error naming both lines" -- "$TIERD" -t -c "$tmp/dupmodel.conf"

conf unterminated.conf "[model demo
path = $tmp/demo"
expect 1 "unterminated.conf:12: section header \"[model demo\" is unterminated" \
	"an unterminated section header is an error at its line" -- "$TIERD" -t -c "$tmp/unterminated.conf"
if grep -q "unknown key" "$tmp/out"; then notok "... and not an unknown key of the section before"
else ok "... and not reported as an unknown key of the section before"; fi

expect 1 "command line: [model x] path = $tmp/nope" "a model set with -o is checked too" -- \
	"$TIERD" -t -c "$tmp/good.conf" -o "model x.path=$tmp/nope"

# The open file limit.
if command -v prlimit >/dev/null; then
	expect 1 "raise LimitNOFILE= in the unit or ulimit -n" "tierd -t: an open file limit of 32 fails with the hint" -- \
		prlimit --nofile=32:32 "$TIERD" -t -c "$tmp/good.conf"
	expect 1 "checkpoint files and 64 for the rest): raise LimitNOFILE= in the unit or ulimit -n" \
		"the daemon: an open file limit of 32 fails to start with the hint" -- \
		prlimit --nofile=32:32 "$TIERD" -c "$tmp/good.conf"
	# A soft limit below what the configuration needs is raised to the hard limit.
	hard=$(ulimit -Hn)
	if [ "$hard" != unlimited ] && [ "$hard" -lt 8192 ]; then
		skip "the hard open file limit $hard is below 8192"
	else
	prlimit --nofile=1024:8192 "$TIERD" -c "$tmp/good.conf" >"$tmp/raise.log" 2>&1 &
	pids+=($!)
	raised=
	for _ in $(seq 100); do
		if [ -S "$tmp/tierd.sock" ] && "$TIERCTL" -s "$tmp/tierd.sock" status >/dev/null 2>&1; then
			raised=$(awk '/^Max open files/ { print $4 }' "/proc/${pids[-1]}/limits"); break
		fi
		sleep 0.1
	done
	if [ "$raised" = 8192 ] && grep -q "open file limit raised from 1024 to the hard limit 8192" "$tmp/raise.log"
	then ok "a low soft open file limit is raised to the hard limit"
	else cp "$tmp/raise.log" "$tmp/out"; notok "soft limit raised (got '$raised')"; fi
	kill "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null
	fi
	# A hard limit of 256 (a container's): the io_uring file table is sized to
	# it, not to 4096 slots the kernel would refuse; the daemon serves.
	rm -f "$tmp/tierd.sock"
	prlimit --nofile=256:256 "$TIERD" -c "$tmp/good.conf" >"$tmp/low.log" 2>&1 &
	pids+=($!)
	served=
	for _ in $(seq 100); do
		if [ -S "$tmp/tierd.sock" ] && "$TIERCTL" -s "$tmp/tierd.sock" prefetch demo 0 0 >/dev/null 2>&1; then
			served=yes; break
		fi
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	if [ "$served" = yes ]; then ok "an open file limit of 256 (hard): the daemon starts and serves"
	else cp "$tmp/low.log" "$tmp/out"; notok "an open file limit of 256 (hard)"; fi
	kill "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null
else
	for _ in 1 2 3 4; do skip "prlimit not installed"; done
fi

# Reload with a model path that went missing: refused, logged, in STATUS=, and
# the daemon still serves.
if ! command -v python3 >/dev/null; then
	for _ in 1 2 3; do skip "python3 needed for the NOTIFY_SOCKET listener"; done
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
cp "$tmp/good.conf" "$tmp/reload.conf"
NOTIFY_SOCKET=$tmp/notify.sock "$TIERD" -c "$tmp/reload.conf" >"$tmp/reload.log" 2>&1 &
tierd=$!
pids+=($tierd)
wait_notify() { for _ in $(seq 100); do grep -q "$1" "$tmp/notify.log" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_notify '^READY=1|STATUS=' || echo "# no READY=1 from the daemon"
sed -i "s|^path = .*|path = $tmp/gone|" "$tmp/reload.conf"
kill -HUP "$tierd"
if wait_notify "READY=1|STATUS=reload refused, running the previous configuration: $tmp/reload.conf:12: \[model demo\] path = $tmp/gone: No such file or directory"
then ok "a reload to a missing model path: READY=1 again with STATUS= saying it was refused"
else cp "$tmp/notify.log" "$tmp/out"; notok "STATUS= of the refused reload"; fi
if grep -qF "reload refused, keeping the running configuration: $tmp/reload.conf:12: [model demo] path = $tmp/gone" "$tmp/reload.log" &&
   "$TIERCTL" -s "$tmp/tierd.sock" models >"$tmp/out" 2>&1 && grep -q demo "$tmp/out"
then ok "... logged with file:line, and the daemon still serves the model"
else cat "$tmp/reload.log" >>"$tmp/out"; notok "refused reload logged, daemon serving"; fi
# Put right, the next reload succeeds and the note goes.
sed -i "s|^path = .*|path = $tmp/demo|" "$tmp/reload.conf"
: >"$tmp/notify.log"
kill -HUP "$tierd"
if wait_notify '^READY=1|STATUS=[0-9]* models' && ! grep -q "refused" "$tmp/notify.log"
then ok "a good reload clears the note from STATUS="
else cp "$tmp/notify.log" "$tmp/out"; notok "STATUS= after a good reload"; fi
[ $failed = 0 ]
