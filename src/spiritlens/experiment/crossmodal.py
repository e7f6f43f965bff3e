"""The experiment's cross-modal stage: the analyses of every fact of an experiment directory.

(One fact: :func:`spiritlens.crossmodal.analyze_fact`, written by
:func:`spiritlens.figures.crossmodal.write_fact_outputs`.) An experiment directory (:func:`run_experiment_dir`), as written by ``spiritlens experiment``:
``prepare.json`` gives the model, speech tokenizer, aligner, audio, noise settings and sigmas;
the facts are those kept in both Known-t2t and Known-s2t. Per fact, each analysis is written
atomically to ``crossmodal/facts/<known_id>/<analysis>.json`` with its run key
(:mod:`spiritlens.runkey`: the model, speech-tokenizer and aligner files, dtype, device, the analysis,
for patching the noise rule, sigmas, samples, seed, judged answers, modes and directions, and the
fact's prompt, subject, audio and mapping) and a checksum. A rerun keeps a result only when it
verifies under this run's key and recomputes the rest, saying why in ``status.json``'s
``recomputed`` (a fact that fails is recorded in ``crossmodal/status.json`` and the run goes on).
The summary covers every finished analysis of this run's key, including those not requested in
this run. Then ``crossmodal/summary.json`` (means and 95%
CIs over facts) and the figures ``crossmodal/patching.png``, ``geometry.png``,
``logit_lens_mrr.png`` and one sample heatmap ``logit_lens_<known_id>.png``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from spiritlens._io import write_json_atomic
from spiritlens.runkey import file_digest, reason_counts, run_key
from spiritlens.traces.noise import parse_noise
from spiritlens.crossmodal.fact import CrossModalFact, ResultFile, plain
from spiritlens.crossmodal.patching import (
    DEFAULT_MAX_BATCH_ROWS,
    PATCH_DIRECTIONS,
    PATCH_MODES,
    check_choices,
)
from spiritlens.crossmodal.analyses import ANALYSES, RESULT_TYPES, analyze_fact, summarize_results
from spiritlens.figures.crossmodal import write_figures
from spiritlens.experiment.prepared import PreparedRun, RunModels, record_failure


def _load_existing(path: Path, analysis: str, key: dict, recomputed: list[str]) -> ResultFile | None:
    """The result at ``path`` if it verifies under ``key``; else None, and why into ``recomputed``."""
    if not path.exists():
        return None
    try:
        return RESULT_TYPES[analysis].load(path, run_key=key)
    except (OSError, ValueError) as error:
        recomputed.append(getattr(error, "reason", f"{type(error).__name__}: {error}".splitlines()[0]))
        return None


def fact_keys(prep: PreparedRun, fingerprint: dict, known_id: int, settings: dict) -> dict[str, dict]:
    """The run key of each analysis of one fact (module doc); ``settings`` are the patching settings."""
    record = prep.record(known_id)
    audio = prep.audio.get(str(known_id))
    rows = {"prompt": record["prompt"], "subject": record["subject"],
            "audio_sha256": file_digest(audio) if audio and Path(audio).is_file() else None,
            "mapping": prep.config.get("mapping", "exact")}
    keys = {analysis: run_key(fingerprint, method=analysis, rows=rows) for analysis in ANALYSES}
    keys["patching"] = run_key(fingerprint, method="patching", noise=settings["noise_rule"],
                               sigma_source="the experiment's text and speech sigmas", sigma=settings["sigma"],
                               samples=settings["samples"], seed=settings["seed"],
                               rows={**rows, "answers": settings["target"]},
                               options={"modes": settings["modes"], "directions": settings["directions"]})
    return keys


def run_experiment_dir(run_dir: str | os.PathLike, *, analyses: Sequence[str] = ANALYSES,
                       modes: Sequence[str] = PATCH_MODES, directions: Sequence[str] = PATCH_DIRECTIONS,
                       max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, device: str | None = None,
                       progress: bool | None = None, log: Callable = print, models: RunModels | None = None) -> dict:
    """The analyses for every fact kept in both Known-t2t and Known-s2t of an experiment directory.

    Patching uses the experiment's noise rule, samples, seed and sigmas (text sigma for the text
    run, speech sigma for the spoken run). Resumable (module doc). ``models``: the
    :class:`~spiritlens.experiment.prepared.RunModels` of this directory, whose loaded model and
    aligner are reused (the experiment passes its own); by default they are loaded from
    ``prepare.json`` with the experiment's dtype and mapping. Returns the status dict (also ``crossmodal/status.json``): ``facts``,
    ``computed``, ``reused``, ``failed``, ``written`` and ``recomputed`` (``{reason: results}`` of the
    results not reused). ``progress``: a bar over facts; None (default) only when stderr is a terminal
    (:mod:`spiritlens.progress`).

    Raises:
        FileNotFoundError: no ``prepare.json``. ValueError: no fact kept in both modalities, or
        no fact could be analysed.
    """
    from tqdm.auto import tqdm

    from spiritlens.progress import tqdm_disable

    analyses = check_choices("analyses", analyses, ANALYSES)
    modes, directions = check_choices("modes", modes, PATCH_MODES), check_choices("directions", directions, PATCH_DIRECTIONS)
    run_dir = Path(run_dir)
    prep = PreparedRun.load(run_dir) if models is None else models.prep
    facts = prep.shared_facts()
    if not facts:
        raise ValueError(f"no fact of {str(run_dir)!r} is kept in both Known-t2t and Known-s2t "
                         f"(kept: { {m: len(v) for m, v in prep.kept.items()} }); nothing to compare")
    config = prep.config
    settings = plain({"noise_rule": parse_noise(config.get("noise", "3s")).text,
                      "samples": int(config.get("samples", 10)), "seed": int(config.get("seed", 1)),
                      "sigma": {"text": prep.sigma.get("text"), "speech": prep.sigma.get("speech")},
                      "target": None, "modes": list(modes), "directions": list(directions)})
    answers = prep.answers  # the first token of each modality's judged generation
    out = run_dir / "crossmodal"
    if models is None:
        models = RunModels(prep, dtype=prep.dtype, device=device,
                           mapping=config.get("mapping", "exact"))
    fingerprint = models.fingerprint()  # the files' digests (hashed once per process), dtype, device
    recomputed: list[str] = []
    status: dict[str, Any] = {"facts": facts, "analyses": list(analyses), "computed": [], "reused": [], "failed": []}
    collected: dict[str, list[ResultFile]] = {a: [] for a in ANALYSES}
    for kid in tqdm(facts, desc="cross-modal analyses", unit="fact", disable=tqdm_disable(progress), dynamic_ncols=True):
        folder = out / "facts" / str(kid)
        # finished results of every analysis go into the summary; only the requested ones are computed
        judged = {"text": answers.get("t2t", {}).get(str(kid)), "speech": answers.get("s2t", {}).get(str(kid))}
        fact_settings = dict(settings, target=judged if any(v is not None for v in judged.values()) else None)
        done: dict[str, ResultFile | None] = {}
        try:
            keys = fact_keys(prep, fingerprint, kid, fact_settings)
            done = {a: _load_existing(folder / f"{a}.json", a, keys[a], recomputed if a in analyses else [])
                    for a in ANALYSES}
            missing = [a for a in analyses if done[a] is None]
            if missing:
                model = models.model()
                record = prep.record(kid)
                speech = models.speech_prompt(kid)  # the experiment's own S->T prompt rules
                fact = CrossModalFact.from_speech_prompt(model, speech, prompt=record["prompt"], name=str(kid))
                fresh = analyze_fact(model, fact, analyses=missing, noise=settings["noise_rule"],
                                     sigma=settings["sigma"], samples=settings["samples"], seed=settings["seed"],
                                     modes=modes, directions=directions, target=fact_settings["target"],
                                     max_batch_rows=max_batch_rows)
                for analysis, result in fresh.items():
                    result.save(folder / f"{analysis}.json", run_key=keys[analysis])
                    done[analysis] = result
                status["computed"].append({"fact": kid, "analyses": missing})
            else:
                status["reused"].append(kid)
        except Exception as error:  # one fact's failure must not stop the others
            record_failure(status, {"fact": kid}, error, log, f"[crossmodal] fact {kid}")
        for analysis, result in done.items():
            if result is not None:
                collected[analysis].append(result)
    status["recomputed"] = reason_counts(recomputed)
    if not any(collected.values()):
        write_json_atomic(out / "status.json", status)
        raise ValueError(f"no fact of {str(run_dir)!r} could be analysed: "
                         + "; ".join(f"{f['fact']}: {f['reason']}" for f in status["failed"][:3]))
    summary = summarize_results(collected)
    summary.save(out / "summary.json")
    sample = collected["logit_lens"][0] if collected["logit_lens"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # glyph warnings of tokens the font lacks
        status["written"] = ["summary.json"] + write_figures(summary, out, sample,
                                                             f"logit_lens_{sample.name}.png" if sample else "")
    write_json_atomic(out / "status.json", status)
    return status
