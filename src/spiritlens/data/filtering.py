"""Known-t2t / Known-s2t: keep the Known prompts a model answers correctly by greedy generation (the paper's filter), per direction.

The manifest (``filter/known-<direction>.json`` in the experiment) holds the judged entries and, for
reuse, each record's generation with its first token id and the row it was generated from (the
prompt, and for S->T the audio's SHA-256), under the run key of the generation
(:mod:`spiritlens.runkey`: the model's weights, dtype and device, the speech tokenizer for S->T,
``max_new_tokens``) and a checksum over the whole file. A rerun reuses a generation only when the
checksum holds, the key is the same and the record's row is unchanged; everything else is generated
again, and why is added to ``notes``. Judging is always redone from the generations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from spiritlens._io import read_json, write_json_atomic
from spiritlens.runkey import file_digest, model_fingerprint, reason_counts, run_key, stamp, verify


def known_prompt(record, modality: str, audio: Mapping[int, str]):
    """A Known record's prompt as the experiment feeds it: the prompt text (``"t2t"``), or
    ``[("speech", path)]`` of its synthesised audio ``audio[known_id]`` (``"s2t"``)."""
    return record.prompt if modality == "t2t" else [("speech", audio[record.known_id])]


def filter_known(model, records, modality: str, audio: Mapping[int, str] | None = None, *, keep_all: bool = False,
                 accept: Sequence[str] = ("exact",), max_new_tokens: int = 8, answers: dict[str, int] | None = None,
                 out_path: str | os.PathLike | None = None, progress: bool | None = None,
                 fingerprint: dict | None = None, notes: list[str] | None = None, save_every: int = 25):
    """Known-t2t / Known-s2t: the model's greedy continuation of each record's prompt (SpiritLM's
    text-output rule, :meth:`HookedSpiritLM.generate`), judged by :func:`spiritlens.data.filter_prompts`.
    ``audio`` maps known_id to the WAV of its prompt (S->T). ``answers``, if given, receives each
    generated record's first token id under ``str(known_id)`` (the token its traces measure).

    ``out_path``: the manifest, resumable as the module docstring says (written every ``save_every``
    generations and at the end). ``fingerprint``: the model part of the run key (default:
    :func:`spiritlens.runkey.model_fingerprint` of ``model``; the experiment passes its own, with the
    speech tokenizer's digest). ``notes`` receives one line per reason generations were not reused.
    ``progress``: a bar; None (default) as :func:`~spiritlens.data.filter_prompts` (more than 20
    records, on a terminal). Returns the ``FilterResult``."""
    from spiritlens.data import filter_prompts

    path, key = None if out_path is None else Path(out_path), None
    if path is not None:  # the manifest's run key (without a manifest there is nothing to reuse)
        base = fingerprint if fingerprint is not None else model_fingerprint(model)
        wanted = ("weights", "dtype", "device", "speech_tokenizer") if modality == "s2t" else ("weights", "dtype",
                                                                                              "device")
        key = run_key({k: v for k, v in base.items() if k in wanted}, method="greedy generation",
                      options={"max_new_tokens": max_new_tokens, "direction": modality})
    previous, untrusted = _previous_generations(path, key)
    generations: dict[str, dict] = {}
    recomputed: list[str] = []

    def save(document: dict) -> None:
        write_json_atomic(path, stamp({**document, "generations": generations}, key))

    def generate(record):
        row = {"prompt": record.prompt}
        if modality == "s2t" and path is not None:
            row["audio_sha256"] = file_digest((audio or {})[record.known_id])
        old = previous.get(str(record.known_id))
        if old is not None and old.get("row") == row and isinstance(old.get("generated"), str) and \
                isinstance(old.get("answer_id"), int):
            entry = old
        else:
            if untrusted is not None:
                recomputed.append(untrusted)
            elif old is not None:
                recomputed.append("row changed (prompt or audio)")
            new = model.generate_ids(known_prompt(record, modality, audio or {}), max_new_tokens=max_new_tokens)
            if not len(new):
                raise ValueError("the model generated no token")
            entry = {"row": row, "generated": model.decode_generated(new), "answer_id": int(new[0])}
        generations[str(record.known_id)] = entry
        if answers is not None:
            answers[str(record.known_id)] = entry["answer_id"]
        if path is not None and entry is not old and len(generations) % save_every == 0:
            save({"modality": modality, "partial": True})
        return entry["generated"]

    result = filter_prompts(records, generate, modality, keep_all, accept=accept, out_path=None, resume=False,
                            progress=progress)
    result.manifest_path = path
    result.reused = sum(1 for kid, entry in generations.items() if previous.get(kid) is entry)
    if path is not None:
        save(result.to_dict())
    if notes is not None:
        name = path.name if path is not None else f"Known-{modality}"
        notes += [f"filter {name}: {n} generation(s) recomputed: {reason}" for reason, n in reason_counts(recomputed).items()]
    return result


def _previous_generations(path: Path | None, key: dict) -> tuple[dict[str, dict], str | None]:
    """(the verified manifest's generations by known id, None), or ({}, why it is not used)."""
    if path is None or not path.is_file():
        return {}, None
    try:
        document = verify(read_json(path, "filter manifest"), key, what="filter manifest", path=path)
    except ValueError as error:
        return {}, getattr(error, "reason", str(error))
    generations = document.get("generations")
    if not isinstance(generations, dict):
        return {}, "no generations recorded"
    return {str(k): v for k, v in generations.items() if isinstance(v, dict)}, None
