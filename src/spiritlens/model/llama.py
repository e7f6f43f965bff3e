"""Llama block arithmetic (SpiritLM is a Llama-2), computed from the HF module's weights as
``transformers.models.llama.modeling_llama`` does with eager attention: RMSNorm in float32 then cast
back and scaled; ``q/k/v/o`` projections; HF's rotary formula with ``cos``/``sin`` in the model dtype;
scores ``(q @ k^T) * head_dim**-0.5`` plus an additive causal mask, softmax in float32 cast back;
grouped-query attention by grouping each key/value head's queries (HF's ``repeat_kv`` without the
copy); gated MLP ``down(act(gate(x)) * up(x))``.

The one place this arithmetic is written: the intervention core's suffix backend
(:mod:`spiritlens.interventions.suffix`) runs blocks with it, and attribution patching's QK fix
(:mod:`spiritlens.traces.attribution`) recomputes queries, keys and patterns with it.
"""

from __future__ import annotations

from typing import Callable
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


def causal_mask(n_queries: int, n_keys: int, dtype: torch.dtype, device) -> torch.Tensor:
    """HF's additive causal mask for the last ``n_queries`` of ``n_keys`` positions: ``[n_queries,
    n_keys]``, 0 where query position ``n_keys - n_queries + i`` may see key ``j`` (j <= its position),
    the dtype's minimum elsewhere."""
    first = n_keys - n_queries
    queries = torch.arange(first, n_keys, device=device)[:, None]
    keys = torch.arange(n_keys, device=device)[None]
    mask = torch.zeros((n_queries, n_keys), dtype=dtype, device=device)
    return mask.masked_fill_(keys > queries, torch.finfo(dtype).min)


class LlamaStack:
    """The decoder blocks of a (bridge-wrapped) ``LlamaForCausalLM`` as plain tensor functions.

    Reads the weights through the modules' ``weight``/``bias`` (the bridge's components forward
    them to the HF modules), and the geometry from the HF config. Raises ValueError for a model
    that is not a Llama.
    """

    def __init__(self, hf_model):
        config = hf_model.config
        if getattr(config, "model_type", None) != "llama":
            raise ValueError(f"the suffix backend computes Llama blocks, got model_type "
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

    def attn_input(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """The normalised input of block ``layer``'s attention (``input_layernorm``), same shape."""
        return rms_norm(resid, self.layers[layer].input_layernorm.weight, self.eps)

    def queries(self, layer: int, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotated queries ``[B, n_heads, n, head_dim]`` of normalised inputs ``[B, n, d]`` at the
        positions whose rotary rows ``cos``/``sin`` ``[n, head_dim]`` are given."""
        B, n = normed.shape[:2]
        q = linear(normed, self.layers[layer].self_attn.q_proj).view(B, n, self.n_heads, self.head_dim)
        return apply_rope(q.transpose(1, 2), cos, sin)

    def kv_projections(self, layer: int, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values before rotary, two ``[..., n_kv_heads * head_dim]``, of normalised inputs ``[..., d]``."""
        attn = self.layers[layer].self_attn
        return linear(normed, attn.k_proj), linear(normed, attn.v_proj)

    def split_heads(self, x: torch.Tensor, B: int, n: int, heads: int) -> torch.Tensor:
        """``[B * n, heads * hd]`` or ``[B, n, heads * hd]`` -> ``[B, heads, n, hd]``."""
        return x.reshape(B, n, heads, self.head_dim).transpose(1, 2)

    def keys_values(self, layer: int, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values, two ``[B, n_kv_heads, n, head_dim]``, of normalised inputs
        ``[B, n, d]`` (rotary rows as :meth:`queries`)."""
        B, n = normed.shape[:2]
        k, v = self.kv_projections(layer, normed)
        k, v = self.split_heads(k, B, n, self.n_kv_heads), self.split_heads(v, B, n, self.n_kv_heads)
        return apply_rope(k, cos, sin), v.contiguous()

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``(q @ k^T) * head_dim**-0.5``: ``[..., n_q, hd]`` x ``[..., T, hd]`` -> ``[..., n_q, T]`` (no mask)."""
        return torch.matmul(q, k.transpose(-1, -2)) * self.scaling

    def attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of queries ``[B, n_heads, n_q, hd]`` over keys and values ``[B, n_kv_heads, T, hd]``
        with an additive ``mask`` ``[n_q, T]`` (None: every key visible): the heads' outputs
        concatenated, ``[B, n_q, n_heads * hd]`` (before ``o_proj``)."""
        B, _, n_q, hd = q.shape
        grouped = q.reshape(B, self.n_kv_heads, self.groups * n_q, hd)  # each kv head's query heads
        scores = self.attention_logits(grouped, keys)
        if mask is not None:
            scores = scores + mask.repeat(self.groups, 1)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, values).view(B, self.n_heads, n_q, hd)
        return out.transpose(1, 2).reshape(B, n_q, self.n_heads * hd)

    def attn_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """``hook_attn_out`` from the heads' outputs ``[..., n_heads * hd]`` (``o_proj``)."""
        return linear(z, self.layers[layer].self_attn.o_proj)

    def mlp_out(self, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """``hook_mlp_out`` of block ``layer`` for ``resid_mid`` ``[..., d]``."""
        block = self.layers[layer]
        mlp = block.mlp
        h = rms_norm(resid_mid, block.post_attention_layernorm.weight, self.eps)
        return linear(self.act(linear(h, mlp.gate_proj)) * linear(h, mlp.up_proj), mlp.down_proj)

    def logits(self, resid_final: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., d_vocab]`` (model dtype) of final residual states ``[..., d]``: final norm, unembedding."""
        h = rms_norm(resid_final.to(self.norm.weight.device), self.norm.weight, self.eps)
        return linear(h.to(self.lm_head.weight.device), self.lm_head)


def activation(name: str) -> Callable:
    from transformers.activations import ACT2FN

    return ACT2FN[name]
