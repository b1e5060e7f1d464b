#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A stand-in for an MoE inference process: decodes tokens through tierd.

For each token and each MoE layer it picks the router's top-k experts
(uniformly at random, seeded, as the energy model assumes), prefetches the next
layer's choice one layer ahead, acquires the current layer's experts (pinned,
read-only views into tierd's DDR pool), copies every byte of them out as a GPU
copy would, checks the first bytes of 64 tensors against the checkpoint file,
releases them, and reports the tokens it generated.  It prints what it did and what tierd counted.
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python"))
import tierd_client  # noqa: E402


def tensor_file_bytes(ckpt, name, n):
    """First n bytes of a tensor, read from the checkpoint itself (reference)."""
    index = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            fname = json.load(f)["weight_map"][name]
    else:
        fname = "model.safetensors"
    with open(os.path.join(ckpt, fname), "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(hlen))
        start = header[name]["data_offsets"][0]
        f.seek(8 + hlen + start)
        return f.read(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--checkpoint", help="checkpoint directory, to check bytes against")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    with tierd_client.Client(a.socket, name="demo-client") as c:
        mi = c.model_index(a.model)
        m = c.models()[mi]
        layers = list(range(m["layers"]))
        k, E = max(1, m["top_k"]), m["experts_per_layer"]
        print(f"connected to tierd: model {m['name']}: {m['layers']} MoE layers x {E} experts, "
              f"top-{k}, {m['slot_bytes'] / 2**20:.1f} MiB per expert slot")
        choose = lambda: sorted(rng.sample(range(E), k))  # noqa: E731
        acquired = checked = 0
        bytes_seen = 0
        t0 = time.monotonic()
        for tok in range(a.tokens):
            plan = [choose() for _ in layers]
            c.prefetch([(mi, layers[0], e) for e in plan[0]])
            for i, layer in enumerate(layers):
                if i + 1 < len(layers):
                    c.prefetch([(mi, layers[i + 1], e) for e in plan[i + 1]])
                c.routing_hint(mi, layer, plan[i], [1.0 / k] * k)
                with c.acquire([(mi, layer, e) for e in plan[i]], timeout_ms=30000) as acq:
                    for ex in acq.experts:
                        acquired += 1
                        for t in ex.tensors:
                            # Copy every byte out of the pool, as a copy to the GPU would.
                            bytes_seen += len(bytes(t.data))
                            if a.checkpoint and checked < 64:
                                ref = tensor_file_bytes(a.checkpoint, t.name, 256)
                                if bytes(t.data[:256]) != ref:
                                    sys.exit(f"WRONG BYTES in {t.name}")
                                checked += 1
            c.report_tokens(mi, 1)
        dt = time.monotonic() - t0
        st = c.stats()
    print(f"decoded {a.tokens} tokens: {acquired} expert acquisitions, "
          f"{bytes_seen / 2**20:.1f} MiB read from the pool, {dt * 1e3 / a.tokens:.1f} ms/token")
    if a.checkpoint:
        print(f"checked {checked} tensors against the checkpoint file: all bytes equal")
    keys = ("hits", "misses", "fetches", "evictions", "bytes_read")
    print("tierd counters: " + ", ".join(f"{key} {st[key]}" for key in keys if key in st))


if __name__ == "__main__":
    main()
