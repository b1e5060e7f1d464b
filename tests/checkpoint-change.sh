#!/bin/bash
# SPDX-License-Identifier: MIT
# Integration test: checkpoint files changed under the running daemon.
#  (a) a served expert's bytes rewritten in place: the model stops (acquires
#      refused with ESTALE naming the file), the log and metrics say so, a
#      holder keeps its old bytes, SIGHUP serves the new bytes;
#  (b) a shard replaced by rename, as download tools write: the same, and the
#      deleted old file is no longer held open;
#  (c) model b, in another directory, is never affected.
# Served bytes are compared with the files themselves. TAP output.
set -u
. "${top_srcdir:-.}/tests/service-lib.sh"
svc_init ckpt
prom=$tmp/metrics.prom

# Waits until the command succeeds (the daemon acts on its own time).
until_ok() {
	for _ in $(seq 150); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
log_has() { [ "$(grep -c -- "$1" "$log")" -ge "$2" ]; }
metric_is() { grep -qxF -- "$1 $2" "$prom"; }

# Tensors as the files hold them, and changes made to the files.
py() {
	python3 - "$@" <<'EOF'
import json, os, struct, sys

def shard_of(ckpt, tensor):
    idx = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return os.path.join(ckpt, json.load(f)["weight_map"][tensor])
    return os.path.join(ckpt, "model.safetensors")

def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, json.loads(f.read(n))

def where(ckpt, tensor):
    path = shard_of(ckpt, tensor)
    n, h = header(path)
    a, b = h[tensor]["data_offsets"]
    return path, 8 + n + a, b - a

cmd = sys.argv[1]
if cmd == "check":
    # check DUMP CKPT: every tensor dumped equals the file's bytes.
    dump, ckpt = sys.argv[2], sys.argv[3]
    names = os.listdir(dump)
    assert names, "nothing was dumped"
    for t in names:
        path, off, length = where(ckpt, t)
        with open(path, "rb") as f:
            f.seek(off)
            want = f.read(length)
        with open(os.path.join(dump, t), "rb") as f:
            got = f.read()
        if got != want:
            sys.exit("%s: served bytes differ from %s at %d" % (t, path, off))
    print("%d tensors equal to the files" % len(names))
elif cmd == "poke":
    # poke CKPT TENSOR: rewrites the tensor's first 64 bytes in place.
    path, off, length = where(sys.argv[2], sys.argv[3])
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(min(64, length))
        f.seek(off)
        f.write(bytes(x ^ 0xff for x in old))
elif cmd == "replace":
    # replace CKPT TENSOR: writes the tensor's shard anew beside it, every
    # data byte inverted and the header padded (tensors move), then renames
    # it over the old one.
    path = shard_of(sys.argv[2], sys.argv[3])
    n, h = header(path)
    with open(path, "rb") as f:
        f.seek(8 + n)
        data = f.read()
    hj = json.dumps(h).encode() + b" " * 64
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + bytes(x ^ 0xff for x in data))
    os.rename(path + ".part", path)
elif cmd == "first":
    # first DUMP: the name of one dumped tensor.
    print(sorted(os.listdir(sys.argv[2]))[0])
EOF
}

# read MODEL LAYER EXPERT NAME: the expert into a fresh dump directory.
rd() { rm -rf "${tmp:?}/$4"; mkdir "$tmp/$4"; "$CL" "$sock" read "$1" "$2" "$3" "$tmp/$4"; }
# served MODEL LAYER EXPERT NAME CKPT: read, and equal to the files in CKPT.
served() { rd "$1" "$2" "$3" "$4" && py check "$tmp/$4" "$5"; }
# changed MODEL LAYER EXPERT NAME CKPT OLD: served, and not what dump OLD held.
changed() { served "$1" "$2" "$3" "$4" "$5" && ! cmp -s "$tmp/$6/$tensor" "$tmp/$4/$tensor"; }
# refused MODEL LAYER EXPERT NAME: ESTALE, with a message naming the change.
refused() {
	local out
	out=$(rd "$@")
	[ $? = 3 ] && grep -q "^refused 116: .*checkpoint file .* on disk" <<<"$out"
}

echo "1..21"

for m in a b; do
	if ! "$TIERCTL" demo-store "$tmp/$m" --layers 2 --experts 4 --hidden 64 --ffn 128 --shards 2 >/dev/null; then
		echo "Bail out! cannot write the demo checkpoints"
		exit 1
	fi
done
cat >"$conf" <<EOF
[daemon]
socket = $sock
log_level = info
state_dir = $tmp
[pool]
size = 4M
hugepages = no
lock = no
[metrics]
textfile = $prom
[model a]
path = $tmp/a
[model b]
path = $tmp/b
EOF

"$TIERD" -c "$conf" >>"$log" 2>&1 &
daemon=$!
if until_ok "$TIERCTL" -s "$sock" status; then ok "daemon starts"; else notok "daemon starts"; echo "Bail out!"; exit 1; fi

check "an expert of model a is served as the file holds it" served 0 0 1 a1 "$tmp/a"
"$CL" "$sock" hold-until 0 0 "$tmp/go" >"$tmp/hold" 2>&1 &
hold=$!
if until_ok grep -q held "$tmp/hold"; then ok "a client pins model a layer 0 expert 0"; else notok "holder"; fi
check "model b is served" served 1 0 1 b1 "$tmp/b"

# (a) In place.
tensor=$(py first "$tmp/a1")
py poke "$tmp/a" "$tensor"
if until_ok log_has "model a: checkpoint file .* on disk" 1; then ok "the log says model a's file changed on disk"
else notok "a warning in the log"; fi
if refused 0 0 1 a2; then ok "the resident expert is refused with ESTALE, naming the file"
else notok "refused after an in-place rewrite"; rd 0 0 1 a2 | sed 's/^/# /'; fi
if refused 0 1 3 a3; then ok "so is every expert of the model"; else notok "another expert of the stale model"; fi
if until_ok metric_is 'tierd_model_stale{model="a"}' 1 && metric_is 'tierd_checkpoint_changes_total{model="a"}' 1
then ok "metrics: model a stale, one change"; else notok "metrics of model a"; grep 'model="a"' "$prom" | sed 's/^/# /'; fi
# (c) The other model.
check "model b is still served, its bytes its file's" served 1 0 1 b2 "$tmp/b"
if metric_is 'tierd_model_stale{model="b"}' 0 && metric_is 'tierd_checkpoint_changes_total{model="b"}' 0
then ok "metrics: model b not stale"; else notok "metrics of model b"; fi

kill -HUP "$daemon"
if until_ok log_has "model a: reloaded" 1; then ok "SIGHUP reloads model a"; else notok "reload of model a"; fi
check "the rewritten expert is served with its new bytes" changed 0 0 1 a4 "$tmp/a" a1
if until_ok metric_is 'tierd_model_stale{model="a"}' 0 && metric_is 'tierd_model_reloads_total{model="a"}' 1
then ok "metrics: model a served again, one reload"; else notok "metrics after the reload"; fi
touch "$tmp/go"
if wait "$hold"; then ok "the holder kept the old bytes it pinned, unmixed"
else notok "the holder's bytes"; sed 's/^/# /' "$tmp/hold"; fi

# (b) Replaced by rename.
check "layer 1 expert 2 is served" served 0 1 2 a5 "$tmp/a"
tensor=$(py first "$tmp/a5")
py replace "$tmp/a" "$tensor"
if until_ok log_has "model a: checkpoint file .* on disk" 2; then ok "the log says the shard was replaced"
else notok "a warning for the rename"; fi
if refused 0 1 2 a6; then ok "refused with ESTALE after the rename"; else notok "refused after the rename"; fi
kill -HUP "$daemon"
if until_ok log_has "model a: reloaded.*new layout" 1; then ok "SIGHUP reloads the moved tensors"; else notok "reload after the rename"; fi
check "the replaced shard's new bytes are served" changed 0 1 2 a7 "$tmp/a" a5
if ! ls -l "/proc/$daemon/fd" | grep -q "safetensors (deleted)"; then ok "the deleted old shard is not held open"
else notok "an old shard is still open"; ls -l "/proc/$daemon/fd" | sed 's/^/# /'; fi
if until_ok metric_is 'tierd_checkpoint_changes_total{model="a"}' 2 && metric_is 'tierd_checkpoint_changes_total{model="b"}' 0
then ok "metrics: two changes of model a, none of model b"; else notok "change counters"; grep changes "$prom" | sed 's/^/# /'; fi

[ $failed = 0 ]
