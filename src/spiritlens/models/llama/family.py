"""A plain Hugging Face Llama checkpoint (Llama-2's layout: ``config.json``, ``model*.safetensors`` or
``pytorch_model*.bin``, ``tokenizer.model`` with ``tokenizer_config.json`` and
``special_tokens_map.json``) as a text-only model family: the backbone SpiritLM continued training from,
the paper's baseline (its Figure 2's first row).

Its prompt is Llama-2's: BOS, then the text, tokenised by the checkpoint's own SentencePiece tokenizer
in one call (transformers 4.x's slow ``LlamaTokenizer``, as Meta's code and SpiritLM's call it; no
markers, no speech units: a speech segment is refused in one line). Output is text only.
"""

from __future__ import annotations

from pathlib import Path

from spiritlens.models.base import ModelFamily


class LlamaBackbone(ModelFamily):
    """Llama-2 (or any ``LlamaForCausalLM`` folder with a SentencePiece tokenizer and no speech units)."""

    name = "llama"
    label = "Llama-2 (text-only backbone)"
    output_modalities = ("text",)
    # transformers before 4.31 saved each layer's rotary ``inv_freq`` buffer (meta-llama's first uploads)
    ignorable_weights = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

    def owns(self, model_dir: Path, config: dict, tokenizer) -> bool:
        return config.get("model_type") == "llama"

    def describe(self, model_dir: Path) -> str:
        return f"Llama-2 text-only checkpoint {model_dir}"
