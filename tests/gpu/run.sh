#!/bin/bash
# SPDX-License-Identifier: MIT
# The GPU checks of the Python client, on a machine with CUDA, PyTorch,
# transformers and safetensors (under 5 minutes):
#   1. small Mixtral, Qwen2-MoE and OLMoE models written by save_pretrained
#      pass tierctl check;
#   2. served by tierd, transformers' generate() gives the tokens of the same
#      model entirely on the GPU (tests/gpu/gpu_check.py);
#   3. contrib/bench-decode.py on the GPU, and the copy bandwidth from the pool.
# Figures go to stdout and, as JSON, to $OUT (default: a temporary directory).
# BENCH_ARGS: more arguments for bench-decode.py (a smaller shape to try it out).
#
#   tests/gpu/run.sh            run, from the source tree, with the build in $BUILD (default build/)
#   tests/gpu/run.sh --pack     (on the build machine) copy the shared libraries tierd,
#                               tierctl and libtierd-client need into $BUILD/gpu-libs, so
#                               that BUILD can be carried to a machine without them
# Without a usable build it builds one (./autogen.sh, configure, make) if it can.
# Without CUDA it runs on the CPU and says so.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$top/build}
PY=${PYTHON:-python3}

bins() { echo "$build/tierd/tierd" "$build/client/.libs/tierctl" "$build/client/.libs/libtierd-client.so.0"; }

if [ "${1:-}" = --pack ]; then
	mkdir -p "$build/gpu-libs"
	# shellcheck disable=SC2046
	ldd $(bins) | awk '$3 ~ /^\// { print $3 }' | sort -u | while read -r so; do
		case $(basename "$so") in
		libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libasan*|libubsan*) ;;
		*) cp -L "$so" "$build/gpu-libs/" ;;
		esac
	done
	cp -L "$build/client/.libs/libtierd-client.so.0" "$build/gpu-libs/"
	du -sh "$build/gpu-libs"
	exit 0
fi

# libtool's wrappers name the build machine's paths: use the real binaries.
export LD_LIBRARY_PATH=$build/gpu-libs:$build/client/.libs:${LD_LIBRARY_PATH:-}
usable() {
	[ -x "$build/tierd/tierd" ] && [ -x "$build/client/.libs/tierctl" ] &&
		"$build/client/.libs/tierctl" --help >/dev/null 2>&1 &&
		! ldd "$build/client/.libs/libtierd-client.so.0" | grep -q libasan
}
if ! usable; then
	echo "# no usable build in $build (missing, or built with sanitizers): building one"
	build=$top/build-gpu
	export LD_LIBRARY_PATH=$build/client/.libs:$LD_LIBRARY_PATH
	(cd "$top" && ./autogen.sh >/dev/null && mkdir -p "$build" && cd "$build" &&
		"$top/configure" -q && make -j"$(nproc)" >/dev/null)
	usable || { echo "Bail out! cannot build tierd here"; exit 1; }
fi
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tierd-gpu-out.XXXXXX")}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/tierd-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TIERD_CLIENT_LIB=$build/client/.libs/libtierd-client.so.0
"$PY" -c 'import torch; print("# torch", torch.__version__, "CUDA:", torch.cuda.is_available() and torch.cuda.get_device_name(0))'

rc=0
timeout 180 "$PY" "$top/tests/gpu/gpu_check.py" --tierd "$build/tierd/tierd" \
	--tierctl "$build/client/.libs/tierctl" --work "$work" --out "$out" || rc=1
dev=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
echo "# contrib/bench-decode.py --device $dev"
# shellcheck disable=SC2086
timeout 240 "$PY" "$top/contrib/bench-decode.py" --device "$dev" --tokens 16 ${BENCH_ARGS:-} \
	--tierd "$build/tierd/tierd" --tierctl "$build/client/.libs/tierctl" --lib "$TIERD_CLIENT_LIB" \
	--dir "$work/bench" --json >"$out/bench-decode.json" || rc=1
cat "$out/bench-decode.json"
echo "# results in $out"
exit $rc
