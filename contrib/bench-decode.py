#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Time per output token of a greedy MoE decode, experts served five ways.

  memory      every weight in memory (the reference decoder, tierd not used)
  tierd       experts through tierd (tierd.torch.offload), the pool holding the working set
  tierd_half  the pool at 50% of the experts
  naive       each expert read from the checkpoint file when it is used, the page cache
              dropped first and after each read (a model larger than memory), what a
              user without tierd does
  lru_half    an in-process LRU cache of as many experts as tierd_half's pool, misses
              read the file the same way (the mixtral-offloading approach)

Run with no arguments after `make` (in build/ or in the source tree): it writes
its own checkpoint (tierctl demo-store, OLMoE-like at half width: 16 layers, 64
experts, top-8, hidden 1024, expert FFN 512, bf16) and starts its own tierd.
memory and tierd decode once to warm up (tierd: to fill the pool with the
working set), then in turns for --repeat rounds; tierd_half and lru_half start
cold (a new pool or cache, the page cache dropped), in turns for --repeat
rounds; naive runs once.  The fastest round counts: on a shared machine the
others' load only ever slows a run down.  Prints the figures and the ratios the goals are about;
--json prints one JSON object.  Needs root to drop the page cache.
"""
import argparse
import collections
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(top, "client", "python"))


def find(rel):
    for base in (os.path.join(top, "build"), top):
        p = os.path.join(base, rel)
        if os.path.exists(p):
            return p
    return None


def maybe_preload(lib):
    """A sanitizer build of the library needs its runtimes preloaded: re-exec with them."""
    if os.environ.get("TIERD_BENCH_PRELOADED") or not lib:
        return
    try:
        out = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    except OSError:
        return
    pre = []
    for rt in ("asan", "ubsan"):
        if "lib%s" % rt in out:
            pre.append(subprocess.run([os.environ.get("CC", "gcc"), "-print-file-name=lib%s.so" % rt],
                                      capture_output=True, text=True).stdout.strip())
    if pre:
        env = dict(os.environ, LD_PRELOAD=" ".join(pre), ASAN_OPTIONS="detect_leaks=0",
                   TIERD_BENCH_PRELOADED="1")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tierd", default=find("tierd/tierd"))
    ap.add_argument("--tierctl", default=find("client/tierctl"))
    ap.add_argument("--lib", default=os.environ.get("TIERD_CLIENT_LIB") or find("client/.libs/libtierd-client.so.0"))
    ap.add_argument("--dir", help="work directory (default: a new one under /var/tmp, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (and reuse its checkpoint)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2,
                    help="rounds of the compared pairs, taken in turns (the fastest counts; naive: one)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--dtype", default="bf16", help="bf16 (default: the fastest here), f32, f16, f8_e4m3")
    ap.add_argument("--preset", default="olmoe")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--only", help="comma-separated subset of memory,tierd,tierd_half,naive,lru_half")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    for what in ("tierd", "tierctl", "lib"):
        if not getattr(a, what) or not os.path.exists(getattr(a, what)):
            sys.exit("bench-decode: no %s found (run make, or pass --%s PATH)" % (what, what))
    maybe_preload(a.lib)
    os.environ["TIERD_CLIENT_LIB"] = a.lib

    import torch
    import tierd.torch as tt
    import tierd_client
    from tierd.checkpoint import Checkpoint
    from tierd.decoder import Decoder, greedy
    if a.threads:
        torch.set_num_threads(a.threads)
    log = (lambda *x: print(*x, file=sys.stderr, flush=True)) if a.json else \
        (lambda *x: print(*x, flush=True))

    work = a.dir or tempfile.mkdtemp(prefix="tierd-bench-decode.", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    ck_dir = os.path.join(work, "checkpoint")
    runs = (a.only or "memory,tierd,tierd_half,naive,lru_half").split(",")
    daemon = None
    try:
        spec = [a.tierctl, "demo-store", ck_dir, "--preset", a.preset, "--layers", str(a.layers),
                "--experts", str(a.experts), "--top-k", str(a.top_k), "--hidden", str(a.hidden),
                "--ffn", str(a.ffn), "--dtype", a.dtype, "--shards", str(min(4, a.layers))]
        stamp = os.path.join(work, "spec")
        if not (a.keep and os.path.exists(stamp) and open(stamp).read() == " ".join(spec[3:])):
            log("writing the checkpoint: %s" % " ".join(spec[1:]))
            subprocess.run(spec, check=True, stdout=subprocess.DEVNULL)
            with open(stamp, "w") as f:
                f.write(" ".join(spec[3:]))
        ck = Checkpoint(ck_dir)
        prompt = [1, 2, 3, 4]
        res, ids = {}, {}

        def timed(model, what):
            stamps = []
            got, _ = greedy(model, prompt, a.tokens, on_token=lambda s, t: stamps.append(time.perf_counter()))
            tpot = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
            log("  %-10s %8.1f ms/token  %s" % (what, tpot * 1e3, got[:8]))
            return got, tpot

        # The daemon's slot size for an expert, as tierctl check computes it.
        chk = json.loads(subprocess.run([a.tierctl, "--json", "check", ck_dir], check=True,
                                        capture_output=True, text=True).stdout)
        sock = os.path.join(work, "tierd.sock")

        def start(pool_bytes):
            nonlocal daemon
            conf = os.path.join(work, "tierd.conf")
            with open(conf, "w") as f:
                f.write("[daemon]\nsocket = %s\nstate_dir = %s\n[pool]\nsize = %dM\nhugepages = auto\n"
                        "lock = no\n[model bench]\npath = %s\n"
                        % (sock, work, (pool_bytes + (1 << 20) - 1) >> 20, ck_dir))
            daemon = subprocess.Popen([a.tierd, "-c", conf], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(work, "tierd.log"), "a"))
            for _ in range(600):
                if daemon.poll() is not None:
                    sys.exit("bench-decode: tierd exited: see %s" % os.path.join(work, "tierd.log"))
                try:
                    with tierd_client.Client(sock, name="bench") as c:
                        return c.models()[0]
                except OSError:
                    time.sleep(0.05)
            sys.exit("bench-decode: tierd did not start")

        def stop():
            nonlocal daemon
            if daemon:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait()
                daemon = None

        class FileExperts:
            """Experts read from the checkpoint when used (cap 0) or through an LRU of cap experts."""

            def __init__(self, cap):
                self.cap, self.cache = cap, collections.OrderedDict()
                self.outstanding = self.acquires = self.retries = 0
                self.info = {"top_k": a.top_k}
                self.client = None
                self.names = collections.defaultdict(list)
                for n in ck.names():
                    mm = re.search(r"layers\.(\d+)\..*experts\.(\d+)\.(.*)$", n)
                    if mm:
                        self.names[(int(mm.group(1)), int(mm.group(2)))].append((mm.group(3), n))
                self.dt = {}
                self.misses = 0

            def acquire(self, layer, experts):
                held = tt.Held(layer, None)
                for e in experts:
                    ts = self.cache.get((layer, e))
                    if ts is None:
                        self.misses += 1
                        ts = {}
                        for suffix, n in self.names[(layer, e)]:
                            dt, shape = ck.info(n)[:2]
                            self.dt[(layer, e, suffix)] = dt
                            ts[suffix] = tt.from_bytes(ck.read(n, uncached=True), dt, shape)
                        if self.cap:
                            self.cache[(layer, e)] = ts
                            while len(self.cache) > self.cap:
                                self.cache.popitem(last=False)
                    else:
                        self.cache.move_to_end((layer, e))
                    held.tensors[e] = ts
                return held

            def dtype_name(self, layer, e, suffix):
                return self.dt[(layer, e, suffix)]

            def tensors(self, held, layer, e):
                return held.tensors.get(e)

            def valid(self, held):
                return True

            def release(self, held):
                pass

            def prefetch(self, layer, experts):
                pass

            def hint(self, layer, experts, weights):
                pass

            def invalidate_gpu(self, layer, experts):
                pass

        def from_file(cap):
            m = Decoder.from_checkpoint(ck, experts=False, device=a.device)
            src = FileExperts(cap)
            return m, tt.offload(m, server=src, device=a.device), src

        def keep(name, got, tpot):
            ids[name] = got
            res[name] = tpot if name not in res else min(res[name], tpot)

        # The pairs the goals compare run in turns, round after round, the
        # fastest round counting: on a shared machine the others' load comes
        # and goes, and it only ever slows a run down.
        nexp, slot = chk["experts"], chk["slot_bytes"]
        half = nexp // 2
        if "memory" in runs or "tierd" in runs:
            log("memory: every weight in memory; tierd: experts through tierd, the pool holding "
                "every expert (%.2f GiB); warm-up, then %d rounds" % (slot * nexp / 2**30, a.repeat))
            mem = Decoder.from_checkpoint(ck, device=a.device) if "memory" in runs else None
            if "tierd" in runs:
                start(slot * (nexp + 2 * a.top_k))
                srv_model = Decoder.from_checkpoint(ck, experts=False, device=a.device)
                off = tt.offload(srv_model, socket=sock, model_name="bench", device=a.device)
            for rnd in range(a.repeat + 1):
                what = "warm-up" if rnd == 0 else None
                if mem is not None:
                    got, tpot = timed(mem, what or "memory")
                    if what is None:
                        keep("memory", got, tpot)
                if "tierd" in runs:
                    got, tpot = timed(srv_model, what or "tierd")
                    if what is None:
                        keep("tierd", got, tpot)
            if "tierd" in runs:
                st = off.stats()
                log("  %-10s hits %d, misses %d, evictions %d" % ("", st["hits"], st["misses"], st["evictions"]))
                if a.device.startswith("cuda"):
                    log("  %-10s %.2f GiB copied to the GPU" % ("", off.server.bytes_copied / 2**30))
                off.close()
                stop()
                del srv_model
            del mem

        if "naive" in runs:
            log("naive: every expert read from the file when used, page cache dropped")
            m, off, src = from_file(0)
            if not drop_caches():
                log("  (cannot drop the page cache: not root?)")
            keep("naive", *timed(m, "naive"))
            log("  %-10s misses %d (file reads)" % ("", src.misses))
            off.close()

        if "tierd_half" in runs or "lru_half" in runs:
            log("tierd_half: the pool at 50%% of the experts (%d); lru_half: an in-process LRU of as many, "
                "misses read from the file; each cold (a new pool or cache, page cache dropped), %d rounds"
                % (half, a.repeat))
            for rnd in range(a.repeat):
                if "tierd_half" in runs:
                    start(slot * half)
                    m = Decoder.from_checkpoint(ck, experts=False, device=a.device)
                    off = tt.offload(m, socket=sock, model_name="bench", device=a.device)
                    drop_caches()
                    keep("tierd_half", *timed(m, "tierd_half"))
                    st = off.stats()
                    log("  %-10s hits %d, misses %d, evictions %d"
                        % ("", st["hits"], st["misses"], st["evictions"]))
                    off.close()
                    stop()
                if "lru_half" in runs:
                    m, off, src = from_file(half)
                    drop_caches()
                    keep("lru_half", *timed(m, "lru_half"))
                    log("  %-10s misses %d (file reads)" % ("", src.misses))
                    off.close()
    finally:
        if daemon:
            daemon.kill()
            daemon.wait()
        if not a.keep and not a.dir:
            shutil.rmtree(work, ignore_errors=True)

    ref = ids.get("memory") or next(iter(ids.values()))
    equal = all(v == ref for v in ids.values())
    if a.device.startswith("cuda"):
        device = "%s (pool to GPU through pinned copies)" % torch.cuda.get_device_name(0)
    else:
        device = "cpu: %s, %d torch threads" % (cpu_name(), torch.get_num_threads())
    out = {"device": device,
           "tokens": a.tokens, "tokens_equal": equal,
           "tpot_s": {k: res[k] for k in ("memory", "tierd", "tierd_half", "naive", "lru_half") if k in res},
           "shape": {"preset": a.preset, "layers": a.layers, "experts": a.experts, "top_k": a.top_k,
                     "hidden": a.hidden, "ffn": a.ffn, "dtype": a.dtype}}
    r = {}
    if "memory" in res and "tierd" in res:
        r["tierd/memory"] = res["tierd"] / res["memory"]
    if "naive" in res and "tierd" in res:
        r["naive/tierd"] = res["naive"] / res["tierd"]
    if "lru_half" in res and "tierd_half" in res:
        r["lru_half/tierd_half"] = res["lru_half"] / res["tierd_half"]
    out["ratios"] = r
    if a.json:
        print(json.dumps(out))
    else:
        print("\n%s, %d tokens, %s" % (out["device"], a.tokens,
                                       "the same token ids in every run" if equal else "TOKEN IDS DIFFER"))
        for k, v in out["tpot_s"].items():
            print("  %-10s %9.1f ms/token" % (k, v * 1e3))
        goals = {"tierd/memory": "<= 1.3", "naive/tierd": ">= 3", "lru_half/tierd_half": "> 1"}
        for k, v in r.items():
            print("  %-20s %6.2f   (goal %s)" % (k, v, goals[k]))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
