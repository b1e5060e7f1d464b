# SPDX-License-Identifier: MIT
# Sourced by tests/fuzz-*.sh: builds a libFuzzer target with clang (ASan +
# UBSan) and runs it for a while, printing TAP.
#
#   fuzz_run NAME WHAT SECONDS "CLANG ARGS" [FUZZER ARGS...]
#
# NAME is the target (tests/NAME.c is its entry point), WHAT says what is
# fuzzed, CLANG ARGS are the sources and flags beyond the entry point (split
# into words), FUZZER ARGS go to the target after the scratch corpus.
# Crashing inputs are kept in the build's tests/ directory.
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${top_builddir:-.}

fuzz_run() {
	name=$1 what=$2 seconds=$3 cargs=$4
	shift 4
	clang=${CLANG:-clang}
	bin=$builddir/tests/$name
	work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX") || exit 99
	trap 'rm -rf "$work"' EXIT

	echo "1..2"
	if ! command -v "$clang" >/dev/null 2>&1; then
		echo "ok 1 # SKIP no clang"
		echo "ok 2 # SKIP no clang"
		return 0
	fi
	# shellcheck disable=SC2086 # cargs is meant to split into words
	if "$clang" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I"$builddir" -I"$srcdir/tierd/proto" -I"$srcdir/tierd/store" -I"$srcdir/tierd/daemon" -I"$srcdir/client" "$srcdir/tests/$name.c" $cargs \
		-o "$bin" >"$work/build.log" 2>&1; then
		echo "ok 1 - build the $what fuzz target with $clang"
	elif grep -q 'libclang_rt.fuzzer' "$work/build.log"; then
		echo "ok 1 # SKIP clang has no libFuzzer runtime (package libclang-rt-dev)"
		echo "ok 2 # SKIP no fuzz target"
		return 0
	else
		sed 's/^/# /' "$work/build.log"
		echo "not ok 1 - build the $what fuzz target with $clang"
		echo "not ok 2 # SKIP no fuzz target"
		return 0
	fi

	# New inputs go to a scratch corpus: the source tree may be read-only (distcheck).
	mkdir "$work/corpus"
	if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$work/" "$work/corpus" "$@" >"$work/run.log" 2>&1; then
		grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$work/run.log" | sed 's/^/# /'
		echo "ok 2 - fuzz the $what for ${seconds}s"
	else
		tail -n 60 "$work/run.log" | sed 's/^/# /'
		for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
			[ -f "$a" ] && cp "$a" "$builddir/tests/" && echo "# kept $builddir/tests/$(basename "$a")"
		done
		echo "not ok 2 - fuzz the $what for ${seconds}s"
	fi
}
