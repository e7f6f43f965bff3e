"""TransformerLens' ActivationCache with the model's own norm gains: read-outs give the true numbers.

spiritlens loads SpiritLM's weights unprocessed (logits equal ``transformers.LlamaForCausalLM``),
so every RMSNorm keeps its gain ``w`` (Llama: ``y = w * x / rms(x)``). TransformerLens' cache
helpers assume TransformerLens' weight processing, which folds ``w`` into the next weights
(``W_Q``/``W_K``/``W_V``, ``W_in``/``W_gate``, ``W_U``) and leaves the norm a bare division by the
cached scale. On an unprocessed model those helpers then read out ``x / rms(x)`` without ``w``:
``cache.apply_ln_to_stack(resid) @ model.W_U`` misses the final norm's gain, so the components of
``decompose_resid(apply_ln=True)`` do not sum to the logits and ``logit_attrs`` is off, while
``accumulated_resid(apply_ln=True)`` at the last layer runs ``model.ln_final`` itself and happens
to include ``w``.

:class:`NormGainCache` applies the gain wherever TransformerLens applies a cached scale: after
:meth:`apply_ln_to_stack` (the path behind ``accumulated_resid``, ``decompose_resid``,
``stack_head_results``, ``get_full_resid_decomposition`` and ``logit_attrs``) and inside the
projected neuron stack (``stack_neuron_results(apply_ln=True, project_output_onto=...)``), so

* ``cache.apply_ln_to_stack(stack, layer) == w_norm * stack / cached_rms`` for the norm that reads
  the stack (``ln_final`` for ``layer = n_layers``/None/-1, ``blocks.{layer}.ln1``, or ``ln2`` with
  ``mlp_input=True``): exactly the norm's output when the stack sums to its input;
* at the last layer ``apply_ln_to_stack(resid_final) @ W_U`` is the model's logits, the summed
  ``decompose_resid(apply_ln=True) @ W_U`` too (direct logit attribution adds up), and
  ``logit_attrs`` is each component's true share of the answer's logit;
* with ``process_weights=True`` (TransformerLens' folding, where the norms' weights are ones)
  the gain is 1 and nothing changes.

The recomputed final norm of ``accumulated_resid(apply_ln=True)`` (``recompute_ln=True``) is the
model's own ``ln_final`` and already has the gain; it is left as it is.

Dtype: the read-outs come back in the stack's dtype (the model's: bf16 stacks on a bf16 model), so
``decompose_resid(apply_ln=True) @ model.W_U`` works at any dtype. TransformerLens divides by the
cached scale, which the bridge keeps in float32, and would hand back float32. The arithmetic is
``LlamaRMSNorm``'s: normalise in float32, cast to the input's dtype, then multiply by the gain
(``weight * hidden_states.to(input_dtype)``), so at the final layer a bf16 read-out of the summed
stack is the model's own final-norm output up to float32 rounding of ``1 / scale``.
Method: TransformerLens 4's ``ActivationCache`` (``apply_ln_to_stack``, ``_stack_neuron_results_
apply_ln_projected``), whose cached-scale read-out is divided by the norm's ``hook_scale``.
"""

from __future__ import annotations

import torch
from transformer_lens.ActivationCache import ActivationCache


def norm_gain(model, layer: int | None, mlp_input: bool = False) -> torch.Tensor | None:
    """The gain ``w`` ``[d_model]`` of the RMSNorm that reads the residual stream at ``layer``:
    ``ln_final`` for ``layer`` None, -1 or ``n_layers``; ``blocks.{layer}.ln1`` (``ln2`` with
    ``mlp_input``) otherwise. None when the model's norms have no gain (TransformerLens'
    ``RMSPre``/``LNPre``, folded). ``model`` is a TransformerBridge or a HookedSpiritLM."""
    bridge = getattr(model, "bridge", model)
    n_layers = bridge.cfg.n_layers
    if bridge.cfg.normalization_type not in ("RMS", "LN"):
        return None
    if layer is None or layer == -1 or layer == n_layers:
        if mlp_input:
            raise ValueError("mlp_input=True needs a block's layer, not the final norm")
        norm = bridge.ln_final
    else:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is outside 0..{n_layers} (n_layers = the final norm)")
        norm = getattr(bridge.blocks[layer], "ln2" if mlp_input else "ln1")
    weight = getattr(norm, "weight", None)
    if weight is None:
        weight = getattr(getattr(norm, "original_component", None), "weight", None)
    return weight


class NormGainCache(ActivationCache):
    """An ``ActivationCache`` whose LayerNorm read-outs include the norms' gains (module docstring).
    ``HookedSpiritLM.run_with_cache`` returns one; ``NormGainCache.wrap(cache)`` turns a plain
    TransformerLens cache of the same model into one (in place, and returns it)."""

    @classmethod
    def wrap(cls, cache: ActivationCache) -> "NormGainCache":
        if not isinstance(cache, ActivationCache):
            raise ValueError(f"expected a transformer_lens ActivationCache, got {type(cache).__name__}")
        cache.__class__ = cls
        return cache

    def apply_ln_to_stack(self, residual_stack, layer=None, mlp_input=False, pos_slice=None,
                          batch_slice=None, has_batch_dim=True, recompute_ln=False):
        """TransformerLens' ``apply_ln_to_stack`` (same arguments and shapes: ``[components,
        *batch_and_pos, d_model]``), times the reading norm's gain. Raises ValueError for a layer
        outside ``-1..n_layers``."""
        dtype = residual_stack.dtype
        out = super().apply_ln_to_stack(residual_stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                        batch_slice=batch_slice, has_batch_dim=has_batch_dim,
                                        recompute_ln=recompute_ln)
        final = layer is None or layer == -1 or layer == self.model.cfg.n_layers
        if recompute_ln and final and hasattr(self.model, "ln_final"):
            return out  # the model's own ln_final, gain included
        out = out.to(dtype)  # LlamaRMSNorm: normalised in float32, back to the input's dtype, then the gain
        gain = norm_gain(self.model, layer, mlp_input)
        if gain is None:
            return out
        return out * gain.to(device=out.device, dtype=dtype)

    def _stack_neuron_results_apply_ln_projected(self, layer, pos_slice, neuron_slice, project_2d,
                                                 mlp_input=False):
        # RMS: (x / s * w) @ p = (x / s) @ (w[:, None] * p); the gain moves into the projection.
        gain = norm_gain(self.model, layer, mlp_input)
        if gain is not None:
            project_2d = gain.to(device=project_2d.device, dtype=project_2d.dtype)[:, None] * project_2d
        out = super()._stack_neuron_results_apply_ln_projected(layer, pos_slice, neuron_slice, project_2d,
                                                               mlp_input=mlp_input)
        dtype = self.model.blocks[0].mlp.W_out.dtype if layer > 0 else out.dtype  # the model's, not the scale's
        return out.to(dtype)
