#!/bin/sh
# SPDX-License-Identifier: MIT
# contrib/kubernetes without a cluster: tests/kubernetes-check.py parses the
# manifests, checks them against the Kubernetes API schema of
# python3-kubernetes and against tierd's unit and configuration; then the
# ConfigMap's tierd.conf passes `tierd -t`, its checkpoint path pointed at a
# demo checkpoint (the node's is not here).  Prints TAP.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
b=${top_builddir:-.}
# Debian's python3, where python3-yaml and python3-kubernetes are installed.
PY=/usr/bin/python3
[ -x $PY ] || PY=python3
$PY -c 'import yaml' 2>/dev/null || { echo "1..0 # SKIP python3-yaml not installed"; exit 0; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-k8s.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
$PY "$top_srcdir/tests/kubernetes-check.py" "$top_srcdir" "$tmp" >"$tmp/tap"
status=$?
grep -v '^1\.\.' "$tmp/tap"
n=$(grep -c '^\(not \)\{0,1\}ok ' "$tmp/tap")
n=$((n + 1))
"$b/client/tierctl" demo-store "$tmp/demo" --layers 2 --experts 8 --hidden 64 --ffn 128 >/dev/null 2>&1
sed "s|^path = .*|path = $tmp/demo|" "$tmp/tierd.conf" >"$tmp/tierd-here.conf"
if grep -q '^\[model ' "$tmp/tierd.conf" && "$b/tierd/tierd" -t -c "$tmp/tierd-here.conf" >"$tmp/out" 2>&1; then
	echo "ok $n - tierd -t accepts the ConfigMap's tierd.conf (model path pointed at a demo checkpoint)"
else
	echo "not ok $n - tierd -t accepts the ConfigMap's tierd.conf"
	sed 's/^/# /' "$tmp/out"
	status=1
fi
echo "1..$n"
exit $status
