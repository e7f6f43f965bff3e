"""``spiritlens experiment --expressive``: does prosody carry the fact? Stream-aware traces and prosody
controls of every kept S->T prompt of SpiritLM Expressive.

For each Known-s2t prompt and each prosody control (:mod:`spiritlens.units.controls`: the original, the
pitch flattened, shuffled or taken from another prompt, the style set to one code or taken from another
prompt; "another prompt" is the next kept S->T prompt in Known-s2t order, cyclically), the controlled
prompt (:func:`spiritlens.align.prosody.controlled_prompt`) is

- traced for every ``--kinds`` kind with rows split by stream and the subject's positions of
  ``--noise-streams`` noised (:mod:`spiritlens.traces.streams`; same noise rule, speech sigma, samples,
  seed, window and judged answer as the S->T traces), written to
  ``expressive/results/<control>/<known_id>_<kind>.json``;
- summarised in a control record (:mod:`spiritlens.aggregates.prosody`): p(answer) in its clean run,
  its greedy first token, and p(answer) with only one stream's subject positions noised, per stream,
  written to ``expressive/controls/<control>/<known_id>.json``.

Every file records its run key (the S->T result key plus the control, the donor's audio and the noised
streams) and a checksum; a rerun reuses a file only when both verify, as the other stages do. Ranks take
the prompts ``r, r + w, ...``; rank 0 collects everything (:func:`collect`) for the summary and the
report (:mod:`spiritlens.experiment.report_expressive`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spiritlens._io import read_json, write_json_atomic
from spiritlens.experiment.prepared import record_failure
from spiritlens.runkey import file_digest, run_key, stamp, verify

FOLDER = "expressive"
ROW_MODE = "streams"


def folder(experiment) -> Path:
    return Path(experiment.out) / FOLDER


def result_path(experiment, control: str, known_id: int, kind: str) -> Path:
    return folder(experiment) / "results" / control / f"{known_id}_{kind}.json"


def record_path(experiment, control: str, known_id: int) -> Path:
    return folder(experiment) / "controls" / control / f"{known_id}.json"


def prompts(prep) -> list[int]:
    """The Known-s2t prompts the stage runs on, in Known-s2t order."""
    return list(prep.kept.get("s2t") or [])


def donor_of(prep, known_id: int) -> int | None:
    """The prompt whose pitch/style ``other_*`` controls take: the next kept S->T prompt, cyclically
    (None when it is the only one)."""
    ids = prompts(prep)
    if len(ids) < 2:
        return None
    return ids[(ids.index(known_id) + 1) % len(ids)]


def traced_kinds(config, control: str) -> tuple[str, ...]:
    """The kinds traced under ``control``: every ``--kinds`` kind for the original, the ``--control-kinds``
    among them for the other controls (their answer probabilities are measured in every case)."""
    return tuple(config.kinds) if control == "original" else tuple(k for k in config.kinds if k in config.control_kinds)


def item_key(experiment, prep, control, known_id: int, donor: int | None) -> dict:
    """The run key of one (prompt, control): the S->T result key (without the plain traces' row mode), with
    the control, the donor's audio and the noised streams as ``options.expressive``."""
    key = dict(experiment.result_key(prep, "s2t", known_id))
    key["rows"] = {k: v for k, v in key["rows"].items() if k != "row_mode"}  # --row-mode is the plain traces'
    audio = prep.audio.get(str(donor)) if donor is not None else None
    options = dict(key.get("options") or {})
    options["expressive"] = {**control.record(), "row_mode": ROW_MODE,
                             "kinds": list(traced_kinds(experiment.config, control.name)),
                             "noise_streams": list(experiment.config.noise_streams),
                             "donor_audio_sha256": file_digest(audio) if audio and Path(audio).is_file() else None}
    key["options"] = options
    return run_key({}, **key)


def _stale(experiment, control: str, known_id: int, key: dict) -> str | None:
    """Why the files of one (prompt, control) must be computed ("" when they are missing), or None when every
    one verifies under ``key``."""
    from spiritlens.traces import TraceResult

    paths = [result_path(experiment, control, known_id, kind) for kind in traced_kinds(experiment.config, control)]
    record = record_path(experiment, control, known_id)
    if not record.exists() and not any(p.exists() for p in paths):
        return ""
    try:
        for path in paths:
            result = TraceResult.load(path, run_key=key)
            if result.method != experiment.trace_method:
                return f"method {result.method} → {experiment.trace_method}"
        verify(read_json(record, "control record"), key, what="control record", path=record)
    except (ValueError, OSError, TypeError, KeyError) as error:
        return getattr(error, "reason", f"{type(error).__name__}: {error}".splitlines()[0])
    return None


def run_share(experiment, prep) -> dict:
    """This rank's share of the stage (module docstring); the status it writes."""
    from spiritlens.units.controls import ProsodyControl

    config = experiment.config
    mine = prompts(prep)[experiment.rank::experiment.world]
    status = {"rank": experiment.rank, "world_size": experiment.world, "computed": [], "reused": [], "skipped": [],
              "failed": [], "recomputed": []}
    from tqdm.auto import tqdm

    bar = tqdm(mine, desc=f"prosody controls (rank {experiment.rank}/{experiment.world})", unit="prompt",
               position=experiment.rank, disable=not experiment.progress, dynamic_ncols=True)
    for known_id in bar:
        spoken = None
        for name in config.prosody_controls:
            control, item = ProsodyControl(name), f"{name}/{known_id}"
            donor = donor_of(prep, known_id) if control.needs_donor else None
            if control.needs_donor and donor is None:
                status["skipped"].append({"item": item, "reason": "no other kept S→T prompt to take the stream from"})
                continue
            key = item_key(experiment, prep, control, known_id, donor)
            stale = _stale(experiment, name, known_id, key)
            if stale is None:
                status["reused"].append(item)
                continue
            if stale:
                status["recomputed"].append(stale)
            try:
                if spoken is None:
                    spoken = experiment.models(prep).speech_prompt(known_id)
                _run_item(experiment, prep, spoken, control, known_id, donor, key)
                status["computed"].append(item)
            except Exception as error:  # one item's failure must not stop the run
                record_failure(status, {"item": item}, error, bar.write, f"[expressive] {item}")
    bar.close()
    return status


def _run_item(experiment, prep, spoken, control, known_id: int, donor: int | None, key: dict) -> None:
    import torch

    from spiritlens.align.prosody import controlled_prompt
    from spiritlens.terms import DIRECTION_MODALITY
    from spiritlens.traces import parse_noise, trace_kinds
    from spiritlens.traces.answer import generated_answer
    from spiritlens.traces.noise import noise_scale
    from spiritlens.traces.streams import position_streams, stream_low_scores

    config, models = experiment.config, experiment.models(prep)
    model, record = models.model(), prep.records[str(known_id)]
    donor_units = None
    if donor is not None:
        donor_units = model.speech_tokenizer.encode(prep.audio[str(donor)])
    prompt = controlled_prompt(model, spoken, control, donor_units)
    judged = prep.answers.get("s2t", {}).get(str(known_id))
    target = None if judged is None else generated_answer(model, judged)
    sigma = prep.sigma["speech"]
    kinds = traced_kinds(config, control.name) or (config.kinds[0],)  # one kind at least: the answer's runs
    results = trace_kinds(model, prompt, kinds=kinds, samples=config.samples, noise=config.noise,
                          seed=config.seed, window=prep.window, sigma=sigma, row_mode=ROW_MODE,
                          noise_streams=config.noise_streams, target=target, max_batch_cells=config.max_batch_cells,
                          name=f"s2t_{known_id}_{control.name}", method=experiment.trace_method,
                          verify_top=config.verify_top, verify_rank=config.verify_rank)
    first = next(iter(results.values()))
    answer_id = int(first.answer_id)
    for kind, result in results.items():
        if kind not in traced_kinds(config, control.name):
            continue  # traced only for the answer's probabilities
        result.extra.update(known_id=known_id, relation_id=record.get("relation_id"), attribute=record["attribute"],
                            experiment_modality="s2t", prosody_control=control.record(), donor_known_id=donor,
                            sigma_modality=DIRECTION_MODALITY["s2t"] if config.speech_sigma == "speech" else "text")
        result.save(result_path(experiment, control.name, known_id, kind), run_key=key)
    spec = parse_noise(config.noise)
    scale = noise_scale(spec, sigma=sigma, model=model, modality="speech")
    traced = prompt.trace_prompt(model)
    lows = stream_low_scores(model, traced, answer_id, spec, scale, samples=config.samples, seed=config.seed)
    top1 = int(model.generate_ids(torch.tensor([prompt.input_ids]), max_new_tokens=1)[0])
    streams = position_streams(model, prompt.input_ids)
    document = {"known_id": known_id, "control": control.name, "control_settings": control.record(),
                "donor_known_id": donor, "answer_id": answer_id, "answer": first.answer,
                "p_answer": float(first.high_score), "low_score": float(first.low_score),
                "noise_streams": list(config.noise_streams), "top1_id": top1,
                "top1": model.tokenizer.decode([top1]), "stream_low": lows,
                "tokens": {s: streams.count(s) for s in ("hubert", "pitch", "style")} | {"total": len(streams)}}
    write_json_atomic(record_path(experiment, control.name, known_id), stamp(document, key))


@dataclass
class Collected:
    """What rank 0 reads back for the summary and the report: per control, its trace results (dicts) and
    control records, every one verified under this run's keys; ``problems``: one line per file that did
    not verify."""

    results: dict[str, list[dict]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def collect(experiment, prep) -> Collected:
    """The stage's files of this run's prompts and controls that verify under this run's keys."""
    from spiritlens.aggregates import load_results
    from spiritlens.units.controls import ProsodyControl

    collected = Collected()
    for name in experiment.config.prosody_controls:
        control = ProsodyControl(name)
        paths = []
        for known_id in prompts(prep):
            donor = donor_of(prep, known_id) if control.needs_donor else None
            if control.needs_donor and donor is None:
                continue
            key = item_key(experiment, prep, control, known_id, donor)
            stale = _stale(experiment, name, known_id, key)
            if stale is not None:
                if stale:
                    collected.problems.append(f"{name}/{known_id}: {stale}")
                continue
            paths += [result_path(experiment, name, known_id, kind) for kind in traced_kinds(experiment.config, name)]
            collected.records.append(read_json(record_path(experiment, name, known_id), "control record"))
        collected.results[name] = load_results(paths, collected.problems, streams=True) if paths else []
    return collected


def summarize(experiment, prep, collected: Collected | None = None) -> dict:
    """The stage's part of ``summary.json`` (rank 0): counts from every rank's status, and per control its
    effect on p(answer) (:func:`spiritlens.aggregates.prosody.control_effects`)."""
    from spiritlens.aggregates.prosody import control_effects
    from spiritlens.runkey import reason_counts

    statuses = []
    for path in sorted((folder(experiment) / "status").glob("rank*.json")):
        status = read_json(path, "expressive status")
        if status.get("world_size") == experiment.world:
            statuses.append(status)
    collected = collected or collect(experiment, prep)
    effects = control_effects(collected.records)
    return {"prompts": len(prompts(prep)), "controls": list(experiment.config.prosody_controls),
            "noise_streams": list(experiment.config.noise_streams),
            "computed": sum(len(s["computed"]) for s in statuses), "reused": sum(len(s["reused"]) for s in statuses),
            "skipped": [x for s in statuses for x in s["skipped"]], "failed": [x for s in statuses for x in s["failed"]],
            "recomputed": reason_counts([r for s in statuses for r in s.get("recomputed", [])]),
            "problems": collected.problems[:50], "effects": {c: e.to_json() for c, e in effects.items()}}


__all__ = ["FOLDER", "Collected", "collect", "donor_of", "item_key", "prompts", "record_path", "result_path",
           "run_share", "summarize"]
