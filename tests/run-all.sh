#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine, as root:
#   installs the packages, builds with ASan+UBSan and -Werror, runs every test
#   (make check), the static analyzer (make analyze), checks the tarball
#   (make distcheck), and prints the totals.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./contrib/install-deps.sh
./autogen.sh >/dev/null

build="$top/build-check"
rm -rf "$build"
mkdir -p "$build"
cd "$build"
"$top/configure" --enable-werror --enable-sanitizers --enable-fuzz -q
make -j"$(nproc)" >/dev/null

status=0
make -j"$(nproc)" check || status=1
[ -f test-suite.log ] && grep -E '^(FAIL|ERROR)' test-suite.log || true
# Individual test cases, counted from the TAP drivers' .trs files.
count() { find . -name '*.trs' -exec cat {} + 2>/dev/null | grep -cE "^:test-result: ($1)" || true; }
pass=$(count 'PASS|XFAIL')
fail=$(count 'FAIL|XPASS|ERROR')
skip=$(count 'SKIP')

# clang's static analyzer finds nothing.
if make analyze >analyze.out 2>&1; then
	pass=$((pass + 1))
	echo "PASS: make analyze"
else
	fail=$((fail + 1))
	grep -E 'error:|warning:' analyze.out | head -40
	echo "FAIL: make analyze"
fi

# The tarball builds and passes out of tree.
if [ "${TIERD_SKIP_DISTCHECK:-0}" != 1 ]; then
	if make distcheck >distcheck.out 2>&1; then
		pass=$((pass + 1))
		echo "PASS: make distcheck"
	else
		fail=$((fail + 1))
		tail -40 distcheck.out
		echo "FAIL: make distcheck"
	fi
fi

[ "$fail" -eq 0 ] || status=1
echo "$pass passed, $fail failed, $skip skipped"
exit $status
