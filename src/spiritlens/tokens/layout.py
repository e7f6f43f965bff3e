"""Where a checkpoint's tokenizer files keep SpiritLM's markers and unit tokens (SentencePiece pieces or added tokens), and the file hashes that identify a tokenizer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from spiritlens.tokens.llama import SlowLlamaTokenizer, TOKENIZER_FILES
from spiritlens._io import sha256_file


TOKENIZATIONS = ("spiritlm", "transformers")


@dataclass(frozen=True)
class TokenizerLayout:
    """How a checkpoint's tokenizer files hold SpiritLM's markers and units, and how they are read.

    ``tokenization``: ``"spiritlm"`` (transformers 4.x's slow path, :class:`SlowLlamaTokenizer`) or
    ``"transformers"`` (the installed transformers' ``LlamaTokenizer``, opted into explicitly).
    ``markers``: ``"sentencepiece"`` (``[Text]``, ``[Speech]``, ``[Hu…]`` are user-defined pieces of
    ``tokenizer.model``, found by SentencePiece inside the text) or ``"added_tokens"`` (declared in
    ``declared_in`` and split off before SentencePiece runs). ``markers_special``: whether they are
    special tokens (skipped when decoding with ``skip_special_tokens=True``). ``legacy`` and
    ``legacy_source`` (``tokenizer_config.json`` or ``default``), ``add_prefix_space`` (non-legacy
    only). ``files``: SHA-256 of each tokenizer file present. ``rules``: the transformers release whose slow
    tokenisation is reproduced (``"4.57"``, SpiritLM's; ``"4.33"``, SpeechGPT's: :mod:`spiritlens.tokens.llama`).
    """

    tokenization: str
    markers: str
    declared_in: tuple[str, ...]
    markers_special: bool
    legacy: bool
    legacy_source: str
    add_prefix_space: bool
    files: dict = field(default_factory=dict)
    rules: str = "4.57"

    def describe(self) -> str:
        """One line for logs and reports."""
        where = ("user-defined pieces of tokenizer.model" if self.markers == "sentencepiece"
                 else f"added tokens ({', '.join(self.declared_in)})")
        legacy = f"legacy={self.legacy} ({self.legacy_source})"
        if not self.legacy:
            legacy += f", add_prefix_space={self.add_prefix_space}"
        own = ("SpiritLM's path (transformers 4.x slow LlamaTokenizer)" if self.rules == "4.57" else
               f"the family's own path (transformers {self.rules}'s slow LlamaTokenizer)")
        how = own if self.tokenization == "spiritlm" else "the installed transformers' LlamaTokenizer (tokenization='transformers')"
        return f"markers and units are {where}; {legacy}; tokenised by {how}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["declared_in"] = list(self.declared_in)
        return data


def check_tokenization(tokenization: str) -> str:
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"unknown tokenization {tokenization!r}; use 'spiritlm' (SpiritLM's own path, the "
                         "default) or 'transformers' (the installed transformers' LlamaTokenizer)")
    return tokenization


def file_hashes(directory: str | Path) -> dict[str, str]:
    """SHA-256 of each tokenizer file in ``directory`` (those present)."""
    directory = Path(directory)
    return {name: sha256_file(directory / name)
            for name in TOKENIZER_FILES if (directory / name).is_file()}


def detect_layout(tokenizer: SlowLlamaTokenizer, directory: str | Path, *, marker: str,
                  tokenization: str = "spiritlm") -> TokenizerLayout:
    """Where ``marker`` (and with it the family's other special pieces, e.g. SpiritLM's) lives in these files."""
    if marker in tokenizer.added_tokens_encoder:
        markers = "added_tokens"
        declared = tuple(getattr(tokenizer, "declared_in", ())) or ("tokenizer files",)
    else:
        markers, declared = "sentencepiece", ("tokenizer.model",)
    return TokenizerLayout(
        tokenization=tokenization, markers=markers, declared_in=declared,
        markers_special=marker in tokenizer.all_special_tokens, legacy=tokenizer.legacy,
        legacy_source=tokenizer.legacy_source, add_prefix_space=bool(tokenizer.add_prefix_space),
        files=file_hashes(directory), rules=getattr(tokenizer, "rules", "4.57"),
    )
