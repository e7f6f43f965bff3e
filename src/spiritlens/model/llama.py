"""Llama block arithmetic (SpiritLM is a Llama-2): RMSNorm, rotary embeddings, key/value and MLP outputs computed from the HF module's weights, as ``LlamaDecoderLayer`` does. Model knowledge for the tracing engine's suffix runs."""

from __future__ import annotations

from typing import Callable, Sequence
import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalise in float32, cast back to the input dtype, then scale."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF Llama's ``apply_rotary_pos_emb`` for one tensor: ``x * cos + rotate_half(x) * sin``."""
    return (x * cos) + (rotate_half(x) * sin)


def linear(x: torch.Tensor, module) -> torch.Tensor:
    return F.linear(x, module.weight, getattr(module, "bias", None))


class LlamaStack:
    """The decoder blocks of a (bridge-wrapped) ``LlamaForCausalLM`` as plain tensor functions.

    Reads the weights through the modules' ``weight``/``bias`` (the bridge's components forward
    them to the HF modules), and the geometry from the HF config.
    """

    def __init__(self, hf_model):
        config = hf_model.config
        if getattr(config, "model_type", None) != "llama":
            raise ValueError(f"causal tracing's restored runs need a Llama model, got model_type "
                             f"{getattr(config, 'model_type', None)!r}")
        self.config = config
        self.layers = list(hf_model.model.layers)
        self.norm = hf_model.model.norm
        self.lm_head = hf_model.lm_head
        self.rotary = hf_model.model.rotary_emb
        self.eps = float(config.rms_norm_eps)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"num_attention_heads {self.n_heads} is not a multiple of num_key_value_heads "
                             f"{self.n_kv_heads}")
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.n_heads)
        self.groups = self.n_heads // self.n_kv_heads
        self.scaling = self.head_dim ** -0.5
        self.act = activation(config.hidden_act)
        self.vocab = int(self.lm_head.weight.shape[0])

    def rotary_tables(self, n_positions: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's ``cos``, ``sin`` for positions 0..n-1: ``[n, head_dim]`` in ``like``'s dtype."""
        positions = torch.arange(n_positions, device=like.device)[None]
        cos, sin = self.rotary(like, positions)
        return cos[0], sin[0]

    def key_value(self, layer: int, resid_pre: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (after rotary) and values of block ``layer`` for ``resid_pre`` ``[B, T, d]``:
        two ``[B, n_kv_heads, T, head_dim]`` tensors."""
        attn = self.layers[layer].self_attn
        h = rms_norm(resid_pre, self.layers[layer].input_layernorm.weight, self.eps)
        B, T = h.shape[:2]
        k = linear(h, attn.k_proj).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = linear(h, attn.v_proj).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(k, cos, sin), v.contiguous()

    def mlp_out(self, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """``hook_mlp_out`` of block ``layer`` for ``resid_mid`` ``[..., d]``."""
        block = self.layers[layer]
        mlp = block.mlp
        h = rms_norm(resid_mid, block.post_attention_layernorm.weight, self.eps)
        return linear(self.act(linear(h, mlp.gate_proj)) * linear(h, mlp.up_proj), mlp.down_proj)

    def answer_probs(self, resid_final: torch.Tensor, answer_ids: Sequence[int]) -> torch.Tensor:
        """Softmax (float32, full vocabulary) probabilities ``[R, K]`` of ``answer_ids`` (K ids) for
        final states ``[R * K, d]`` (each row's K scored positions, row-major; id k at position k)."""
        h = rms_norm(resid_final.to(self.norm.weight.device), self.norm.weight, self.eps)
        logits = linear(h.to(self.lm_head.weight.device), self.lm_head)
        K = len(answer_ids)
        probs = torch.softmax(logits.float(), dim=-1).view(-1, K, logits.shape[-1])
        return probs[:, torch.arange(K), torch.as_tensor(answer_ids)]


def activation(name: str) -> Callable:
    from transformers.activations import ACT2FN

    return ACT2FN[name]
