"""The toys' evaluation: greedy answers to their facts (the toy SpiritLM's written and spoken, the backbone's written), against the targets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from spiritlens.synthetic.toy.cache import model_dir
from spiritlens.synthetic.toy.config import BACKBONE_TARGETS, TARGETS, ToyFact
from spiritlens.models.spiritlm.tree import speech_tokenizer_folder


def evaluate_toy(root: str | os.PathLike, facts: Sequence[ToyFact], audio: dict[str, Any], *,
                 speech_dir: str | os.PathLike | None = None, progress: bool | None = None,
                 directory: str | os.PathLike | None = None, model=None) -> dict:
    """Greedy answers of the toy under SpiritLM's text rule, judged by spiritlens' Known-t2t /
    Known-s2t filter (:func:`spiritlens.data.filtering.filter_known`); a JSON-ready report.

    ``audio``: ``"<known_id>_prompt"`` -> the prompt's WAV, or its speech units already encoded
    (what the build trained on: the speech tokenizer then does not run again). ``directory``: the
    model folder (default: the toy SpiritLM Base's, :func:`model_dir`); ``model``: that model, loaded."""
    from spiritlens.data import KnownRecord
    from spiritlens.data.filtering import filter_known
    from spiritlens.model import HookedSpiritLM

    root = Path(root)
    if model is None:
        model = HookedSpiritLM.from_pretrained(directory or model_dir(root),
                                               speech_tokenizer=speech_dir or speech_tokenizer_folder(root),
                                               progress=progress)
    records = [KnownRecord(f.known_id, f.prompt, f.subject, f.attribute, f.relation_id) for f in facts]
    modalities = {"t2t": records}
    if audio:
        modalities["s2t"] = records
    report: dict[str, Any] = {"accuracy": {}, "counts": {}, "entries": {}}
    for modality, candidates in modalities.items():
        spoken = {f.known_id: _speech(audio[f"{f.known_id}_prompt"]) for f in facts} if audio else {}
        result = filter_known(model, candidates, modality, spoken, progress=progress)
        report["counts"][modality] = dict(result.counts)
        report["accuracy"][modality] = result.counts["exact"] / max(1, result.counts["total"])
        report["entries"][modality] = [{"known_id": e.known_id, "generated": e.generated, "label": e.label}
                                       for e in result.entries]
    report["targets"] = {m: t for m, t in TARGETS.items() if m in report["accuracy"]}
    report["meets_targets"] = all(report["accuracy"][m] >= t for m, t in report["targets"].items())
    report["rule"] = _RULE
    return report


def _speech(item):
    """A WAV path as a string, encoded units as they are (the prompt path takes either)."""
    return str(item) if isinstance(item, (str, os.PathLike)) else item


_RULE = "greedy generation (max_new_tokens 8, text output), judged exact by spiritlens.data.judge"


def evaluate_backbone(directory: str | os.PathLike, facts: Sequence[ToyFact], *, progress: bool | None = None) -> dict:
    """Greedy answers of the toy backbone in ``directory`` (``transformers.LlamaForCausalLM`` on its
    files) to its facts' Known prompts, each Llama-2's ``<s>`` + the text
    (:func:`spiritlens.synthetic.toy.backbone.llama2_prompt_path`), decoded as SpiritLM decodes and
    judged by the same rule as the Known-t2t filter (:func:`spiritlens.data.filter_prompts`); a
    JSON-ready report shaped like :func:`evaluate_toy`'s."""
    import torch
    from transformers import LlamaForCausalLM

    from spiritlens.data import KnownRecord, filter_prompts
    from spiritlens.synthetic.toy.backbone import llama2_prompt_path

    from spiritlens.progress import transformers_progress

    encode, tokenizer = llama2_prompt_path(directory)
    with transformers_progress(progress):  # transformers' loading bar follows the one progress rule
        model = LlamaForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()

    def generate(record) -> str:
        ids = torch.tensor([encode(record.prompt)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True,
                                clean_up_tokenization_spaces=False)

    records = [KnownRecord(f.known_id, f.prompt, f.subject, f.attribute, f.relation_id) for f in facts]
    result = filter_prompts(records, generate, "t2t", progress=progress)
    counts = dict(result.counts)
    accuracy = counts["exact"] / max(1, counts["total"])
    return {"accuracy": {"t2t": accuracy}, "counts": {"t2t": counts},
            "entries": {"t2t": [{"known_id": e.known_id, "generated": e.generated, "label": e.label}
                                for e in result.entries]},
            "targets": dict(BACKBONE_TARGETS), "meets_targets": accuracy >= BACKBONE_TARGETS["t2t"],
            "rule": _RULE, "prompt": "Llama-2's: <s> + the prompt text (no marker)"}

