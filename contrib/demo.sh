#!/bin/bash
# SPDX-License-Identifier: MIT
# The demo, from a fresh Debian 12 machine, as root: installs what is needed,
# builds tierd, writes a small MoE checkpoint, starts the daemon on it, decodes
# tokens with a PyTorch MoE model whose experts come from tierd (the same
# token ids as the model with every weight in memory), and prints what each
# token cost and what it all cost (bytes and joules per tier).
#
#   TIERD_DEMO_DIR   where the checkpoint, config and socket go (/var/tmp/tierd-demo)
#   TIERD_DEMO_TOKENS  tokens to decode (16)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${TIERD_DEMO_DIR:-/var/tmp/tierd-demo}
tokens=${TIERD_DEMO_TOKENS:-16}
cd "$top"

step() { printf '\n== %s\n' "$*"; }

step "installing Debian packages (contrib/install-deps.sh)"
./contrib/install-deps.sh
step "building"
./autogen.sh >/dev/null 2>&1
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure -q; } && make -j"$(nproc)" >/dev/null)
b=$top/build

mkdir -p "$dir"
ckpt=$dir/checkpoint
# A checkpoint from an older demo-store has no attention weights: write it again.
if ! "$b/client/tierctl" check "$ckpt" >/dev/null 2>&1 || ! grep -q num_attention_heads "$ckpt/config.json"; then
	step "writing a demo checkpoint: 8 MoE layers x 16 experts, top-2, 6 MiB per expert"
	rm -rf "$ckpt"
	"$b/client/tierctl" demo-store "$ckpt" --layers 8 --experts 16 --hidden 1024 --ffn 1024 \
		--shards 4 --top-k 2
fi
step "tierctl check $ckpt"
"$b/client/tierctl" check "$ckpt" | head -12

cat >"$dir/tierd.conf" <<CONF
# The demo's configuration (every key: man/tierd.conf.5).
[daemon]
socket = $dir/tierd.sock
log_level = info
[pool]
# Room for 24 experts: three layers' worth of the top-2 working set, so the
# cache hits, misses and evicts.
size = 144M
hugepages = auto
[metrics]
textfile = $dir/tierd.prom
[model demo]
path = $ckpt
CONF

step "starting tierd -c $dir/tierd.conf"
"$b/tierd/tierd" -c "$dir/tierd.conf" 2>"$dir/tierd.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$dir/tierd.sock" ] && break; sleep 0.1; done
[ -S "$dir/tierd.sock" ] || { cat "$dir/tierd.log"; exit 1; }
# Cold start: the checkpoint's pages are not in the page cache (tierd reads
# with O_DIRECT anyway).
sync; echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true

step "a PyTorch MoE model decodes $tokens tokens through tierd (contrib/demo-client.py)"
# Debian's interpreter: python3-torch is installed for it.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
lib=$b/client/.libs/libtierd-client.so.0
# A sanitizer build of the library needs its runtimes loaded first into the interpreter.
preload=
for rt in asan ubsan; do
	if ldd "$lib" | grep -q "lib$rt"; then preload="$preload $(${CC:-gcc} -print-file-name=lib$rt.so)"; fi
done
LD_PRELOAD=${preload# } ASAN_OPTIONS=detect_leaks=0 TIERD_CLIENT_LIB=$lib \
	"$py" "$top/contrib/demo-client.py" "$dir/tierd.sock" --model demo --checkpoint "$ckpt" --tokens "$tokens"

step "tierctl stats"
"$b/client/tierctl" -s "$dir/tierd.sock" stats
step "tierctl energy: what it cost, per tier"
"$b/client/tierctl" -s "$dir/tierd.sock" energy || true

step "the daemon's log"
sed -n '1,12p' "$dir/tierd.log"
