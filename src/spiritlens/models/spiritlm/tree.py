"""Where SpiritLM's checkpoints live on disk (SpiritLM's ``checkpoints/README.md``)::

    $SPIRITLM_CHECKPOINTS_DIR/spiritlm_model/{spirit-lm-base-7b,spirit-lm-expressive-7b}/
    $SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer/hubert_25hz/{mhubert_base_25hz.pt,L11_quantizer_500.pt}

One environment rule (``$SPIRITLM_CHECKPOINTS_DIR``), the variant names, and where the speech tokenizer
is found. Imports nothing of spiritlens' (the speech front end and the writers of tiny trees read it).
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS_ENV = "SPIRITLM_CHECKPOINTS_DIR"
VARIANTS = ("spirit-lm-base-7b", "spirit-lm-expressive-7b")

MODEL_FOLDER = "spiritlm_model"  # <root>/spiritlm_model/<variant>/: config.json, weights, tokenizer files
SPEECH_TOKENIZER_FOLDER = "speech_tokenizer"  # <root>/speech_tokenizer/: hubert_25hz/ and its quantizer


def variant_dir(root: str | os.PathLike, variant: str) -> Path:
    """``root/spiritlm_model/<variant>``: where SpiritLM's checkpoint tree keeps a model."""
    return Path(root) / MODEL_FOLDER / variant


def speech_tokenizer_folder(root: str | os.PathLike) -> Path:
    """``root/speech_tokenizer``: where SpiritLM's checkpoint tree keeps the speech tokenizer."""
    return Path(root) / SPEECH_TOKENIZER_FOLDER


def checkpoints_dir(required: bool = True) -> Path | None:
    """``$SPIRITLM_CHECKPOINTS_DIR`` as a Path (error if unset and ``required``)."""
    value = os.environ.get(CHECKPOINTS_ENV)
    if not value:
        if required:
            raise ValueError(
                f"${CHECKPOINTS_ENV} is not set: point it at the folder holding spiritlm_model/ "
                "and speech_tokenizer/, or pass a model directory"
            )
        return None
    return Path(value).expanduser()


def resolve_variant(name: str) -> Path:
    """The model folder of a variant name (``spirit-lm-base-7b``...) under ``$SPIRITLM_CHECKPOINTS_DIR``;
    ValueError for another name, FileNotFoundError when the tree lacks it."""
    if name not in VARIANTS:
        raise ValueError(f"unknown SpiritLM variant {name!r}; known variants: {', '.join(VARIANTS)}, "
                         "or pass a model directory")
    root = checkpoints_dir(required=True)
    path = variant_dir(root, name)
    if not path.is_dir():
        raise FileNotFoundError(f"variant {name!r} not found: {path} does not exist (${CHECKPOINTS_ENV}={root})")
    return path


def tree_hint(path: Path) -> str | None:
    """Why ``path`` is not a model directory when it is a SpiritLM checkpoint tree's root (``make-tiny``,
    ``make-toy``, ``toy_checkpoints()`` write those), or None."""
    if not (path / MODEL_FOLDER).is_dir():
        return None
    variants = sorted(p.name for p in (path / MODEL_FOLDER).iterdir() if p.is_dir())
    return (f"{str(path)!r} is a SpiritLM checkpoint tree, not a model directory: pass "
            f"{str(variant_dir(path, variants[0] if variants else VARIANTS[0]))!r} (or set "
            f"{CHECKPOINTS_ENV}={str(path)!r} and pass the variant name)")


def speech_tokenizer_dir(model_dir: Path | None = None) -> Path | None:
    """The speech-tokenizer folder: ``$SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer``, else one next
    to the model's ``spiritlm_model/`` folder; None if neither exists."""
    candidates = []
    root = checkpoints_dir(required=False)
    if root is not None:
        candidates.append(speech_tokenizer_folder(root))
    if model_dir is not None:
        candidates.append(speech_tokenizer_folder(Path(model_dir).resolve().parent.parent))
    for candidate in candidates:
        if (candidate / "hubert_25hz").is_dir():
            return candidate
    return None


