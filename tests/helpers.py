"""Builders and runners shared by the test modules (import them from here, never from another test).

- ``REPO_ROOT``, ``FIXTURES``: the checkout and its test fixtures.
- ``SPOKEN_PROMPT``: the sentence the spoken-prompt fixtures synthesise.
- :func:`run_cli`: ``python -m spiritlens ARGS`` in a subprocess, as a user runs it (one thread,
  ``$SPIRITLM_CHECKPOINTS_DIR`` unset unless given).
- :func:`make_result`: a trace result dict with chosen scores, for aggregate, figure and report tests.
- :func:`assert_drawn_png`, :func:`assert_legends_outside_the_data`, :func:`band_pixel_columns`: what a
  figure drew (its pixels, its legends' boxes against the axes); :func:`tqdm_bar_updates`: bars in stderr.
- :func:`write_gained_tiny_model`: a tiny SpiritLM whose RMSNorm gains are far from 1 (read-out tests).
- :func:`brute_force_433`: transformers 4.33's slow-tokenizer rule for SpeechGPT's files, written out.
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


def write_result(path, document: dict) -> Path:
    """Write a hand-made result document as ``spiritlens aggregate`` accepts one: with its ``checksum``
    (the SHA-256 of its canonical JSON, computed here: sorted keys, no spaces, UTF-8)."""
    import hashlib
    import json

    body = {k: v for k, v in document.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path = Path(path)
    path.write_text(json.dumps({**body, "checksum": hashlib.sha256(text.encode("utf-8")).hexdigest()}))
    return path


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


def assert_legends_outside_the_data(fig, axes) -> None:
    """Every legend of ``fig`` (figure-level and per-axes), as drawn, lies outside the data area of every
    axes in ``axes``: no pixel of its box is inside an axes' frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # draws as save_png does (Agg), constrained layout applied
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            frame = ax.get_window_extent(renderer)
            overlap = min(box.x1, frame.x1) - max(box.x0, frame.x0), min(box.y1, frame.y1) - max(box.y0, frame.y0)
            assert overlap[0] <= 0 or overlap[1] <= 0, (
                f"legend {[t.get_text() for t in legend.get_texts()][:2]} at {box.bounds} overlaps the data area "
                f"{frame.bounds} of {ax.get_title()!r}")


def tqdm_bar_updates(stderr: str) -> int:
    """How many tqdm text-bar states (``" 40%|████      | 2/5 [...]"``) ``stderr`` holds: tqdm writes one per
    refresh, separated by carriage returns, so 0 means no bar was drawn at all."""
    import re

    return sum(1 for part in re.split(r"[\r\n]", stderr) if re.search(r"\d+%\|", part))


def band_pixel_columns(pixels: "np.ndarray", alpha: float = 0.3, run: int = 5) -> int:
    """Columns of an AIE line plot's pixels holding a vertical run of at least ``run`` pixels of a
    category's band colour (its tab10 line colour at ``alpha`` over white): a band, not the
    anti-aliased edge of a line (which is one pixel thick)."""
    from matplotlib import colormaps

    from spiritlens.figures.grid import LINE_COLORS

    rgb = pixels[..., :3]
    tab10 = colormaps["tab10"].colors
    found = np.zeros(rgb.shape[:2], dtype=bool)
    for index in LINE_COLORS:
        band = alpha * np.asarray(tab10[index]) + (1 - alpha)
        found |= np.abs(rgb - band).max(axis=-1) < 2.5 / 255
    columns = 0
    for column in found.T:
        padded = np.concatenate([[0], column.astype(int), [0]])
        starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
        columns += bool(((ends - starts) >= run).any())
    return columns
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


def brute_force_433(folder, text: str) -> list[int]:
    """transformers 4.33.1's ``PreTrainedTokenizer.tokenize`` + BOS for a SpeechGPT tokenizer folder
    (``added_tokens.json``, BOS/EOS/UNK 1/2/0), written out: the no-split tokens are the added tokens and
    ``<s>``, ``</s>``, ``<unk>``; the added ones (plain strings in 4.33) strip the whitespace on both sides,
    the three specials (AddedToken objects with lstrip/rstrip false) strip nothing; SentencePiece encodes
    each stretch left on its own."""
    import json
    import re

    import sentencepiece

    added = json.loads((Path(folder) / "added_tokens.json").read_text())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(Path(folder) / "tokenizer.model"))
    specials = {"<s>": 1, "</s>": 2, "<unk>": 0}
    names = sorted([*added, *specials], key=len, reverse=True)
    parts = [p for p in re.split("(" + "|".join(map(re.escape, names)) + ")", text) if p]
    for i, part in enumerate(parts):
        if part in added:
            if i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
            if i > 0:
                parts[i - 1] = parts[i - 1].rstrip()
    ids = [1]
    for part in parts:
        if part in added:
            ids.append(added[part])
        elif part in specials:
            ids.append(specials[part])
        elif part:
            ids += sp.encode(part)
    return ids


def assert_logits_equal_llama_for_causal_lm(model, folder, prompts, atol: float = 1e-5) -> None:
    """``model``'s logits for each prompt equal ``transformers.LlamaForCausalLM`` of ``folder`` (float32,
    eager attention) on the same ids, within ``atol``; the logits are not trivially small."""
    import torch
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    for prompt in prompts:
        ids = model.to_tokens(prompt)
        with torch.no_grad():
            expected = hf(ids).logits
            got = model(ids)
        assert float((got - expected).abs().max()) <= atol, prompt
        assert float(expected.abs().max()) > 0.1
