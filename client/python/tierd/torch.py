# SPDX-License-Identifier: MIT
"""PyTorch over tierd: expert weights as tensors over the daemon's pool.

    import tierd.torch
    served = tierd.torch.offload(model, socket="/run/tierd/tierd.sock", model_name="mixtral")
    model.generate(...)              # or any forward: the experts now come from tierd
    served.report_tokens(n)          # for tierd's per-token energy
    served.close()

offload() works on models whose MoE blocks follow Hugging Face's layouts:
a module with a router `gate` and a list `experts` of expert modules, as in
Mixtral (block_sparse_moe.experts[i].w1/w2/w3), Qwen2-MoE and OLMoE
(mlp.experts[i].gate_proj/up_proj/down_proj, Qwen's shared_expert left in
place) and DeepSeekMoE (mlp.experts[i] and mlp.shared_experts); or whose
`experts` module holds fused [experts, ...] parameters indexed by expert, as
transformers 5 does (experts.gate_up_proj[e], experts.down_proj[e]: made from
a checkpoint's w1+w3 / gate_proj+up_proj and w2 / down_proj, or its own fused
tensors).  It changes no model code: each expert's parameters become plain
attributes that hold tierd's tensors while its block runs.  The router's output (a forward hook
on `gate`) becomes one acquire of the chosen experts and a routing hint; the
next MoE layer's router, applied to the same input, predicts its experts,
which are prefetched.  When the block has run, the acquisition is checked
(a daemon restart in between invalidates it: the block is run again on a
fresh acquisition, a few times at most, then TierdError) and released.

Zero-copy and read-only.  On the CPU an expert's tensors are views of the
pool mapping, which is PROT_READ.  PyTorch has no read-only tensors: a write
through one of them (an in-place op, an optimizer step) kills the process
with SIGSEGV; the pool itself stays intact.  Everything this module does
reads them only (F.linear, copies to the GPU, dtype conversions that make a
new tensor).  torch.frombuffer warns that the buffer is not writable; the
warning is silenced here on purpose, for that call only.

GPU.  When the model's experts live on a CUDA device, each pool is
registered once with cudaHostRegister(..., cudaHostRegisterReadOnly), in
chunks (a single registration of 512 GiB or more fails), the copies run on
a side stream into a GPU-side LRU cache of experts, with an event each; the
prefetch of layer L+1 also starts its copies, which overlap layer L's
compute; an acquisition is released only once its copies completed.

dtypes: BF16, F16, F32 (and the integer types) map to torch dtypes; FP8
(E4M3, E5M2) map to torch's float8 types where the torch version has them,
else stay uint8 bytes; weight_as() dequantises them with their block scales
(weight_scale_inv, blocks of 128) to a float dtype.
"""
import collections
import ctypes
import errno as _errno
import re
import warnings

import torch

import tierd_client

__all__ = ["from_bytes", "torch_dtype", "dequant_fp8", "weight_as", "ExpertServer", "offload", "Offload"]

_DT = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
    "F64": torch.float64,
    # float8 where torch has it (2.1 and later); raw bytes otherwise.
    "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8),
    "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8),
    "F8_E8M0": getattr(torch, "float8_e8m0fnu", torch.uint8),
    # No unsigned 16/32/64-bit tensors in older torch: same-size signed ones.
    "U16": torch.int16, "U32": torch.int32, "U64": torch.int64,
}
_FP8 = ("F8_E4M3", "F8_E5M2")
FP8_BLOCK = 128
# Connection trouble: the library reconnects on the next call.
_RETRY_ERRNOS = (_errno.ECONNRESET, _errno.ENOTCONN, _errno.ENOLINK, _errno.EPIPE, _errno.ECONNREFUSED,
                 _errno.ENOENT)
RETRIES = 3
# Router calls during which an expert a layer chose is taken to be resident (no prefetch).
RECENT = 4


def torch_dtype(name):
    """The torch dtype tierd's dtype name maps to (FP8 without torch float8: uint8)."""
    return _DT[name]


def from_bytes(buf, dtype_name, shape):
    """A tensor over buf (no copy): bytes-like, writable or not."""
    with warnings.catch_warnings():
        # A read-only buffer (the pool) makes frombuffer warn: deliberate, see the module's doc.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        t = torch.frombuffer(buf, dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
    return t.view(_DT[dtype_name]).view(shape)


def _fp8_table(name):
    vals = []
    ebits, mbits, bias = (4, 3, 7) if name == "F8_E4M3" else (5, 2, 15)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> mbits) & ((1 << ebits) - 1)
        m = b & ((1 << mbits) - 1)
        if name == "F8_E4M3" and e == 15 and m == 7:
            v = float("nan")
        elif name == "F8_E5M2" and e == 31:
            v = float("nan") if m else float("inf")
        elif e == 0:
            v = m / (1 << mbits) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
        vals.append(s * v)
    return torch.tensor(vals, dtype=torch.float32)


_FP8_TABLES = {}


def dequant_fp8(w, scale=None, fmt="F8_E4M3", block=FP8_BLOCK):
    """float32 weights from FP8 w (uint8 bytes or a float8 tensor) and its block scales."""
    if w.dtype != torch.uint8:
        w = w.view(torch.uint8)
    if fmt not in _FP8_TABLES:
        _FP8_TABLES[fmt] = _fp8_table(fmt)
    table = _FP8_TABLES[fmt].to(w.device)
    out = table[w.long()]
    if scale is not None:
        r, c = out.shape
        s = scale.to(torch.float32).repeat_interleave(block, 0)[:r].repeat_interleave(block, 1)[:, :c]
        out = out * s
    return out


def weight_as(t, dtype_name, dtype, scale=None):
    """t (tierd's dtype dtype_name) as a tensor of dtype: t itself when it already is."""
    if dtype_name in _FP8:
        return dequant_fp8(t, scale, dtype_name).to(dtype)
    return t if t.dtype == dtype else t.to(dtype)


# ---- tensors over the pool ----------------------------------------------------------------

class _Pools:
    """One uint8 tensor over each pool mapping; rebuilt when a reconnection maps new ones."""

    def __init__(self, client):
        self._client = client
        self.views = {}     # pool -> (base address, uint8 tensor)
        self.gpu_registered = set()

    def view(self, pool, base):
        v = self.views.get(pool)
        if v is None or v[0] != base:
            addr, size = self._client.pool_base(pool)
            if addr != base:
                raise tierd_client.TierdError(_errno.EFAULT, "pool %d: mapped at 0x%x, tensor base 0x%x"
                                              % (pool, addr, base))
            raw = (ctypes.c_char * size).from_address(addr)
            v = (addr, from_bytes(memoryview(raw).cast("B").toreadonly(), "U8", (size,)))
            self.views[pool] = v
        return v[1]

    def register_cuda(self, pool, chunk=64 << 30):
        """cudaHostRegister the pool read-only, in chunks (one call of 512 GiB or more fails)."""
        addr, size = self._client.pool_base(pool)
        if (pool, addr) in self.gpu_registered:
            return
        cudart = torch.cuda.cudart()
        READ_ONLY = 0x08    # cudaHostRegisterReadOnly: flags 0 fail on a PROT_READ mapping
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            r = cudart.cudaHostRegister(addr + off, n, READ_ONLY)
            code = getattr(r, "value", r)
            if code not in (0, 712):    # 712: cudaErrorHostMemoryAlreadyRegistered
                raise RuntimeError("cudaHostRegister(pool %d, +%d, %d bytes, read-only): error %s"
                                   % (pool, off, n, r))
        self.gpu_registered.add((pool, addr))


class Held:
    """Experts of one layer, pinned by one acquisition: expert -> {suffix: tensor}."""
    __slots__ = ("layer", "handle", "tensors", "data", "events")

    def __init__(self, layer, handle):
        self.layer, self.handle, self.tensors, self.data, self.events = layer, handle, {}, [], {}


class ExpertServer:
    """Experts of one model served by tierd as torch tensors.

    acquire(layer, experts) pins them and returns a Held whose tensors
    (dict expert -> {tensor name after 'experts.E.': tensor}) are zero-copy
    views on the CPU, or GPU copies when device is a CUDA device.  valid(held)
    says whether they are still what tierd pinned; release(held) unpins.
    """

    def __init__(self, client, model_name, device=None, gpu_cache_experts=0, timeout_ms=-1):
        self.client = client
        self.model = client.model_index(model_name)
        self.info = client.models()[self.model]
        self.timeout_ms = timeout_ms
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._lib = client._lib
        self._pools = _Pools(client)
        self._meta = {}             # (layer, expert) -> [(suffix, dtype name, shape, length)]
        self.outstanding = 0        # acquisitions not released yet
        self.acquires = self.retries = 0
        self._gpu = self.device.type == "cuda"
        if self._gpu:
            self._stream = torch.cuda.Stream(device=self.device)
            self._cache = collections.OrderedDict()     # (layer, expert) -> (tensors, event)
            self._cache_max = gpu_cache_experts or 4 * max(1, self.info["top_k"]) * 2
            self.bytes_copied = 0

    # -- the library's calls, with a retry when the connection broke
    def _call(self, what, fn):
        for attempt in range(RETRIES + 1):
            try:
                return fn()
            except tierd_client.TierdError as e:
                if e.errno not in _RETRY_ERRNOS or attempt == RETRIES:
                    raise
                self.retries += 1

    def dtype_name(self, layer, expert, suffix):
        return next(m[1] for m in self._meta[(layer, expert)] if m[0] == suffix)

    def _keys(self, layer, experts):
        return [(self.model, layer, e) for e in experts]

    def prefetch(self, layer, experts):
        self._call("prefetch", lambda: self.client.prefetch(self._keys(layer, experts)))

    def hint(self, layer, experts, weights):
        self._call("routing hint", lambda: self.client.routing_hint(self.model, layer, experts, weights))

    def report_tokens(self, n):
        self._call("report tokens", lambda: self.client.report_tokens(self.model, n))

    def acquire(self, layer, experts):
        experts = list(experts)
        if self._gpu:
            experts = [e for e in experts if (layer, e) not in self._cache]
            if not experts:
                return Held(layer, None)
        h = self._call("acquire", lambda: self.client._acquire_raw(self._keys(layer, experts), self.timeout_ms))
        self.outstanding += 1
        self.acquires += 1
        held = Held(layer, h)
        try:
            self._fill(held)
        except BaseException:
            self.release(held)
            raise
        return held

    def _fill(self, held):
        lib = self._lib
        for i in range(lib.tierd_acquisition_count(held.handle)):
            ex = lib.tierd_acquisition_expert(held.handle, i).contents
            key = (ex.key.layer, ex.key.expert)
            meta = self._meta.get(key)
            if meta is None:
                meta = []
                for j in range(ex.ntensors):
                    t = ex.tensors[j]
                    name = t.name.decode()
                    m = re.search(r"experts\.(?:\d+\.)?(.*)$", name)
                    meta.append((m.group(1) if m else name, tierd_client._DTYPES[t.dtype][0],
                                 tuple(t.shape[k] for k in range(t.ndim)), t.length))
                self._meta[key] = meta
            out = {}
            for j, (suffix, dt, shape, length) in enumerate(meta):
                t = ex.tensors[j]
                pool = self._pools.view(t.pool, t.data - t.offset)
                out[suffix] = pool[t.offset:t.offset + length].view(_DT[dt]).view(shape)
                held.data.append((i, j, t.pool, t.data))
            held.tensors[key[1]] = out
        if self._gpu:
            self._copy_to_gpu(held)

    def _copy_to_gpu(self, held):
        for p in {pool for _, _, pool, _ in held.data}:
            self._pools.register_cuda(p)
        with torch.cuda.stream(self._stream):
            for e, ts in list(held.tensors.items()):
                gpu = {k: v.to(self.device, non_blocking=True) for k, v in ts.items()}
                self.bytes_copied += sum(v.numel() * v.element_size() for v in ts.values())
                ev = torch.cuda.Event()
                ev.record(self._stream)
                held.events[e] = ev
                self._cache[(held.layer, e)] = (gpu, ev)
                while len(self._cache) > self._cache_max:
                    self._cache.popitem(last=False)
                held.tensors[e] = gpu

    def tensors(self, held, layer, expert):
        """The tensors of expert, from held or (GPU) from the cache; None if neither has it."""
        t = held.tensors.get(expert) if held is not None else None
        if not self._gpu:
            return t
        ev = held.events.get(expert) if t is not None else None
        if t is None and (layer, expert) in self._cache:
            self._cache.move_to_end((layer, expert))
            t, ev = self._cache[(layer, expert)]
        if t is not None:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(ev)
            for x in t.values():
                # Made on the side stream, used on this one: the allocator must
                # not hand the memory out again (an eviction) before this use ends.
                x.record_stream(cur)
        return t

    def valid(self, held):
        """True while held's experts are still pinned where they were when taken."""
        if held.handle is None:
            return True
        if self.client._status_raw(held.handle) != 0:
            return False
        # Asked again: a reconnection gives the acquisition new expert and tensor arrays.
        lib, h = self._lib, held.handle
        return all(lib.tierd_acquisition_expert(h, i).contents.tensors[j].data == data
                   for i, j, _, data in held.data)

    def release(self, held):
        if held.handle is None:
            return
        for ev in held.events.values():
            ev.synchronize()        # the copy out of the pool is done before the pin goes
        h, held.handle = held.handle, None
        held.data = []
        self.outstanding -= 1
        try:
            self.client._release_raw(h)
        except tierd_client.TierdError as e:
            # A release over a broken connection: the daemon dropped the pins with it.
            if e.errno not in _RETRY_ERRNOS:
                raise

    def invalidate_gpu(self, layer, experts):
        if self._gpu:
            for e in experts:
                self._cache.pop((layer, e), None)


# ---- offload(model) -----------------------------------------------------------------------

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class _Block:
    """One MoE block of the model, what offload() attached to it."""

    def __init__(self, name, layer, module, experts):
        self.name, self.layer, self.module, self.experts = name, layer, module, experts
        self.held = None
        self.next = None        # the next MoE block (for prefetch)
        self.top_k = 1
        self.params = []        # per expert: [(submodule, attribute, shape, dtype, device)]
        self.busy = False
        self.fused = not isinstance(experts, torch.nn.ModuleList)
        self.extra = []
        self.set = []           # experts whose weights are set now
        self.calls = 0          # router calls so far
        self.last = {}          # expert -> router call that last chose it
        self.prefetched = None  # GPU: layer L+1's experts acquired and copied during layer L


class _Slices:
    """Stands for a fused [experts, ...] parameter: [e] is expert e's tensor from tierd."""

    def __init__(self, off, b, attr, shape, dtype):
        self.off, self.b, self.attr, self.shape, self.dtype = off, b, attr, shape, dtype
        self.per_expert = {}

    def __getitem__(self, e):
        e = int(e)
        w = self.per_expert.get(e)
        if w is None:
            # Not chosen by what the gate hook saw (a tie, grouped routing): fetch it alone.
            held = self.off.server.acquire(self.b.layer, [e])
            self.b.extra.append(held)
            _set_fused(self.off, self.b, [e], held)
            w = self.per_expert[e]
        return w


class Offload:
    """What offload() returns: the served model's link to tierd."""

    def __init__(self, server, blocks, own_client):
        self.server, self.blocks, self._own_client = server, blocks, own_client
        self.hooks = []
        self.prefetch = True

    @property
    def outstanding(self):
        return self.server.outstanding

    def report_tokens(self, n):
        self.server.report_tokens(n)

    def stats(self):
        return self.server.client.stats()

    def close(self):
        """Releases what is held and removes the hooks (the experts stay without weights)."""
        for b in self.blocks:
            for h in [b.held, b.prefetched] + b.extra:
                if h is not None:
                    self.server.release(h)
            b.held, b.prefetched, b.extra = None, None, []
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if self._own_client and self.server.client is not None:
            self.server.client.close()


def _is_fused(experts):
    ps = list(experts.named_parameters(recurse=False))
    return bool(ps) and all(p.dim() == 3 for _, p in ps)


def _find_blocks(model):
    blocks = []
    for name, mod in model.named_modules():
        experts = getattr(mod, "experts", None)
        gate = getattr(mod, "gate", None)
        if isinstance(gate, torch.nn.Module) and isinstance(experts, torch.nn.Module) and \
                (isinstance(experts, torch.nn.ModuleList) or _is_fused(experts)):
            m = _LAYER_RE.search(name + ".")
            if m is None:
                raise ValueError("MoE block %s: no layer number in its name" % name)
            blocks.append(_Block(name, int(m.group(1)), mod, experts))
    if not blocks:
        raise ValueError("no MoE block (a module with a 'gate' and a ModuleList 'experts') in the model")
    return blocks


def _strip(block, e, expert):
    """Turns expert's parameters into plain attributes (None until served); returns them."""
    out = []
    for pname, p in list(expert.named_parameters()):
        mod_name, _, attr = pname.rpartition(".")
        sub = expert.get_submodule(mod_name) if mod_name else expert
        del sub._parameters[attr]
        object.__setattr__(sub, attr, None)
        out.append((pname, sub, attr, tuple(p.shape), p.dtype, p.device))
    return out


def _selected(out, k):
    """The experts the router chose, from its output: logits, or (indices, weights, ...)."""
    if isinstance(out, (tuple, list)):
        idx = next((t for t in out if torch.is_tensor(t) and not t.is_floating_point()), None)
        if idx is not None:
            return sorted(set(idx.reshape(-1).tolist())), None
        out = out[0]
    logits = out.reshape(-1, out.shape[-1])
    probs = torch.softmax(logits.float(), dim=-1)
    w, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
    chosen = {}
    for e, x in zip(idx.reshape(-1).tolist(), w.reshape(-1).tolist()):
        chosen[e] = chosen.get(e, 0.0) + x / logits.shape[0]
    es = sorted(chosen)
    return es, [min(1.0, chosen[e]) for e in es]


def offload(model, client=None, socket=None, model_name=None, device=None, prefetch=True,
            gpu_cache_experts=0, top_k=None, timeout_ms=-1, server=None):
    """Serves model's experts from tierd.  model_name: tierd's name of the checkpoint
    (needed when tierd serves several).  device: where the experts are used (the
    device of the model's expert parameters by default).  server: another source
    with ExpertServer's methods (the benchmark's file readers).

    The experts' parameters are dropped (their memory freed) and the hooks
    described in this module's doc installed.  Returns an Offload.
    """
    own = client is None and server is None
    if own:
        client = tierd_client.Client(socket, name="tierd.torch")
    blocks = _find_blocks(model)
    first = next(iter(blocks[0].experts.parameters()))
    if device is None:
        device = first.device if first.device.type != "meta" else torch.device("cpu")
    if server is None:
        if model_name is None:
            models = client.models()
            if len(models) != 1:
                raise ValueError("offload: tierd serves %d models, say which (model_name)" % len(models))
            model_name = models[0]["name"]
        server = ExpertServer(client, model_name, device=device, gpu_cache_experts=gpu_cache_experts,
                              timeout_ms=timeout_ms)
    cfg = getattr(model, "config", None)
    k = top_k or getattr(cfg, "num_experts_per_tok", None) or server.info["top_k"] or 2
    off = Offload(server, blocks, own)
    off.prefetch = prefetch
    off.device = torch.device(device)
    for i, b in enumerate(blocks):
        b.top_k = k
        b.next = blocks[i + 1] if i + 1 < len(blocks) else None
        if b.fused:
            b.params = []
            for attr, p in list(b.experts.named_parameters(recurse=False)):
                del b.experts._parameters[attr]
                object.__setattr__(b.experts, attr, None)
                b.params.append((attr, tuple(p.shape[1:]), p.dtype, p.device))
        else:
            b.params = [_strip(b, e, ex) for e, ex in enumerate(b.experts)]
        off.hooks.append(b.module.gate.register_forward_hook(_gate_hook(off, b)))
        off.hooks.append(b.module.register_forward_pre_hook(_block_pre_hook(off, b)))
        if _HOOK_KWARGS:
            off.hooks.append(b.module.register_forward_hook(_block_hook(off, b), with_kwargs=True))
        else:
            off.hooks.append(b.module.register_forward_hook(_block_hook(off, b)))
        for e, ex in ([] if b.fused else enumerate(b.experts)):
            off.hooks.append(ex.register_forward_pre_hook(_expert_pre_hook(off, b, e)))
    return off


try:
    torch.nn.Module.register_forward_hook.__code__.co_varnames.index("with_kwargs")
    _HOOK_KWARGS = True
except ValueError:
    _HOOK_KWARGS = False


def _set_weights(off, b, e, held):
    ts = off.server.tensors(held, b.layer, e)
    if ts is None:
        return False
    for pname, sub, attr, shape, dtype, device in b.params[e]:
        suffix = pname if pname in ts else None
        if suffix is None:
            raise KeyError("layer %d expert %d: tierd has no tensor '%s' (it has %s)"
                           % (b.layer, e, pname, ", ".join(sorted(ts))))
        src = ts[suffix]
        dt = off.server.dtype_name(b.layer, e, suffix)
        if dt in _FP8:
            w = weight_as(src, dt, dtype, ts.get(pname.replace(".weight", ".weight_scale_inv")))
        else:
            w = src if src.dtype == dtype else src.to(dtype)
        if w.device != off.device:
            w = w.to(off.device)    # a source that hands out CPU tensors to a GPU model
        if tuple(w.shape) != shape:
            raise ValueError("layer %d expert %d: '%s' is %s in tierd, %s in the model"
                             % (b.layer, e, pname, tuple(w.shape), shape))
        object.__setattr__(sub, attr, w)
    b.set.append(e)
    return True


# A fused parameter from per-expert tensors: the names each checkpoint family
# gives the parts, concatenated along the output dimension (gate first).
_FUSED_PARTS = {
    "gate_up_proj": (("w1.weight", "w3.weight"), ("gate_proj.weight", "up_proj.weight")),
    "down_proj": (("w2.weight",), ("down_proj.weight",)),
}


def _fused_weight(off, b, e, ts, attr, shape, dtype):
    cands = [(attr,)] + list(_FUSED_PARTS.get(attr, ()))
    for parts in cands:
        if all(p in ts for p in parts):
            ws = []
            for p in parts:
                dt = off.server.dtype_name(b.layer, e, p)
                scale = ts.get(p.replace(".weight", ".weight_scale_inv")) if dt in _FP8 else None
                ws.append(weight_as(ts[p], dt, dtype, scale) if dt in _FP8 else
                          (ts[p] if ts[p].dtype == dtype else ts[p].to(dtype)))
            w = ws[0] if len(ws) == 1 else torch.cat(ws, dim=0)
            if tuple(w.shape) == shape:
                return w
            if w.dim() == 2 and tuple(w.shape[::-1]) == shape:
                return w.t()
            raise ValueError("layer %d expert %d: '%s' from %s is %s, the model's is %s"
                             % (b.layer, e, attr, "+".join(parts), tuple(w.shape), shape))
    raise KeyError("layer %d expert %d: tierd has nothing for '%s' (it has %s)"
                   % (b.layer, e, attr, ", ".join(sorted(ts))))


def _set_fused(off, b, experts, held):
    for attr, shape, dtype, device in b.params:
        sl = getattr(b.experts, attr)
        if not isinstance(sl, _Slices):
            sl = _Slices(off, b, attr, shape, dtype)
            object.__setattr__(b.experts, attr, sl)
        for e in experts:
            ts = off.server.tensors(held, b.layer, e)
            w = _fused_weight(off, b, e, ts, attr, shape, dtype)
            if w.device != off.device:
                w = w.to(off.device)
            sl.per_expert[e] = w


def _clear_weights(b):
    if b.fused:
        for attr, _, _, _ in b.params:
            object.__setattr__(b.experts, attr, None)
        return
    for e in b.set:
        for _, sub, attr, _, _, _ in b.params[e]:
            object.__setattr__(sub, attr, None)
    b.set = []


def _gate_hook(off, b):
    def hook(gate, args, out):
        experts, weights = _selected(out, b.top_k)
        srv = off.server
        b.calls += 1
        for e in experts:
            b.last[e] = b.calls
        if b.held is not None:
            srv.release(b.held)
        b.held = srv.acquire(b.layer, experts)
        if b.fused:
            _set_fused(off, b, experts, b.held)
        else:
            for e in experts:
                _set_weights(off, b, e, b.held)
        if weights is not None:
            srv.hint(b.layer, experts, weights)
        nxt = b.next
        gw = getattr(nxt.module.gate, "weight", None) if nxt is not None else None
        if off.prefetch and torch.is_tensor(gw) and args:
            # Pre-gating: the next layer's router on this layer's input predicts its experts.
            with torch.no_grad():
                pred, _ = _selected(torch.nn.functional.linear(args[0], gw), nxt.top_k)
            # Experts the next layer used in its last few calls are most likely
            # still in the pool: asking again would cost a round trip for nothing.
            ask = [e for e in pred if nxt.calls - nxt.last.get(e, -RECENT) >= RECENT]
            if ask:
                srv.prefetch(nxt.layer, ask)
            if getattr(srv, "_gpu", False) and nxt.prefetched is None:
                # Start the copies of layer L+1's likely experts now, on the side
                # stream: they overlap this layer's compute.  Released when
                # that layer is done, long after the copies completed.
                nxt.prefetched = srv.acquire(nxt.layer, pred)
        return None
    return hook


def _expert_pre_hook(off, b, e):
    def hook(mod, args):
        if b.params[e] and getattr(b.params[e][0][1], b.params[e][0][2]) is None:
            # Not chosen by what the gate hook saw (a tie, grouped routing): fetch it alone.
            held = off.server.acquire(b.layer, [e])
            try:
                if not _set_weights(off, b, e, held):
                    raise RuntimeError("layer %d expert %d: not served" % (b.layer, e))
            finally:
                b.extra.append(held)
        return None
    return hook


def _block_pre_hook(off, b):
    def hook(mod, args):
        b.extra = []
        return None
    return hook


def _finish(off, b):
    """Checks and releases what the block used; False if it must run again."""
    srv = off.server
    good = True
    used = [h for h in [b.held, b.prefetched] if h is not None] + b.extra
    for h in used:
        good = srv.valid(h) and good
    for h in used:
        if not good:
            srv.invalidate_gpu(b.layer, list(h.tensors))
        srv.release(h)
    b.held, b.prefetched, b.extra = None, None, []
    _clear_weights(b)
    return good


def _block_hook(off, b):
    def hook(mod, args, *rest):
        out = rest[-1]
        kwargs = rest[0] if len(rest) == 2 else {}
        if b.busy or _finish(off, b):
            return None
        # The daemon restarted while the block ran: its output may be from an
        # unpinned pool.  Run it again on a fresh acquisition.
        b.busy = True
        try:
            for attempt in range(RETRIES):
                off.server.retries += 1
                b.extra = []
                out = mod.forward(*args, **kwargs)
                if _finish(off, b):
                    return out
            raise tierd_client.TierdError(_errno.ENOLINK, "layer %d (%s): the experts were lost %d times "
                                          "in a row (daemon restarts?)" % (b.layer, b.name, RETRIES))
        finally:
            b.busy = False
    return hook
