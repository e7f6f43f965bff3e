"""Which checkpoints an experiment runs on: SpiritLM's tree, a model folder of any family (``--model``),
the toy SpiritLM, or tiny random weights.

:func:`resolve_checkpoints` gives the model directory, the speech-tokenizer directory and the aligner;
the embedded runs (no ``--checkpoints`` and no ``$SPIRITLM_CHECKPOINTS_DIR``) build or reuse the toy
SpiritLM (or, with ``--random-weights``, tiny random checkpoints) first. :func:`toy_info` is what the
report says about the toy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from spiritlens._io import read_json, write_atomic
from spiritlens.align.aligner import POCKETSPHINX
from spiritlens.models.spiritlm.tree import CHECKPOINTS_ENV, speech_tokenizer_folder, variant_dir


def weights_kind(config) -> str:
    """``"random"`` (tiny random checkpoints), ``"toy"`` (the trained toy) or ``"checkpoints"``."""
    if not config.embedded:
        return "checkpoints"
    return "random" if config.random_weights else "toy"


def resolve_checkpoints(config, out: Path, *, progress: bool = True,
                        log: Callable[[str], None] = print) -> tuple[Path, Path | None, str | None]:
    """(model dir, speech-tokenizer dir, aligner) of an :class:`~spiritlens.experiment.config.ExperimentConfig`,
    building the embedded checkpoints if needed (tiny random ones under ``out/checkpoints``).

    The aligner is ``--aligner`` (a CTC model directory, the paper's path, or "pocketsphinx"); the
    embedded default, which has no CTC model, aligns with pocketsphinx's real US-English model.
    """
    if config.model is not None:  # a folder of any family (its speech tokenizer, if any, named beside it)
        return (config.model, config.speech_tokenizer,
                None if config.aligner is None else str(config.aligner))
    if config.embedded:
        if config.random_weights:
            from spiritlens.synthetic.tiny import check_nothing_to_overwrite, make_tiny_checkpoints

            root = out / "checkpoints"
            if not (root / ".complete").is_file():
                log(f"[prepare] writing tiny random-weight SpiritLM checkpoints to {root}")
                if not (root / ".building").is_file():  # else: its own folder, half-written by a killed run
                    check_nothing_to_overwrite(root, hint="not written by an experiment: give another --out")
                    write_atomic(root / ".building", "tiny random weights\n")
                make_tiny_checkpoints(root, force=True)
                write_atomic(root / ".complete", "tiny random weights\n")
        else:
            from spiritlens.synthetic.toy.build import toy_checkpoints

            root = config.toy or toy_checkpoints(known=config.known, progress=progress, log=log,
                                                 expressive=config.expressive)
            log(f"[prepare] toy SpiritLM: {root}")
        aligner = POCKETSPHINX if config.aligner is None else str(config.aligner)
        return variant_dir(root, config.variant), speech_tokenizer_folder(root), aligner
    root = Path(config.checkpoints or os.environ[CHECKPOINTS_ENV])
    speech = speech_tokenizer_folder(root)
    return (variant_dir(root, config.variant), speech if speech.is_dir() else None,
            None if config.aligner is None else str(config.aligner))


def toy_info(model_dir: Path) -> dict:
    """What the report says about the toy whose model directory is ``model_dir``: its facts,
    configuration, accuracy and training."""
    from spiritlens.synthetic.toy.cache import REPORT, read_manifest

    root = model_dir.parents[1]
    manifest = read_manifest(root)
    report = read_json(model_dir / REPORT, "toy report")
    return {"root": str(root), "hash": manifest["hash"], "config": manifest["inputs"]["config"],
            "facts": manifest["inputs"]["facts"], "distractor_prompts": len(manifest["inputs"]["distractors"]),
            "accuracy": report["accuracy"], "counts": report["counts"], "meets_targets": report["meets_targets"],
            "training": {k: v for k, v in report["training"].items() if k != "history"}}
