# SPDX-License-Identifier: MIT
"""A small reference MoE decoder in plain PyTorch, built from config.json and the checkpoint.

Layouts (Hugging Face's tensor names, module attribute names and config keys):
  mixtral            model.layers.L.block_sparse_moe.{gate, experts.E.w1/w2/w3}
  qwen2_moe          model.layers.L.mlp.{gate, experts.E.*_proj, shared_expert.*, shared_expert_gate}
  olmoe              model.layers.L.mlp.{gate, experts.E.*_proj}, q_norm / k_norm in attention
  deepseek           model.layers.L.mlp.{gate, experts.E.*_proj, shared_experts.*}, the first
                     first_k_dense_replace layers with a dense mlp (DeepSeekMoE)
It has the embedding, attention with a KV cache (RoPE, grouped KV heads),
RMSNorm, the router with top-k, the experts and the LM head; the MoE block's
forward is Hugging Face's (one expert module called per expert that has
tokens), so tierd.torch.offload() treats it as it treats transformers' models.

    ck = Checkpoint(path)
    model = Decoder.from_checkpoint(ck)                  # every weight in memory
    model = Decoder.from_checkpoint(ck, experts=False)   # experts left for offload()
    ids, logits = greedy(model, prompt, n)
"""
import math
import types

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import Checkpoint

__all__ = ["Decoder", "greedy", "compute_dtype"]


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, c, bias, qk_norm):
        super().__init__()
        H = c.hidden_size
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = H // self.heads
        kv = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(H, H, bias=bias)
        self.k_proj = nn.Linear(H, kv, bias=bias)
        self.v_proj = nn.Linear(H, kv, bias=bias)
        self.o_proj = nn.Linear(H, H, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(H, c.rms_norm_eps)
            self.k_norm = RMSNorm(kv, c.rms_norm_eps)
        self.qk_norm = qk_norm
        self.theta = c.rope_theta

    def forward(self, x, pos, cache):
        T = x.shape[0]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(T, self.heads, self.head_dim).transpose(0, 1)
        k = k.view(T, self.kv_heads, self.head_dim).transpose(0, 1)
        v = v.view(T, self.kv_heads, self.head_dim).transpose(0, 1)
        dev = x.device
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=dev)
                                    / self.head_dim))
        f = torch.outer(torch.arange(pos, pos + T, dtype=torch.float32, device=dev), inv)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            if cache:
                k = torch.cat((cache[0], k), dim=1)
                v = torch.cat((cache[1], v), dim=1)
            cache[:] = [k, v]
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        att = (q @ k.transpose(1, 2)) / math.sqrt(self.head_dim)
        S = k.shape[1]
        mask = torch.ones(T, S, dtype=torch.bool, device=dev).tril(S - T)
        att = att.masked_fill(~mask, float("-inf"))
        att = torch.softmax(att.float(), dim=-1).to(x.dtype)
        return self.o_proj((att @ v).transpose(0, 1).reshape(T, -1))


class MixtralExpert(nn.Module):
    def __init__(self, H, Fd):
        super().__init__()
        self.w1 = nn.Linear(H, Fd, bias=False)
        self.w2 = nn.Linear(Fd, H, bias=False)
        self.w3 = nn.Linear(H, Fd, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MLP(nn.Module):
    def __init__(self, H, Fd):
        super().__init__()
        self.gate_proj = nn.Linear(H, Fd, bias=False)
        self.up_proj = nn.Linear(H, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class FusedExperts(nn.Module):
    """Every expert of a layer in two parameters, as transformers 5 has them:
    gate_up_proj [E, 2F, H] (gate rows first), down_proj [E, H, F]."""

    def __init__(self, E, H, Fd):
        super().__init__()
        self.num_experts = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * Fd, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, Fd))

    def forward(self, x, top_k_index, top_k_weights):
        out = torch.zeros_like(x)
        mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
        for e in sorted(set(top_k_index.reshape(-1).tolist())):
            idx, top = torch.where(mask[e])
            gate, up = F.linear(x[top], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[e]) * top_k_weights[top, idx, None]
            out.index_add_(0, top, y.to(x.dtype))
        return out


class SparseMoeBlock(nn.Module):
    """Hugging Face's sparse MoE block: router, softmax, top-k, each chosen expert called once."""

    def __init__(self, c, layout, H):
        super().__init__()
        E, k = c.num_experts, c.num_experts_per_tok
        self.top_k, self.layout = k, layout
        self.norm_topk_prob = True if layout == "mixtral" else bool(getattr(c, "norm_topk_prob", False))
        self.gate = nn.Linear(H, E, bias=False)
        Fe = c.moe_intermediate_size
        if c.fused_experts:
            self.experts = FusedExperts(E, H, Fe)
        else:
            self.experts = nn.ModuleList(MixtralExpert(H, Fe) if layout == "mixtral" else MLP(H, Fe)
                                         for _ in range(E))
        if layout == "qwen2_moe":
            self.shared_expert = MLP(H, c.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Linear(H, 1, bias=False)
        if layout == "deepseek":
            self.shared_experts = MLP(H, Fe * c.n_shared_experts)

    def forward(self, x):
        logits = self.gate(x)
        w = torch.softmax(logits, dim=1, dtype=torch.float)
        w, sel = torch.topk(w, self.top_k, dim=-1)
        if self.norm_topk_prob:
            w = w / w.sum(dim=-1, keepdim=True)
        w = w.to(x.dtype)
        if isinstance(self.experts, FusedExperts):
            out = self.experts(x, sel, w)
        else:
            out = self._experts(x, sel, w)
        if self.layout == "qwen2_moe":
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        if self.layout == "deepseek":
            out = out + self.shared_experts(x)
        return out

    def _experts(self, x, sel, w):
        out = torch.zeros_like(x)
        mask = F.one_hot(sel, num_classes=len(self.experts)).permute(2, 1, 0)
        for e in sorted(set(sel.reshape(-1).tolist())):
            idx, top = torch.where(mask[e])
            y = self.experts[e](x[top]) * w[top, idx, None]
            out.index_add_(0, top, y.to(x.dtype))
        return out


class Layer(nn.Module):
    def __init__(self, c, layout, i):
        super().__init__()
        H = c.hidden_size
        self.input_layernorm = RMSNorm(H, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(H, c.rms_norm_eps)
        self.self_attn = Attention(c, bias=layout == "qwen2_moe", qk_norm=layout == "olmoe")
        if layout == "mixtral":
            self.block_sparse_moe = SparseMoeBlock(c, layout, H)
        elif layout == "deepseek" and i < c.first_k_dense_replace:
            self.mlp = MLP(H, c.intermediate_size)
        else:
            self.mlp = SparseMoeBlock(c, layout, H)

    def forward(self, x, pos, cache):
        x = x + self.self_attn(self.input_layernorm(x), pos, cache)
        moe = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + moe(self.post_attention_layernorm(x))


class _Model(nn.Module):
    def __init__(self, c, layout):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c, layout, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


LAYOUTS = ("mixtral", "qwen2_moe", "olmoe", "deepseek")


def _config(d, fused):
    c = types.SimpleNamespace(**d)
    c.fused_experts = fused
    c.num_experts = d.get("num_local_experts") or d.get("num_experts") or d.get("n_routed_experts")
    c.moe_intermediate_size = d.get("moe_intermediate_size") or d["intermediate_size"]
    c.num_key_value_heads = d.get("num_key_value_heads") or d["num_attention_heads"]
    c.rms_norm_eps = d.get("rms_norm_eps", 1e-6)
    c.rope_theta = d.get("rope_theta", 10000.0)
    c.first_k_dense_replace = d.get("first_k_dense_replace", 0)
    return c


def compute_dtype(config):
    """The checkpoint's dtype, but float32 for F16 and FP8 (the CPU has no fast F16 matmul)."""
    dt = config.get("torch_dtype", "float32")
    if config.get("quantization_config") or dt == "float16":
        return torch.float32
    return getattr(torch, dt)


def _load_fused(ck, prefix, attr, E, dtype):
    parts = {"gate_up_proj": (("w1", "w3"), ("gate_proj", "up_proj")), "down_proj": (("w2",), ("down_proj",))}
    for names in parts[attr]:
        if prefix + ".0.%s.weight" % names[0] in ck:
            return torch.stack([torch.cat([ck.load_as("%s.%d.%s.weight" % (prefix, e, n), dtype) for n in names])
                                for e in range(E)])
    raise KeyError("%s: no expert tensors under %s for %s" % (ck.path, prefix, attr))


class Decoder(nn.Module):
    """model.layers[...] as in transformers; forward(ids, pos, caches) -> logits of each position."""

    def __init__(self, config, dtype=None, fused_experts=False):
        super().__init__()
        layout = config["model_type"]
        if layout not in LAYOUTS:
            raise ValueError("config.json: model_type '%s': the reference decoder knows %s"
                             % (layout, ", ".join(LAYOUTS)))
        self.layout = layout
        self.config = _config(config, fused_experts)
        self.model = _Model(self.config, layout)
        self.lm_head = nn.Linear(self.config.hidden_size, self.config.vocab_size, bias=False)
        self.dtype = dtype or compute_dtype(config)

    @classmethod
    def from_checkpoint(cls, ck, experts=True, dtype=None, fused_experts=False, device="cpu"):
        """Every weight from the checkpoint into memory; experts=False leaves the experts'
        parameters empty (shape and dtype only, on the meta device) for offload().
        fused_experts: each layer's experts in two [E, ...] parameters (transformers 5).
        device: where the weights go (the experts' stay on the meta device)."""
        if isinstance(ck, str):
            ck = Checkpoint(ck)
        m = cls(ck.config, dtype, fused_experts)
        with torch.no_grad():
            for name, p in list(m.named_parameters()):
                mod_name, _, attr = name.rpartition(".")
                sub = m.get_submodule(mod_name)
                if ".experts." in name and not experts:
                    sub._parameters[attr] = nn.Parameter(torch.empty(p.shape, dtype=m.dtype, device="meta"),
                                                         requires_grad=False)
                    continue
                if isinstance(sub, FusedExperts):
                    t = _load_fused(ck, mod_name, attr, sub.num_experts, m.dtype)
                else:
                    t = ck.load_as(name, m.dtype)
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError("%s: '%s' is %s, config.json makes it %s"
                                     % (ck.path, name, tuple(t.shape), tuple(p.shape)))
                sub._parameters[attr] = nn.Parameter(t.contiguous().to(device), requires_grad=False)
        return m.eval()

    def forward(self, ids, pos=0, caches=None):
        x = self.model.embed_tokens(ids.to(self.lm_head.weight.device))
        for i, layer in enumerate(self.model.layers):
            x = layer(x, pos, caches[i] if caches is not None else None)
        return self.lm_head(self.model.norm(x)).float()


@torch.no_grad()
def greedy(model, prompt, n, on_token=None):
    """Greedy decode of n tokens after prompt: (ids, logits of each decoded step)."""
    caches = [[] for _ in model.model.layers]
    ids = list(prompt)
    logits = model(torch.tensor(ids), 0, caches)[-1]
    out = []
    for step in range(n):
        out.append(logits)
        tok = int(logits.argmax())
        ids.append(tok)
        if on_token:
            on_token(step, tok)
        if step + 1 < n:
            logits = model(torch.tensor([tok]), len(ids) - 1, caches)[-1]
    return ids[len(prompt):], out
