#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An MoE model decoding tokens through tierd, next to the same model in memory.

The model is the reference decoder of the Python client (tierd.decoder)
built from the checkpoint's config.json and dense weights; its experts come
from tierd (tierd.torch.offload: the router's choice is the acquire and the
routing hint, the next layer's experts are prefetched).  The same greedy
decode with every weight loaded from the checkpoint into memory gives the
reference token ids.  For each token it prints the id, what tierd did for it
(hits, misses, bytes read, evictions), its time and, when the daemon has
energy telemetry, its joules.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python"))
import torch  # noqa: E402

import tierd.torch as tt  # noqa: E402
import tierd_client  # noqa: E402
from tierd.checkpoint import Checkpoint  # noqa: E402
from tierd.decoder import Decoder, greedy  # noqa: E402


def joules(client):
    """tierd's energy total, or None without telemetry."""
    try:
        text = client.metrics()
    except tierd_client.TierdError:
        return None
    total = 0.0
    for ln in text.splitlines():
        if ln.startswith("tierd_energy_joules_total{") or ln.startswith("tierd_energy_other_joules_total "):
            total += float(ln.split()[-1])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket")
    ap.add_argument("--model", default="demo", help="tierd's name of the model")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint directory tierd serves")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--prompt", default="tierd", help="prompt text (one token per byte)")
    a = ap.parse_args()

    ck = Checkpoint(a.checkpoint)
    prompt = list(a.prompt.encode())
    cfg = ck.config
    print("model: %s, %d layers x %d experts, top-%d, hidden %d; prompt %r"
          % (cfg["model_type"], cfg["num_hidden_layers"],
             cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts"),
             cfg["num_experts_per_tok"], cfg["hidden_size"], a.prompt))

    t0 = time.perf_counter()
    ref_ids, _ = greedy(Decoder.from_checkpoint(ck), prompt, a.tokens)
    print("in memory (every weight loaded from the checkpoint): %s  (%.1f s with the load)"
          % (ref_ids, time.perf_counter() - t0))

    model = Decoder.from_checkpoint(ck, experts=False)
    with tierd_client.Client(a.socket, name="demo-client") as c:
        off = tt.offload(model, client=c, model_name=a.model)
        keys = ("hits", "misses", "bytes_read", "evictions")
        last = [c.stats(), joules(c), time.perf_counter()]
        print("\nthrough tierd:\n  token  id   hits misses  MiB read  evicted      ms   joules")

        def on_token(step, tok):
            st, j, t = c.stats(), joules(c), time.perf_counter()
            d = {k: st[k] - last[0][k] for k in keys}
            jtxt = "%8.3f" % (j - last[1]) if j is not None and last[1] is not None else "       -"
            print("  %5d %4d %6d %6d %9.1f %8d %7.1f %s"
                  % (step, tok, d["hits"], d["misses"], d["bytes_read"] / 2**20, d["evictions"],
                     (t - last[2]) * 1e3, jtxt))
            off.report_tokens(1)
            last[:] = [st, j, time.perf_counter()]

        with torch.no_grad():
            ids, _ = greedy(model, prompt, a.tokens, on_token=on_token)
        off.close()
        held = off.outstanding
    print("\nthrough tierd: %s" % ids)
    if ids != ref_ids:
        sys.exit("DIFFERENT TOKENS through tierd: %s, in memory %s" % (ids, ref_ids))
    print("the same %d token ids as the model in memory; %d acquisitions, all released (%d held)"
          % (len(ids), off.server.acquires, held))
    print("(token 0 comes from the prompt's pass: its row counts the prompt's %d positions)" % len(prompt))


if __name__ == "__main__":
    main()
