#!/bin/bash
# SPDX-License-Identifier: MIT
# Model-checks the no-system-call acquire protocol (tests/fastpath.pml) with
# spin: no violation in the protocol as built, and one found in each
# deliberately broken ordering (so that the check itself is known to bite).
# TAP output.
set -u
src=${top_srcdir:-.}
if ! command -v spin >/dev/null; then
	echo "1..0 # SKIP spin is not installed (contrib/install-deps.sh installs it)"
	exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-pml.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0

# Runs the model with the given -D flags; prints pan's error count.
check_model() {
	rm -f "$tmp"/pan* "$tmp"/*.trail
	(cd "$tmp" && spin "$@" -a "$src/tests/fastpath.pml" >spin.out 2>&1 &&
		${CC:-cc} -w -O2 -o pan pan.c >cc.out 2>&1 &&
		./pan -a -n >pan.out 2>&1) || { echo "error"; return; }
	sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$tmp/pan.out"
}

result() {
	n=$((n + 1))
	if [ "$1" = ok ]; then
		echo "ok $n - $2"
	else
		failed=$((failed + 1))
		echo "not ok $n - $2"
		sed 's/^/# /' "$tmp"/pan.out "$tmp"/spin.out 2>/dev/null | tail -20
	fi
}

echo "1..4"
e=$(check_model)
[ "$e" = 0 ] && result ok "the protocol: no violation (evict vs pin, slot reuse, client death)" ||
	result bad "the protocol: errors: $e"
e=$(check_model -DBROKEN_DAEMON)
[ -n "$e" ] && [ "$e" != error ] && [ "$e" -gt 0 ] && result ok "caught: the daemon scans pins before it unpublishes" ||
	result bad "a daemon scanning before unpublishing went unnoticed ($e)"
e=$(check_model -DBROKEN_CLIENT)
[ -n "$e" ] && [ "$e" != error ] && [ "$e" -gt 0 ] && result ok "caught: the client re-reads the generation before it pins" ||
	result bad "a client checking before pinning went unnoticed ($e)"
e=$(check_model -DNO_GENERATION)
[ -n "$e" ] && [ "$e" != error ] && [ "$e" -gt 0 ] && result ok "caught: published-or-not without generations (evict, reuse, refill)" ||
	result bad "the ABA of evict, reuse and refill went unnoticed ($e)"
[ "$failed" = 0 ]
