#!/bin/sh
# SPDX-License-Identifier: MIT
# contrib/prometheus: the rules pass `promtool check rules`, their unit tests
# pass `promtool test rules`, and the example configuration passes
# `promtool check config` (its rule file path swapped for this tree's).
# Prints TAP.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
d=$top_srcdir/contrib/prometheus
command -v promtool >/dev/null 2>&1 || { echo "1..0 # SKIP promtool not installed (package prometheus)"; exit 0; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-promrules.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
run() {
	what=$1
	shift
	n=$((n + 1))
	if "$@" >"$tmp/out" 2>&1; then echo "ok $n - $what"; else
		failed=$((failed + 1)); echo "not ok $n - $what"; sed 's/^/# /' "$tmp/out"; fi
}
echo "1..3"
run "promtool check rules tierd-rules.yml" promtool check rules "$d/tierd-rules.yml"
# promtool test rules names rule files relative to the test file.
cp "$d/tierd-rules.yml" "$d/tierd-rules.test.yml" "$tmp/"
run "promtool test rules tierd-rules.test.yml" promtool test rules "$tmp/tierd-rules.test.yml"
sed "s|/etc/prometheus/tierd-rules.yml|$tmp/tierd-rules.yml|" "$d/prometheus.yml" >"$tmp/prometheus.yml"
run "promtool check config prometheus.yml" promtool check config "$tmp/prometheus.yml"
[ $failed = 0 ]
