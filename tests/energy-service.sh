#!/bin/bash
# SPDX-License-Identifier: MIT
# Energy and metrics of the running daemon: the real tierd on a temporary
# socket with a demo checkpoint, a client that acquires experts and reports
# tokens, and `tierctl metrics` / the HTTP endpoint / the textfile read back.
# Checks that bytes by tier and source agree with what was fetched (eBPF sees
# at least what tierd read with O_DIRECT), that energy is attributed to the
# model and the client, that counters never decrease, and that promtool
# accepts the daemon's output.  Runs as root (eBPF); TAP output.
set -u
b=${top_builddir:-.}
TIERD=$b/tierd/tierd
TIERCTL=$b/client/tierctl
CL=$b/tests/svc-client

# The checkpoint must sit on a block device (not tmpfs) for eBPF to see its
# reads: under the build directory.  The socket stays short, in $TMPDIR.
work=$(mktemp -d "$b/tests/energy-svc.XXXXXX")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-energy.XXXXXX")
chmod 755 "$tmp"
sock=$tmp/tierd.sock
conf=$work/tierd.conf
log=$work/tierd.log
daemon=
daemon2=
n=0
failed=0
HIDDEN=128
FFN=256
EXPERT_BYTES=$((3 * HIDDEN * FFN * 2))	# w1, w2, w3 in BF16
TOKENS=100

cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	[ -n "$daemon2" ] && kill "$daemon2" 2>/dev/null && wait "$daemon2" 2>/dev/null
	jobs -p | while read -r p; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work" "$tmp"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
	n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
	[ -f "$log" ] && sed 's/^/# tierd: /' "$log" | tail -10
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
# check WHAT COND...: COND is a shell expression; on failure prints the figures.
check() { local what=$1; shift; if eval "$@"; then ok "$what"; else notok "$what"; echo "# failed: $*" | sed 's/\$//g'; fi; }

tierctl() { "$TIERCTL" -s "$sock" "$@"; }
stat_of() { tierctl stats | awk -v k="$1" '$1 == k { print $2 }'; }
scrape() { tierctl metrics >"$1" 2>"$1.err" || { sed 's/^/# /' "$1.err"; return 1; }; }
# Value of one series (exact "name{labels}" or "name"), empty if absent.
val() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
# Sum of a family's series whose labels match an ERE.
sum() { awk -v f="$2" -v re="${3:-.}" 'index($1, f "{") == 1 && $1 ~ re { s += $2 } END { printf "%.0f\n", s }' "$1"; }
# A floating sum, for joules.
fsum() { awk -v f="$2" -v re="${3:-.}" '(index($1, f "{") == 1 || $1 == f) && $1 ~ re { s += $2 } END { printf "%.12g\n", s }' "$1"; }
gt0() { awk -v v="$1" 'BEGIN { exit !(v + 0 > 0) }'; }

wait_held() {
	for _ in $(seq 300); do
		grep -q held "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

start_daemon() {
	"$TIERD" -c "$conf" >>"$log" 2>&1 &
	daemon=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && tierctl status >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# Counters (counter and histogram families) of $2 are >= those of $1.
monotonic() {
	python3 - "$1" "$2" <<'EOF'
import sys
def load(p):
    kinds, vals = {}, {}
    for line in open(p):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            kinds[name] = kind
        elif line.strip() and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    return kinds, vals
k1, a = load(sys.argv[1])
k2, b = load(sys.argv[2])
def family(series):
    name = series.split("{", 1)[0]
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and k2.get(name[: -len(suf)]) == "histogram":
            return name[: -len(suf)]
    return name
bad = 0
checked = 0
for s, v in a.items():
    if k2.get(family(s)) not in ("counter", "histogram") or s not in b:
        continue
    checked += 1
    if b[s] < v:
        print("# decreased: %s %r -> %r" % (s, v, b[s]))
        bad = 1
print("# %d counter series compared" % checked)
sys.exit(bad or checked < 20)
EOF
}

names() { grep -v '^#' "$1" | sed 's/[{ ].*//' | sort -u; }

echo "1..19"

if [ "$(id -u)" != 0 ]; then
	# eBPF needs root; CI runs this as root.
	for i in $(seq 19); do skip "not root: eBPF probes need privileges"; done
	exit 0
fi

if ! "$TIERCTL" demo-store "$work/demo" --layers 4 --experts 16 --hidden $HIDDEN --ffn $FFN >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
cat >"$conf" <<EOF
[daemon]
socket = $sock
socket_mode = 0666
state_dir = $tmp
log_level = info
[pool]
size = 8M
hugepages = no
lock = no
[metrics]
listen = 127.0.0.1:0
textfile = $work/tierd.prom
[model demo]
path = $work/demo
EOF

if start_daemon; then ok "daemon starts with telemetry"; else notok "daemon starts"; echo "Bail out!"; exit 1; fi
port=$(sed -n 's/.*metrics: serving http.*(port \([0-9]*\)).*/\1/p' "$log" | tail -1)
scrape "$work/m0" || true
check "eBPF probes loaded in the daemon (tierd_info probes, SSD bytes from ebpf)" \
	'grep -Eq "^tierd_info\{.*probes=\"(tp_btf|raw_tp)\",energy_source=\"ebpf\"" "$work/m0"'

# The whole-disk device under the checkpoint, as the metrics name it.
dev=
mm=$(stat -c '%Hd:%Ld' "$work/demo/model.safetensors" 2>/dev/null || stat -c '%Hd:%Ld' "$work/demo")
if p=$(readlink -f "/sys/dev/block/$mm" 2>/dev/null) && [ -e "$p" ]; then
	[ -e "$p/partition" ] && p=$(dirname "$p")
	dev=$(basename "$p")
fi
[ -n "$dev" ] || dev=$(sed -n 's/^tierd_device_energy_joules_total{device="\([^"]*\)".*/\1/p' "$work/m0" | head -1)
echo "# checkpoint device: ${dev:-unknown} ($mm), HTTP port ${port:-none}"

# A cold fetch: tierd reads with O_DIRECT; caches dropped for good measure.
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
b0=$(stat_of bytes_read)
"$CL" "$sock" tokens 0 0-7 $TOKENS "$work/go" >"$work/client" 2>&1 &
client=$!
if ! wait_held "$work/client"; then
	notok "client acquires 8 experts and reports tokens"; sed 's/^/# /' "$work/client"
	echo "Bail out!"; exit 1
fi
ok "client acquires 8 experts (bytes verified) and reports $TOKENS tokens"
cid=$(sed -n "s/.*client \([0-9]*\): pid $client .*connected.*/\1/p" "$log" | tail -1)
b1=$(stat_of bytes_read)
scrape "$work/m1"
tierd_ssd=$(val "$work/m1" 'tierd_bytes_total{tier="ssd",device="all",direction="read",source="tierd"}')
ebpf0=$(val "$work/m0" "tierd_bytes_total{tier=\"ssd\",device=\"$dev\",direction=\"read\",source=\"ebpf\"}")
ebpf1=$(val "$work/m1" "tierd_bytes_total{tier=\"ssd\",device=\"$dev\",direction=\"read\",source=\"ebpf\"}")
echo "# tierd read $((b1 - b0)) B from flash; eBPF saw ${ebpf0:-?} -> ${ebpf1:-?} B read on $dev"
check "tierd_bytes_total{tier=ssd,source=tierd} = the engine's bytes read ($tierd_ssd B), advanced by the fetch" \
	'[ -n "$tierd_ssd" ] && [ "$tierd_ssd" = "$b1" ] && [ $((b1 - b0)) -ge $((8 * EXPERT_BYTES)) ]'
check "eBPF read bytes on $dev advanced by at least tierd's O_DIRECT bytes ($((${ebpf1:-0} - ${ebpf0:-0})) >= $((b1 - b0)))" \
	'[ -n "$ebpf0" ] && [ -n "$ebpf1" ] && [ $((ebpf1 - ebpf0)) -ge $((b1 - b0)) ]'
ddr=$(val "$work/m1" 'tierd_bytes_total{tier="ddr",device="pool",direction="read",source="tierd"}')
hbm=$(val "$work/m1" 'tierd_bytes_total{tier="hbm",device="gpu",direction="write",source="tierd"}')
check "DDR read = HBM write = the bytes handed to the client ($ddr = $((8 * EXPERT_BYTES)))" \
	'[ "$ddr" = $((8 * EXPERT_BYTES)) ] && [ "$hbm" = "$ddr" ]'
mj=$(fsum "$work/m1" tierd_model_energy_joules_total 'model="demo"')
check "model demo: fetched bytes = tierd's, $TOKENS tokens, $mj J attributed" \
	'[ "$(val "$work/m1" "tierd_model_fetched_bytes_total{model=\"demo\"}")" = "$tierd_ssd" ] &&
	 [ "$(val "$work/m1" "tierd_model_tokens_total{model=\"demo\"}")" = $TOKENS ] && gt0 "$mj"'
cj=$(fsum "$work/m1" tierd_client_energy_joules_total "client=\"$cid\"")
check "client $cid (pid $client): fetched bytes = tierd's, $TOKENS tokens, $cj J attributed" \
	'[ -n "$cid" ] && [ "$(val "$work/m1" "tierd_client_fetched_bytes_total{client=\"$cid\"}")" = "$tierd_ssd" ] &&
	 [ "$(val "$work/m1" "tierd_client_tokens_total{client=\"$cid\"}")" = $TOKENS ] && gt0 "$cj"'
check "tokens counted: tierd_tokens_total = $TOKENS" '[ "$(val "$work/m1" tierd_tokens_total)" = $TOKENS ]'
check "fetch latency histogram counts every fetch ($(stat_of fetches)) and misses are counted" \
	'[ "$(val "$work/m1" tierd_fetch_duration_seconds_count)" = "$(stat_of fetches)" ] &&
	 [ "$(val "$work/m1" tierd_cache_misses_total)" -ge 8 ]'

sleep 1.2
scrape "$work/m2"
njoules=$(grep -c '^tierd_energy_joules_total{tier="\(hbm\|ddr\|ssd\)",component="\(dynamic\|static\)"}' "$work/m2")
j1=$(fsum "$work/m1" tierd_energy_joules_total)
j2=$(fsum "$work/m2" tierd_energy_joules_total)
echo "# energy: $j1 J -> $j2 J in 1.2 s"
if [ "$njoules" = 6 ] && monotonic "$work/m1" "$work/m2" && awk -v a="$j1" -v b="$j2" 'BEGIN { exit !(b > a) }'; then
	ok "energy joules by tier and component present; counters never decrease across two scrapes; static energy grows"
else
	notok "energy joules present ($njoules of 6) and monotonic"
fi

if command -v promtool >/dev/null; then
	out=$(promtool check metrics <"$work/m2" 2>&1)
	if [ -z "$out" ]; then ok "promtool check metrics on the daemon's output prints nothing"
	else notok "promtool check metrics"; echo "$out" | sed 's/^/# /'; fi
else
	notok "promtool not installed (package prometheus; contrib/install-deps.sh)"
fi

if [ -n "$port" ] && curl -fsS "http://127.0.0.1:$port/metrics" -o "$work/http" && [ "$(names "$work/http")" = "$(names "$work/m2")" ] &&
   [ -n "$(val "$work/http" "tierd_client_tokens_total{client=\"$cid\"}")" ]; then
	ok "HTTP endpoint on 127.0.0.1:$port serves the same names ($(names "$work/http" | wc -l) families and series names)"
else
	notok "HTTP endpoint serves the same names"; diff <(names "$work/http" 2>/dev/null) <(names "$work/m2") | sed 's/^/# /' | head
fi
if [ -s "$work/tierd.prom" ] && [ ! -e "$work/tierd.prom.tmp" ] && [ "$(names "$work/tierd.prom")" = "$(names "$work/m2")" ]; then
	ok "node_exporter textfile written with the same names"
else
	notok "textfile"
fi

if tierctl energy >"$work/energy" 2>&1 && grep -Eq "^demo +[0-9.e+-]+ +$tierd_ssd +$TOKENS " "$work/energy" &&
   tierctl --json energy | python3 -c 'import json,sys; d=json.load(sys.stdin); m=[x for x in d["models"] if x["model"]=="demo"][0]; sys.exit(0 if m["tokens"]=='$TOKENS' and d["source"]=="ebpf" and set(d["tiers"])=={"hbm","ddr","ssd"} else 1)' &&
   tierctl top -i 0.3 -n 1 >"$work/top" 2>&1 && grep -q "cache hit rate" "$work/top" &&
   { tierctl top -n x >/dev/null 2>&1; [ $? -eq 2 ]; } && { tierctl energy extra >/dev/null 2>&1; [ $? -eq 2 ]; }; then
	ok "tierctl energy (text and --json) and top read the daemon; bad arguments are usage errors"
	sed 's/^/# /' "$work/energy"
else
	notok "tierctl energy / top"; sed 's/^/# /' "$work/energy" "$work/top" 2>/dev/null
fi

# The client goes: its figures fold into "departed", nothing is lost.
touch "$work/go"
wait "$client"
sleep 0.2
scrape "$work/m3"
check "a departed client's bytes and tokens fold into client=\"departed\"" \
	'[ -z "$(val "$work/m3" "tierd_client_tokens_total{client=\"$cid\"}")" ] &&
	 [ "$(val "$work/m3" "tierd_client_tokens_total{client=\"departed\"}")" -ge $TOKENS ] &&
	 [ "$(val "$work/m3" "tierd_client_fetched_bytes_total{client=\"departed\"}")" -ge "$tierd_ssd" ]'

# Reload keeps telemetry: counters go on from where they were.
kill -HUP "$daemon"
for _ in $(seq 50); do [ "$(stat_of reloads)" = 1 ] && break; sleep 0.1; done
scrape "$work/m4"
if [ "$(stat_of reloads)" = 1 ] && monotonic "$work/m3" "$work/m4" >/dev/null &&
   curl -fsS "http://127.0.0.1:$port/metrics" -o /dev/null; then
	ok "SIGHUP: reloaded, metrics go on (monotonic), HTTP still served"
else
	notok "metrics after SIGHUP"
fi

# Without privileges: the daemon says so once, runs, and labels its source.
if command -v setpriv >/dev/null; then
	"$TIERCTL" demo-store "$tmp/demo" --layers 2 --experts 4 --hidden 64 --ffn 128 >/dev/null
	chmod -R a+rX "$tmp/demo"
	mkdir -m 777 "$tmp/u"
	cat >"$tmp/u/tierd.conf" <<EOF
[daemon]
socket = $tmp/u/tierd.sock
state_dir = $tmp/u
[pool]
size = 2M
hugepages = no
lock = no
[model demo]
path = $tmp/demo
EOF
	setpriv --reuid=65534 --regid=65534 --clear-groups "$TIERD" -c "$tmp/u/tierd.conf" >"$tmp/u/log" 2>&1 &
	daemon2=$!
	for _ in $(seq 100); do "$TIERCTL" -s "$tmp/u/tierd.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
	"$TIERCTL" -s "$tmp/u/tierd.sock" acquire demo 0 0-1 >/dev/null 2>&1
	"$TIERCTL" -s "$tmp/u/tierd.sock" metrics >"$tmp/u/m" 2>&1
	if [ "$(grep -c 'running without eBPF probes' "$tmp/u/log")" = 1 ] &&
	   grep -q '^tierd_info{.*probes="none",energy_source="tierd"' "$tmp/u/m" &&
	   ! grep -q 'source="ebpf"' "$tmp/u/m" &&
	   [ "$(val "$tmp/u/m" 'tierd_bytes_total{tier="ssd",device="all",direction="read",source="tierd"}')" -gt 0 ] &&
	   gt0 "$(fsum "$tmp/u/m" tierd_energy_joules_total 'tier="ssd",component="dynamic"')"; then
		ok "unprivileged daemon: says once it runs without eBPF, SSD energy from its own bytes (source tierd)"
	else
		notok "unprivileged daemon"; sed 's/^/# /' "$tmp/u/log" | tail; grep '^tierd_info\|source=' "$tmp/u/m" | sed 's/^/# /'
	fi
	kill "$daemon2"; wait "$daemon2" 2>/dev/null; daemon2=
else
	notok "setpriv (util-linux) missing: cannot run the daemon unprivileged"
fi

kill -TERM "$daemon"; wait "$daemon"; st=$?; daemon=
check "SIGTERM: clean exit with telemetry running (no leak reports)" '[ $st = 0 ] && ! grep -q "LeakSanitizer" "$log"'

[ $failed = 0 ]
