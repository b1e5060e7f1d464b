#!/bin/sh
# Metrics exposition: promtool accepts it (no output), the HTTP endpoint
# serves the same text on 127.0.0.1, and the textfile is written atomically.
# Prints TAP.
set -u
b=${top_builddir:-.}
dump="$b/tests/metrics-dump"
tmp=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null; rm -rf "$tmp"' EXIT
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
echo 1..8
# Debian's interpreter: python3-prometheus-client (contrib/install-deps.sh) is for it.
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=${PYTHON:-python3}; fi

"$dump" >"$tmp/m.txt" && ok "render synthetic snapshot" || notok "render synthetic snapshot"

if ! command -v promtool >/dev/null; then
	skip "promtool not installed (package prometheus)"
else
	out=$(promtool check metrics <"$tmp/m.txt" 2>&1)
	if [ -z "$out" ]; then ok "promtool check metrics: no complaints"
	else echo "$out" | sed 's/^/# /'; notok "promtool check metrics: no complaints"; fi
fi

# Every family the issue asks for is there.
missing=""
for m in tierd_bytes_total tierd_energy_joules_total tierd_nvme_power_state_seconds_total \
	tierd_cache_hits_total tierd_cache_misses_total tierd_cache_evictions_total \
	tierd_cache_eviction_age_seconds_bucket \
	tierd_fetch_duration_seconds_bucket tierd_tokens_total tierd_model_energy_joules_total \
	tierd_client_energy_joules_total tierd_device_busy_seconds_total \
	tierd_model_stale tierd_checkpoint_changes_total tierd_model_reloads_total; do
	grep -q "^$m[{ ]" "$tmp/m.txt" || missing="$missing $m"
done
grep -q 'source="smart"' "$tmp/m.txt" || missing="$missing smart-bytes"
grep -q '^# HELP tierd_nvme_power_state_seconds_total .*INFERRED' "$tmp/m.txt" || missing="$missing inferred-help"
[ -z "$missing" ] && ok "all families present" || { echo "# missing:$missing"; notok "all families present"; }

# The JSON rendering (what tierctl reads) holds the same samples as the
# text, read back with the Prometheus project's own Python parser, label
# escapes included (a model named a,tier="ssd"\x).
if "$dump" -j >"$tmp/m.json" && "$PY" - "$tmp/m.txt" "$tmp/m.json" <<'PY'
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families

def key(name, labels):
    return (name, tuple(sorted(labels.items())))

text = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        text[key(s.name, s.labels)] = s.value
js = {}
for fam in json.load(open(sys.argv[2]))["families"]:
    for s in fam["samples"]:
        k = key(s["name"], s["labels"])
        assert k not in js, "duplicate sample %r" % (k,)
        js[k] = s["value"]
assert set(text) == set(js), "only in text: %s; only in JSON: %s" % (
    sorted(set(text) - set(js))[:5], sorted(set(js) - set(text))[:5])
for k, v in text.items():
    assert math.isclose(v, js[k], rel_tol=1e-8), "%r: text %r, JSON %r" % (k, v, js[k])
weird = [k for k in js if ("model", 'a,tier="ssd"\\x') in k[1]]
assert {"tierd_model_stale", "tierd_checkpoint_changes_total", "tierd_model_reloads_total"} <= {k[0] for k in weird}, weird
print("# %d samples equal" % len(js))
PY
then ok "JSON rendering: the same samples as the text"
else notok "JSON rendering: the same samples as the text"; fi

# HTTP on an ephemeral loopback port.
if ! command -v curl >/dev/null; then
	skip "curl not installed"
else
	mkfifo "$tmp/in"
	"$dump" -s <"$tmp/in" >"$tmp/port" &
	pid=$!
	exec 3>"$tmp/in"
	for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s "$tmp/port" ] && break; sleep 0.2; done
	port=$(cat "$tmp/port")
	if [ -n "$port" ] && curl -fsS "http://127.0.0.1:$port/metrics" -D "$tmp/h" -o "$tmp/http.txt" &&
	   cmp -s "$tmp/http.txt" "$tmp/m.txt" && grep -qi '^content-type: text/plain; version=0.0.4' "$tmp/h"; then
		ok "HTTP endpoint serves the same text (port $port)"
	else
		notok "HTTP endpoint serves the same text"
	fi
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")
	[ "$code" = 404 ] && ok "other paths: 404" || notok "other paths: 404 (got $code)"
	exec 3>&-
	wait $pid
fi

# Textfile: complete file, no temporary left behind.
if "$dump" -t "$tmp/tierd.prom" && cmp -s "$tmp/tierd.prom" "$tmp/m.txt" && [ ! -e "$tmp/tierd.prom.tmp" ]; then
	ok "textfile written atomically"
else
	notok "textfile written atomically"
fi

# Live metrics from this machine (probes as root) pass promtool too.
if ! command -v promtool >/dev/null; then
	skip "promtool not installed"
else
	if "$b/client/tierctl" -c /dev/null metrics --local -i 0.2 >"$tmp/live.txt" 2>"$tmp/live.err" &&
	   [ -z "$(promtool check metrics <"$tmp/live.txt" 2>&1)" ]; then
		ok "tierctl metrics --local: promtool clean ($(grep -c '^tierd_' "$tmp/live.txt") samples)"
	else
		sed 's/^/# /' "$tmp/live.err"
		notok "tierctl metrics --local: promtool clean"
	fi
fi
