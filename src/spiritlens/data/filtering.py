"""Known-t2t / Known-s2t: keep the Known prompts a model answers correctly by greedy generation (the paper's filter), per direction."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence


def known_prompt(record, modality: str, audio: Mapping[int, str]):
    """A Known record's prompt as the experiment feeds it: the prompt text (``"t2t"``), or
    ``[("speech", path)]`` of its synthesised audio ``audio[known_id]`` (``"s2t"``)."""
    return record.prompt if modality == "t2t" else [("speech", audio[record.known_id])]


def filter_known(model, records, modality: str, audio: Mapping[int, str] | None = None, *, keep_all: bool = False,
                 accept: Sequence[str] = ("exact",), max_new_tokens: int = 8, answers: dict[str, int] | None = None,
                 out_path: str | os.PathLike | None = None, progress: bool | None = None):
    """Known-t2t / Known-s2t: the model's greedy continuation of each record's prompt (SpiritLM's
    text-output rule, :meth:`HookedSpiritLM.generate`), judged by :func:`spiritlens.data.filter_prompts`.
    ``audio`` maps known_id to the WAV of its prompt (S->T). ``answers``, if given, receives each
    generated record's first token id under ``str(known_id)`` (the token its traces measure).
    ``progress``: a bar; None (default) as :func:`~spiritlens.data.filter_prompts` (more than 20
    records, on a terminal). Returns the ``FilterResult``."""
    from spiritlens.data import filter_prompts

    def generate(record):
        new = model.generate_ids(known_prompt(record, modality, audio or {}), max_new_tokens=max_new_tokens)
        if answers is not None and len(new):
            answers[str(record.known_id)] = int(new[0])
        return model.decode_generated(new)

    return filter_prompts(records, generate, modality, keep_all, accept=accept, out_path=out_path, progress=progress)
