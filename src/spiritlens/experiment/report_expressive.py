"""The experiment report's section on prosody (``--expressive``): does pitch or style carry the fact?

:func:`report_section` reads the stage's verified files (:func:`spiritlens.experiment.expressive.collect`),
averages them (:func:`spiritlens.aggregates.aggregate_streams` per control and kind;
:func:`spiritlens.aggregates.prosody.control_effects`), writes ``expressive/aie_<control>.json`` and the
figures, and returns the section's markdown lines. Every sentence about the results is computed from
the numbers (:func:`findings`); a value "differs from 0" only when its 95% CI excludes 0.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping

from spiritlens._io import write_atomic
from spiritlens.aggregates.aie import STREAM_CATEGORIES, SUBJECT_CATEGORIES, KindAggregate, aggregate_streams, \
    to_aie_json
from spiritlens.aggregates.ci import ci_formula
from spiritlens.aggregates.prosody import ControlEffect, Estimate, control_effects
from spiritlens.figures.escape import md_text
from spiritlens.terms import KINDS
from spiritlens.traces.streams import STREAM_LABELS, STREAMS
from spiritlens.units.controls import CONTROL_LABELS

_KIND_WORDS = {"hidden": "hidden states", "mlp": "MLP outputs", "attn": "attention outputs"}
CONTROL_DEFINITIONS = [
    "*pitch flattened*: every 80 ms pitch code set to the utterance's most frequent code (after SpiritLM's "
    "deduplication, one pitch token spanning the whole utterance)",
    "*pitch shuffled*: the pitch runs (a code and its duration) in a seeded random order: the same codes for the "
    "same time, no longer under the same words",
    "*pitch of another prompt*: the next kept S→T prompt's pitch codes, 80 ms by 80 ms, cut or padded with its "
    "last code",
    "*style set to one code*: every 1 s style code set to the smallest code the utterance does not use",
    "*style of another prompt*: the next kept S→T prompt's style codes, second by second, cut or padded with its "
    "last code",
]


def stream_peak(agg: KindAggregate, stream: str) -> tuple[str, int, float, float, int] | None:
    """(category, layer, per-prompt AIE, 95% half-width, prompts with rows in that category) of the largest
    AIE at the subject's ``stream`` rows (first, middle or last subject token of that stream); None without
    rows or effect."""
    peak = agg.peak([f"{c}/{stream}" for c in SUBJECT_CATEGORIES])
    if peak is None:
        return None
    category, layer, value = peak
    return category, layer, value, float(agg.ci[category][layer]), int(agg.prompt_counts.get(category, 0))


SHOWN_FLOOR = 5e-4  # a peak below it prints as 0.000: said as none, not as a place


def _peak_text(peak, kind: str | None = None, prompts: int | None = None) -> str:
    """``peak`` (:func:`stream_peak`) as report text; the category's prompt count is said when it is fewer
    than ``prompts`` (its CI is over those)."""
    if peak is None:
        return "no effect"
    category, layer, value, ci, n = peak
    if value < SHOWN_FLOOR:
        return f"none above {SHOWN_FLOOR:g}"
    where = category.split("/")[0].replace("_", " ").replace("subject", "subject token")
    return (f"{value:.3f}" + (f" ± {ci:.3f}" if math.isfinite(ci) else "") + f" ({where}"
            + (f", {_KIND_WORDS[kind]}" if kind else "") + f", layer {layer}"
            + (f", {n} prompt{'' if n == 1 else 's'}" if prompts is not None and n < prompts else "") + ")")


def _significant(value: float, ci: float) -> bool:
    return math.isfinite(ci) and value > ci


def findings(aggregates: Mapping[str, Mapping[str, KindAggregate]], effects: Mapping[str, ControlEffect],
             weights: str) -> list[str]:
    """Sentences stating what the numbers show (module docstring): per stream the largest AIE at the
    subject's tokens under the original prompts and whether its CI lies above 0; per stream the total effect
    of noising its subject tokens alone; per control the change in p(answer) and the answers it changed."""
    sentences: list[str] = []
    original = aggregates.get("original") or {}
    if weights == "random":
        sentences.append("These numbers come from tiny random-weight checkpoints: they show that the stage runs "
                         "end to end, not what SpiritLM Expressive does.")
    if original:
        n = next(iter(original.values())).count
        best = {}
        for stream in STREAMS:
            peaks = [(kind, stream_peak(agg, stream)) for kind, agg in original.items()]
            peaks = [(kind, p) for kind, p in peaks if p is not None]
            best[stream] = max(peaks, key=lambda kp: kp[1][2]) if peaks else None
        parts = [f"{STREAM_LABELS[s]} {_peak_text(best[s][1], best[s][0], n) if best[s] else 'no effect'}"
                 for s in STREAMS]
        carrying = [s for s in STREAMS if best[s] and _significant(best[s][1][2], best[s][1][3])]
        sentences.append(f"Original prompts ({n} prompt{'' if n == 1 else 's'}): restoring the subject's tokens of one "
                         "stream at one layer recovers at most: " + "; ".join(parts) + ".")
        if best["hubert"] and best["hubert"][1][2] > 0:
            ratios = [f"{STREAM_LABELS[s]} {best[s][1][2] / best['hubert'][1][2]:.0%}" for s in ("pitch", "style")
                      if best[s] and best[s][1][2] > 0]
            if ratios:
                sentences.append("Against the HuBERT tokens' peak: " + ", ".join(ratios) + ".")
        if n < 2:
            sentences.append("With one prompt there is no confidence interval: nothing can be concluded.")
        elif carrying:
            sentences.append("The 95% CI of the peak lies above 0 for " + ", ".join(STREAM_LABELS[s] for s in carrying)
                             + ("" if set(carrying) == set(STREAMS) else "; not for the other stream(s)") + ".")
        else:
            sentences.append("No stream's peak has a 95% CI above 0.")
    base = effects.get("original")
    if base is not None:
        parts = [f"{STREAM_LABELS[s]} {base.stream_te[s].text()}" for s in STREAMS if s in base.stream_te]
        sentences.append("Noising one stream's subject tokens alone lowers p(answer) by (total effect, mean ± 95% CI): "
                         + "; ".join(parts) + ".")
    for control, effect in effects.items():
        if control == "original":
            continue
        delta = effect.delta
        verdict = ("a change whose 95% CI excludes 0" if delta.excludes_zero() else
                   "no change distinguishable from 0 at 95%" if delta.n >= 2 else "one prompt, no CI")
        sentences.append(f"{CONTROL_LABELS[control].capitalize()}: p(answer) changes by {delta.text()} ({verdict}); "
                         f"the greedy answer differs in {effect.answer_changed} of {effect.prompts} prompt"
                         f"{'' if effect.prompts == 1 else 's'}.")
    return sentences


def report_section(experiment, prep, summary: dict, by_modality: Mapping, heading: str = "##") -> list[str]:
    """Markdown lines of the prosody section; figures and ``aie_<control>.json`` under ``expressive/``."""
    from spiritlens.experiment.expressive import FOLDER, collect

    out = experiment.out / FOLDER
    collected = collect(experiment, prep)
    lines = [f"{heading} Does prosody carry the fact? Pitch and style tokens of SpiritLM Expressive", "",
             "Each kept S→T prompt is traced again on SpiritLM Expressive, with the subject's rows split by stream: "
             "its HuBERT tokens (`/Hu`), its pitch tokens (`/Pi`) and the style tokens overlapping it (`/St`), each "
             "restored on its own, the other rows as above. The corruption is ROME's noise on the subject's tokens of "
             f"the streams {md_text(', '.join(summary['noise_streams']))} (same rule, speech sigma, samples and seed). "
             "The subject categories split the same way (*last subject token / pitch* is the pitch row of the "
             "subject's last text token). The same is done under prosody controls, each the spoken prompt with one "
             "stream changed and the streams re-merged by SpiritLM's rule (HuBERT untouched):", ""]
    lines += [f"- {d}" for d in CONTROL_DEFINITIONS] + [""]
    lines += [f"Prompts: {summary['prompts']}; controls: {md_text(', '.join(summary['controls']))}; "
              f"{summary['computed']} (prompt, control) items computed in this run, {summary['reused']} reused, "
              f"{len(summary['skipped'])} skipped, {len(summary['failed'])} failed. Every ± is a 95% confidence "
              f"interval, {ci_formula('prompts')}.", ""]
    lines += [f"- skipped {md_text(s['item'])}: {md_text(s['reason'])}" for s in summary["skipped"][:10]]
    lines += [f"- failed {md_text(f['item'])}: {md_text(f['reason'])}" for f in summary["failed"][:10]]
    lines += [f"- not used: {md_text(p)}" for p in collected.problems[:10]]
    aggregates: dict[str, dict[str, KindAggregate]] = {}
    for control, results in collected.results.items():
        kinds = [k for k in KINDS if any(r.get("kind") == k for r in results)]
        if kinds:
            aggregates[control] = {kind: aggregate_streams(results, kind) for kind in kinds}
            write_atomic(out / f"aie_{control}.json",
                         json.dumps(to_aie_json(aggregates[control]), indent=2, allow_nan=False) + "\n")
    effects = control_effects(collected.records)
    if not aggregates and not effects:
        return lines + ["No prosody results to report.", ""]
    lines += ["**Findings (computed from the numbers).** " + " ".join(findings(aggregates, effects, prep.weights)), ""]
    lines += _effects_table(effects) + _peaks_table(aggregates)
    lines += _figures(out, by_modality, aggregates, effects)
    names = ", ".join(f"[`aie_{c}.json`]({FOLDER}/aie_{c}.json)" for c in aggregates)
    lines += [f"Numbers: {names} (categories {', '.join(f'`{c}`' for c in STREAM_CATEGORIES)}); per prompt: "
              f"`{FOLDER}/results/`, `{FOLDER}/controls/`.", ""]
    return lines


def _effects_table(effects: Mapping[str, ControlEffect]) -> list[str]:
    if not effects:
        return []
    header = " | ".join(f"TE, {STREAM_LABELS[s]} only" for s in STREAMS)
    lines = ["Answer probability under each control (clean run; Δ: paired change against the original prompt), and "
             "the total effect of noising one stream's subject tokens alone:", "",
             f"| control | prompts | p(answer) | Δ vs original | greedy answer changed | {header} |",
             "|---|---|---|---|---|" + "---|" * len(STREAMS)]
    for control, e in effects.items():
        te = " | ".join(e.stream_te.get(s, Estimate(math.nan, math.nan, 0)).text() for s in STREAMS)
        lines.append(f"| {CONTROL_LABELS[control]} | {e.prompts} | {e.p_answer.text()} | {e.delta.text()} | "
                     f"{e.answer_changed}/{e.prompts} | {te} |")
    return lines + [""]


def _peaks_table(aggregates: Mapping[str, Mapping[str, KindAggregate]]) -> list[str]:
    if not aggregates:
        return []
    lines = ["Largest per-prompt AIE at the subject's tokens of each stream (value ± 95% CI, its category and layer, "
             "and the prompts that have that category when fewer than all), and the total effect of the traces' "
             "corruption (ATE). These traces noise exactly the tokens overlapping the subject's words, so their ATE "
             "can differ from the S→T table's above, whose noise covers the subject's token range, which can hold a "
             "token of the previous word:", "",
             "| control | kind | prompts | ATE | " + " | ".join(STREAM_LABELS[s] for s in STREAMS) + " |",
             "|---|---|---|---|" + "---|" * len(STREAMS)]
    for control, kinds in aggregates.items():
        for kind, agg in kinds.items():
            cells = " | ".join(_peak_text(stream_peak(agg, s), prompts=agg.count) for s in STREAMS)
            lines.append(f"| {CONTROL_LABELS[control]} | {kind} | {agg.count} | {agg.ate:.3f} | {cells} |")
    return lines + [""]


def _figures(out, by_modality: Mapping, aggregates: Mapping, effects: Mapping) -> list[str]:
    from spiritlens.experiment.expressive import FOLDER
    from spiritlens.figures.grid import plot_aie_grid, plot_stream_controls
    from spiritlens.figures.prosody import plot_controls

    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # glyphs the font lacks
        if "original" in aggregates:
            plot_aie_grid(by_modality, out / "aie_grid_log.png", streams=aggregates["original"])
            lines += [f"![AIE with the S→T Expressive per-stream panels, log scale]({FOLDER}/aie_grid_log.png)", ""]
        if effects:
            plot_controls(effects, out / "controls.png")
            lines += [f"![p(answer) and per-stream total effects under each prosody control]({FOLDER}/controls.png)", ""]
        kinds = [k for k in KINDS if any(k in v for v in aggregates.values())]
        for kind in kinds:
            by_control = {c: v[kind] for c, v in aggregates.items() if kind in v}
            plot_stream_controls(by_control, kind, out / f"aie_streams_{kind}.png", labels=CONTROL_LABELS)
            lines += [f"![Per-stream AIE of {_KIND_WORDS[kind]} under each control]({FOLDER}/aie_streams_{kind}.png)", ""]
    return lines


__all__ = ["findings", "report_section", "stream_peak"]
