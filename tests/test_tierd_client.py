# SPDX-License-Identifier: MIT
"""Test of the Python binding against a running tierd serving a demo checkpoint.

Usage: test_tierd_client.py SOCKET CHECKPOINT_DIR.  Tensor bytes are compared
with the checkpoint's safetensors files read directly.  TAP output.
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.environ.get("top_srcdir", "."), "client", "python"))
import tierd_client  # noqa: E402

sock, ckpt = sys.argv[1], sys.argv[2]
results = []


def check(what, cond):
    results.append((what, bool(cond)))


def file_tensor_bytes(name):
    with open(os.path.join(ckpt, "model.safetensors.index.json")) as f:
        fname = json.load(f)["weight_map"][name]
    with open(os.path.join(ckpt, fname), "rb") as f:
        hlen = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(hlen))
        a, b = header[name]["data_offsets"]
        f.seek(8 + hlen + a)
        return f.read(b - a)


with tierd_client.Client(sock, name="pytest") as c:
    names = [n for n, _ in tierd_client._DTYPES]
    check("the binding's dtypes are the library's, F8_E8M0 included",
          "F8_E8M0" in names and all(c._lib.tierd_dtype_name(i).decode() == n for i, n in enumerate(names))
          and c._lib.tierd_dtype_name(len(names)) == b"unknown")
    models = c.models()
    check("models() lists the demo model", models and models[0]["name"] == "demo")
    m = c.model_index("demo")
    with c.acquire([(m, 0, 0), (m, 0, 1)]) as acq:
        check("acquire returns two experts", len(acq.experts) == 2 and acq.status() == 0)
        same = True
        for e in acq.experts:
            for t in e.tensors:
                same &= bytes(t.data) == file_tensor_bytes(t.name)
        check("every tensor's bytes equal the checkpoint file's", same)
        t = acq.experts[0].tensors[0]
        try:
            t.data[0] = 1
            check("tensor memoryviews are read-only", False)
        except TypeError:
            check("tensor memoryviews are read-only", True)
        try:
            import numpy as np
            arr = t.array()
            check("numpy array has the tensor's shape, is read-only, matches bytes",
                  arr.shape == t.shape and not arr.flags.writeable and arr.tobytes() == bytes(t.data))
        except ImportError:
            results.append(("numpy array view # SKIP numpy not installed", True))
    c.prefetch([(m, 1, 0)], timeout_ms=5000)
    before = c.stats()
    c.routing_hint(m, 1, [2, 5], [0.75, 0.25])
    c.report_tokens(m, 42)
    after = c.stats()
    check("routing hints and token reports reach the daemon's counters",
          after["routing_hints"] - before["routing_hints"] == 2 and after["tokens"] - before["tokens"] == 42)
    text = c.metrics()
    tokens = [ln for ln in text.splitlines() if ln.startswith("tierd_tokens_total")]
    check("metrics() returns the Prometheus text, with the tokens reported",
          text.startswith("# HELP") and tokens and sum(float(ln.split()[-1]) for ln in tokens) >= 42)
    # The no-system-call path by default: after a first acquire (the library
    # learns the layout), acquire+release sends nothing; the switch sends
    # both.  Hits count either way.
    key = [(m, 1, 3)]
    c.acquire(key).release()
    check("the fast path is on by default", c.fastpath)
    for fast in (True, False):
        c.fastpath = fast
        before = c.stats()
        for _ in range(20):
            with c.acquire(key) as a:
                ok = bytes(a.experts[0].tensors[0].data) == file_tensor_bytes(a.experts[0].tensors[0].name)
        after = c.stats()
        check("acquire+release %s: requests +%d, hits +20, bytes right" % (
              "without a system call" if fast else "through the socket (fastpath = False)",
              after["requests"] - before["requests"]),
              ok and after["hits"] - before["hits"] == 20 and
              after["requests"] - before["requests"] == (1 if fast else 41))
    c.fastpath = True
    try:
        c.acquire([(m, 999, 0)])
        check("an unknown expert raises TierdError naming it", False)
    except tierd_client.TierdError as err:
        check("an unknown expert raises TierdError naming it", err.errno == 2 and "999" in str(err))

print("1..%d" % len(results))
for i, (what, good) in enumerate(results, 1):
    print("%s %d - %s" % ("ok" if good else "not ok", i, what))
sys.exit(0 if all(g for _, g in results) else 1)
