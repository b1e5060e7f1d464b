#!/bin/bash
# SPDX-License-Identifier: MIT
# Greedy MoE decode through tierd (client/python/tierd, PyTorch) against the
# same decoder with every weight in memory: tests/test_decode.py, TAP.
set -u
b=$(cd "${top_builddir:-.}" && pwd)
s=$(cd "${top_srcdir:-.}" && pwd)
# Debian's interpreter first: python3-torch (contrib/install-deps.sh) is for it.
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=${PYTHON:-python3}; fi
if ! "$PY" -c 'import torch' 2>/dev/null; then echo "1..0 # SKIP PyTorch (python3-torch) not installed"; exit 0; fi
lib=$b/client/.libs/libtierd-client.so.0
if [ ! -e "$lib" ]; then echo "1..0 # SKIP libtierd-client.so not built (--disable-shared?)"; exit 0; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-decode.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# A sanitizer build of the library needs its runtimes loaded first into the
# (uninstrumented) interpreter; the interpreter's own leaks are not ours.
preload=
for rt in asan ubsan; do
	if ldd "$lib" | grep -q "lib$rt"; then preload="$preload $(${CC:-gcc} -print-file-name=lib$rt.so)"; fi
done
# One thread: the suite runs tests side by side on small machines, where
# OpenMP threads spinning against each other make it many times slower.
LD_PRELOAD=${preload# } ASAN_OPTIONS=detect_leaks=0 TIERD_CLIENT_LIB=$lib top_srcdir=$s \
	TIERD=$b/tierd/tierd TIERCTL=$b/client/tierctl OMP_NUM_THREADS=1 \
	"$PY" "$s/tests/test_decode.py" "$tmp"
