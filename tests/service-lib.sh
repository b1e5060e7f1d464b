# SPDX-License-Identifier: MIT
# Sourced by the integration tests that run the real daemon (service.sh,
# adversary.sh, checkpoint-change.sh): binaries, a temporary directory
# cleaned up on exit with the daemon and every background job, TAP results,
# and a daemon started on that directory's socket.
#
#   svc_init NAME    tmp, sock, conf, log; the EXIT trap
#   ok / notok WHAT  a TAP result; notok shows $tmp/out and the log's tail
#   check WHAT CMD…  ok when CMD succeeds (its output shown when it fails)
#   start_daemon [ARGS…]  tierd -c $conf ARGS, until tierctl status answers
b=${top_builddir:-.}
TIERD=$b/tierd/tierd
TIERCTL=$b/client/tierctl
CL=$b/tests/svc-client
daemon=
n=0
failed=0

svc_cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	jobs -p | while read -r p; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}

svc_init() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-$1.XXXXXX")
	# Clients of other uids must reach the socket (allow lists refuse them).
	chmod 755 "$tmp"
	sock=$tmp/tierd.sock
	conf=$tmp/tierd.conf
	log=$tmp/tierd.log
	trap svc_cleanup EXIT
}

ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
	n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
	[ -f "$tmp/out" ] && sed 's/^/# /' "$tmp/out" | tail -20
	[ -f "$log" ] && sed 's/^/# tierd: /' "$log" | tail -15
	return 0
}
check() {
	local what=$1
	shift
	rm -f "$tmp/out"
	if "$@" >"$tmp/out" 2>&1; then ok "$what"; else notok "$what"; fi
}

tierctl() { "$TIERCTL" -s "$sock" "$@"; }
stat() { tierctl stats | awk -v k="$1" '$1 == k { print $2 }'; }

start_daemon() {
	"$TIERD" -c "$conf" "$@" >>"$log" 2>&1 &
	daemon=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && tierctl status >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
