#!/bin/bash
# SPDX-License-Identifier: MIT
# Debian's real Prometheus server against a live tierd: tierd serves a demo
# checkpoint with its metrics on a free loopback port; prometheus (on
# 127.0.0.1, a free port, its own storage directory under the test's
# temporary directory, bounded by timeout) scrapes it every second and
# evaluates contrib/prometheus/tierd-rules.yml every second.  A client
# acquires experts and reports tokens; the test then asks Prometheus's HTTP
# API for per-tier joules and bytes (equal to the daemon's own figures) and
# for the recording rules' results.  Last, every metric the Grafana
# dashboard's queries name is one this tierd exports, and every query runs.
# Prints TAP.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=tests/service-lib.sh
. "$top_srcdir/tests/service-lib.sh"
DASH=$top_srcdir/contrib/grafana/tierd-dashboard.json
RULES=$top_srcdir/contrib/prometheus/tierd-rules.yml
LIMIT=${TIERD_PROM_TIMEOUT:-120}

for t in prometheus curl python3 timeout; do
	command -v $t >/dev/null 2>&1 || { echo "1..0 # SKIP $t not installed (contrib/install-deps.sh)"; exit 0; }
done
svc_init prom
prom=
cleanup() {
	[ -n "$prom" ] && kill "$prom" 2>/dev/null && wait "$prom" 2>/dev/null
	svc_cleanup
}
trap cleanup EXIT

# A free loopback port: bound by the kernel, released, then taken.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# query PROMQL: the JSON result vector of an instant query, as "labels value" lines.
query() {
	curl -fsS --max-time 10 "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
		python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["status"] == "success", d
for r in d["data"]["result"]:
    m = dict(r["metric"]); m.pop("__name__", None); m.pop("instance", None); m.pop("job", None)
    print(",".join("%s=%s" % kv for kv in sorted(m.items())) or "-", r["value"][1])'
}
# until_query PROMQL AWK-CONDITION: polls (bounded) until a sample satisfies it.
until_query() {
	for _ in $(seq "$LIMIT"); do
		query "$1" 2>/dev/null | awk "$2 { found = 1 } END { exit !found }" && return 0
		sleep 1
	done
	return 1
}
val() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }

echo "1..11"
"$TIERCTL" demo-store "$tmp/demo" --layers 2 --experts 8 --hidden 64 --ffn 128 >/dev/null ||
	{ echo "Bail out! cannot write the demo checkpoint"; exit 1; }
cat >"$conf" <<CONF
[daemon]
socket = $sock
state_dir = $tmp
log_level = info
[pool]
size = 8M
hugepages = no
lock = no
[metrics]
listen = 127.0.0.1:0
[model demo]
path = $tmp/demo
CONF
start_daemon || { notok "tierd starts"; echo "Bail out!"; exit 1; }
tport=$(sed -n 's/.*metrics: serving http.*(port \([0-9]*\)).*/\1/p' "$log" | tail -1)

pport=$(free_port)
cat >"$tmp/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $RULES
scrape_configs:
  - job_name: tierd
    static_configs:
      - targets: ['127.0.0.1:$tport']
CONF
timeout -k 5 "$LIMIT" prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom-data" \
	--web.listen-address="127.0.0.1:$pport" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom=$!
if [ -n "$tport" ] && until_query 'up{job="tierd"}' '$2 == 1'; then
	ok "prometheus on 127.0.0.1:$pport scrapes tierd on 127.0.0.1:$tport (up == 1)"
else
	notok "prometheus scrapes tierd (tierd port ${tport:-none})"
	sed 's/^/# prometheus: /' "$tmp/prometheus.log" | tail -10
	echo "Bail out!"; exit 1
fi

# A client: 8 experts acquired (bytes verified), 100 tokens reported.
"$CL" "$sock" tokens 0 0-7 100 "$tmp/go" >"$tmp/client" 2>&1 &
for _ in $(seq 300); do grep -q held "$tmp/client" 2>/dev/null && break; sleep 0.1; done
check "a client acquires 8 experts and reports 100 tokens" grep -q held "$tmp/client"

# The rules are loaded and evaluate without errors.
if curl -fsS "http://127.0.0.1:$pport/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
print("# %d groups, %d rules" % (len(groups), len(rules)))
sys.exit(1 if bad or len(rules) < 10 else 0)' >"$tmp/out" 2>&1; then
	cat "$tmp/out"; ok "tierd-rules.yml loaded by prometheus, every rule healthy"
else
	notok "tierd-rules.yml loaded by prometheus, every rule healthy"
fi

# Wait until the tokens are in Prometheus (the client's counters).
until_query 'tierd_tokens_total' '$2 == 100' || true
"$TIERCTL" -s "$sock" metrics >"$tmp/m" 2>&1
query 'tierd_bytes_total{source="tierd"}' >"$tmp/bytes" 2>&1
ddr=$(val "$tmp/m" 'tierd_bytes_total{tier="ddr",device="pool",direction="read",source="tierd"}')
ssd=$(val "$tmp/m" 'tierd_bytes_total{tier="ssd",device="all",direction="read",source="tierd"}')
sed 's/^/# /' "$tmp/bytes"
check "per-tier bytes in Prometheus = tierd's own (ssd $ssd B, ddr $ddr B)" \
	sh -c "[ -n '$ddr' ] && [ '$ddr' -gt 0 ] && grep -qx 'device=pool,direction=read,source=tierd,tier=ddr $ddr' '$tmp/bytes' &&
		grep -qx 'device=all,direction=read,source=tierd,tier=ssd $ssd' '$tmp/bytes' &&
		grep -q 'tier=hbm $ddr' '$tmp/bytes'"
query 'sum by (tier) (tierd_energy_joules_total)' >"$tmp/joules" 2>&1
sed 's/^/# joules: /' "$tmp/joules"
check "per-tier joules in Prometheus: ssd, ddr and hbm, each > 0" \
	awk '$2 > 0 { t[$1] = 1 } END { exit !(t["tier=ssd"] && t["tier=ddr"] && t["tier=hbm"]) }' "$tmp/joules"

# The recording rules' results, once the rates cover the client's burst.
check "tierd:energy_joules_per_token:rate5m > 0" until_query 'tierd:energy_joules_per_token:rate5m' '$2 > 0'
check "tierd:bytes:rate5m{tier=ddr,source=tierd} > 0" \
	until_query 'tierd:bytes:rate5m{tier="ddr",source="tierd"}' '$2 > 0'
check "tierd:energy_watts:rate5m for ssd, ddr, hbm" \
	until_query 'count(tierd:energy_watts:rate5m > 0)' '$2 == 3'
check "tierd:cache_hit_ratio:rate5m between 0 and 1" \
	until_query 'tierd:cache_hit_ratio:rate5m' '$2 >= 0 && $2 <= 1'
query 'tierd:model_energy_joules_per_token:rate5m' 2>&1 | sed 's/^/# model J per token: /'

# The Grafana dashboard: the metrics its queries name are exported by this
# tierd (families that need an NVMe controller are checked in the VM suite,
# tests/vm/deb.sh, when this machine has none), and each query runs.
missing=""
for m in $(grep -o 'tierd_[a-z0-9_]*' "$DASH" | sort -u); do
	f=$m
	case $m in *_bucket | *_count | *_sum) grep -q "^# TYPE ${m%_*} histogram" "$tmp/m" && f=${m%_*} ;; esac
	grep -q "^# TYPE $f " "$tmp/m" && continue
	case $m in tierd_nvme_*) [ -e /sys/class/nvme ] || { echo "# $m: no NVMe controller here"; continue; } ;; esac
	missing="$missing $m"
done
check "every metric the Grafana dashboard names is exported by the live tierd${missing:+ (missing:$missing)}" [ -z "$missing" ]
python3 - "$DASH" >"$tmp/exprs" <<'PY'
import json, sys
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "expr" and isinstance(v, str):
                print(v.replace("$__rate_interval", "1m").replace("$instance", ".*"))
            walk(v)
    elif isinstance(o, list):
        for x in o:
            walk(x)
walk(json.load(open(sys.argv[1])))
PY
bad=0
while IFS= read -r e; do
	query "$e" >/dev/null 2>&1 || { echo "# query failed: $e"; bad=1; }
done <"$tmp/exprs"
check "every dashboard query ($(wc -l <"$tmp/exprs")) runs on prometheus" [ $bad = 0 ]
touch "$tmp/go"
[ $failed = 0 ]
