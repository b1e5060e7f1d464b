#!/bin/sh
# Runs inside the initramfs VM (busybox sh) with two NUMA nodes; prints TAP.
# Copied in by tests/vm/numa.sh with tierd, numa-check and /guest/demo.
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
comment() { sed 's/^/# /'; }
# check WHAT CMD...: its output is kept in /tmp/out and shown on failure.
check() {
	what=$1
	shift
	if "$@" >/tmp/out 2>&1; then ok "$what"; else not_ok "$what"; comment </tmp/out; fi
}
sock=/tmp/tierd.sock

echo "1..9"
check "the guest has NUMA nodes 0 and 1" test -d /sys/devices/system/node/node1
cat >/tmp/tierd.conf <<CONF
[daemon]
socket = $sock
log_level = info
[pool]
nodes = auto
size = 0:16M,1:8M
hugepages = no
lock = no
[model demo]
path = /guest/demo
CONF
tierd -c /tmp/tierd.conf >/tmp/tierd.log 2>&1 &
daemon=$!
i=0
while [ ! -S $sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
check "tierd started with a pool per node" test -S $sock
grep 'pool:' /tmp/tierd.log | comment

check "each pool's pages are on one node, one pool per node" numa-check $sock pools
comment </tmp/out
# Node 0 said in HELLO: its experts are fetched into node 0's pool.
check "a client of node 0 (said) gets slots on node 0" numa-check $sock acquire node 0 0 0 4
check "a client of node 1 (said) gets slots on node 1" numa-check $sock acquire node 1 1 0 4
# Nothing said: the node of the only CPU it may run on.
check "a client on CPU 1 (nothing said) gets slots on node 1" numa-check $sock acquire cpu 1 2 0 4
# What node 1 fetched first stays there: node 0 is served that copy.
check "node 0 is served node 1's copy, not a second one" numa-check $sock acquire node 0 expect 1 1 0 4
check "per-node counters add up to the totals" numa-check $sock counters
cp /tmp/out /tmp/counters
comment </tmp/counters
# 4 experts on node 0 and 8 on node 1; node 0 asked 4 times for node 1's.
check "per-node residency and remote acquires as asked" sh -c \
	"grep -q '^node 0 .* experts 4 .* local 4 remote 4\$' /tmp/counters &&
	 grep -q '^node 1 .* experts 8 .* local 8 remote 0\$' /tmp/counters"
kill $daemon
wait $daemon 2>/dev/null
[ $failed -eq 0 ] || tail -20 /tmp/tierd.log | comment
exit $failed
