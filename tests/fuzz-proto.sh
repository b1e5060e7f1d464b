#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the libFuzzer target for the wire protocol decoder with clang
# (ASan + UBSan) and runs it briefly.  TAP.
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${top_builddir:-.}
clang=${CLANG:-clang}
seconds=${FUZZ_SECONDS:-20}
bin=$builddir/tests/fuzz-proto
work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-proto.XXXXXX") || exit 99
trap 'rm -rf "$work"' EXIT

echo "1..2"
if ! command -v "$clang" >/dev/null 2>&1; then
	echo "ok 1 # SKIP no clang"
	echo "ok 2 # SKIP no clang"
	exit 0
fi
if "$clang" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$builddir" -I"$srcdir/tierd" -I"$srcdir/client" \
	"$srcdir/tests/fuzz-proto.c" "$srcdir/tierd/proto.c" -lm -o "$bin" >"$work/build.log" 2>&1; then
	echo "ok 1 - build the protocol fuzz target with $clang"
elif grep -q 'libclang_rt.fuzzer' "$work/build.log"; then
	echo "ok 1 # SKIP clang has no libFuzzer runtime (package libclang-rt-dev)"
	echo "ok 2 # SKIP no fuzz target"
	exit 0
else
	sed 's/^/# /' "$work/build.log"
	echo "not ok 1 - build the protocol fuzz target with $clang"
	echo "not ok 2 # SKIP no fuzz target"
	exit 0
fi

mkdir "$work/corpus"
if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-max_len=4096 -artifact_prefix="$work/" "$work/corpus" >"$work/run.log" 2>&1; then
	grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$work/run.log" | sed 's/^/# /'
	echo "ok 2 - fuzz the protocol decoder for ${seconds}s"
else
	tail -n 60 "$work/run.log" | sed 's/^/# /'
	for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
		[ -f "$a" ] && cp "$a" "$builddir/tests/" && echo "# kept $builddir/tests/$(basename "$a")"
	done
	echo "not ok 2 - fuzz the protocol decoder for ${seconds}s"
fi
