"""Model families behind one boundary (:class:`~spiritlens.models.base.ModelFamily`): each family is a
folder here and one line in :data:`FAMILIES` (detection tries them in this order).

- ``spiritlm``: SpiritLM Base and Expressive (:mod:`spiritlens.models.spiritlm`);
- ``speechgpt``: SpeechGPT-7B-cm (:mod:`spiritlens.models.speechgpt`);
- ``llama``: a text-only Llama-2 checkpoint, the backbone SpiritLM was built from (:mod:`spiritlens.models.llama`).

Families are imported on first use, so that the speech front end and the checkpoint writers can read a
family's constants without loading the rest.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from spiritlens.models.base import ModelFamily

FAMILIES: dict[str, str] = {
    "spiritlm": "spiritlens.models.spiritlm.family:SpiritLM",
    "speechgpt": "spiritlens.models.speechgpt.family:SpeechGPT",
    "llama": "spiritlens.models.llama.family:LlamaBackbone",
}
_LOADED: dict[str, ModelFamily] = {}


def get_family(name: "str | ModelFamily") -> ModelFamily:
    """The registered family ``name`` (an instance passes through); ValueError listing them otherwise."""
    if isinstance(name, ModelFamily):
        return name
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; use one of {', '.join(FAMILIES)}")
    if name not in _LOADED:
        module, cls = FAMILIES[name].split(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def detect_family(model_dir: Path, config: dict, tokenizer) -> ModelFamily:
    """The first family (in :data:`FAMILIES`' order) that owns ``model_dir``; ValueError if none does."""
    for name in FAMILIES:
        family = get_family(name)
        if family.owns(model_dir, config, tokenizer):
            return family
    raise ValueError(f"{model_dir}: not a checkpoint of any supported model family ({', '.join(FAMILIES)}): "
                     f"config.json's model_type is {config.get('model_type')!r}")


def resolve_model(name_or_path: str, family: ModelFamily | None = None) -> Path:
    """The model folder of a path, or of a checkpoint name a family knows (``spirit-lm-base-7b``...)."""
    from spiritlens.models.base import is_path

    text = str(name_or_path)
    if not text:
        raise ValueError("model name_or_path is empty")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model path {text!r} is a file, expected a model directory")
        return path
    if is_path(text):
        raise FileNotFoundError(f"model directory {text!r} does not exist")
    candidates = [family] if family is not None else [get_family(n) for n in FAMILIES]
    errors = []
    for candidate in candidates:
        try:
            found = candidate.resolve(text)
        except ValueError as error:
            errors.append(str(error))
            continue
        if found is not None:
            return found
    raise ValueError(errors[0] if errors else f"unknown model {text!r}: pass a model directory")


def tree_hint(path: Path) -> str | None:
    """Any family's explanation of a folder that is not a model directory (e.g. a checkpoint tree's root)."""
    for name in FAMILIES:
        hint = get_family(name).tree_hint(path)
        if hint:
            return hint
    return None


__all__ = ["FAMILIES", "ModelFamily", "detect_family", "get_family", "resolve_model", "tree_hint"]
