#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the Python binding's test (tests/test_tierd_client.py) against a real
# tierd serving a demo checkpoint.  TAP comes from the Python test.
set -u
b=$(cd "${top_builddir:-.}" && pwd)
s=$(cd "${top_srcdir:-.}" && pwd)
# Debian's interpreter first: python3-numpy (contrib/install-deps.sh) is for it,
# and a python3 earlier on PATH may be another installation without numpy.
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=${PYTHON:-python3}; fi
if ! command -v "$PY" >/dev/null; then echo "1..0 # SKIP python3 not installed"; exit 0; fi
lib=$b/client/.libs/libtierd-client.so.0
if [ ! -e "$lib" ]; then echo "1..0 # SKIP libtierd-client.so not built (--disable-shared?)"; exit 0; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-python.XXXXXX")
daemon=
trap '[ -n "$daemon" ] && kill $daemon 2>/dev/null; wait; rm -rf "$tmp"' EXIT
"$b/client/tierctl" demo-store "$tmp/demo" --layers 2 --experts 8 --hidden 64 --ffn 128 >/dev/null || exit 1
cat >"$tmp/tierd.conf" <<CONF
[daemon]
socket = $tmp/tierd.sock
state_dir = $tmp
[pool]
size = 2M
hugepages = no
lock = no
[model demo]
path = $tmp/demo
CONF
"$b/tierd/tierd" -c "$tmp/tierd.conf" 2>"$tmp/tierd.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$tmp/tierd.sock" ] && break; sleep 0.1; done
# A sanitizer build of the library needs its runtimes loaded first into the
# (uninstrumented) interpreter; the interpreter's own leaks are not ours.
preload=
for rt in asan ubsan; do
	if ldd "$lib" | grep -q "lib$rt"; then preload="$preload $(${CC:-gcc} -print-file-name=lib$rt.so)"; fi
done
LD_PRELOAD=${preload# } ASAN_OPTIONS=detect_leaks=0 TIERD_CLIENT_LIB=$lib top_srcdir=$s \
	"$PY" "$s/tests/test_tierd_client.py" "$tmp/tierd.sock" "$tmp/demo"
