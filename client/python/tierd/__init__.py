# SPDX-License-Identifier: MIT
"""tierd's Python client.

    tierd.Client, tierd.TierdError     the binding of libtierd-client (module tierd_client)
    tierd.torch                        PyTorch tensors over the pool, offload(model)
    tierd.checkpoint                   a safetensors checkpoint read into memory
    tierd.decoder                      a small reference MoE decoder (Mixtral, Qwen2-MoE, OLMoE, DeepSeekMoE)

tierd.torch, tierd.checkpoint and tierd.decoder need PyTorch; this module
does not.
"""
from tierd_client import Acquisition, Client, Expert, Tensor, TierdError  # noqa: F401

__all__ = ["Client", "Acquisition", "Expert", "Tensor", "TierdError"]
