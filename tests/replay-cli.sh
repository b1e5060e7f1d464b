#!/bin/bash
# SPDX-License-Identifier: MIT
# tierctl replay from the command line: the --json object has exactly the
# issue's shape and the reference figures; a malformed or missing trace is
# refused naming the file; bad options are usage errors.  Reads the shared
# trace from ../shared beside the source tree (missing: a failure).
b=${top_builddir:-.}
TIERCTL=$b/client/tierctl
trace=${TIERD_SHARED_DIR:-${top_srcdir:-..}/../shared}/traces/granite-3.0-1b-a400m.json
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-replay.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/out" | tail -15; }

echo "1..9"

if "$TIERCTL" replay "$trace" --capacity 50% --policy lru,predictive --prefetch both --json >"$tmp/out" 2>&1 &&
   python3 - "$tmp/out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
top = {"trace", "capacity", "accesses", "references", "policies", "sequences"}
run = {"policy", "prefetch", "demand_misses", "hits", "prefetch_issued", "prefetch_used",
       "fetched_experts", "fetched_bytes"}
assert set(d) == top, set(d)
assert d["capacity"] == 384 and d["accesses"] == 24576
fore = d["references"].pop("foresight")
assert d["references"] == {"lru": 4459 + 3221, "min": 1978 + 1367}, d["references"]
# Foresight references: told the next 1, 2, 3 tokens; more foresight, fewer
# misses here, none below MIN; the sum of the sequences'.
assert [f["tokens"] for f in fore] == [1, 2, 3], fore
m = [f["misses"] for f in fore]
assert d["references"]["min"] < m[2] < m[1] < m[0] < d["references"]["lru"], m
assert [(p["policy"], p["prefetch"]) for p in d["policies"]] == \
    [("lru", False), ("lru", True), ("predictive", False), ("predictive", True)]
for p in d["policies"]:
    assert set(p) == run, set(p)
    assert p["hits"] + p["demand_misses"] == d["accesses"]
assert d["policies"][0]["demand_misses"] == d["references"]["lru"]
sfore = [s["references"].pop("foresight") for s in d["sequences"]]
assert [sum(f[i]["misses"] for f in sfore) for i in range(3)] == m, (sfore, m)
refs = {s["trace"].rsplit(":", 1)[1]: s["references"] for s in d["sequences"]}
assert refs == {"english_prose": {"lru": 4459, "min": 1978}, "code": {"lru": 3221, "min": 1367}}, refs
for s in d["sequences"]:
    assert set(s) == top - {"sequences"}
    for i, p in enumerate(s["policies"]):
        assert set(p) == run
# The sum is the sum of the sequences.
for i, p in enumerate(d["policies"]):
    assert p["demand_misses"] == sum(s["policies"][i]["demand_misses"] for s in d["sequences"])
PY
then ok "--json: the issue's shape, the reference LRU and MIN figures, sums of the sequences"
else notok "--json shape"; fi

if "$TIERCTL" replay "$trace" --capacity 192 --policy lru --prefetch off >"$tmp/out" 2>&1 &&
   grep -q "english_prose: 12288 accesses, capacity 192 slots of 768 keys" "$tmp/out" &&
   grep -q "LRU 6590 misses (1.45x MIN), MIN 4547 misses" "$tmp/out" &&
   grep -q "LRU 7949 misses (1.68x MIN), MIN 4724 misses" "$tmp/out"; then
	ok "text: 25% as 192 slots, references and ratios to MIN"
else notok "text output"; fi

# --told: the policies told the next token exactly, evictions alone, between
# MIN and themselves untold; the JSON says what they were told.
if "$TIERCTL" replay "$trace" --policy predictive --told 1 --foresight none --json >"$tmp/out" 2>&1 &&
   "$TIERCTL" replay "$trace" --policy predictive --prefetch off --foresight none --json >"$tmp/un" 2>>"$tmp/out" &&
   python3 - "$tmp/out" "$tmp/un" <<'PY'
import json, sys
d, u = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert d["told_tokens"] == 1 and "told_tokens" not in u
assert [(p["policy"], p["prefetch"]) for p in d["policies"]] == [("predictive", False)]
told, untold = d["policies"][0]["demand_misses"], u["policies"][0]["demand_misses"]
assert d["references"]["min"] < told < untold, (told, untold)
assert d["references"]["foresight"] == []
PY
then ok "--told 1: the policy told the next token, between MIN and itself untold"
else notok "--told"; fi

# --concurrent: both prompts at once through one cache, taking turns by layer.
if "$TIERCTL" replay "$trace" --concurrent --policy lru,predictive --prefetch off --foresight 1 --json >"$tmp/out" 2>&1 &&
   python3 - "$tmp/out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert "sequences" not in d and d["accesses"] == 24576, d
assert d["references"]["lru"] == d["policies"][0]["demand_misses"]
lru, mn = d["references"]["lru"], d["references"]["min"]
pred = d["policies"][1]["demand_misses"]
# One budget for both: MIN of the merged stream, above the two run alone.
assert mn > 1978 + 1367, mn
assert mn < d["references"]["foresight"][0]["misses"] < lru
assert mn < pred < lru, (mn, pred, lru)
PY
then ok "--concurrent: the sequences at once through one cache, MIN of the merged stream"
else notok "--concurrent"; fi

# --warm: each prompt after the predictor learnt the other; the cache still
# starts cold (LRU, which ranks without the predictor, and the references are
# as cold), the predictive policy's figures are its own.
if "$TIERCTL" replay "$trace" --warm --policy lru,predictive --prefetch off --foresight none --json >"$tmp/out" 2>&1 &&
   "$TIERCTL" replay "$trace" --policy lru,predictive --prefetch off --foresight none --json >"$tmp/un" 2>>"$tmp/out" &&
   python3 - "$tmp/out" "$tmp/un" <<'PY'
import json, sys
w, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert w["references"] == c["references"], (w["references"], c["references"])
assert w["policies"][0] == c["policies"][0]
for s in w["sequences"]:
    p = s["policies"][1]
    assert p["policy"] == "predictive"
    assert s["references"]["min"] <= p["demand_misses"] < s["references"]["lru"], p
PY
then ok "--warm: each sequence after the others were learnt, the cache cold"
else notok "--warm"; fi

printf '{"num_layers": 2, "num_experts": 4, "top_k": 2,\n "prompts": {"p": {"prompt_len": 0, "prefill": [],\n  "decode": [[[0, 1], [2, 7]]]}}}\n' >"$tmp/bad.json"
if ! "$TIERCTL" replay "$tmp/bad.json" >"$tmp/out" 2>&1 && grep -q "$tmp/bad.json" "$tmp/out" &&
   grep -q "7" "$tmp/out"; then
	ok "a malformed trace is refused naming the file and the bad value"
else notok "malformed trace"; fi

if ! "$TIERCTL" replay "$tmp/none.json" >"$tmp/out" 2>&1 && grep -q "$tmp/none.json" "$tmp/out"; then
	ok "a missing trace is refused naming it"
else notok "missing trace"; fi

r1=0; "$TIERCTL" replay "$trace" --policy belady >"$tmp/out" 2>&1 || r1=$?
r2=0; "$TIERCTL" replay "$trace" --capacity 7x >>"$tmp/out" 2>&1 || r2=$?
r3=0; "$TIERCTL" replay synthetic:experts=4,top_k=8 >>"$tmp/out" 2>&1 || r3=$?
r4=0; "$TIERCTL" replay "$trace" --foresight 1,,2 >>"$tmp/out" 2>&1 || r4=$?
r5=0; "$TIERCTL" replay "$trace" --foresight 0 >>"$tmp/out" 2>&1 || r5=$?
r6=0; "$TIERCTL" replay "$trace" --told 1 --prefetch on >>"$tmp/out" 2>&1 || r6=$?
r7=0; "$TIERCTL" replay "$trace" --warm --concurrent >>"$tmp/out" 2>&1 || r7=$?
r8=0; "$TIERCTL" replay synthetic:sequences=1 --warm >>"$tmp/out" 2>&1 || r8=$?
if [ "$r1" = 2 ] && [ "$r2" = 2 ] && [ "$r3" != 0 ] && [ "$r4" = 2 ] && [ "$r5" = 2 ] &&
   [ "$r6" = 2 ] && grep -q -- "--told measures evictions alone" "$tmp/out" &&
   [ "$r7" = 2 ] && [ "$r8" = 2 ] && [ "$(grep -c -- "--warm learns" "$tmp/out")" = 2 ] &&
   grep -q '"belady": unknown' "$tmp/out" && grep -q "top_k 8 of 4 experts" "$tmp/out" &&
   grep -q -- '--foresight "1,,2"' "$tmp/out"; then
	ok "unknown policy, bad capacity, impossible synthetic shape, bad foresight: refused"
else notok "option errors ($r1 $r2 $r3 $r4 $r5 $r6 $r7 $r8)"; fi

# tierd's own format replays the same way: the shared trace converted to a
# tierd-trace-v1 file gives the same figures, policy for policy.
strip() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("trace"); [s.pop("trace") for s in d["sequences"]]; print(json.dumps(d, sort_keys=True))' "$1"; }
if "$TIERCTL" trace convert "$trace" "$tmp/g.trace" >"$tmp/out" 2>&1 &&
   "$TIERCTL" replay "$trace" --policy lru,activation,predictive --json >"$tmp/a.json" 2>>"$tmp/out" &&
   "$TIERCTL" replay "$tmp/g.trace" --policy lru,activation,predictive --json >"$tmp/b.json" 2>>"$tmp/out" &&
   [ "$(strip "$tmp/a.json")" = "$(strip "$tmp/b.json")" ]; then
	ok "a tierd-trace-v1 recording of the shared trace replays to the same figures"
else notok "recording vs JSON replay"; fi

[ "$failed" = 0 ]
