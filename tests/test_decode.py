# SPDX-License-Identifier: MIT
"""Greedy MoE decode through tierd against the same decoder with every weight in memory.

Usage: test_decode.py WORKDIR (tests/decode.sh runs it; $TIERD, $TIERCTL name the
binaries).  For each layout (Mixtral, Qwen2-MoE, OLMoE, DeepSeekMoE, and
Qwen2-MoE in FP8), for a pool holding every expert and one holding a
quarter of them, and with the experts fused as transformers 5 has them: the same token ids and bitwise the same logits, every
acquisition released.  Then daemon restarts in the middle of a decode: the
result is the same, or a TierdError, never other values.  TAP output.
"""
import os
import signal
import subprocess
import sys
import time

top = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(top, "client", "python"))
import torch  # noqa: E402

import tierd.torch as tt  # noqa: E402
import tierd_client  # noqa: E402
from tierd.checkpoint import Checkpoint  # noqa: E402
from tierd.decoder import Decoder, greedy  # noqa: E402

work = sys.argv[1]
TIERD, TIERCTL = os.environ["TIERD"], os.environ["TIERCTL"]
PROMPT, N = [1, 2, 3], 8
results = []


def check(what, cond, diag=""):
    results.append((what, bool(cond), diag))


class Daemon:
    def __init__(self, name, models, pool):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "tierd.sock")
        self.conf = os.path.join(self.dir, "tierd.conf")
        with open(self.conf, "w") as f:
            f.write("[daemon]\nsocket = %s\nstate_dir = %s\n[pool]\nsize = %s\nhugepages = no\nlock = no\n"
                    % (self.sock, self.dir, pool))
            for m, path in models.items():
                f.write("[model %s]\npath = %s\n" % (m, path))
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "tierd.log"), "a")
        self.proc = subprocess.Popen([TIERD, "-c", self.conf], stdout=log, stderr=log)
        for _ in range(200):
            if os.path.exists(self.sock):
                try:
                    tierd_client.Client(self.sock, name="probe").close()
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("tierd did not start: see " + os.path.join(self.dir, "tierd.log"))

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            self.proc.send_signal(sig)
            self.proc.wait()
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def pins(self):
        with tierd_client.Client(self.sock, name="probe") as c:
            return c.stats()["pins"]

    def log_tail(self):
        with open(os.path.join(self.dir, "tierd.log")) as f:
            return f.read()[-800:]


def same(a, b):
    ids_a, lg_a = a
    ids_b, lg_b = b
    return ids_a == ids_b and len(lg_a) == len(lg_b) and all(torch.equal(x, y) for x, y in zip(lg_a, lg_b))


# Experts of 384 KiB: the daemon's smallest pool (2 MiB) is a quarter of 24 of them.
layouts = [("mixtral", "mixtral", []), ("qwen", "qwen", []), ("olmoe", "olmoe", []),
           ("deepseek", "deepseek", ["--layers", "4"]), ("qwen-fp8", "qwen", ["--dtype", "f8_e4m3", "--hidden", "512"])]
# Every dtype the library names has a torch dtype in tierd.torch (a new one breaks this).
names = [n for n, _ in tierd_client._DTYPES]
check("tierd.torch maps every dtype of the binding's table to a torch dtype",
      all(n in tt._DT for n in names), "missing %s" % [n for n in names if n not in tt._DT])
fp8 = tt.dequant_fp8(torch.tensor([[0x38, 0x40, 0xC0, 0x01, 0x7E, 0x00]], dtype=torch.uint8))
check("FP8 E4M3 bytes dequantise to 1, 2, -2, 2^-9, 448, 0",
      fp8.tolist() == [[1.0, 2.0, -2.0, 2.0 ** -9, 448.0, 0.0]], fp8.tolist())
w = torch.tensor([[0x38] * 130] * 3, dtype=torch.uint8)
scaled = tt.dequant_fp8(w, torch.tensor([[0.5, 4.0]]))
check("FP8 block scales apply per 128x128 block", scaled[0, 127] == 0.5 and scaled[2, 128] == 4.0)

daemons = []
try:
    for name, preset, extra in layouts:
        ck_dir = os.path.join(work, "ck-" + name)
        args = ["--preset", preset, "--layers", "3", "--shards", "2", "--experts", "8", "--top-k", "2",
                "--hidden", "256", "--ffn", "256"] + extra
        subprocess.run([TIERCTL, "demo-store", ck_dir] + args, check=True, stdout=subprocess.DEVNULL)
        ck = Checkpoint(ck_dir)
        ref = greedy(Decoder.from_checkpoint(ck), PROMPT, N)
        lg = torch.stack(ref[1])
        check("%s: demo-store's weights decode: finite logits that differ between tokens" % name,
              bool(torch.isfinite(lg).all()) and float(lg.std(dim=1).min()) > 0.01
              and not all(torch.equal(lg[0], x) for x in lg[1:]), "logits %s" % lg[:, :4].tolist())
        big = Daemon(name + "-big", {name: ck_dir}, "16M").start()
        daemons.append(big)
        with tierd_client.Client(big.sock) as c:
            info = c.models()[0]
        # A quarter of the experts, at least two layers' top-k (one acquired, one prefetched).
        quarter = max(info["experts"] // 4, 2 * info["top_k"]) * info["slot_bytes"]
        assert quarter >= 2 << 20, "experts too small for a quarter of them to make a pool"
        small = Daemon(name + "-quarter", {name: ck_dir}, str(quarter)).start()
        daemons.append(small)
        for d, what in ((big, "pool holding every expert"), (small, "pool at 25% of the experts")):
            model = Decoder.from_checkpoint(ck, experts=False)
            off = tt.offload(model, socket=d.sock, model_name=name)
            got = greedy(model, PROMPT, N)
            st = off.stats()
            off.close()
            check("%s, %s: greedy decode through tierd gives the in-memory token ids and bitwise logits"
                  % (name, what), same(got, ref), "ids %s vs %s" % (got[0], ref[0]))
            check("%s, %s: every acquisition released (%d acquires)" % (name, what, off.server.acquires),
                  off.outstanding == 0 and d.pins() == 0 and off.server.acquires > 0)
            if d is small:
                check("%s, %s: experts were evicted and fetched again" % (name, what),
                      st["evictions"] > 0, "stats %s" % st)
            check("%s, %s: the router chose different experts along the decode" % (name, what),
                  st["misses"] > info["top_k"] * info["layers"], "stats %s" % st)
        # Experts fused in [E, ...] parameters, as transformers 5 has them.
        ref_fused = greedy(Decoder.from_checkpoint(ck, fused_experts=True), PROMPT, N)
        model = Decoder.from_checkpoint(ck, experts=False, fused_experts=True)
        off = tt.offload(model, socket=small.sock, model_name=name)
        got = greedy(model, PROMPT, N)
        off.close()
        check("%s, fused experts (transformers 5 layout), pool at 25%%: the in-memory ids and bitwise logits"
              % name, same(got, ref_fused) and got[0] == ref[0] and off.outstanding == 0,
              "ids %s vs %s" % (got[0], ref_fused[0]))
        big.stop()
        small.stop()

    # ---- zero-copy tensors: dtype, shape, a fused layer's slice, FP8 bytes ----
    for name, args in (("fused", ["--preset", "fused", "--dtype", "bf16"]),
                       ("fp8", ["--preset", "qwen", "--dtype", "f8_e4m3", "--hidden", "256"]),
                       ("f32", ["--preset", "mixtral", "--dtype", "f32"])):
        ck_dir = os.path.join(work, "zc-" + name)
        subprocess.run([TIERCTL, "demo-store", ck_dir, "--layers", "2", "--experts", "4", "--shards", "1"] + args,
                       check=True, stdout=subprocess.DEVNULL)
        ck = Checkpoint(ck_dir)
        d = Daemon("zc-" + name, {name: ck_dir}, "16M").start()
        daemons.append(d)
        with tierd_client.Client(d.sock) as c:
            srv = tt.ExpertServer(c, name)
            held = srv.acquire(1, [2, 3])
            good, why = True, []
            for e in (2, 3):
                for suffix, t in held.tensors[e].items():
                    full = [n for n in ck.names() if n.startswith("model.layers.1.") and n.endswith(suffix)
                            and (".experts.%d." % e in n or name == "fused")][0]
                    want = ck.load(full)
                    if name == "fused":
                        want = want[e]
                    same_t = (t.dtype == want.dtype and tuple(t.shape) == tuple(want.shape)
                              and torch.equal(t.view(torch.uint8), want.contiguous().view(torch.uint8)))
                    if not same_t:
                        good, why = False, why + ["%s %s %s vs %s %s" % (full, t.dtype, tuple(t.shape),
                                                                         want.dtype, tuple(want.shape))]
            check("%s: tierd's zero-copy tensors have the checkpoint's dtype, shape and bytes%s"
                  % (name, " (an expert's slice of the layer's tensor)" if name == "fused" else ""),
                  good and held.tensors[2], "; ".join(why))
            srv.release(held)
            check("%s: released" % name, srv.outstanding == 0 and d.pins() == 0)
        if name == "f32":
            # PyTorch has no read-only tensors: a write through one is a fault in the writer.
            child = ("import sys; sys.path.insert(0, %r); import tierd_client, tierd.torch as tt\n"
                     "c = tierd_client.Client(%r); s = tt.ExpertServer(c, %r); h = s.acquire(1, [2])\n"
                     "next(iter(h.tensors[2].values())).add_(1.0)\nprint('wrote')\n"
                     % (os.path.join(top, "client", "python"), d.sock, name))
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:handle_segv=0")
            r = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True)
            with tierd_client.Client(d.sock) as c:
                srv = tt.ExpertServer(c, name)
                held = srv.acquire(1, [2])
                full = "model.layers.1.block_sparse_moe.experts.2.w1.weight"
                intact = torch.equal(held.tensors[2]["w1.weight"], ck.load(full))
                srv.release(held)
            check("a write through a pool tensor kills the writer with SIGSEGV; the pool is intact",
                  r.returncode == -signal.SIGSEGV and "wrote" not in r.stdout and intact,
                  "exit %s, %s %s" % (r.returncode, r.stdout[-200:], r.stderr[-300:]))
        d.stop()

    # ---- daemon restarts in the middle of a decode (Mixtral, big pool) ----
    ck_dir = os.path.join(work, "ck-mixtral")
    ck = Checkpoint(ck_dir)
    ref = greedy(Decoder.from_checkpoint(ck), PROMPT, N)
    d = Daemon("restart", {"mixtral": ck_dir}, "16M").start()
    daemons.append(d)

    def decode_with(event):
        """Greedy decode; event(off, step, layer block, kind) may restart the daemon."""
        model = Decoder.from_checkpoint(ck, experts=False)
        off = tt.offload(model, socket=d.sock, model_name="mixtral")
        step = [0]
        blk = model.model.layers[1].block_sparse_moe
        hooks = [blk.register_forward_pre_hook(lambda m, a: event(off, step[0], "block"))]
        for ex in blk.experts:
            hooks.append(ex.register_forward_pre_hook(lambda m, a: event(off, step[0], "expert")))
        try:
            got = greedy(model, PROMPT, N, on_token=lambda s, t: step.__setitem__(0, s + 1))
            return got, off, None
        except tierd_client.TierdError as e:
            return None, off, e
        finally:
            for h in hooks:
                h.remove()
            off.close()

    done = set()

    def before_acquire(off, step, kind):
        if step == 3 and kind == "block" and "a" not in done:
            done.add("a")
            d.restart()

    got, off, err = decode_with(before_acquire)
    check("daemon restart before a layer's acquire: same ids and bitwise logits (transparent retry)",
          err is None and same(got, ref), "error %s" % err)
    check("... and every acquisition released", off.outstanding == 0 and d.pins() == 0)

    def while_held(off, step, kind):
        if step == 5 and kind == "expert" and "b" not in done:
            done.add("b")
            d.restart()
            # The library learns of the restart at a call (which fails: the
            # connection was reset) and reconnects, re-acquiring, at the next.
            for _ in range(3):
                try:
                    off.server.client.stats()
                    break
                except tierd_client.TierdError:
                    pass

    got, off, err = decode_with(while_held)
    check("daemon restart while a layer's experts are held: the layer runs again, same ids and logits",
          err is None and same(got, ref) and off.server.retries > 0,
          "error %s, retries %d" % (err, off.server.retries))
    check("... and every acquisition released", off.outstanding == 0 and d.pins() == 0)

    def gone(off, step, kind):
        if step == 2 and kind == "block" and "c" not in done:
            done.add("c")
            d.stop()

    got, off, err = decode_with(gone)
    check("daemon gone for good: a TierdError that says why, not a result",
          # Resident experts are acquired without a system call: the first
          # call that needs the daemon (the acquire, or the routing hint
          # sent with it) is the one that fails.
          got is None and isinstance(err, tierd_client.TierdError) and
          ("acquire" in str(err) or "routing" in str(err)) and "tierd.sock" in str(err), "got %s" % (err,))
    check("... with nothing left held", off.outstanding == 0)
finally:
    for dm in daemons:
        dm.stop(signal.SIGKILL)

print("1..%d" % len(results))
for i, (what, good, diag) in enumerate(results, 1):
    print("%s %d - %s" % ("ok" if good else "not ok", i, what))
    if not good and diag:
        print("# " + diag)
sys.exit(0 if all(g for _, g, _ in results) else 1)
