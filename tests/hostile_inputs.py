"""Builders of hostile files for tests/integration/hostile: each returns an ``edit(directory)`` that
changes one thing in a copy of a good folder, or writes raw bytes.

Pickles too deep or self-containing cannot be made by ``pickle.dumps`` (it recurses), so
:func:`deep_list_pickle` and :func:`self_containing_pickle` write the opcodes by hand, and
:func:`torch_file` puts a pickle into torch.save's zip layout.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

Edit = Callable[[Path], None]


def set_path(document: dict, dotted: str, value: Any) -> None:
    """``document["a"]["b"] = value`` for ``dotted`` ``"a.b"`` (a value of ``DELETE`` removes the key)."""
    *parents, last = dotted.split(".")
    for key in parents:
        document = document[key]
    if value is DELETE:
        document.pop(last, None)
    else:
        document[last] = value


DELETE = object()


def edit_document(relative: str, load: Callable[[str], Any], dump: Callable[[Any], str], **changes) -> Edit:
    """Set dotted keys (``encoder_params__width`` for ``encoder_params.width``) of a text document."""
    def edit(directory: Path) -> None:
        path = directory / relative
        document = load(path.read_text())
        for key, value in changes.items():
            set_path(document, key.replace("__", "."), value)
        path.write_text(dump(document))
    return edit


def edit_yaml(relative: str, **changes) -> Edit:
    return edit_document(relative, yaml.safe_load, lambda d: yaml.safe_dump(d, sort_keys=False), **changes)


def edit_json(relative: str, **changes) -> Edit:
    return edit_document(relative, json.loads, json.dumps, **changes)


def write(relative: str, content: str | bytes) -> Edit:
    """Replace a file's content with ``content`` (text or bytes)."""
    def edit(directory: Path) -> None:
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return edit


def edit_torch(relative: str, change: Callable[[Any], Any]) -> Edit:
    """Load a torch file (``weights_only=True``), apply ``change`` (it may return a replacement) and save it."""
    def edit(directory: Path) -> None:
        path = directory / relative
        data = torch.load(path, weights_only=True)
        replaced = change(data)
        torch.save(data if replaced is None else replaced, path)
    return edit


def poison(key: str, value: float = float("nan")) -> Callable[[dict], None]:
    """A state-dict change: one value of tensor ``key`` set to ``value`` (NaN by default)."""
    def change(state: dict) -> None:
        state[key].view(-1)[0] = value
    return change


def as_dtype(dtype: torch.dtype, keys: Callable[[str], bool] = lambda k: True) -> Callable[[dict], None]:
    """A state-dict change: the tensors whose names pass ``keys`` cast to ``dtype``."""
    def change(state: dict) -> None:
        for key in list(state):
            if keys(key):
                state[key] = state[key].to(dtype)
    return change


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def dict_pickle(items: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of a dict whose values are the given pickle fragments (no PROTO/STOP in them)."""
    body = b"".join(_unicode(key) + value + b"s" for key, value in items.items())
    return b"\x80\x02}" + body + b"."


def deep_list_fragment(depth: int) -> bytes:
    """``[[[...]]]`` ``depth`` lists deep, without recursion: EMPTY_LIST x depth, then APPEND x (depth - 1)."""
    return b"]" * depth + b"a" * (depth - 1)


def self_containing_fragment() -> bytes:
    """A list that contains itself: EMPTY_LIST, BINPUT 0, BINGET 0, APPEND."""
    return b"]q\x00h\x00a"


def torch_file(path: Path, pickle_bytes: bytes) -> None:
    """A torch.save zip archive whose ``data.pkl`` is ``pickle_bytes`` (the other entries from a real save)."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            data = pickle_bytes if info.filename.endswith("data.pkl") else source.read(info)
            archive.writestr(info.filename, data)


def write_torch_pickle(relative: str, pickle_bytes: bytes) -> Edit:
    def edit(directory: Path) -> None:
        torch_file(directory / relative, pickle_bytes)
    return edit


def zip_bomb(relative: str, size: int = 200 << 20) -> Edit:
    """A torch.save archive whose ``data.pkl`` is ``size`` bytes of zeros, deflated (about 1000-fold)."""
    def edit(directory: Path) -> None:
        buffer = io.BytesIO()
        torch.save({}, buffer)
        source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
        with zipfile.ZipFile(directory / relative, "w", zipfile.ZIP_DEFLATED) as archive:
            for info in source.infolist():
                if info.filename.endswith("data.pkl"):
                    with archive.open(info.filename, "w", force_zip64=True) as handle:
                        block = bytes(1 << 20)
                        for _ in range(size >> 20):
                            handle.write(block)
                else:
                    archive.writestr(info.filename, source.read(info))
    return edit


def alias_bomb(levels: int = 9) -> str:
    """The YAML billion-laughs: each level an alias list of 9 of the previous (9**levels leaves)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def chain(*edits: Edit) -> Edit:
    def edit(directory: Path) -> None:
        for one in edits:
            one(directory)
    return edit


def known_problems(path: str) -> list:
    """What ``load_known(path)`` kept and dropped: ``[kept, reason, reason, …]`` (run in a case's child)."""
    from spiritlens.data.known import load_known

    dataset = load_known(path)
    return [len(dataset)] + [reason for _, reason in dataset.problems]


def wav_declaring(path: Path, rate: int, samples=None) -> Path:
    """A 16-bit PCM WAV whose header declares ``rate`` Hz (written at 16 kHz, then the two rate
    fields of the ``fmt `` chunk patched: sample rate and byte rate)."""
    import numpy as np
    import soundfile

    samples = np.zeros(1600, np.float32) if samples is None else samples
    soundfile.write(path, samples, 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12:fmt + 16] = struct.pack("<I", rate)
    data[fmt + 16:fmt + 20] = struct.pack("<I", (rate * 2) % 2**32)
    path.write_bytes(bytes(data))
    return path
