#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the real `tierctl plan`: the table, --json (parsed by python3), --svg
# (well-formed XML), `plan select` and its config snippet, what-if flags, and
# the errors of bad input; --trace with the shared routing trace (../shared
# beside the source tree: its absence is a failure).  TAP output.
set -u
builddir=${top_builddir:-.}
TIERCTL="$builddir/client/tierctl"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/plan-cli.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! command -v python3 >/dev/null 2>&1; then
	echo "1..0 # SKIP python3 is needed to parse the JSON and SVG outputs"
	exit 0
fi

n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/err" 2>/dev/null | head -20; }
check() {
	desc=$1
	shift
	if "$@"; then ok "$desc"; else notok "$desc"; fi
}
# expect_fail CODE NEEDLE DESC -- ARGS: exits with CODE and stderr says NEEDLE.
expect_fail() {
	code=$1 needle=$2 desc=$3
	shift 4
	"$TIERCTL" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -eq "$code" ] && grep -qF -- "$needle" "$tmp/err"; then
		ok "$desc"
	else
		echo "# exit $rc, wanted $code with \"$needle\"" >>"$tmp/err"
		notok "$desc"
	fi
}

echo "1..36"

# 1-2: the table.
"$TIERCTL" plan --model mixtral-8x7b --batch 1,32,1024 >"$tmp/table" 2>"$tmp/err"
check "plan prints a table" grep -q '^ *1024 ssd' "$tmp/table"
check "table shows the SSD/HBM ratio" grep -q 'SSD / HBM energy per token' "$tmp/table"

# 3-5: --json, parsed, with the fields the issue asks for; SSD > 5x HBM at batch 1.
"$TIERCTL" --json plan --model mixtral-8x7b --batch 1-1024 >"$tmp/json" 2>"$tmp/err"
check "--json is valid JSON" sh -c "python3 -m json.tool '$tmp/json' >/dev/null"
check "--json has energy, latency and breakdown per batch and placement" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
rs = d["results"]
assert len(rs) == 11 * 3, len(rs)
for r in rs:
    assert r["placement"] in ("hbm", "ddr", "ssd")
    assert r["energy_per_token_j"] > 0 and r["latency_per_token_s"] > 0
    assert abs(sum(r["breakdown_j"].values()) - r["energy_per_token_j"]) < 1e-9 * r["energy_per_token_j"]
' "$tmp/json"
check "SSD costs many times HBM at batch 1 and the gap narrows by 1024" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
e = {(r["batch"], r["placement"]): r["energy_per_token_j"] for r in d["results"]}
r1 = e[(1, "ssd")] / e[(1, "hbm")]
r1024 = e[(1024, "ssd")] / e[(1024, "hbm")]
assert r1 > 5 and r1024 < r1, (r1, r1024)
' "$tmp/json"

# 5a-5c: where the step's time goes: components that sum to the step, the
# expert-parallel imbalance, and the same columns in the table.
check "--json time_s sums to the step and expert_parallel is there" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["hardware"]["tp"] == 4 and d["hardware"]["nvlink_gbps"] > 0, d["hardware"]
for r in d["results"]:
    t = r["time_s"]
    assert set(t) == {"fc", "attention", "experts", "allreduce", "alltoall", "offload_wait"}, t
    assert abs(sum(t.values()) - r["latency_per_token_s"]) < 1e-9 * r["latency_per_token_s"], r
    assert t["allreduce"] > 0 and t["alltoall"] == 0, t   # one node, tp over all 4 GPUs
    ep = r["expert_parallel"]
    assert 1 <= ep["max_experts_per_gpu"] <= 2 + 1e-9 and ep["imbalance"] >= 1 - 1e-9, ep
    if r["placement"] == "hbm":
        assert t["offload_wait"] == 0, t
    if r["placement"] == "ssd" and r["batch"] == 1:
        assert t["offload_wait"] > t["experts"], t
' "$tmp/json"
"$TIERCTL" --json plan --model deepseek-r1 --batch 64 --placement hbm >"$tmp/json3" 2>"$tmp/err"
check "DeepSeek-R1 over 4 nodes dispatches over InfiniBand" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
assert r["time_s"]["alltoall"] > 0 and r["comm_bytes_per_gpu"] > 0, r
assert r["expert_parallel"]["max_experts_per_gpu"] > r["expert_parallel"]["mean_experts_per_gpu"], r
' "$tmp/json3"
check "the table shows the time components and the busiest GPU" sh -c "
grep -q 'fc   attn    exp     ar    a2a   wait' '$tmp/table' && grep -q 'ep-max' '$tmp/table'"

# 6: --json after the subcommand too, with a placement filter.
"$TIERCTL" plan --model deepseek-r1 --batch 8 --placement ssd --json >"$tmp/json2" 2>"$tmp/err"
check "--placement ssd --json lists only SSD" python3 -c '
import json, sys
rs = json.load(open(sys.argv[1]))["results"]
assert [r["placement"] for r in rs] == ["ssd"], rs
' "$tmp/json2"

# 7-8: --svg, well-formed, with a polyline per placement total.
"$TIERCTL" plan --model mixtral-8x7b --svg "$tmp/chart.svg" >/dev/null 2>"$tmp/err"
check "--svg writes well-formed XML" python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
' "$tmp/chart.svg"
check "--svg draws lines for the placements and components" python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
assert len(lines) >= 3 + 3 * 5, len(lines)
' "$tmp/chart.svg"

# 9: what-ifs: lower Flash energy lowers SSD energy; top-1 lowers it too.
j() { "$TIERCTL" --json plan --model mixtral-8x7b --batch 1 --placement ssd "$@" 2>"$tmp/err" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["energy_per_token_j"])'; }
e_base=$(j)
e_flash=$(j --flash-scale 0.1)
e_topk=$(j --top-k 1)
e_nvl4=$(j --hardware dgx-h100-nvl4)
check "--flash-scale 0.1 and --top-k 1 cost less, NVLink 4 costs more" python3 -c "
b, f, k, n = $e_base, $e_flash, $e_topk, $e_nvl4
assert f < b and k < b and n > b, (b, f, k, n)"

# 10: a config.json model.
cat >"$tmp/config.json" <<'EOF'
{"model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024,
 "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16,
 "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 50304,
 "torch_dtype": "bfloat16"}
EOF
"$TIERCTL" plan --model-config "$tmp/config.json" --batch 1,8 --gpus 1 >"$tmp/out" 2>"$tmp/err"
check "--model-config reads a config.json" grep -q 'top-8 of 64 experts' "$tmp/out"

# 11: a hardware file.
printf '[hardware]\nname = pcie\ngpus_per_node = 1\nlink_gbps = 48\nssd_gbps = 1.5\n' >"$tmp/hw.ini"
"$TIERCTL" plan --model mixtral-8x7b --hardware "$tmp/hw.ini" --batch 1 >"$tmp/out" 2>"$tmp/err"
check "--hardware FILE is used" grep -q 'on pcie: 1 node x 1 GPUs' "$tmp/out"

# 12-13: select: a feasible choice and a tierd.conf snippet.
"$TIERCTL" plan select --model mixtral-8x7b --hbm-gib 48 --ddr-gib 40 --batch 1,16,64 \
	>"$tmp/sel" 2>"$tmp/err"
check "select picks a placement" grep -q '<- chosen' "$tmp/sel"
check "select prints a [pool] and [model] snippet" sh -c \
	"grep -q '^\[pool\]' '$tmp/sel' && grep -q '^size = [0-9]*M' '$tmp/sel' && grep -q '^\[model mixtral-8x7b\]' '$tmp/sel'"

# tierd -t opens the model's checkpoint: point the placeholder path at one.
"$TIERCTL" demo-store "$tmp/ckpt" >/dev/null 2>&1
sed -n '/^# tierd.conf/,$p' "$tmp/sel" | sed "s|^path = .*|path = $tmp/ckpt|" >"$tmp/snippet.conf"
check "the snippet is a valid tierd.conf (tierd -t)" sh -c \
	"'$builddir/tierd/tierd' -t -c '$tmp/snippet.conf' >'$tmp/err' 2>&1"

# 15-21: bad input gives a clear error and exit status 2.
expect_fail 2 'unknown model "gpt-7"' "unknown model" -- plan --model gpt-7
printf '{"hidden_size": 4096,,}' >"$tmp/bad.json"
expect_fail 2 'malformed JSON' "malformed config.json" -- plan --model-config "$tmp/bad.json"
printf '{"hidden_size": 64, "num_hidden_layers": -2, "num_attention_heads": 2, "vocab_size": 8, "intermediate_size": 8}' >"$tmp/neg.json"
expect_fail 2 '"num_hidden_layers" must not be negative' "negative size in config.json" -- \
	plan --model-config "$tmp/neg.json"
expect_fail 2 'hbm_gbps' "negative hardware value" -- plan --model mixtral-8x7b --set hbm_gbps=-3
expect_fail 2 'cannot hold' "HBM too small" -- plan select --model mixtral-8x7b --hbm-gib 1
expect_fail 2 'no placement meets' "latency ceiling nobody meets" -- \
	plan select --model mixtral-8x7b --max-latency-ms 0.001
expect_fail 2 'top-k 9 exceeds' "top-k above the expert count" -- plan --model mixtral-8x7b --top-k 9

# 22: this machine: O_DIRECT reads of a file through the fetch engine, and a memcpy loop.
dd if=/dev/zero of="$tmp/disk.bin" bs=1M count=16 2>/dev/null
"$TIERCTL" plan --model mixtral-8x7b --batch 1 --hardware local --measure-file "$tmp/disk.bin" \
	--h2d-gbps 48 >"$tmp/out" 2>"$tmp/err"
# Read through the fetch engine, which falls back to the page cache (with a
# warning) where the file system has no O_DIRECT, as tierd itself does.
check "--hardware local measures disk and DDR" sh -c \
	"grep -q 'on local: 1 node x 1 GPUs' '$tmp/out' && grep -q 'disk read [0-9.]* GB/s' '$tmp/err'"

# 23: output that cannot be written is an error, not a silent success.
if [ -w /dev/full ]; then
	"$TIERCTL" plan --model mixtral-8x7b --batch 1,2,4,8 >/dev/full 2>"$tmp/err"
	rc=$?
	echo "# exit $rc" >>"$tmp/err"
	check "a table written to a full disk fails" sh -c \
		"[ $rc -eq 1 ] && grep -q 'writing the output: No space left on device' '$tmp/err'"
else
	n=$((n + 1)); echo "ok $n # SKIP no /dev/full"
fi

# 24: a config.json with a NUL byte is refused, not read up to the NUL.
printf '{}\000{"hidden_size": 1}' >"$tmp/nul.json"
expect_fail 2 'contains a NUL byte' "config.json with a NUL byte" -- plan --model-config "$tmp/nul.json"

# 28: tensor parallelism stays inside a node.
expect_fail 2 'tp 3 must divide the 8 GPUs' "tp that does not divide a node" -- \
	plan --model deepseek-r1 --set tp=3

# 29-36: --trace: routing measured in the shared trace, and select choosing
# the DDR pool and cache policy from the replay lab's hit rates.
trace="${TIERD_SHARED_DIR:-${top_srcdir:-..}/../shared}/traces/granite-3.0-1b-a400m.json"
echo "# $trace: missing" >"$tmp/err"
check "the shared routing trace is there (../shared beside the source tree)" test -r "$trace"
"$TIERCTL" plan --model granite-3.0-1b-a400m --trace "$trace" --batch 1,8,64 >"$tmp/tr" 2>"$tmp/err"
check "--trace prints measured against uniform routing" sh -c \
	"grep -q '^Routing measured in' '$tmp/tr' && grep -Eq '^ +8 \| +[0-9.]+ +28\.80 ' '$tmp/tr'"
"$TIERCTL" plan --model granite-3.0-1b-a400m --trace "$trace" --batch 1,8,64 --placement ssd --json \
	>"$tmp/tr.json" 2>"$tmp/err"
"$TIERCTL" plan --model granite-3.0-1b-a400m --batch 1,8,64 --placement ssd --json \
	>"$tmp/un.json" 2>>"$tmp/err"
check "--trace --json: fewer distinct experts than uniform at batch 8, used by the model" python3 -c "
import json, sys
t = json.load(open(sys.argv[1])); u = json.load(open(sys.argv[2]))
b = {x['batch']: x for x in t['routing']['by_batch']}
assert t['routing']['sequences'] == 2 and t['routing']['decode_rows'] == 128
assert b[1]['distinct_measured'] == 8 and b[1]['histogram'][8] == b[1]['samples']
assert b[8]['distinct_measured'] < b[8]['distinct_uniform'] and b[8]['distinct_ratio'] < 0.95
assert b[8]['busiest_gpu_measured'] <= b[8]['busiest_gpu_uniform'] <= 4
r = {x['batch']: x for x in t['results']}; q = {x['batch']: x for x in u['results']}
assert abs(r[8]['expert_parallel']['distinct_experts'] - b[8]['distinct_measured']) < 1e-9
assert r[8]['energy_per_token_j'] < q[8]['energy_per_token_j']
" "$tmp/tr.json" "$tmp/un.json"
expect_fail 2 'applies only to the model it was recorded from' "--trace of another model" -- \
	plan --model mixtral-8x7b --trace "$trace"
printf '{"model": "m", "num_layers": 1,' >"$tmp/bad-trace.json"
expect_fail 2 "$tmp/bad-trace.json:1:" "a malformed trace is refused with the reader's error" -- \
	plan --model granite-3.0-1b-a400m --trace "$tmp/bad-trace.json"

# A tighter latency ceiling needs fewer misses: a larger pool (NVMe at 20 GB/s).
sel_pool() {
	"$TIERCTL" plan select --model granite-3.0-1b-a400m --trace "$trace" --batch 8 --hbm-gib 1 \
		--policy lru,lfu --objective pool "$@" --json 2>>"$tmp/err" |
		python3 -c "import json, sys; print(json.load(sys.stdin)['chosen']['capacity_bytes']['ddr'])"
}
: >"$tmp/err"
p_none=$(sel_pool --set ssd_gbps=20) p_loose=$(sel_pool --set ssd_gbps=20 --max-latency-ms 50)
p_tight=$(sel_pool --set ssd_gbps=20 --max-latency-ms 5)
echo "# DDR pool bytes: no ceiling $p_none, 50 ms $p_loose, 5 ms $p_tight" >>"$tmp/err"
check "select --trace: a tighter latency budget picks a larger pool" python3 -c "
import sys; a, b, c = map(float, sys.argv[1:]); assert a < b < c, (a, b, c)" "$p_none" "$p_loose" "$p_tight"
: >"$tmp/err"
e_loose=$(sel_pool --max-energy-j 0.3) e_tight=$(sel_pool --max-energy-j 0.15)
echo "# DDR pool bytes: 0.3 J $e_loose, 0.15 J $e_tight" >>"$tmp/err"
check "select --trace: a tighter energy budget picks a larger pool" python3 -c "
import sys; a, b = map(float, sys.argv[1:]); assert a < b, (a, b)" "$e_loose" "$e_tight"

"$TIERCTL" plan select --model granite-3.0-1b-a400m --trace "$trace" --batch 8 --hbm-gib 1 \
	--policy lfu --max-energy-j 0.15 --objective pool >"$tmp/sel-tr" 2>"$tmp/err"
sed -n '/^# tierd.conf/,$p' "$tmp/sel-tr" | sed "s|^path = .*|path = $tmp/ckpt|" >"$tmp/snippet-tr.conf"
check "select --trace prints [pool] size and [cache] policy, and tierd -t accepts them" sh -c \
	"grep -q '^policy = lfu' '$tmp/snippet-tr.conf' && grep -q '^size = [0-9]*M' '$tmp/snippet-tr.conf' &&
	 '$builddir/tierd/tierd' -t -c '$tmp/snippet-tr.conf' >>'$tmp/err' 2>&1"
