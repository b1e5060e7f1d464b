#!/bin/sh
# SPDX-License-Identifier: MIT
# libFuzzer on the safetensors header parser, over the seed corpus.  TAP.
. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/fuzz-lib.sh"
fuzz_run fuzz-safetensors "safetensors header parser" "${FUZZ_SECONDS:-25}" \
	"$srcdir/tierd/store/safetensors.c $srcdir/tierd/store/safetensors-walk.c $srcdir/tierd/proto/dtype.c $(pkg-config --cflags --libs json-c)" \
	-dict="$srcdir/tests/fuzz-safetensors.dict" "$srcdir/tests/corpus/safetensors"
