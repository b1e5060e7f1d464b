#!/bin/sh
# tierctl's engine commands on a small demo checkpoint: demo, fetch, bench fetch.
# TAP output.
set -u
tierctl="${top_builddir:-.}/client/tierctl"
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/engine-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/out"; }
check() { # check "what" command...
	what=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then ok "$what"; else nok "$what"; fi
}
fails_with() { # fails_with STATUS "what" command...
	want=$1 what=$2
	shift 2
	"$@" >"$tmp/out" 2>&1
	st=$?
	if [ "$st" -eq "$want" ]; then ok "$what"; else echo "# exit status $st, want $want"; nok "$what"; fi
}

echo "1..14"
"$tierctl" demo-store "$tmp/ck" --layers 4 --experts 6 --hidden 200 --ffn 301 --shards 2 >"$tmp/out" 2>&1 ||
	{ cat "$tmp/out"; echo "Bail out! demo-store failed"; exit 1; }

check "demo fetches and verifies three layers" "$tierctl" demo "$tmp/ck"
grep -q "^layer 2: 6 experts acquired" "$tmp/out" && grep -q "6 hits from the DDR pool" "$tmp/out" &&
	grep -q "dynamic energy" "$tmp/out" && ok "demo prints layers, hits and energy" || nok "demo prints layers, hits and energy"
check "demo --layers 4" "$tierctl" demo "$tmp/ck" --layers 4
grep -q "24 experts fetched in 4 layers" "$tmp/out" && ok "demo counts every expert" || nok "demo counts every expert"
check "fetch one expert and verify it" "$tierctl" fetch "$tmp/ck" 3 5 --verify
grep -q "every byte matches" "$tmp/out" && ok "fetch says it verified" || nok "fetch says it verified"
fails_with 1 "fetch of an expert that does not exist fails" "$tierctl" fetch "$tmp/ck" 9 0
if "$tierctl" bench fetch "$tmp/ck" --runs 1 --verify --json >"$tmp/json" 2>"$tmp/out"; then
	ok "bench fetch --json"
else
	nok "bench fetch --json"
fi
python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["experts"] == 24 and j["bytes"] >= j["expert_bytes"] > 0 and j["gbps"] > 0, j
if "fio" in j:
    assert j["fio"]["bytes"] > 0 and j["ratio"] > 0, j
    # fio replays the engine'"'"'s own reads: the same bytes, less at most the
    # part of a sector past the end of a file that only the engine reads.
    assert 0 <= j["bytes"] - j["fio"]["bytes"] < 512 * 4 and j["fio"]["reads"] > 0, j
elif sys.argv[2] == "yes":
    raise SystemExit("fio is installed but the bench made no comparison")
' "$tmp/json" "$(command -v fio >/dev/null && echo yes || echo no)" 2>"$tmp/err" && ok "bench JSON has bytes, GB/s (and fio's ratio, same bytes)" || { cat "$tmp/json" "$tmp/err" >"$tmp/out"; nok "bench JSON has bytes, GB/s (and fio's ratio, same bytes)"; }
fails_with 2 "bench without 'fetch' is a usage error" "$tierctl" bench "$tmp/ck"
fails_with 2 "bench --depth 0 is refused, not taken for the default" "$tierctl" bench fetch "$tmp/ck" --depth 0 --no-fio
fails_with 1 "demo of a missing checkpoint fails" "$tierctl" demo "$tmp/nonexistent"

# A flipped byte inside an expert tensor must be caught, never served as good.
shard=$(ls "$tmp/ck"/*.safetensors | head -1)
size=$(stat -c %s "$shard")
printf '\377' | dd of="$shard" bs=1 seek=$((size - 100)) conv=notrunc status=none
printf '\000' | dd of="$shard" bs=1 seek=$((size - 101)) conv=notrunc status=none
fails_with 1 "demo notices a corrupted expert" "$tierctl" demo "$tmp/ck" --layers 4
grep -q "bytes differ from the demo-store contents" "$tmp/out" && ok "and says which expert differs" ||
	nok "and says which expert differs"
exit $((fails > 0))
