"""Run the cross-modal analyses for one fact, or for every fact of an experiment directory.

One fact (:func:`analyze_fact`, :func:`write_fact_outputs`): ``patching.json``,
``geometry.json``, ``logit_lens.json``, ``summary.json`` and the figures ``patching.png``,
``geometry.png``, ``logit_lens.png`` in one folder.

An experiment directory (:func:`run_experiment_dir`), as written by ``spiritlens experiment``:
``prepare.json`` gives the model, speech tokenizer, aligner, audio, noise settings and sigmas;
the facts are those kept in both Known-t2t and Known-s2t. Per fact, each analysis is written
atomically to ``crossmodal/facts/<known_id>/<analysis>.json``; a rerun keeps every readable
result whose settings are unchanged and recomputes the rest (a fact that fails is recorded in
``crossmodal/status.json`` and the run goes on). The summary covers every finished analysis,
including those not requested in this run. Then ``crossmodal/summary.json`` (means and 95%
CIs over facts) and the figures ``crossmodal/patching.png``, ``geometry.png``,
``logit_lens_mrr.png`` and one sample heatmap ``logit_lens_<known_id>.png``.
"""

from __future__ import annotations

import os
import traceback
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .._io import read_json, write_json_atomic
from ..align.aligner import POCKETSPHINX
from ..traces.noise import parse_noise
from .fact import CrossModalFact, ResultFile, plain
from .geometry import GeometryResult, representation_geometry
from .logit_lens import LogitLensResult, speech_logit_lens
from .patching import DEFAULT_MAX_BATCH_ROWS, DIRECTIONS, MODES, PatchingResult, check_choices, cross_modal_patching
from .summary import CrossModalSummary, summarize

ANALYSES = ("patching", "geometry", "logit_lens")
RESULT_TYPES: dict[str, type[ResultFile]] = {"patching": PatchingResult, "geometry": GeometryResult,
                                             "logit_lens": LogitLensResult}
SUMMARY_FIGURES = {"patching": "patching.png", "geometry": "geometry.png", "logit_lens": "logit_lens_mrr.png"}


def analyze_fact(model, fact: CrossModalFact, *, analyses: Sequence[str] = ANALYSES, noise: float | str = "3s",
                 sigma: float | Mapping[str, float] | None = None, samples: int = 10, seed: int = 1,
                 modes: Sequence[str] = MODES, directions: Sequence[str] = DIRECTIONS,
                 target: int | Mapping[str, int | None] | None = None, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS) -> dict[str, ResultFile]:
    """The chosen analyses of one fact (``"patching"``, ``"geometry"``, ``"logit_lens"``), sharing
    its clean runs. Patching arguments as :func:`~spiritlens.crossmodal.patching.cross_modal_patching`."""
    analyses = check_choices("analyses", analyses, ANALYSES)
    results: dict[str, ResultFile] = {}
    for analysis in analyses:
        if analysis == "patching":
            results[analysis] = cross_modal_patching(model, fact, noise=noise, sigma=sigma, samples=samples, seed=seed,
                                                     modes=modes, directions=directions, target=target,
                                                     max_batch_rows=max_batch_rows)
        elif analysis == "geometry":
            results[analysis] = representation_geometry(model, fact)
        else:
            results[analysis] = speech_logit_lens(model, fact)
    return results


def summarize_results(results: Mapping[str, Sequence[ResultFile]]) -> CrossModalSummary:
    """:func:`~spiritlens.crossmodal.summary.summarize` of results grouped by analysis name."""
    return summarize(results.get("patching", ()), results.get("geometry", ()), results.get("logit_lens", ()))


def write_figures(summary: CrossModalSummary, out: str | os.PathLike, sample_lens: LogitLensResult | None = None,
                  sample_name: str = "logit_lens.png", analyses: Sequence[str] = ANALYSES) -> list[str]:
    """The summary's figures of ``analyses`` (those it has numbers for) and a sample logit-lens
    heatmap, in ``out``; the file names written."""
    from ..figures.crossmodal import plot_geometry, plot_logit_lens, plot_mrr, plot_patching

    out = Path(out)
    written = []
    for analysis, plot in (("patching", plot_patching), ("geometry", plot_geometry), ("logit_lens", plot_mrr)):
        if analysis in analyses and getattr(summary, analysis):
            plot(summary, out / SUMMARY_FIGURES[analysis])
            written.append(SUMMARY_FIGURES[analysis])
    if sample_lens is not None:
        plot_logit_lens(sample_lens, out / sample_name)
        written.append(sample_name)
    return written


def write_fact_outputs(results: Mapping[str, ResultFile], out: str | os.PathLike) -> list[Path]:
    """One fact's results as ``<analysis>.json``, its ``summary.json`` and figures in ``out``."""
    out = Path(out)
    paths = [result.save(out / f"{analysis}.json") for analysis, result in results.items()]
    summary = summarize_results({analysis: [result] for analysis, result in results.items()})
    paths.append(summary.save(out / "summary.json"))
    # For one fact the heatmap shows the logit lens; a reciprocal-rank curve adds nothing.
    names = write_figures(summary, out, results.get("logit_lens"), analyses=("patching", "geometry"))
    return paths + [out / name for name in names]


# ------------------------------------------------------------------ experiment directory
def shared_facts(prep: Mapping) -> list[int]:
    """Known ids kept in both Known-t2t and Known-s2t, in Known-t2t's order."""
    kept = prep.get("kept") or {}
    spoken = set(kept.get("s2t") or [])
    return [kid for kid in kept.get("t2t") or [] if kid in spoken]


def _rebase(value: str | None, old_out: Path, run_dir: Path) -> str | None:
    """A path of ``prepare.json`` that lived under the run's ``--out`` (as given then, perhaps
    relative to another working directory) moved to ``run_dir``; other paths unchanged."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and path.is_absolute():
        return value
    for base in (old_out, old_out.resolve()):
        try:
            return str(run_dir / path.relative_to(base))
        except ValueError:
            continue
    return value


def _prepared(run_dir: Path) -> dict:
    path = run_dir / "prepare.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not an experiment directory: no prepare.json "
                                "(run `spiritlens experiment --out DIR` first)")
    prep = read_json(path, "prepare manifest")
    missing = [key for key in ("config", "kept", "records", "audio", "model_dir", "sigma") if key not in prep]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a prepare.json of `spiritlens experiment`")
    old_out = Path(prep["config"].get("out") or run_dir)
    for key in ("model_dir", "speech_tokenizer", "aligner"):
        if not (key == "aligner" and prep.get(key) == POCKETSPHINX):  # a backend name, not a path
            prep[key] = _rebase(prep.get(key), old_out, run_dir)
    prep["audio"] = {k: _rebase(v, old_out, run_dir) for k, v in prep["audio"].items()}
    return prep


def _experiment(prep: dict, run_dir: Path, device: str | None, log: Callable):
    """The experiment's own model loader and speech-prompt builder (same prompt rules, aligner, mapping)."""
    from ..experiment.config import ExperimentConfig
    from ..experiment.runner import Experiment

    known = {f.name for f in fields(ExperimentConfig)}
    settings = {k: v for k, v in prep["config"].items() if k in known}
    settings["out"] = run_dir
    if device is not None:
        settings["device"] = device
    return Experiment(ExperimentConfig(**settings), progress=False, log=log)


def _load_existing(path: Path, analysis: str, settings: dict) -> ResultFile | None:
    try:
        result = RESULT_TYPES[analysis].load(path)
    except (OSError, ValueError):
        return None
    return result if analysis != "patching" or result.settings == settings else None


def run_experiment_dir(run_dir: str | os.PathLike, *, analyses: Sequence[str] = ANALYSES,
                       modes: Sequence[str] = MODES, directions: Sequence[str] = DIRECTIONS,
                       max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, device: str | None = None,
                       progress: bool = True, log: Callable = print, experiment: Any = None) -> dict:
    """The analyses for every fact kept in both Known-t2t and Known-s2t of an experiment directory.

    Patching uses the experiment's noise rule, samples, seed and sigmas (text sigma for the text
    run, speech sigma for the spoken run). Resumable (module doc). ``experiment``: a
    :class:`spiritlens.experiment.runner.Experiment` of this directory whose loaded model and
    aligner are reused (the experiment's own stages pass themselves); by default one is built from
    ``prepare.json``. Returns the status dict (also ``crossmodal/status.json``): ``facts``,
    ``computed``, ``reused``, ``failed``, ``written``.

    Raises:
        FileNotFoundError: no ``prepare.json``. ValueError: no fact kept in both modalities, or
        no fact could be analysed.
    """
    from tqdm.auto import tqdm

    analyses = check_choices("analyses", analyses, ANALYSES)
    modes, directions = check_choices("modes", modes, MODES), check_choices("directions", directions, DIRECTIONS)
    run_dir = Path(run_dir)
    prep = _prepared(run_dir)
    facts = shared_facts(prep)
    if not facts:
        raise ValueError(f"no fact of {str(run_dir)!r} is kept in both Known-t2t and Known-s2t "
                         f"(kept: { {m: len(v) for m, v in prep['kept'].items()} }); nothing to compare")
    config = prep["config"]
    settings = plain({"noise_rule": parse_noise(config.get("noise", "3s")).text,
                      "samples": int(config.get("samples", 10)), "seed": int(config.get("seed", 1)),
                      "sigma": {"text": prep["sigma"].get("text"), "speech": prep["sigma"].get("speech")},
                      "target": None, "modes": list(modes), "directions": list(directions)})
    answers = prep.get("answers") or {}  # the first token of each modality's judged generation
    out = run_dir / "crossmodal"
    if experiment is None:
        experiment = _experiment(prep, run_dir, device, log)
    status: dict[str, Any] = {"facts": facts, "analyses": list(analyses), "computed": [], "reused": [], "failed": []}
    collected: dict[str, list[ResultFile]] = {a: [] for a in ANALYSES}
    for kid in tqdm(facts, desc="cross-modal analyses", unit="fact", disable=not progress, dynamic_ncols=True):
        folder = out / "facts" / str(kid)
        # finished results of every analysis go into the summary; only the requested ones are computed
        judged = {"text": answers.get("t2t", {}).get(str(kid)), "speech": answers.get("s2t", {}).get(str(kid))}
        fact_settings = dict(settings, target=judged if any(v is not None for v in judged.values()) else None)
        done = {a: _load_existing(folder / f"{a}.json", a, fact_settings) for a in ANALYSES}
        missing = [a for a in analyses if done[a] is None]
        try:
            if missing:
                model = experiment.model(prep)
                record = prep["records"][str(kid)]
                speech = experiment._speech_prompt(prep, kid)  # the experiment's own S->T prompt rules
                fact = CrossModalFact.from_speech_prompt(model, speech, prompt=record["prompt"], name=str(kid))
                fresh = analyze_fact(model, fact, analyses=missing, noise=settings["noise_rule"],
                                     sigma=settings["sigma"], samples=settings["samples"], seed=settings["seed"],
                                     modes=modes, directions=directions, target=fact_settings["target"],
                                     max_batch_rows=max_batch_rows)
                for analysis, result in fresh.items():
                    result.save(folder / f"{analysis}.json")
                    done[analysis] = result
                status["computed"].append({"fact": kid, "analyses": missing})
            else:
                status["reused"].append(kid)
        except Exception as error:  # one fact's failure must not stop the others
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            status["failed"].append({"fact": kid, "reason": reason})
            log(f"[crossmodal] fact {kid} failed: {reason}")
            if os.environ.get("SPIRITLENS_DEBUG"):
                traceback.print_exc()
        for analysis, result in done.items():
            if result is not None:
                collected[analysis].append(result)
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
