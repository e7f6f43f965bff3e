"""The experiment report's section on the baseline: the text-only backbone and how much of its pattern
SpiritLM keeps (:mod:`spiritlens.aggregates.compare`).

:func:`report_section` returns the markdown lines: what the backbone is and how it was filtered and traced,
the comparison's definition, its numbers per kind (T→T and S→T against the backbone) and a paragraph of
findings computed from them by :func:`comparison_findings` (nothing in it is written by hand).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from spiritlens.aggregates.compare import PERCENTILES, describe_entry, describe_variant, group_name
from spiritlens.figures.escape import md_text, terminal_text

_KIND_WORDS = {"hidden": "hidden states", "mlp": "MLP outputs", "attn": "attention outputs"}


def _r(entry: Mapping | None, variant: str = "without_last") -> float | None:
    """r of one variant of a kind's comparison entry, None when not computed or undefined."""
    value = (entry or {}).get(variant) or {}
    return None if value.get("r") is None else float(value["r"])


def _ci(entry: Mapping, variant: str = "without_last"):
    return (entry.get(variant) or {}).get("ci95")


def comparison_findings(comparison: Mapping, by_group: Mapping[str, Mapping] | None = None,
                        escape: Callable[[object], str] = terminal_text) -> str:
    """One paragraph stating what ``comparison`` (a :func:`~spiritlens.aggregates.compare.compare_to_backbone`
    document) shows: r per kind for SpiritLM T→T and S→T against the backbone, on how many facts; for each
    kind both have, which keeps more of the backbone's pattern and whether the two bootstrap intervals
    overlap; and (with ``by_group``, the aggregates) where each row's largest AIE lies. ``escape`` is applied
    to the reasons a comparison was not made (they may name result files): ``md_text`` in the report."""
    pairs = comparison.get("pairs", {})
    sentences = []
    for group, pair in pairs.items():
        if pair.get("reason"):
            sentences.append(f"{group_name(group)} was not compared with the backbone: {escape(pair['reason'])}.")
            continue
        parts = [f"{_KIND_WORDS.get(kind, kind)} {describe_entry(entry, escape)}"
                 for kind, entry in pair.get("kinds", {}).items()]
        if parts:
            sentences.append(f"On the facts kept by both the backbone and {group_name(group)} "
                             f"({len(pair.get('known_ids', []))}), the correlation of their per-prompt AIE grids is: "
                             + "; ".join(parts) + ".")
    text, speech = pairs.get("text", {}).get("kinds", {}), pairs.get("speech", {}).get("kinds", {})
    both = [k for k in text if _r(text.get(k)) is not None and _r(speech.get(k)) is not None]
    if both:
        more = [k for k in both if _r(text[k]) > _r(speech[k])]
        less = [k for k in both if _r(text[k]) <= _r(speech[k])]
        sentence = "Without the last-token row (large in every causal trace, whatever the model), "
        if not less:
            sentence += "SpiritLM T→T keeps more of the backbone's pattern than S→T (higher r) for every kind compared"
        elif not more:
            sentence += "SpiritLM S→T's r is at least T→T's for every kind compared"
        else:
            sentence += (f"SpiritLM T→T keeps more of the backbone's pattern than S→T (higher r) for {_join(more)}, "
                         f"S→T as much or more for {_join(less)}")
        apart = [k for k in both if _apart(_ci(text[k]), _ci(speech[k]))]
        sentence += (f"; their two bootstrap intervals do not overlap for {_join(apart)}" if apart else
                     "; their two bootstrap intervals overlap for every kind: on these prompts the bootstrap does not "
                     "separate them")
        sentences.append(sentence + ".")
    if by_group:
        sentences += _peak_sentences(by_group)
    return " ".join(sentences)


def _apart(a, b) -> bool:
    return a is not None and b is not None and (a[1] < b[0] or b[1] < a[0])


def _join(kinds: list[str]) -> str:
    words = [_KIND_WORDS.get(k, k) for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _peak_sentences(by_group: Mapping[str, Mapping]) -> list[str]:
    """Per kind: where each row's largest per-prompt AIE lies (each row over its own kept prompts)."""
    from spiritlens.aggregates.aie import group_labels

    labels = group_labels(by_group)
    sentences = []
    for kind in ("hidden", "mlp", "attn"):
        places = []
        for group, kinds in by_group.items():
            agg = kinds.get(kind)
            peak = None if agg is None else agg.peak()
            if agg is not None:
                places.append(f"{labels[group]} " + ("no effect" if peak is None else
                                                     f"{peak[2]:.3f} at the {peak[0].replace('_', ' ')} "
                                                     f"token{'s' if peak[0] in ('middle_subject', 'further') else ''}, "
                                                     f"layer {peak[1]}"))
        if len(places) > 1:
            sentences.append(f"Largest AIE of {_KIND_WORDS[kind]} (each row over its own kept prompts): "
                             + "; ".join(places) + ".")
    return sentences


def report_section(prep, config, comparison: Mapping | None, by_group: Mapping | None) -> list[str]:
    """Markdown lines of the report's baseline section (module doc); nothing without a backbone."""
    info = prep.backbone
    if not info:
        return []
    from spiritlens.aggregates.compare import INTERVAL, STATISTIC

    lines = ["## Baseline: the backbone SpiritLM was built from", "",
             "The paper's Figure 2 traces the text-only model SpiritLM continued training from (Llama-2-7B) beside "
             "SpiritLM, on the same prompts. Here that row is traced the same way: Known filtered by the backbone's "
             "own greedy answers (Llama-2's prompt: `<s>` and the text), the same noise rule, samples and seed, "
             "sigma by ROME's rule over the backbone's own embeddings, a window scaled to its depth.", "",
             f"- backbone: {md_text(info['model_dir'])} ({info['n_layers']} layers, {md_text(info['dtype'])}); window "
             f"{info['window']} ({md_text(info.get('window_rule') or 'given')}); sigma {_num(info.get('sigma'))} "
             f"(SpiritLM's text sigma: {_num((prep.sigma or {}).get('text'))})",
             f"- Known-t2t on the backbone: judgements {md_text(info.get('filter'))}; kept {len(info['kept'])}"
             + (" (every prompt kept: --keep-all)" if config.keeps_all else " (greedy answer judged exact)")
             + " (`filter/known-backbone-t2t.json`); traces in `results/backbone_t2t/`"]
    shared = sorted(set(info["kept"]) & set(prep.kept.get("t2t") or []))
    lines.append(f"- facts kept by both the backbone and SpiritLM T→T: {len(shared)}"
                 + (f"; by the backbone and SpiritLM S→T: {len(set(info['kept']) & set(prep.kept['s2t']))}"
                    if "s2t" in prep.kept else ""))
    toy = info.get("toy")
    if toy and toy.get("counts"):
        counts = toy["counts"].get("t2t", {})
        training = toy.get("training") or {}
        lines.append(f"- the toy's backbone: trained {training.get('steps')} steps ({md_text(training.get('stop'))}) "
                     f"before the toy SpiritLM was continued from it; its build judged {counts.get('exact')}/"
                     f"{counts.get('total')} greedy answers exact")
    lines += ["", "### How much of the backbone's pattern SpiritLM keeps", "",
              f"The comparison: the {STATISTIC}; 95% interval: {INTERVAL}"
              + ("" if comparison is None else
                 f", {comparison['resamples']} resamples, seed {comparison['seed']}")
              + f" (percentiles {PERCENTILES[0]} and {PERCENTILES[1]}). r near 1: the same categories and layers "
              "carry the effect in both models; near 0: no relation. *Without the last token*: the same over the five "
              "categories before the last token. The last-token row is large in every causal trace whatever the "
              "model computes (restoring the last position late restores the output), so it dominates r over the "
              "whole grid, even between unrelated models (README, \"The baseline row\"). Models of different depth "
              "are not compared (refused, not interpolated). Numbers: [`comparison.json`](aggregate/comparison.json).",
              ""]
    if comparison is None:
        return lines + ["No comparison: no backbone result and SpiritLM result to compare.", ""]
    lines += ["| compared with the backbone | kind | facts | r (grid) | 95% CI | r without the last token | 95% CI |",
              "|---|---|---|---|---|---|---|"]
    for group, pair in comparison.get("pairs", {}).items():
        for kind, entry in pair.get("kinds", {}).items():
            if "grid" not in entry:
                lines.append(f"| {group_name(group)} | {kind} | – | {describe_entry(entry, md_text)} | – | – | – |")
                continue
            cells = []
            for variant in ("grid", "without_last"):
                value = entry[variant]
                ci = value.get("ci95")
                cells += [describe_variant(value, md_text) if value.get("r") is None else f"{value['r']:.3f}",
                          "–" if ci is None else f"{ci[0]:.3f} to {ci[1]:.3f}"]
            lines.append(f"| {group_name(group)} | {kind} | {entry['grid']['prompts']} | " + " | ".join(cells) + " |")
    lines += ["", f"**Findings (computed from the numbers).** {comparison_findings(comparison, by_group, md_text)}", ""]
    return lines


def _num(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
