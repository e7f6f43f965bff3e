"""The toy SpiritLM's evaluation: greedy answers to its facts, written and spoken, against the targets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from spiritlens.synthetic.toy.cache import model_dir
from spiritlens.synthetic.toy.config import TARGETS, ToyFact
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder


def evaluate_toy(root: str | os.PathLike, facts: Sequence[ToyFact], audio: dict[str, Path], *,
                 speech_dir: str | os.PathLike | None = None, progress: bool | None = None) -> dict:
    """Greedy answers of the toy under SpiritLM's text rule, judged by spiritlens' Known-t2t /
    Known-s2t filter (:func:`spiritlens.data.filtering.filter_known`); a JSON-ready report."""
    from spiritlens.data import KnownRecord
    from spiritlens.data.filtering import filter_known
    from spiritlens.model import HookedSpiritLM

    root = Path(root)
    model = HookedSpiritLM.from_pretrained(model_dir(root), speech_tokenizer=speech_dir or speech_tokenizer_folder(root),
                                           progress=progress)
    records = [KnownRecord(f.known_id, f.prompt, f.subject, f.attribute, f.relation_id) for f in facts]
    modalities = {"t2t": records}
    if audio:
        modalities["s2t"] = records
    report: dict[str, Any] = {"accuracy": {}, "counts": {}, "entries": {}}
    for modality, candidates in modalities.items():
        result = filter_known(model, candidates, modality, {f.known_id: str(audio[f"{f.known_id}_prompt"])
                                                            for f in facts} if audio else {},
                              progress=progress)
        report["counts"][modality] = dict(result.counts)
        report["accuracy"][modality] = result.counts["exact"] / max(1, result.counts["total"])
        report["entries"][modality] = [{"known_id": e.known_id, "generated": e.generated, "label": e.label}
                                       for e in result.entries]
    report["targets"] = {m: t for m, t in TARGETS.items() if m in report["accuracy"]}
    report["meets_targets"] = all(report["accuracy"][m] >= t for m, t in report["targets"].items())
    report["rule"] = "greedy generation (max_new_tokens 8, text output), judged exact by spiritlens.data.judge"
    return report
