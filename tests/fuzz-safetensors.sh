#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the libFuzzer target for the safetensors header parser with clang
# (ASan + UBSan) and runs it for a short while over the seed corpus.  TAP.
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${top_builddir:-.}
clang=${CLANG:-clang}
seconds=${FUZZ_SECONDS:-25}
bin=$builddir/tests/fuzz-safetensors
work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-safetensors.XXXXXX") || exit 99
trap 'rm -rf "$work"' EXIT

echo "1..2"
if ! command -v "$clang" >/dev/null 2>&1; then
	echo "ok 1 # SKIP no clang"
	echo "ok 2 # SKIP no clang"
	exit 0
fi
# shellcheck disable=SC2046 # pkg-config output is meant to split into words
if "$clang" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$builddir" -I"$srcdir/tierd" $(pkg-config --cflags json-c) \
	"$srcdir/tests/fuzz-safetensors.c" "$srcdir/tierd/safetensors.c" \
	$(pkg-config --libs json-c) -o "$bin" >"$work/build.log" 2>&1; then
	echo "ok 1 - build the fuzz target with $clang"
elif grep -q 'libclang_rt.fuzzer' "$work/build.log"; then
	echo "ok 1 # SKIP clang has no libFuzzer runtime (package libclang-rt-dev)"
	echo "ok 2 # SKIP no fuzz target"
	exit 0
else
	sed 's/^/# /' "$work/build.log"
	echo "not ok 1 - build the fuzz target with $clang"
	echo "not ok 2 # SKIP no fuzz target"
	exit 0
fi

# New inputs go to a scratch corpus: the source tree may be read-only (distcheck).
mkdir "$work/corpus"
if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-dict="$srcdir/tests/fuzz-safetensors.dict" -artifact_prefix="$work/" \
	"$work/corpus" "$srcdir/tests/corpus/safetensors" >"$work/run.log" 2>&1; then
	grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$work/run.log" | sed 's/^/# /'
	echo "ok 2 - fuzz the safetensors header parser for ${seconds}s"
else
	tail -n 60 "$work/run.log" | sed 's/^/# /'
	for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
		[ -f "$a" ] && cp "$a" "$builddir/tests/" && echo "# kept $builddir/tests/$(basename "$a")"
	done
	echo "not ok 2 - fuzz the safetensors header parser for ${seconds}s"
fi
