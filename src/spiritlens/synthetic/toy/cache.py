"""Where a toy SpiritLM lives: the inputs that decide it, their hash (the cache key), its manifest and cache directory."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from spiritlens._io import read_json
from spiritlens.synthetic.toy.config import (BACKBONE_FOLDER, BACKBONE_VARIANT, Distractor, EXPRESSIVE_VARIANT,
                                            ExpressiveToyConfig, TOY_FORMAT, ToyConfig, ToyFact, VARIANT)
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder, variant_dir
from spiritlens._io import json_digest


MANIFEST = "toy_manifest.json"
EXPRESSIVE_MANIFEST = "toy_expressive_manifest.json"  # written last: the toy SpiritLM Expressive is complete
EXPRESSIVE_FORMAT = 1


REPORT = "toy_report.json"


CACHE_ENV = "SPIRITLENS_CACHE_DIR"


# Modules whose source decides what the toy is trained on (prompt path, speech path, judging).
PROMPT_PATH_MODULES = (
    "spiritlens.synthetic.toy.build", "spiritlens.synthetic.toy.config", "spiritlens.synthetic.toy.training",
    "spiritlens.synthetic.toy.backbone",
    "spiritlens.synthetic.tiny", "spiritlens.tokens.added_tokens", "spiritlens.tokens.layout",
    "spiritlens.data.tts.backend", "spiritlens.data.tts.espeak", "spiritlens.tokens.prompt", "spiritlens.tokens.vocab", "spiritlens.audio.waveform",
    "spiritlens.models.base", "spiritlens.models.spiritlm.family", "spiritlens.models.spiritlm.prompt",
    "spiritlens.models.spiritlm.vocab", "spiritlens.models.spiritlm.tree",
    "spiritlens.checkpoints.tree", "spiritlens.model.hooked", "spiritlens.units.speech_tokenizer",
    "spiritlens.units.hubert", "spiritlens.units.quantizer", "spiritlens.synthetic.tiny_units", "spiritlens.data.tts.corpus",
    "spiritlens.data.judge", "spiritlens.data.normalize", "spiritlens.spoken.numbers", "spiritlens.tokens.llama",
    "spiritlens.spoken.form", "spiritlens.spoken.espeak",
)


# Modules whose source decides what the toy SpiritLM Expressive is trained on, besides the toy's own
# (its key includes the toy's): its build, the Expressive speech front end and its tiny parts, the judging.
EXPRESSIVE_PATH_MODULES = (
    "spiritlens.synthetic.toy.expressive", "spiritlens.synthetic.toy.evaluation", "spiritlens.synthetic.tiny_expressive",
    "spiritlens.units.expressive", "spiritlens.units.pitch", "spiritlens.units.style", "spiritlens.data.filtering",
)


# ------------------------------------------------------------------ cache key
def prompt_path_digest(modules: Sequence[str] = PROMPT_PATH_MODULES) -> str:
    """SHA-256 over the source of ``modules`` (default :data:`PROMPT_PATH_MODULES`: a change there
    retrains the toy)."""
    digest = hashlib.sha256()
    for name in modules:
        module = importlib.import_module(name)
        digest.update(name.encode() + b"\0" + Path(module.__file__).read_bytes() + b"\0")
    return digest.hexdigest()


def _espeak_version() -> str | None:
    try:
        done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return " ".join(done.stdout.split()[:6]) or None


def toy_inputs(config: ToyConfig, facts: Sequence[ToyFact], distractors: Sequence[Distractor]) -> dict:
    """Everything the trained toy depends on, as JSON (its SHA-256 is the cache key)."""
    import sentencepiece
    import torch
    import transformers

    from spiritlens import __version__

    return {
        "format": TOY_FORMAT,
        "config": config.to_dict(),
        "facts": [f.to_dict() for f in facts],
        "distractors": [asdict(d) for d in distractors],
        "versions": {"spiritlens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "sentencepiece": sentencepiece.__version__,
                     "espeak-ng": _espeak_version() if config.tts == "espeak" else None},
        "prompt_path_sha256": prompt_path_digest(),
    }


def inputs_hash(inputs: dict) -> str:
    return json_digest(inputs)


def expressive_inputs(toy_hash: str, expressive: ExpressiveToyConfig) -> dict:
    """Everything the toy SpiritLM Expressive depends on besides the toy it is built beside (whose
    inputs hash ``toy_hash`` covers the facts, the backbone, the audio and the shared settings), as
    JSON; its SHA-256 is the Expressive toy's own cache key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        fcpe = version("torchfcpe")
    except PackageNotFoundError:
        fcpe = None
    return {"format": EXPRESSIVE_FORMAT, "toy_hash": toy_hash, "config": expressive.to_dict(),
            "versions": {"torchfcpe": fcpe},
            "expressive_path_sha256": prompt_path_digest(EXPRESSIVE_PATH_MODULES)}


def default_cache_dir() -> Path:
    """``$SPIRITLENS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spiritlens``, else ``~/.cache/spiritlens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "spiritlens"
    return Path("~/.cache/spiritlens").expanduser()


# ------------------------------------------------------------------ public entry points
def read_manifest(root: str | os.PathLike) -> dict:
    """The ``toy_manifest.json`` of a toy tree; ValueError if ``root`` is not a finished toy."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{str(root)!r} is not a toy SpiritLM (no {MANIFEST}; build one with spiritlens make-toy)")
    manifest = read_json(path, "toy manifest")
    if not isinstance(manifest, dict) or "hash" not in manifest or "inputs" not in manifest:
        raise ValueError(f"{path} is not a toy manifest (no hash/inputs)")
    return manifest


def toy_facts(root: str | os.PathLike) -> list[ToyFact]:
    """The facts a toy tree was trained on, in training order."""
    return [ToyFact.from_dict(f) for f in read_manifest(root)["inputs"]["facts"]]


def model_dir(root: str | os.PathLike) -> Path:
    """The toy SpiritLM's model folder in a toy tree (``root/spiritlm_model/spirit-lm-base-7b``)."""
    return variant_dir(root, VARIANT)


def read_expressive_manifest(root: str | os.PathLike) -> dict:
    """The ``toy_expressive_manifest.json`` of a toy tree; ValueError (one line) if ``root`` has no
    finished toy SpiritLM Expressive."""
    path = Path(root) / EXPRESSIVE_MANIFEST
    if not path.is_file():
        raise ValueError(f"{str(root)!r} has no toy SpiritLM Expressive (no {EXPRESSIVE_MANIFEST}; build it with "
                         "spiritlens make-toy DIR --expressive, or toy_checkpoints(expressive=True))")
    manifest = read_json(path, "toy Expressive manifest")
    if not isinstance(manifest, dict) or "hash" not in manifest or "inputs" not in manifest:
        raise ValueError(f"{path} is not a toy Expressive manifest (no hash/inputs)")
    return manifest


def expressive_model_dir(root: str | os.PathLike) -> Path:
    """The toy SpiritLM Expressive's model folder in a toy tree (``root/spiritlm_model/`` + the
    Expressive variant, beside the Base's :func:`model_dir`); its speech tokenizer is
    :func:`expressive_speech_tokenizer_dir`. Raises ValueError (one line) when the tree has none."""
    read_expressive_manifest(root)
    folder = variant_dir(root, EXPRESSIVE_VARIANT)
    if not folder.is_dir():
        raise ValueError(f"{str(root)!r} has no toy SpiritLM Expressive ({folder} is missing): rebuild it with "
                         "spiritlens make-toy DIR --expressive")
    return folder


def expressive_speech_tokenizer_dir(root: str | os.PathLike) -> Path:
    """``root/speech_tokenizer``: the toy's tiny mHuBERT (``hubert_25hz/``, shared with the Base) with
    the toy Expressive's tiny pitch quantizer and style encoder beside it, SpiritLM Expressive's
    layout. Raises ValueError (one line) when the tree has no toy SpiritLM Expressive."""
    from spiritlens.units.expressive import is_expressive_dir

    read_expressive_manifest(root)
    folder = speech_tokenizer_folder(root)
    if not is_expressive_dir(folder):
        raise ValueError(f"{str(root)!r}: {folder} has no pitch quantizer and style encoder: rebuild the toy "
                         "SpiritLM Expressive with spiritlens make-toy DIR --expressive --force")
    return folder


def backbone_dir(root: str | os.PathLike) -> Path:
    """The toy backbone's folder in a toy tree (``root/backbone/llama-2-7b-hf``: the text-only Llama
    the toy SpiritLM was continued from, in meta-llama/Llama-2-7b-hf's layout).

    Raises ValueError when ``root`` has no such folder (a toy built before the backbone existed:
    rebuild it with ``spiritlens make-toy``)."""
    folder = _backbone_folder(root)
    if not folder.is_dir():
        raise ValueError(f"{str(root)!r} has no toy backbone ({BACKBONE_FOLDER}/{BACKBONE_VARIANT} is missing): "
                         "rebuild the toy with spiritlens make-toy")
    return folder


def _backbone_folder(root: str | os.PathLike) -> Path:
    return Path(root) / BACKBONE_FOLDER / BACKBONE_VARIANT


def _move_into_place(building: Path, root: Path, digest: str) -> None:
    if root.exists() and any(root.iterdir()):
        try:
            if read_manifest(root)["hash"] == digest:
                return  # another process built the same toy meanwhile
        except ValueError:
            pass
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    elif root.exists():
        root.rmdir()
    try:
        os.replace(building, root)
    except OSError:
        if read_manifest(root)["hash"] != digest:  # lost a race to a different build
            raise
