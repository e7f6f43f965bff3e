"""The experiment report's section on the cross-modal analyses: figures, numbers and findings.

:func:`report_section` reads ``DIR/crossmodal/summary.json`` (written by
:func:`~spiritlens.experiment.crossmodal.run_experiment_dir`), redraws the figures from it and returns
the markdown lines of the section, with links relative to ``DIR`` (where ``report.md`` lives).
Every sentence about the results is computed from the numbers
(:meth:`~spiritlens.crossmodal.summary.CrossModalSummary.findings`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import quote

from spiritlens.figures.escape import md_code, md_text
from spiritlens._io import read_json
from spiritlens.crossmodal.logit_lens import LogitLensResult
from spiritlens.figures.crossmodal import SUMMARY_FIGURES, write_figures
from spiritlens.aggregates.ci import ci_formula
from spiritlens.crossmodal.summary import CrossModalSummary

_FIGURE_CAPTIONS = {
    "patching": "Cross-modal patching: indirect effect on p(answer) per layer, the other modality's state "
                "(solid) against the run's own state (dashed)",
    "geometry": "Text vs speech states of the same word: cosine, distance (against different words) and norms",
    "logit_lens": "Logit lens: mean reciprocal rank of the subject's text tokens at its speech positions",
}


_TABLE_CAPTIONS = {
    "patching": "Indirect effect per layer (patched score − low score; T→S: text state into the spoken run; "
                "cross: the other modality's state, self: the run's own), mean ± 95% CI:",
    "geometry": "Per layer, mean over words and facts ± 95% CI:",
    "logit_lens": "Mean reciprocal rank of the subject's text tokens per layer ± 95% CI:",
}


def report_section(run_dir: str | os.PathLike, heading: str = "##") -> list[str]:
    """Markdown lines of the cross-modal section of ``run_dir``'s report (see the module doc).

    When the analyses have not been run, the section says so and gives the command.
    """
    run_dir = Path(run_dir)
    out = run_dir / "crossmodal"
    lines = [f"{heading} Beyond the paper: does the speech pathway use the text mechanism?", ""]
    try:
        summary = CrossModalSummary.load(out / "summary.json")
    except (OSError, ValueError) as error:
        reason = "not run" if not (out / "summary.json").exists() else f"unreadable summary ({md_text(error)})"
        return lines + [f"Cross-modal analyses {reason}: {md_code(f'spiritlens crossmodal experiment {run_dir}')}.", ""]
    status = _read_status(out)
    sample = _sample_lens(out, summary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # glyph warnings of tokens the font lacks
        written = write_figures(summary, out, sample, f"logit_lens_{sample.name}.png" if sample else "")
    lines += [
        "Each fact kept in both Known-t2t and Known-s2t is run twice, written and spoken, with its positions "
        "paired by the alignment. Three measurements (README, \"Cross-modal analyses\"):",
        "",
        "- **cross-modal patching**: the subject of one run is noised as in tracing, and its hidden state at a "
        "layer is replaced by the *other* modality's clean state at the paired positions; compared with restoring "
        "the run's own clean state at the same positions (a hidden-state restore of those positions; in `last` mode "
        "that is one speech position of the spoken run, not the tracer's text-token group);",
        "- **geometry**: cosine and distance between a word's text states and its aligned speech states, "
        "against different words of the same fact;",
        "- **logit lens**: the rank of the subject's own text tokens when the head reads its speech positions.",
        "",
        f"Facts: {len(summary.facts)} analysed"
        + (f", {len(status.get('failed', []))} failed" if status.get("failed") else "")
        + f". Bands and ± are 95% confidence intervals, {ci_formula('facts')}.",
        "",
        "**Findings (computed from the numbers).** " + " ".join(summary.findings()),
        "",
    ]
    for failure in status.get("failed", [])[:10]:
        lines.append(f"- failed fact {md_text(failure.get('fact'))}: {md_text(failure.get('reason'))}")
    for analysis, name in SUMMARY_FIGURES.items():
        if name not in written:
            continue
        lines += [f"![{_FIGURE_CAPTIONS[analysis]}](crossmodal/{name})", "", _TABLE_CAPTIONS[analysis], "",
                  *summary.table(analysis), ""]
    if sample is not None:
        lines += [f"![Logit lens heatmap of fact {md_text(sample.name)}]"
                  f"(crossmodal/{quote(f'logit_lens_{sample.name}.png')})", ""]
    lines += ["Numbers: [`crossmodal/summary.json`](crossmodal/summary.json); per fact: `crossmodal/facts/`.", ""]
    return lines


def _read_status(out: Path) -> dict:
    try:
        return read_json(out / "status.json", "cross-modal status")
    except (OSError, ValueError):
        return {}


def _sample_lens(out: Path, summary: CrossModalSummary) -> LogitLensResult | None:
    for name in summary.facts:
        try:
            return LogitLensResult.load(out / "facts" / str(name) / "logit_lens.json")
        except (OSError, ValueError):
            continue
    return None
