# SPDX-License-Identifier: MIT
"""The GPU checks of the Python client, with Hugging Face transformers (tests/gpu/run.sh runs it).

1. Small MixtralForCausalLM, Qwen2MoeForCausalLM and OlmoeForCausalLM from
   small configs with random weights, written by save_pretrained (the real
   safetensors writer): `tierctl check` must accept each.
2. tierd serves the three; each model generates with transformers' own
   generate(), its experts through tierd.torch.offload(), and must give the
   tokens of the same model entirely on the device.
3. The copy bandwidth from the pool to the GPU (pool registered read-only).
Prints TAP lines and writes OUT/gpu-check.json.  Without CUDA it runs on the CPU
and says so (the figures are then not GPU figures).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback

top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(top, "client", "python"))

import torch  # noqa: E402

import tierd.torch as tt  # noqa: E402
import tierd_client  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--tierd", required=True)
ap.add_argument("--tierctl", required=True)
ap.add_argument("--work", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--tokens", type=int, default=16)
a = ap.parse_args()

try:
    import transformers  # noqa: E402
except ImportError:
    # What can run without it does (tests/gpu/run.sh goes on with the benchmark).
    print("1..0 # SKIP Hugging Face transformers not installed")
    sys.exit(0)

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
dtype = torch.bfloat16
report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (no CUDA)",
          "torch": torch.__version__, "transformers": transformers.__version__, "checks": {}}
n = 0
failed = 0


def tap(ok, what, diag=""):
    global n, failed
    n += 1
    failed += not ok
    print("%s %d - %s" % ("ok" if ok else "not ok", n, what), flush=True)
    if diag and not ok:
        print("# " + str(diag).replace("\n", "\n# "), flush=True)
    report["checks"][what] = bool(ok)


common = dict(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, num_experts_per_tok=2)
archs = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(intermediate_size=512, num_local_experts=8)),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(intermediate_size=512, moe_intermediate_size=256, shared_expert_intermediate_size=256,
                       num_experts=8, decoder_sparse_step=1, mlp_only_layers=[])),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(intermediate_size=256, num_experts=8)),
}
dirs = {}
for name, (cfg_cls, model_cls, extra) in archs.items():
    d = os.path.join(a.work, name)
    try:
        torch.manual_seed(0)
        cfg = getattr(transformers, cfg_cls)(**common, **extra)
        model = getattr(transformers, model_cls)(cfg).to(dtype)
        model.save_pretrained(d, safe_serialization=True)
        r = subprocess.run([a.tierctl, "check", d], capture_output=True, text=True)
        tap(r.returncode == 0, "%s: save_pretrained's checkpoint passes tierctl check" % name, r.stdout + r.stderr)
        if r.returncode == 0:
            dirs[name] = d
    except Exception as e:  # noqa: BLE001 - report and go on with the others
        tap(False, "%s: build and save a small model" % name, repr(e))

sock = os.path.join(a.work, "tierd.sock")
conf = os.path.join(a.work, "tierd.conf")
with open(conf, "w") as f:
    f.write("[daemon]\nsocket = %s\nstate_dir = %s\n[pool]\nsize = 1G\nhugepages = auto\nlock = no\n"
            % (sock, a.work))
    for name, d in dirs.items():
        f.write("[model %s]\npath = %s\n" % (name, d))
daemon = subprocess.Popen([a.tierd, "-c", conf], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(a.work, "tierd.log"), "w"))
try:
    for _ in range(200):
        try:
            tierd_client.Client(sock, name="probe").close()
            break
        except OSError:
            time.sleep(0.05)
    prompt = torch.tensor([[1, 5, 9, 13, 17, 21]], device=dev)
    gen = dict(max_new_tokens=a.tokens, do_sample=False, min_new_tokens=a.tokens)

    def load(d):
        try:
            m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=dtype, experts_implementation="eager")
        except TypeError:
            m = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=dtype)
        return m.to(dev).eval()

    for name, d in dirs.items():
        try:
            with torch.no_grad():
                ref = load(d).generate(prompt, **gen)[0, prompt.shape[1]:].tolist()
                model = load(d)
                off = tt.offload(model, socket=sock, model_name=name, device=dev)
                t0 = time.perf_counter()
                got = model.generate(prompt, **gen)[0, prompt.shape[1]:].tolist()
                dt = time.perf_counter() - t0
                acquires = off.server.acquires
                off.close()
            tap(got == ref and acquires > 0, "%s: generate() through tierd gives the tokens of the model on %s "
                "(%d acquires, %.1f ms/token)" % (name, dev.type, acquires, dt * 1e3 / a.tokens),
                "through tierd %s\n on the device %s" % (got, ref))
            tap(off.outstanding == 0, "%s: every acquisition released" % name)
            report.setdefault("generate_ms_per_token", {})[name] = dt * 1e3 / a.tokens
        except Exception:  # noqa: BLE001
            tap(False, "%s: generate through tierd" % name, traceback.format_exc()[-1500:])

    # Copy bandwidth from the pool (registered read-only) to the device.
    if dev.type == "cuda" and dirs:
        c = tierd_client.Client(sock, name="bandwidth")
        m0 = c.model_index(next(iter(dirs)))
        srv = tt.ExpertServer(c, next(iter(dirs)), device=dev)
        h = srv.acquire(0, [0])     # maps and registers the pool
        srv.release(h)
        addr, size = c.pool_base(0)
        view = srv._pools.view(0, addr)
        nbytes = min(size, 512 << 20)
        src = view[:nbytes]
        dst = torch.empty(nbytes, dtype=torch.uint8, device=dev)
        for _ in range(2):
            dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(5):
            dst.copy_(src, non_blocking=True)
        e1.record()
        torch.cuda.synchronize()
        gbs = 5 * nbytes / (e0.elapsed_time(e1) / 1e3) / 1e9
        report["pool_to_gpu_GBps"] = gbs
        tap(gbs > 0, "copy from the pool to the GPU: %.1f GB/s (%d MiB x 5, registered read-only)"
            % (gbs, nbytes >> 20))
        c.close()
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait()

os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "gpu-check.json"), "w") as f:
    json.dump(report, f, indent=1)
print("1..%d" % n)
sys.exit(1 if failed else 0)
