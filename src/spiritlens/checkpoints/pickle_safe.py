"""Reading SpiritLM speech-tokenizer checkpoints (``.pt`` files) without fairseq.

Plain checkpoints (SpiritLM's converted mHuBERT, the quantizers) load with ``weights_only=True``.
Raw fairseq checkpoints pickle fairseq classes (``Dictionary``, enums, sometimes an
``argparse.Namespace``); :func:`load_trusted` loads them with ``weights_only=False`` and an
unpickler that replaces every ``fairseq.*``/``omegaconf.*`` class by an inert stub. Unpickling can
run code: use it on trusted files only.
"""

from __future__ import annotations

import argparse
import pickle
import types
from pathlib import Path
from typing import Any

import torch

_STUBBED_PREFIXES = ("fairseq", "omegaconf", "hydra")


class PickledStub:
    """Stand-in for a class of a package we do not import: keeps its constructor args and state."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<stub {type(self).__module__}.{type(self).__qualname__}>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (PickledStub,), {"__module__": module, "__qualname__": name})


class _StubbingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] in _STUBBED_PREFIXES:
            return _stub_class(module, name)
        return super().find_class(module, name)


# torch.load subclasses ``pickle_module.Unpickler`` and calls ``pickle_module.load`` for its header.
_stubbing_pickle = types.SimpleNamespace(
    Unpickler=_StubbingUnpickler,
    load=lambda file, **kwargs: _StubbingUnpickler(file, **kwargs).load(),
    __name__="spiritlens_stubbing_pickle",
)


def load_plain(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``path``."""
    _check_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: not a plain {what} checkpoint "
                         f"({_first_line(error)})") from None
    except Exception as error:
        raise ValueError(f"{path}: cannot read {what} checkpoint ({_first_line(error)})") from None


def load_trusted(path: Path, what: str) -> Any:
    """``torch.load`` with ``weights_only=False``, fairseq classes stubbed. Trusted files only."""
    _check_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_stubbing_pickle)
    except Exception as error:
        raise ValueError(f"{path}: cannot read {what} checkpoint ({_first_line(error)})") from None


def load_any(path: Path, what: str) -> Any:
    """Plain load first; fall back to :func:`load_trusted` for pickled fairseq classes."""
    _check_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return load_trusted(path, what)
    except Exception as error:
        raise ValueError(f"{path}: cannot read {what} checkpoint ({_first_line(error)})") from None


def to_plain(value: Any) -> Any:
    """Config values as plain Python: Namespaces and stubs become dicts, enum stubs their value."""
    if isinstance(value, PickledStub):
        if value.__dict__.keys() <= {"args", "kwargs"} and len(value.args) == 1 and not value.kwargs:
            return to_plain(value.args[0])  # an enum member pickled as Cls(value)
        return {k: to_plain(v) for k, v in value.__dict__.items() if k not in ("args", "kwargs")}
    if isinstance(value, (types.SimpleNamespace, argparse.Namespace)):
        return {k: to_plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} checkpoint not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a {what} checkpoint file")


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
