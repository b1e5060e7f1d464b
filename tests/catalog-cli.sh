#!/bin/sh
# SPDX-License-Identifier: MIT
# tierctl demo-store and tierctl check, end to end: what they print, and that
# a bad checkpoint fails with a message naming the file and the fault.  TAP.
builddir=${top_builddir:-.}
tierctl=$builddir/client/tierctl
dir=$(mktemp -d "${TMPDIR:-/tmp}/catalog-cli.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
n=0
fails=0

check() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fails=$((fails + 1))
		[ -f "$dir/out" ] && sed 's/^/# /' "$dir/out"
	fi
}

# expect STATUS PATTERN DESCRIPTION -- COMMAND...: exit status and output pattern
expect() {
	want=$1 pattern=$2 what=$3
	shift 4
	"$@" >"$dir/out" 2>&1
	got=$?
	if { [ "$want" = 0 ] && [ "$got" = 0 ]; } || { [ "$want" != 0 ] && [ "$got" != 0 ]; }; then
		grep -q -e "$pattern" "$dir/out"
		check $? "$what"
	else
		echo "# exit status $got"
		check 1 "$what"
	fi
}

echo "1..12"
expect 0 "mixtral naming, 2 layers x 4 experts" "demo-store writes a tiny sharded checkpoint" -- \
	"$tierctl" demo-store "$dir/mixtral"
expect 0 "preset: *mixtral" "check detects the mixtral preset" -- "$tierctl" check "$dir/mixtral"
expect 0 "experts per layer: 4" "check prints experts per layer" -- "$tierctl" check "$dir/mixtral"
expect 0 '"experts_per_layer": 4' "check --json" -- "$tierctl" --json check "$dir/mixtral"
"$tierctl" --json check "$dir/mixtral" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["top_k"] == 2 and d["layers"] == 2 and len(d["files"]) == 2' >/dev/null 2>&1
check $? "check --json is valid JSON with top_k, layers and files"
expect 0 "preset: *qwen-moe" "qwen naming with FP8 scales, single file" -- \
	sh -c "'$tierctl' demo-store '$dir/qwen' --preset qwen --dtype f8_e4m3 --hidden 256 --ffn 128 --shards 1 --experts 3 --top-k 3 && '$tierctl' check '$dir/qwen'"
expect 0 "preset: *llama4" "fused naming" -- \
	sh -c "'$tierctl' demo-store '$dir/fused' --preset fused --layers 3 --shards 3 && '$tierctl' check '$dir/fused'"
expect 1 "preset mixtral matches no tensor" "an explicit preset that does not fit fails" -- \
	"$tierctl" check "$dir/fused" --preset mixtral
printf '[preset mine]\ntensor = model.layers.{L}.experts.*\n' >"$dir/t.conf"
expect 1 "t.conf:2: \[preset mine\] tensor = .*needs one {L}, one {E}" "a bad configured preset names file and line" -- \
	"$tierctl" -c "$dir/t.conf" check "$dir/fused"
# Corrupt one shard's header length: the fault names the file.
printf '\377\377\377\377' | dd of="$dir/mixtral/model-00002-of-00002.safetensors" bs=1 seek=4 conv=notrunc 2>/dev/null
expect 1 "model-00002-of-00002.safetensors: header length .* exceeds the limit" "a corrupt shard fails check" -- \
	"$tierctl" check "$dir/mixtral"
expect 2 "unknown dtype .bf17." "demo-store rejects a bad dtype" -- "$tierctl" demo-store "$dir/x" --dtype bf17
expect 1 "need layers" "demo-store rejects more shards than layers" -- "$tierctl" demo-store "$dir/x" --shards 9
exit 0
