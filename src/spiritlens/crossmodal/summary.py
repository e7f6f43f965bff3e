"""The three analyses over facts: per-layer means with 95% confidence intervals, and their reading.

Every per-layer quantity is first computed per fact, then averaged over facts (each fact counts
once): ``mean[l]`` and the 95% half-width ``ci[l] = t_{0.975,n-1} * s / sqrt(n)`` over the n facts,
the project's one CI formula (:mod:`spiritlens.aggregates.ci`; undefined, NaN, for one fact). A
fact whose value is NaN (e.g. a mismatched baseline with a single word) is left out of that
quantity's average.

- patching, per direction x mode: indirect effects ``cross = scores - low_score`` and
  ``self = self_scores - low_score`` (the tracer's IE of the same cells) and the total effect
  ``high_score - low_score``;
- geometry: the word-averaged ``cosine``, ``distance``, ``text_norm``, ``speech_norm`` and the
  mismatched-word baselines;
- logit lens: the reciprocal rank on speech positions, its text reference, and chance.

:meth:`CrossModalSummary.findings` turns the numbers into sentences using the criteria that the
README states for evidence of a shared mechanism (no sentence is written by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spiritlens.aggregates.ci import mean_ci as unit_mean_ci
from spiritlens.crossmodal.fact import ResultFile, as_float_array, check_values
from spiritlens.crossmodal.geometry import GeometryResult
from spiritlens.crossmodal.logit_lens import LogitLensResult
from spiritlens.crossmodal.patching import DIRECTION_LABELS, PATCH_DIRECTIONS, PATCH_MODES, PatchingResult

RECOVERY_THRESHOLD = 0.5  # cross-modal restoration reaching half the within-modality one (README)
MIN_SELF_SHARE = 0.1  # the within-modality restoration must recover this share of the total effect (README)
GEOMETRY_QUANTITIES = ("cosine", "mismatched_cosine", "distance", "mismatched_distance", "text_norm",
                       "speech_norm")


@dataclass
class Band:
    """Per-layer mean over facts with its 95% CI half-width (``[L]`` each) and the fact count."""

    mean: np.ndarray
    ci: np.ndarray
    n: int

    def __post_init__(self):
        self.mean, self.ci = as_float_array(self.mean), as_float_array(self.ci)

    @property
    def low(self) -> np.ndarray:
        return self.mean - self.ci

    @property
    def high(self) -> np.ndarray:
        return self.mean + self.ci


def mean_ci(rows: Sequence[Sequence[float]] | np.ndarray, n_layers: int | None = None) -> Band:
    """Mean and 95% CI half-width over facts of ``rows`` ``[n_facts, L]`` (rows with NaN left out), by
    :func:`spiritlens.aggregates.ci.mean_ci`."""
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.size == 0:
        width = n_layers or 0
        return Band(np.full(width, np.nan), np.full(width, np.nan), 0)
    return Band(*unit_mean_ci(array))


@dataclass
class CrossModalSummary(ResultFile):
    """The three analyses over facts (module doc). ``patching`` maps ``"direction/mode"`` to
    ``{"cross", "self", "total_effect"}`` bands; ``geometry`` maps each quantity to a band;
    ``logit_lens`` has ``speech`` and ``text`` bands and ``chance`` (a float)."""

    ANALYSIS = "crossmodal_summary"

    n_layers: int
    facts: list
    patching: dict = field(default_factory=dict)
    geometry: dict = field(default_factory=dict)
    logit_lens: dict = field(default_factory=dict)

    def __post_init__(self):
        def band(value):
            return value if isinstance(value, Band) else Band(**value)

        self.patching = {key: {k: band(v) for k, v in curves.items()} for key, curves in self.patching.items()}
        self.geometry = {key: band(v) for key, v in self.geometry.items()}
        self.logit_lens = {key: (band(v) if isinstance(v, (dict, Band)) else v) for key, v in self.logit_lens.items()}

    def validate(self) -> None:
        """Every band ``[n_layers]`` (``[1]`` for a total effect; NaN where no fact counts; no inf); ``chance``
        a probability."""
        where, L = "crossmodal summary", self.n_layers
        bands = [(f"patching {key} {name}", band) for key, curves in self.patching.items() for name, band in curves.items()]
        bands += [(f"geometry {key}", band) for key, band in self.geometry.items()]
        bands += [(f"logit_lens {key}", band) for key, band in self.logit_lens.items() if isinstance(band, Band)]
        for name, band in bands:
            shape = (1,) if name.endswith("total_effect") else (L,)
            check_values(where, f"{name} mean", band.mean, allow_nan=True, shape=shape)
            check_values(where, f"{name} ci", band.ci, low=0.0, allow_nan=True, shape=shape)
        if "chance" in self.logit_lens:
            check_values(where, "logit_lens chance", self.logit_lens["chance"], low=0.0, high=1.0)

    # ----------------------------------------------------------------- reading
    def findings(self) -> list[str]:
        """One sentence per analysis, computed from the numbers with the README's criteria."""
        out = []
        for key, bands in self.patching.items():
            out.append(_patching_sentence(key, bands))
        if self.geometry:
            out.append(_geometry_sentence(self.geometry))
        if self.logit_lens:
            out.append(_lens_sentence(self.logit_lens))
        return out

    def table(self, analysis: str) -> list[str]:
        """A markdown table (layers x quantities, mean ± 95% CI) of one analysis: ``"patching"``,
        ``"geometry"`` or ``"logit_lens"``; no lines if the summary lacks it."""
        columns: list[tuple[str, Band]] = []
        if analysis == "patching":
            for key, bands in self.patching.items():
                direction, mode = key.split("/")
                short = "T→S" if direction == "text_to_speech" else "S→T"
                columns += [(f"{short} {mode}: cross", bands["cross"]), (f"{short} {mode}: self", bands["self"])]
        elif analysis == "geometry":
            labels = {"cosine": "cosine", "mismatched_cosine": "cosine, other words", "distance": "distance",
                      "mismatched_distance": "distance, other words", "text_norm": "‖text‖",
                      "speech_norm": "‖speech‖"}
            columns = [(label, self.geometry[name]) for name, label in labels.items() if name in self.geometry]
        elif analysis == "logit_lens":
            columns = [(label, self.logit_lens[name]) for name, label in
                       (("speech", "MRR, speech positions"), ("text", "MRR, text positions")) if name in self.logit_lens]
        else:
            raise ValueError(f"unknown analysis {analysis!r}; use patching, geometry or logit_lens")
        if not columns:
            return []
        lines = ["| layer | " + " | ".join(label for label, _ in columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for layer in range(self.n_layers):
            cells = [str(layer)] + [_fmt(band.mean[layer], band.ci[layer]) for _, band in columns]
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def summarize(patching: Sequence[PatchingResult] = (), geometry: Sequence[GeometryResult] = (),
              logit_lens: Sequence[LogitLensResult] = ()) -> CrossModalSummary:
    """Average per-fact results over facts (module doc). All results must have the same depth."""
    everything = [*patching, *geometry, *logit_lens]
    if not everything:
        raise ValueError("nothing to summarise: no cross-modal results")
    depths = {r.n_layers for r in everything}
    if len(depths) != 1:
        raise ValueError(f"results come from models of different depths {sorted(depths)}")
    L = depths.pop()
    facts = list(dict.fromkeys(r.name for r in everything))
    patch: dict[str, dict[str, Band]] = {}
    for direction in PATCH_DIRECTIONS:
        for mode in PATCH_MODES:
            cross, self_, total = [], [], []
            for result in patching:
                try:
                    curve, receiver = result.curve(direction, mode), result.receiver(direction)
                except KeyError:
                    continue
                cross.append(curve.scores - receiver.low_score)
                self_.append(curve.self_scores - receiver.low_score)
                total.append([receiver.high_score - receiver.low_score])
            if cross:
                patch[f"{direction}/{mode}"] = {"cross": mean_ci(cross), "self": mean_ci(self_),
                                                "total_effect": mean_ci(total)}
    geom = {}
    if geometry:
        for name in GEOMETRY_QUANTITIES:
            rows = [getattr(g, name) if name.startswith("mismatched") else g.word_mean(name) for g in geometry]
            geom[name] = mean_ci(rows, L)
    lens = {}
    if logit_lens:
        lens = {"speech": mean_ci([r.reciprocal_rank for r in logit_lens], L),
                "text": mean_ci([r.text_reciprocal_rank for r in logit_lens], L),
                "chance": float(np.mean([r.chance for r in logit_lens]))}
    return CrossModalSummary(L, facts, patch, geom, lens)


# --------------------------------------------------------------- sentences
def _fmt(mean: float, ci: float | None = None) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    text = f"{mean:.3g}"
    return text if ci is None or not np.isfinite(ci) else f"{text} ± {ci:.2g}"


def _patching_sentence(key: str, bands: dict[str, Band]) -> str:
    direction, mode = key.split("/")
    cross, self_, total = bands["cross"], bands["self"], bands["total_effect"]
    lc, ls = int(np.nanargmax(cross.mean)), int(np.nanargmax(self_.mean))
    where = "the last subject position" if mode == "last" else "every subject token's aligned positions"
    sentence = (f"Cross-modal patching, {DIRECTION_LABELS[direction]} at {where} (n = {cross.n}): the patched state "
                f"raises p(answer) over the noised run by at most {_fmt(cross.mean[lc], cross.ci[lc])} (layer {lc}); "
                f"restoring the run's own state there raises it by at most {_fmt(self_.mean[ls], self_.ci[ls])} "
                f"(layer {ls}); total effect {_fmt(total.mean[0], total.ci[0])}.")
    best_self = self_.mean[ls]
    if not best_self >= MIN_SELF_SHARE * total.mean[0] or not best_self > 0:
        share = best_self / total.mean[0] if total.mean[0] > 0 else float("nan")
        return sentence + (f" Restoring the run's own state at these positions recovers {_fmt(share)} of the total "
                           f"effect, under the README's {MIN_SELF_SHARE:g}: these positions barely carry the fact "
                           "in this run, so the cross-modal curve cannot be read against it.")
    ratio = cross.mean[lc] / best_self
    sentence += f" Recovery (best cross / best within-modality) is {ratio:.2f}"
    if ratio >= RECOVERY_THRESHOLD and np.isfinite(cross.ci[lc]) and cross.low[lc] > 0:
        return sentence + (f", at least {RECOVERY_THRESHOLD:g} with a CI above zero: by the README's criterion the "
                           f"receiving pathway reads the other modality's state at these positions (best at layer "
                           f"{lc}; the two peaks are compared whatever their layers).")
    if not np.isfinite(cross.ci[lc]):
        return sentence + " (no confidence interval with one fact; the README's criterion needs one)."
    if ratio >= RECOVERY_THRESHOLD:
        return sentence + (", but the cross-modal effect's CI reaches zero: by the README's criterion not yet "
                           "evidence that the other modality's state substitutes at these positions.")
    return sentence + (f", below the README's criterion of {RECOVERY_THRESHOLD:g}: no evidence that the other "
                       "modality's state substitutes at these positions.")


def _geometry_sentence(geometry: dict[str, Band]) -> str:
    cos, mis = geometry["cosine"], geometry["mismatched_cosine"]
    gap = cos.mean - mis.mean
    layer = int(np.nanargmax(gap)) if np.isfinite(gap).any() else 0
    ratio = geometry["speech_norm"].mean / geometry["text_norm"].mean
    separated = [l for l in range(len(gap)) if np.isfinite(cos.ci[l]) and np.isfinite(mis.ci[l])
                 and cos.low[l] > mis.high[l]]
    sentence = (f"Geometry (n = {cos.n}): the cosine between a word's text and speech states goes from "
                f"{_fmt(cos.mean[0])} (layer 0) to {_fmt(cos.mean[-1])} (layer {len(gap) - 1}) against a mismatched-word "
                f"baseline of {_fmt(mis.mean[0])} to {_fmt(mis.mean[-1])}; the largest margin is {_fmt(gap[layer])} at "
                f"layer {layer}. The speech/text norm ratio goes from {_fmt(ratio[0])} to {_fmt(ratio[-1])}.")
    if separated:
        sentence += (f" The matched cosine's CI lies above the baseline's at layers {_layers(separated)}: the speech "
                     "states carry the word's identity in the text states' direction there.")
    elif np.isfinite(cos.ci).any():
        sentence += " At no layer does the matched cosine's CI clear the mismatched baseline's."
    return sentence


def _lens_sentence(lens: dict) -> str:
    speech, text, chance = lens["speech"], lens["text"], lens["chance"]
    layer = int(np.nanargmax(speech.mean))
    above = [l for l in range(len(speech.mean)) if np.isfinite(speech.ci[l]) and speech.low[l] > chance]
    sentence = (f"Logit lens (n = {speech.n}): the mean reciprocal rank of the subject's own text tokens at its "
                f"speech positions peaks at {_fmt(speech.mean[layer], speech.ci[layer])} (layer {layer}; chance "
                f"{chance:.3g}); at the text positions it peaks at {_fmt(np.nanmax(text.mean))} "
                f"(layer {int(np.nanargmax(text.mean))}).")
    if above:
        return sentence + f" Its CI lies above chance at layers {_layers(above)}."
    if np.isfinite(speech.ci).any():
        return sentence + " Its CI does not clear chance at any layer."
    return sentence


def _layers(layers: list[int]) -> str:
    return ", ".join(str(l) for l in layers)
