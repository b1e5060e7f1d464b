#!/bin/sh
# SPDX-License-Identifier: MIT
# libFuzzer on the wire protocol decoder (tierd/proto/proto.c), briefly.  TAP.
. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/fuzz-lib.sh"
fuzz_run fuzz-proto "protocol decoder" "${FUZZ_SECONDS:-20}" "$srcdir/tierd/proto/proto.c -lm" -max_len=4096
