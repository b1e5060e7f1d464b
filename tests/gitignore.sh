#!/bin/bash
# SPDX-License-Identifier: MIT
# .gitignore keeps sources, headers and scripts named like the test
# programs (tests/test-*.h, tests/fuzz-*.py...) and ignores only what a
# build in the source tree makes: the programs, their logs, objects.  Only
# in a git checkout (a release tarball has no .gitignore).  TAP output.
set -u
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
if ! command -v git >/dev/null || [ ! -f "$src/.gitignore" ] ||
	! git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	echo "1..0 # SKIP not a git checkout"
	exit 0
fi
kept=(tests/test-x.c tests/test-x.h tests/test-x.sh tests/test-x.py tests/fuzz-x.c tests/fuzz-x.h
      tests/fuzz-x.sh tests/fuzz-x.dict)
ignored=(tests/test-x tests/fuzz-x tests/test-x.log tests/test-x.trs tests/test-x.o tests/fuzz-x.log)
echo "1..$((${#kept[@]} + ${#ignored[@]}))"
n=0
failed=0
# --no-index: the patterns alone, whether or not such a file is tracked.
for f in "${kept[@]}"; do
	n=$((n + 1))
	if why=$(git -C "$src" check-ignore --no-index -v "$f") && [[ $why != *:\!* ]]; then
		failed=$((failed + 1))
		echo "not ok $n - $f is kept (ignored by ${why%%	*})"
	else
		echo "ok $n - $f is kept"
	fi
done
for f in "${ignored[@]}"; do
	n=$((n + 1))
	if git -C "$src" check-ignore --no-index -q "$f"; then
		echo "ok $n - $f is ignored"
	else
		failed=$((failed + 1))
		echo "not ok $n - $f is ignored"
	fi
done
[ "$failed" -eq 0 ]
