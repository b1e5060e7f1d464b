#!/bin/bash
# SPDX-License-Identifier: MIT
# Placement in the running daemon: with [cache] prefetch, a client that only
# acquires layer by layer gets the coming layers fetched ahead by the daemon
# (a deterministic chain it learns), every byte right; operators see hit
# rate, prefetch precision and recall, wasted bytes per model in /metrics and
# tierctl stats.  A bad [cache] setting is refused naming the key.
. "${top_srcdir:-..}/tests/service-lib.sh"
svc_init placement

echo "1..4"

if ! "$TIERCTL" demo-store "$tmp/demo" --layers 4 --experts 16 --hidden 64 --ffn 128 >/dev/null; then
	echo "Bail out! cannot write the demo checkpoint"
	exit 1
fi
# 64 experts of 52 KiB in a 2 MiB pool: the chain cannot all stay resident.
cat >"$conf" <<EOC
[daemon]
socket = $sock
socket_mode = 0666
state_dir = $tmp
[pool]
size = 2M
hugepages = no
lock = no
[cache]
policy = predictive
prefetch = yes
[model demo]
path = $tmp/demo
allow_uid = 0
EOC

if "$TIERD" -c "$conf" -o cache.policy=belady -t >"$tmp/out" 2>&1 ||
   ! grep -q "policy" "$tmp/out" || ! grep -q "predictive" "$tmp/out"; then
	notok "[cache] policy = belady refused, naming the key and the known policies"
else
	ok "[cache] policy = belady refused, naming the key and the known policies"
fi

if ! start_daemon; then notok "daemon starts"; echo "Bail out!"; exit 1; fi

check "a client acquiring layer by layer, 48 tokens of a chain, every byte verified" \
	"$CL" "$sock" chain 4 16 48

metric() { tierctl metrics | awk -v k="$1{model=\"demo\"}" '$1 == k { print $2 }'; }
ahead=$(metric tierd_model_prefetch_ahead_total)
used=$(metric tierd_model_prefetch_used_total)
prec=$(metric tierd_model_prefetch_precision)
if [ "${ahead:-0}" -gt 0 ] && [ "${used:-0}" -gt 0 ] &&
   awk -v p="$prec" 'BEGIN { exit !(p > 0 && p <= 1) }'; then
	ok "the daemon prefetched ahead ($ahead) and acquires used it ($used, precision $prec)"
else
	notok "daemon prefetch: ahead=$ahead used=$used precision=$prec"
fi

if tierctl stats >"$tmp/out" 2>&1 && grep -q "placement by model" "$tmp/out" &&
   grep -q "demo .*prefetch_recall" "$tmp/out" && grep -q "demo .*cache_hit_ratio" "$tmp/out" &&
   grep -q "demo .*prefetch_wasted_bytes_total" "$tmp/out" &&
   tierctl stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["placement"]["demo"]; sys.exit(0 if p["prefetch_used_total"] > 0 and 0 < p["prefetch_precision"] <= 1 else 1)'; then
	ok "tierctl stats shows placement per model (text and --json)"
else
	notok "tierctl stats placement"
fi

[ "$failed" = 0 ]
