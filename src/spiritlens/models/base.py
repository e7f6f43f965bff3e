"""The model boundary: what spiritlens needs to know of a family of language models whose vocabulary
holds speech units (or of a text-only backbone), and nothing more.

A family (:class:`ModelFamily`, one folder under ``spiritlens/models/`` and one line in
:data:`spiritlens.models.FAMILIES`) says:

- **which folders are its checkpoints** (:meth:`ModelFamily.owns`, given the folder's config and slow
  tokenizer) and, for a name that is not a path, where its checkpoint tree keeps it
  (:meth:`ModelFamily.resolve`);
- **its tokenizer** (:meth:`ModelFamily.load_tokenizer`: the one that tokenises prompts exactly as the
  family's own code does, and the transformers tokenizer the TransformerBridge keeps) and **its special
  vocabulary** (:meth:`ModelFamily.vocabulary`: BOS/EOS, markers, unit ids per stream);
- **its prompt rules** (:meth:`ModelFamily.prompt_string`: where markers or a template go between the
  segments of a prompt; :meth:`ModelFamily.unit_string`: how a speech unit is spelled;
  :meth:`ModelFamily.piece_rules`: the rules for a piece to go after other tokens);
- **its speech tokenizer** (:meth:`ModelFamily.speech_tokenizer`: audio to units; None for text-only);
- **its weights' extras**: tensors a checkpoint may hold beside the architecture's own
  (:attr:`ModelFamily.ignorable_weights`), and the TransformerLens architecture the bridge boots (every
  family here is a ``LlamaForCausalLM``, TransformerLens' Llama adapter).

:class:`~spiritlens.model.hooked.HookedSpeechLM` and every analysis speak only to this interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

from spiritlens.tokens.prompt import check_output_modality, speech_token_streams
from spiritlens.tokens.vocab import Vocabulary


class ModelFamily:
    """One family of checkpoints (module docstring). Subclasses set the class attributes and override
    what differs from a plain Llama-2 folder."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # for messages and reports ("SpiritLM", "Llama-2 (text-only backbone)")
    architecture: ClassVar[str] = "LlamaForCausalLM"  # what TransformerBridge.boot_transformers builds
    output_modalities: ClassVar[tuple[str, ...]] = ("text", "speech", "arbitrary")
    ignorable_weights: ClassVar[tuple[str, ...]] = ()  # regexes of extra tensor names a checkpoint may hold
    prompt_markers: ClassVar[tuple[str, ...]] = ()  # what the family's prompt strings start with (none: the text)
    # whether prompt_string writes text of its own around the segments (a chat template, SpeechGPT's): its
    # tokens then belong to no segment and are TokenMap positions of kind "template"
    has_template: bool = False

    # ---------------------------------------------------------------- folders
    def owns(self, model_dir: Path, config: dict, tokenizer) -> bool:
        """Whether ``model_dir`` (its ``config.json`` and SentencePiece slow tokenizer) is this family's."""
        raise NotImplementedError

    def resolve(self, name: str) -> Path | None:
        """The model folder of a checkpoint *name* (not a path), or None if the family has no such name."""
        return None

    def tree_hint(self, path: Path) -> str | None:
        """Why ``path`` (a folder without ``config.json``) is not a model directory, when the family
        recognises it (e.g. its checkpoint tree's root); None otherwise."""
        return None

    def describe(self, model_dir: Path) -> str:
        """A one-line description for logs and reports."""
        return f"{self.label} checkpoint {model_dir}"

    # -------------------------------------------------------------- tokenizer
    def load_tokenizer(self, model_dir: Path, tokenization: str):
        """``(tokenizer, bridge_tokenizer, layout)``: the tokenizer that tokenises prompts as the family's
        own code does, the transformers tokenizer the bridge keeps, and a description of the layout
        (or None)."""
        from transformers import LlamaTokenizer

        from spiritlens.tokens.llama import SlowLlamaTokenizer

        slow = SlowLlamaTokenizer.from_pretrained(model_dir, add_bos_token=True, add_eos_token=False)
        bridge = LlamaTokenizer.from_pretrained(str(model_dir), add_bos_token=True, add_eos_token=False)
        return (slow if tokenization == "spiritlm" else bridge), bridge, None

    def vocabulary(self, tokenizer, *, source: str) -> Vocabulary:
        """The special vocabulary read from ``tokenizer`` (ValueError naming what is missing)."""
        if tokenizer.bos_token_id is None:
            raise ValueError(f"{source}: the tokenizer has no BOS token")
        eos = tokenizer.eos_token_id
        return Vocabulary(bos_id=int(tokenizer.bos_token_id), eos_id=int(eos if eos is not None else -1))

    # ------------------------------------------------------------ prompt rules
    def unit_string(self, stream: str, unit: int) -> str:
        """How the prompt string spells one speech unit of ``stream``."""
        raise ValueError(f"{self.label} has no speech tokens")

    def unit_strings(self, units: Any) -> list[str]:
        """One string per speech token of ``units`` (deduplicated units; Expressive units interleaved)."""
        return [self.unit_string(stream, unit) for stream, unit in speech_token_streams(units)]

    def segment_text(self, segment) -> str:
        """A segment as the prompt string holds it: text as is, speech as its units' strings."""
        return segment.content if segment.modality == "text" else "".join(self.unit_strings(segment.content))

    def prompt_string(self, segments: Sequence, output_modality: str = "text") -> tuple[str, list[int]]:
        """The prompt string of ``segments`` and the offset of each segment's text in it. Default
        (a text-only backbone): the text segments joined, nothing added."""
        check_output_modality(output_modality)
        if output_modality not in self.output_modalities:
            raise ValueError(f"{self.label} produces {' or '.join(self.output_modalities)} only, not "
                             f"output_modality {output_modality!r}")
        parts, offsets, length = [], [], 0
        for segment in segments:
            if segment.modality != "text":
                raise ValueError(f"{self.label} is a text-only model: it has no speech tokens for a "
                                 f"{segment.modality} segment")
            offsets.append(length)
            parts.append(segment.content)
            length += len(segment.content)
        return "".join(parts), offsets

    def piece_rules(self) -> "ModelFamily":
        """The rules for a piece to go after other tokens (TransformerLens' ``prepend_bos=False``:
        ``to_tokens(" Paris", prepend_bos=False)``): the family's own, but without a chat template."""
        return self

    # ---------------------------------------------------------------- speech
    def speech_tokenizer(self, model_dir: Path, source: Any, vocab: Vocabulary):
        """The speech tokenizer (audio -> units) for ``model_dir``'s model, from ``source`` (a folder,
        an object, or None: the family's default place). Text-only families raise ValueError."""
        raise ValueError(f"{self.label} is a text-only model: it has no speech tokenizer")


def is_path(text: str) -> bool:
    """Whether a model argument names a folder (it exists, or looks like a path) rather than a checkpoint name."""
    return Path(text).expanduser().exists() or os.sep in text or text.startswith((".", "~"))
