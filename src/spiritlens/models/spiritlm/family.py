"""SpiritLM (Base and Expressive) as a model family: its checkpoint tree, tokenizer layouts, vocabulary
(``[Text]``, ``[Speech]``, ``[Hu…]``, and for Expressive ``[Pi…]``, ``[St…]``), prompt rules (markers) and
speech tokenizer (mHuBERT 25 Hz + quantizer; Expressive adds FCPE pitch and wav2vec2 style,
:mod:`spiritlens.units`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from spiritlens.models.base import ModelFamily, is_path
from spiritlens.models.spiritlm.prompt import build_prompt_string
from spiritlens.models.spiritlm.tree import CHECKPOINTS_ENV, resolve_variant, speech_tokenizer_dir, tree_hint
from spiritlens.models.spiritlm.vocab import TEXT_MARKER, SPEECH_MARKER, spiritlm_vocabulary, unit_string
from spiritlens.tokens.vocab import Vocabulary


class SpiritLM(ModelFamily):
    """SpiritLM Base and Expressive (Meta's ``spirit-lm-base-7b``, ``spirit-lm-expressive-7b``): a Llama-2-7B
    whose vocabulary adds modality markers and speech units after Llama-2's 32,000 text pieces."""

    name = "spiritlm"
    label = "SpiritLM"
    prompt_markers = (TEXT_MARKER, SPEECH_MARKER)

    def owns(self, model_dir: Path, config: dict, tokenizer) -> bool:
        vocab = tokenizer.get_vocab()
        return TEXT_MARKER in vocab and SPEECH_MARKER in vocab

    def resolve(self, name: str) -> Path | None:
        return None if is_path(name) else resolve_variant(name)

    def tree_hint(self, path: Path) -> str | None:
        return tree_hint(path)

    def describe(self, model_dir: Path) -> str:
        return f"SpiritLM checkpoint {model_dir}"

    def load_tokenizer(self, model_dir: Path, tokenization: str):
        """SpiritLM's own call (``LlamaTokenizer.from_pretrained(path, add_bos_token=True,
        add_eos_token=False)`` as transformers 4.x's slow class: :class:`~spiritlens.tokens.llama.SlowLlamaTokenizer`),
        or with ``tokenization="transformers"`` the installed transformers' class; the layout says where the
        markers live (:func:`~spiritlens.tokens.layout.detect_layout`)."""
        from spiritlens.tokens.layout import detect_layout

        tokenizer, bridge, _ = super().load_tokenizer(model_dir, tokenization)
        slow = tokenizer if tokenization == "spiritlm" else None
        if slow is None:
            from spiritlens.tokens.llama import SlowLlamaTokenizer

            slow = SlowLlamaTokenizer.from_pretrained(model_dir, add_bos_token=True, add_eos_token=False)
        return tokenizer, bridge, detect_layout(slow, model_dir, tokenization=tokenization, marker=TEXT_MARKER)

    def vocabulary(self, tokenizer, *, source: str) -> Vocabulary:
        return spiritlm_vocabulary(tokenizer, source=source)

    def unit_string(self, stream: str, unit: int) -> str:
        return unit_string(stream, unit)

    def prompt_string(self, segments: Sequence, output_modality: str = "text") -> tuple[str, list[int]]:
        string, offsets, _ = build_prompt_string(segments, self.segment_text, output_modality)
        return string, offsets

    def speech_tokenizer(self, model_dir: Path, source: Any, vocab: Vocabulary):
        return load_speech_tokenizer(source, model_dir, expressive=vocab.is_expressive)


def load_speech_tokenizer(source: Any, model_dir: Path, *, expressive: bool = False):
    """The speech tokenizer for ``model_dir``'s model: HuBERT only (Base) or HuBERT + pitch + style
    (Expressive, whose folder must then hold ``vqvae_f0_quantizer/`` and ``style_encoder_w2v2/``)."""
    from spiritlens.units import SpeechTokenizer
    from spiritlens.units.expressive import ExpressiveTokenizer, is_expressive_dir

    def from_folder(folder):
        if not expressive:
            return SpeechTokenizer.from_dir(folder)
        if not is_expressive_dir(folder):
            raise FileNotFoundError(
                f"{folder}: {model_dir.name} reads pitch and style tokens, but this speech tokenizer folder has no "
                "vqvae_f0_quantizer/model.pt and style_encoder_w2v2/pytorch_model.bin (SpiritLM's Expressive "
                "speech tokenizer); `spiritlens make-tiny DIR` writes tiny ones")
        return ExpressiveTokenizer.from_dir(folder)

    if source is None:
        folder = speech_tokenizer_dir(model_dir)
        if folder is None:
            raise FileNotFoundError(
                f"no speech tokenizer found: set ${CHECKPOINTS_ENV} (with speech_tokenizer/hubert_25hz/) "
                "or pass speech_tokenizer= to from_pretrained"
            )
        return from_folder(folder)
    if isinstance(source, (str, os.PathLike)):
        return from_folder(source)
    if isinstance(source, ExpressiveTokenizer):
        if not expressive:
            raise ValueError(f"{model_dir.name} has no pitch/style tokens; pass a SpeechTokenizer (HuBERT only)")
        return source
    if isinstance(source, SpeechTokenizer):
        if expressive:
            raise ValueError(f"{model_dir.name} reads pitch and style tokens; pass an ExpressiveTokenizer "
                             "(spiritlens.units.expressive) or its speech_tokenizer folder, not a HuBERT-only "
                             "SpeechTokenizer")
        return source
    if hasattr(source, "encode_units"):
        if expressive:
            raise ValueError(f"{model_dir.name}: wrapping SpiritLM's own Expressive tokenizer object is not "
                             "supported; pass its speech_tokenizer folder (spiritlens reads the same files)")
        return SpeechTokenizer.from_spiritlm(source)
    raise ValueError(f"speech_tokenizer must be a folder, a SpeechTokenizer or SpiritLM's speech "
                     f"tokenizer, got {type(source).__name__}")
