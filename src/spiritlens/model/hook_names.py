"""The hook names spiritlens relies on, in one place (TransformerLens 4 bridge names).

``resid_post(l)`` is the output of decoder layer ``l`` (HF ``hidden_states[l+1]`` for l < L-1;
HF's last entry has the final norm applied, this hook does not). ``embed`` is the token
embedding output, which for Llama equals ``resid_pre(0)`` (positions enter through RoPE).
"""

EMBED = "hook_embed"


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


BY_KIND = {"hidden": resid_post, "mlp": mlp_out, "attn": attn_out}


def check_no_block_hooks(bridge) -> None:
    """Raise ValueError if TransformerLens hooks are attached to a hook point of the bridge's blocks,
    final norm or unembedding (``add_hook``, or ``hooks()`` still open).

    The suffix runs compute the blocks from the weights, so such hooks would be silently skipped.
    (Plain PyTorch hooks on the wrapped modules cannot be told apart from the bridge's own.)
    """
    found = sorted(name for name, point in bridge.hook_dict.items()
                   if name.startswith(("blocks.", "ln_final", "unembed")) and point.fwd_hooks)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ValueError(f"the model has hooks attached at {shown}: causal tracing's restored runs compute the "
                         "blocks directly and would skip them; remove them first (model.reset_hooks())")
