"""Builders and runners shared by the test modules (import them from here, never from another test).

- ``REPO_ROOT``, ``FIXTURES``: the checkout and its test fixtures.
- ``SPOKEN_PROMPT``: the sentence the spoken-prompt fixtures synthesise.
- :func:`run_cli`: ``python -m spiritlens ARGS`` in a subprocess, as a user runs it (one thread,
  ``$SPIRITLM_CHECKPOINTS_DIR`` unset unless given).
- :func:`make_result`: a trace result dict with chosen scores, for aggregate, figure and report tests.
- :func:`write_gained_tiny_model`: a tiny SpiritLM whose RMSNorm gains are far from 1 (read-out tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SPOKEN_PROMPT = "The Space Needle is located in the city of"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m spiritlens *args``; stdout and stderr captured as text."""
    environment = {k: v for k, v in os.environ.items() if k != "SPIRITLM_CHECKPOINTS_DIR"}
    environment["OMP_NUM_THREADS"] = "1"
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "spiritlens", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=cwd)


def make_result(
    n_rows: int,
    subject: tuple[int, int],
    *,
    low: float = 0.1,
    high: float = 0.9,
    n_layers: int = 2,
    kind: str = "hidden",
    set_rows: dict[int, list[float]] | None = None,
    **extra,
) -> dict:
    """A result dict: every cell equals ``low`` except the rows in ``set_rows`` (row -> [L] values)."""
    scores = np.full((n_rows, n_layers), low)
    for row, values in (set_rows or {}).items():
        scores[row] = values
    result = {
        "input_ids": list(range(n_rows)),
        "tokens": [f"t{i}" for i in range(n_rows)],
        "subject_range": list(subject),
        "subject_rows": list(subject),
        "rows": [{"label": f"t{i}", "positions": [i]} for i in range(n_rows)],
        "answer_id": 7,
        "answer": " Paris",
        "correct_prediction": True,
        "high_score": high,
        "low_score": low,
        "kind": kind,
        "window": 10,
        "n_layers": n_layers,
        "scores": scores.tolist(),
        "modality": "text",
        "prompt": f"prompt with {n_rows} rows",
        "subject": "s",
    }
    result.update(extra)
    return result


def assert_drawn_png(path, *, min_width: int = 200, min_height: int = 100, min_colours: int = 8) -> "np.ndarray":
    """``path`` is a PNG of at least ``min_width`` x ``min_height`` pixels with at least ``min_colours``
    distinct colours (text, axes and cells drawn, not a blank or one-colour canvas); its pixels."""
    from matplotlib import image

    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, f"{path} is only {width}x{height} pixels"
    colours = np.unique((pixels.reshape(-1, pixels.shape[-1]) * 255).round().astype(np.uint8), axis=0)
    assert len(colours) >= min_colours, f"{path} has {len(colours)} colours: nothing drawn"
    return pixels


def space_needle_prompt(model, wav, aligner):
    """The :class:`SpeechPrompt` of ``SPOKEN_PROMPT`` (subject "Space Needle") aligned by ``aligner``;
    the tiny random CTC model's low-confidence warning is silenced (it is recorded in the prompt)."""
    import warnings

    from spiritlens.align import LowAlignmentConfidence
    from spiritlens.align.speech_prompt import SpeechPrompt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        return SpeechPrompt.from_audio(model, wav, transcript=SPOKEN_PROMPT, subject="Space Needle", aligner=aligner)


def write_gained_tiny_model(directory, seed: int = 0):
    """A tiny SpiritLM directory whose every RMSNorm gain is drawn from U(0.2, 2.2)."""
    import torch
    from transformers import LlamaForCausalLM

    from spiritlens.synthetic.tiny import write_tiny_model, write_weights

    directory = write_tiny_model(directory, seed=seed)
    model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed + 1)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name in state:
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            state[name] = torch.rand(state[name].shape, generator=generator) * 2 + 0.2
    write_weights(state, directory)
    return directory
