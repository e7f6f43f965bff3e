"""Noise for causal tracing: the scale rule, sigma, and the per-prompt draw (ROME semantics).

Rules (ROME's ``--noise_level``):
- a number ``x``: Gaussian noise ``x * z``;
- ``"3s"`` (also ROME's ``"s3"``; ``"s"`` = 1): ``3 * sigma * z``, sigma measured over subjects
  (:func:`subject_sigma`);
- ``"3v"``: ``3 * std`` of the modality's embedding rows (:func:`embedding_std`);
- ``"u0.1"``: uniform ``0.1 * u``, u ~ U(-1, 1).

The draw and where it is added: :class:`~spiritlens.interventions.corruptions.EmbeddingNoise`
(:func:`embedding_noise` builds it from a rule).
"""

from __future__ import annotations

import os
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from spiritlens._io import json_digest, read_json, write_json_atomic
from spiritlens.runkey import model_fingerprint, run_key, stamp, verify

_RULE = re.compile(r"^(?:(?P<k1>\d*\.?\d*)(?P<r1>[sv])|(?P<r2>[sv])(?P<k2>\d*\.?\d*)|u(?P<u>\d*\.?\d+))$")


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed noise rule: ``kind`` "absolute" | "sigma" | "embedding_std" | "uniform"; ``factor``."""

    kind: str
    factor: float
    text: str

    @property
    def needs_sigma(self) -> bool:
        return self.kind == "sigma"


def parse_noise(noise: float | int | str) -> NoiseSpec:
    """Parse ``3``, ``0.13``, ``"3s"``, ``"s3"``, ``"3v"`` or ``"u0.1"``; negative or malformed -> error."""
    if isinstance(noise, bool):
        raise ValueError(f"noise must be a number or a rule such as '3s', got {noise!r}")
    if isinstance(noise, (int, float)):
        value = float(noise)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"noise must be a non-negative number, got {noise!r}")
        return NoiseSpec("absolute", value, repr(value))
    text = str(noise).strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return parse_noise(value)
    match = _RULE.match(text)
    if not match:
        raise ValueError(f"noise {noise!r} is not a number or a rule ('3s', 's3', '3v', 'u0.1')")
    if match.group("u") is not None:
        return NoiseSpec("uniform", float(match.group("u")), text)
    rule = match.group("r1") or match.group("r2")
    factor_text = match.group("k1") if match.group("r1") else match.group("k2")
    factor = float(factor_text) if factor_text not in (None, "", ".") else 1.0
    return NoiseSpec("sigma" if rule == "s" else "embedding_std", factor, text)


def embedding_noise(spec: NoiseSpec, scale: float, *, samples: int, seed: int, subject_range: tuple[int, int],
                    d_model: int, replace: bool = False, low_score_follows_replace: bool = False,
                    positions: tuple[int, ...] | None = None):
    """The corruption of a noise rule: :class:`~spiritlens.interventions.corruptions.EmbeddingNoise` of
    absolute ``scale`` on the subject's positions ``[b, e)`` (uniform for ``u`` rules), or on the
    scattered ``positions`` (sorted; ``subject_range`` their first and one past their last)."""
    from spiritlens.interventions.corruptions import EmbeddingNoise

    b, e = subject_range
    return EmbeddingNoise(float(scale), samples, seed, int(b), int(e), int(d_model),
                          distribution="uniform" if spec.kind == "uniform" else "normal", replace=replace,
                          low_score_follows_replace=low_score_follows_replace, rule=spec.text,
                          positions=None if positions is None else tuple(positions))


def _embedding_matrix(model) -> torch.Tensor:
    return model.hf_model.get_input_embeddings().weight


def _token_lists(model, subjects: Iterable[str | Sequence[int]]) -> list[list[int]]:
    lists = []
    for subject in subjects:
        if isinstance(subject, str):
            # On its own, without BOS, as ROME tokenises subjects for collect_embedding_std.
            lists.append(model.tokenizer.encode(subject, add_special_tokens=False))
        else:
            lists.append([int(i) for i in subject])
    return lists


def subject_sigma(model, subjects: Iterable[str | Sequence[int]], *, modality: str = "text",
                  cache_dir: str | os.PathLike | None = None, notes: list[str] | None = None) -> float:
    """ROME's sigma: ``torch.std`` (unbiased) of all entries of the subjects' embedding rows.

    ``subjects``: strings (text; each tokenised on its own without BOS, duplicates kept) or
    lists of token ids (e.g. the subject's speech tokens of each spoken prompt). Sigma is computed on
    every call: one embedding lookup over the subjects' ids, which their tokenisation (or the spoken
    prompts' alignment) before it dwarfs, so no stored value is ever trusted. With ``cache_dir`` the
    value is also recorded there as ``sigma_<modality>_<digest of the subjects' ids>.json``, with the run
    key it was computed under (:mod:`spiritlens.runkey`: the model's weights, dtype and device, and the
    subjects) and a checksum; a record that fails its checksum, has another key or holds another value
    is rewritten, and ``notes`` (when given) receives one line saying why.
    Raises ValueError for a bare string (a list of subjects is needed) or no non-empty subject.
    """
    if isinstance(subjects, (str, bytes)):
        raise ValueError(f"subject_sigma takes a list of subjects, got the string {subjects!r:.60}: "
                         f"pass [{subjects!r:.60}] (ROME's sigma is over all Known subjects)")
    lists = _token_lists(model, subjects)
    if not lists or not any(lists):
        raise ValueError("subject_sigma needs at least one non-empty subject")
    ids = torch.tensor([i for ids in lists for i in ids], device=model.device)
    with torch.no_grad():
        sigma = float(_embedding_matrix(model)[ids].float().std())
    if cache_dir is not None:
        digest = json_digest([modality, lists])
        path = Path(cache_dir) / f"sigma_{modality}_{digest[:16]}.json"
        key = run_key(model_fingerprint(model), method="subject sigma",
                      rows={"modality": modality, "subjects_sha256": digest, "subjects": len(lists),
                            "tokens": len(ids)})
        problem = None
        if path.is_file():
            try:
                record = verify(read_json(path, "sigma cache"), key, what="sigma cache", path=path)
                if record.get("sigma") != sigma:
                    problem = f"it held sigma {record.get('sigma')!r}, not the {sigma!r} computed now"
            except ValueError as error:
                problem = getattr(error, "reason", str(error))
        if problem is not None and notes is not None:
            notes.append(f"sigma ({modality}) recomputed, record {path.name} rewritten: {problem}")
        if problem is not None or not path.is_file():
            record = {"sigma": sigma, "modality": modality, "subjects": len(lists), "tokens": len(ids),
                      "model": str(model.model_dir), "dtype": str(model.dtype)}
            write_json_atomic(path, stamp(record, key))
    return sigma


def embedding_std(model, modality: str = "text") -> float:
    """Std of all entries of the embedding rows of one modality (text pieces or ``[Hu…]`` units)."""
    vocab = model.vocab
    if modality == "speech":
        ids = list(vocab.hubert_ids)
    elif modality == "text":
        special = vocab.speech_ids | set(vocab.marker_ids)
        ids = [i for i in range(len(model.tokenizer)) if i not in special]
    else:
        raise ValueError(f"unknown modality {modality!r}; use 'text' or 'speech'")
    with torch.no_grad():
        return float(_embedding_matrix(model)[torch.tensor(ids, device=model.device)].float().std())


def check_sigma(sigma: float | None, option: str = "sigma") -> float | None:
    """``sigma`` as a float, or None; ValueError ``"<option> must be a finite number > 0, got …"``
    for inf, NaN, zero, a negative value or a non-number (checked before any trace runs)."""
    if sigma is None:
        return None
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating, np.integer)):
        raise ValueError(f"{option} must be a finite number > 0, got {sigma!r}")
    value = float(sigma)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} must be a finite number > 0, got {sigma!r}")
    return value


def noise_scale(spec: NoiseSpec, *, sigma: float | None, model=None, modality: str = "text") -> float:
    """The absolute scale nu of a rule (sigma must be given for ``Ks`` rules, finite and > 0)."""
    if spec.kind in ("absolute", "uniform"):
        return spec.factor
    if spec.kind == "sigma":
        if sigma is None:
            raise ValueError(
                f"noise {spec.text!r} needs sigma: pass sigma= (see spiritlens.traces.subject_sigma) "
                "or subjects= to measure it, or give an absolute noise"
            )
        return spec.factor * check_sigma(sigma)
    return spec.factor * embedding_std(model, modality)
