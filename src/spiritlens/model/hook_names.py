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


BY_SITE = {"resid_post": resid_post, "mlp_out": mlp_out, "attn_out": attn_out}
