#!/bin/bash
# SPDX-License-Identifier: MIT
# Traces recorded by the real daemon: tierctl trace start/stop (operators
# only, files never replaced), the shared routing trace played by a client
# and read back from the recording event for event, the same bytes served
# with recording on and off, [trace] record in the config, and tierctl
# trace info/convert.  TAP output.
set -u
. "${top_srcdir:-.}/tests/service-lib.sh"
svc_init trace
TC=$b/tests/trace-client
shared=${TIERD_SHARED_DIR:-${top_srcdir:-.}/../shared}/traces/granite-3.0-1b-a400m.json

stop_daemon() {
	kill -TERM "$daemon" && wait "$daemon"
	local st=$?
	daemon=
	return $st
}

echo "1..16"

# CI has ../shared beside the clone: without the trace this test fails.
if [ ! -r "$shared" ]; then
	echo "Bail out! $shared: the shared routing trace is missing"
	exit 1
fi
# The shared trace's shape: 24 layers of 32 experts, top-8.
if ! "$TIERCTL" demo-store "$tmp/demo" --layers 24 --experts 32 --top-k 8 --hidden 32 --ffn 64 >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
cat >"$conf" <<EOF
[daemon]
socket = $sock
socket_mode = 0666
log_level = info
[pool]
size = 4M
hugepages = no
lock = no
[model demo]
path = $tmp/demo
EOF
start_daemon || { echo "Bail out! tierd did not start"; exit 1; }

if ! tierctl trace stop >"$tmp/out" 2>&1 && grep -q "no trace is being recorded" "$tmp/out"; then
	ok "trace stop with nothing recorded: refused, saying so"
else
	notok "trace stop with nothing recorded"
fi

check "trace start (a relative path made absolute by tierctl)" \
	sh -c "cd '$tmp' && '$TIERCTL' -s '$sock' trace start rec.tdt"
if ! tierctl trace start "$tmp/other.tdt" >"$tmp/out" 2>&1 && grep -q "already recording into $tmp/rec.tdt" "$tmp/out" &&
   [ ! -e "$tmp/other.tdt" ]; then
	ok "a second trace start: refused, naming the recording"
else
	notok "a second trace start"
fi

served_on=
if served_on=$("$TC" "$sock" replay "$shared" 2>"$tmp/out") && [ -n "$served_on" ]; then
	ok "the shared trace played to tierd while recording ($served_on)"
else
	notok "the shared trace played while recording"
fi
if tierctl trace stop >"$tmp/out" 2>&1 && grep -q "stopped: 5064 events recorded" "$tmp/out"; then
	ok "trace stop: 5064 events recorded"
else
	notok "trace stop"
fi
check "the recording holds the trace's hints and acquires, in order, with the reported tokens" \
	"$TC" - check "$tmp/rec.tdt" "$shared"
if [ "$(stat trace_events)" = 5064 ] && [ "$(stat trace_dropped)" = 0 ] && [ "$(stat trace_active)" = 0 ] &&
   tierctl metrics >"$tmp/metrics" 2>&1 && grep -qx "tierd_trace_events_total 5064" "$tmp/metrics" &&
   grep -qx "tierd_trace_events_dropped_total 0" "$tmp/metrics" && grep -qx "tierd_trace_recording 0" "$tmp/metrics"; then
	ok "counters and metrics: 5064 trace events, 0 dropped, not recording"
else
	notok "counters trace_events, trace_dropped, trace_active"; tierctl stats | grep trace_ | sed 's/^/# /'
fi

served_off=$("$TC" "$sock" replay "$shared" 2>"$tmp/out")
if [ -n "$served_on" ] && [ "$served_off" = "$served_on" ]; then
	ok "recording off: the same bytes served ($served_off)"
else
	notok "recording off: served \"$served_off\", with recording \"$served_on\""
fi

# Never over an existing file, never through a link.
ln -s "$tmp/victim" "$tmp/link.tdt"
echo keep >"$tmp/victim"
if ! tierctl trace start "$tmp/rec.tdt" >"$tmp/out" 2>&1 && grep -q "File exists" "$tmp/out" &&
   ! tierctl trace start "$tmp/link.tdt" >>"$tmp/out" 2>&1 && [ "$(cat "$tmp/victim")" = keep ] &&
   [ "$(stat trace_active)" = 0 ]; then
	ok "trace start over an existing file or a symbolic link: refused, nothing touched"
else
	notok "trace start over an existing file or a link"
fi

if ! setpriv --reuid=65534 --regid=65534 --clear-groups "$TIERCTL" -s "$sock" trace start /tmp/nobody.tdt \
	>"$tmp/out" 2>&1 && grep -q "TRACE is for operators" "$tmp/out" && [ ! -e /tmp/nobody.tdt ]; then
	ok "trace start by uid 65534: refused (operators only)"
else
	notok "trace start by a non-operator"
fi

# [trace] record in the config: from the start, ended by SIGTERM.
cat >>"$conf" <<EOF
[trace]
record = yes
file = $tmp/conf-%p.tdt
EOF
stop_daemon
start_daemon || { echo "Bail out! tierd did not restart"; exit 1; }
pid=$daemon
wait_inactive() {
	for _ in $(seq 100); do
		[ "$(stat trace_active)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}
if [ "$(stat trace_active)" = 1 ] && "$TC" "$sock" replay "$shared" >/dev/null 2>"$tmp/out" &&
   sed -i 's/^record = yes/record = no/' "$conf" && kill -HUP "$daemon" && wait_inactive &&
   [ -f "$tmp/conf-$pid.tdt" ] && grep -q "conf-$pid.tdt: 5064 events recorded, 0 dropped" "$log"; then
	ok "[trace] record = yes: recorded into file with %p expanded; a reload with record = no ends it"
else
	notok "[trace] record = yes, then no"
fi
check "the configured recording holds the trace's events" "$TC" - check "$tmp/conf-$pid.tdt" "$shared"

# Started again by a reload, ended by SIGTERM: a complete file.
sed -i 's/^record = no/record = yes/; s/conf-%p.tdt/conf2-%p.tdt/' "$conf"
kill -HUP "$daemon"
for _ in $(seq 100); do [ "$(stat trace_active)" = 1 ] && break; sleep 0.1; done
if [ "$(stat trace_active)" = 1 ] && "$TC" "$sock" replay "$shared" >/dev/null 2>"$tmp/out" && stop_daemon &&
   "$TC" - check "$tmp/conf2-$pid.tdt" "$shared" >"$tmp/out" 2>&1; then
	ok "a reload with record = yes starts a recording; SIGTERM ends it complete"
else
	notok "record = yes at a reload, ended by SIGTERM"
fi

# The files themselves.
if tierctl trace info "$shared" >"$tmp/out" 2>&1 && grep -q "acquires:  3072 events" "$tmp/out" &&
   grep -q "hints:     1992 events" "$tmp/out" && grep -q "sequence:  code" "$tmp/out"; then
	ok "trace info on the shared trace: 3072 acquire and 1992 hint events, its prompts"
else
	notok "trace info on the shared trace"
fi
if tierctl trace convert "$shared" "$tmp/conv.tdt" >"$tmp/out" 2>&1 &&
   tierctl trace dump "$shared" >"$tmp/a" && tierctl trace dump "$tmp/conv.tdt" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b"; then
	ok "trace convert: the same events in tierd-trace-v1"
else
	notok "trace convert"
fi
head -c 1000 "$tmp/conv.tdt" >"$tmp/cut.tdt"
if ! tierctl trace info "$tmp/cut.tdt" >"$tmp/out" 2>&1 && grep -q "truncated at byte offset 1000" "$tmp/out"; then
	ok "a cut recording: refused, naming the byte offset"
else
	notok "a cut recording"
fi

[ "$failed" = 0 ]
