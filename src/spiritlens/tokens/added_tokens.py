"""Added tokens as transformers 4.x read them from a tokenizer directory.

The slow ``LlamaTokenizer`` took its added tokens from ``tokenizer_config.json``'s
``added_tokens_decoder``, or, only when it has none, from ``special_tokens_map.json``,
``added_tokens.json`` and ``tokenizer.json``'s ``added_tokens`` (transformers 4.57
``tokenization_utils_base._from_pretrained``). SpiritLM's checkpoints declare their markers and
``[Hu…]``/``[Pi…]``/``[St…]`` tokens in one of these places; :func:`read_added_tokens` follows the
same order and :func:`declaring_files` names the places a directory uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from spiritlens._io import read_json


SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                      "mask_token", "additional_special_tokens")


@dataclass(eq=False)
class AddedToken:
    """A token matched in the text before SentencePiece runs (transformers' ``AddedToken`` fields).

    Compared by identity, as transformers 4.x compares its ``tokenizers.AddedToken`` objects.
    """

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True
    special: bool = False

    @classmethod
    def from_json(cls, data: dict) -> "AddedToken":
        known = {k: data[k] for k in ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
                 if k in data}
        if not isinstance(known.get("content"), str):
            raise ValueError(f"added token {data!r} has no string 'content'")
        return cls(**known)

    def __str__(self) -> str:
        return self.content


def read_json_file(path: Path) -> Any:
    """A tokenizer JSON file's content, None when absent; a one-line ValueError naming the file when
    it is empty, binary or malformed (:func:`spiritlens._io.read_json`)."""
    if not path.is_file():
        return None
    return read_json(path, "tokenizer file")


def as_added(value: Any) -> Any:
    """transformers' ``convert_added_tokens(save=False)``: ``{"__type": "AddedToken", ...}`` dicts
    (Llama-2-era files) become :class:`AddedToken`, recursively."""
    if isinstance(value, dict) and value.get("__type") == "AddedToken":
        return AddedToken.from_json(value)
    if isinstance(value, (list, tuple)):
        return [as_added(v) for v in value]
    if isinstance(value, dict):
        return {k: as_added(v) for k, v in value.items()}
    return value


def read_added_tokens(directory: Path, config: dict, overrides: dict
                       ) -> tuple[dict[int, AddedToken], dict[str, AddedToken]]:
    added: dict[int, AddedToken] = {}
    by_content: dict[str, AddedToken] = {}
    if "added_tokens_decoder" in config:
        for index, token in (config.pop("added_tokens_decoder") or {}).items():
            token = AddedToken.from_json(token) if isinstance(token, dict) else token
            if not isinstance(token, AddedToken):
                raise ValueError(f"{directory}/tokenizer_config.json: added token {index} is not an object")
            added[int(index)] = token
            by_content[token.content] = token
        return added, by_content
    special_map = read_json_file(directory / "special_tokens_map.json") or {}
    for key, value in special_map.items():
        if key in overrides and overrides[key]:
            continue
        if isinstance(value, dict):
            value = AddedToken.from_json({**value, "special": True})
        elif key == "additional_special_tokens" and isinstance(value, list):
            extra = list(config.pop("additional_special_tokens", None) or [])
            for token in value:
                if isinstance(token, dict):
                    token = AddedToken.from_json({**token, "special": True})
                if not any(token is t or (isinstance(token, str) and token == t) for t in extra):
                    extra.append(token)
            value = extra
        config[key] = value
    added_file = read_json_file(directory / "added_tokens.json")
    if added_file:
        specials = []
        for key in SPECIAL_TOKEN_KEYS:
            value = config.get(key)
            if value is not None:
                specials += [str(t) for t in value] if key == "additional_special_tokens" else [str(value)]
        for content, index in added_file.items():
            special = content in specials
            added[int(index)] = AddedToken(content, normalized=not special, special=special)
    tokenizer_json = read_json_file(directory / "tokenizer.json")
    if tokenizer_json:
        for entry in tokenizer_json.get("added_tokens", []):
            entry = dict(entry)
            index = int(entry.pop("id"))
            added[index] = AddedToken.from_json(entry)
            by_content[added[index].content] = added[index]
    return added, by_content


def declaring_files(directory: Path, config: dict) -> Iterable[str]:
    raw = read_json_file(directory / "tokenizer_config.json") or {}
    if raw.get("added_tokens_decoder"):
        yield "tokenizer_config.json added_tokens_decoder"
    if raw.get("additional_special_tokens"):
        yield "tokenizer_config.json additional_special_tokens"
    if "added_tokens_decoder" not in raw:
        special_map = read_json_file(directory / "special_tokens_map.json") or {}
        if special_map.get("additional_special_tokens"):
            yield "special_tokens_map.json additional_special_tokens"
        if (directory / "added_tokens.json").is_file():
            yield "added_tokens.json"
        if (directory / "tokenizer.json").is_file():
            yield "tokenizer.json added_tokens"
