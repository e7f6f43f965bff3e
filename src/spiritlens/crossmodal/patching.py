"""Cross-modal patching: can a hidden state of one modality stand in for the other's?

For a fact with a text run and a spoken run (:class:`~spiritlens.crossmodal.fact.CrossModalFact`):

- direction ``"text_to_speech"``: the *receiving* run is the spoken prompt with its subject's
  speech tokens noised at ``hook_embed``, i.e. the S->T corrupted run of causal tracing (same
  draw ``RandomState(seed).randn(samples, e - b, d_model)``, same in-place float64 addition,
  ROME's restoration). For layer ``l``, the receiving run's ``blocks.{l}.hook_resid_post`` at
  chosen speech positions is overwritten with the clean *text* run's ``resid_post[l]`` at the
  paired text positions, in every noised sample.
- direction ``"speech_to_text"``: the reverse: the noised text run (T->T corrupted run) receives the
  clean spoken run's states.

Modes (which positions are paired):

- ``"last"``: the last subject text token (text position ``e_t - 1``) and the last subject speech
  position (``e_s - 1``).
- ``"groups"``: every subject text token and its aligned speech group. text->speech: the token's
  state is written at every position of its group (a position shared by two groups takes the
  later token's). speech->text: each subject text token receives the state of the *last* position
  of its group, the one that has heard the whole group (a causal model's summary of a span sits
  at its end, as the last subject token does in text). Subject tokens the aligner gave no speech
  token are left out and listed in ``unmapped_subject_tokens``.

Each curve is a specification over the intervention core (:mod:`spiritlens.interventions`): the
receiving run is an :class:`~spiritlens.interventions.run.InterventionRun` with ROME's noise, the
other modality's clean run is added as a source, and each layer's patch is a
:class:`~spiritlens.interventions.spec.Restore` of ``resid_post`` from that source at the paired
positions (the core picks the backend; hooks attached to the model act in every run, as in tracing).
Scores are the tracer's metric: the softmax probability (full vocabulary) of the receiving run's
answer at its last position, averaged over the noised samples. Baselines as in tracing:
``low_score`` is the noised receiving run unpatched, ``high_score`` its clean run. Each curve
carries two rows per layer: ``scores`` (the other modality's state patched in) and
``self_scores`` (the same positions restored with the receiving run's *own* clean states: a
hidden-state cell of the tracer over exactly those positions, the within-modality reference; in
``last`` mode the spoken run's is one speech position, not the tracer's text-token group). A cross-modal curve close
to the self curve says the receiving pathway can read the other modality's state there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from spiritlens.checkpoints.schema import check_samples
from spiritlens.interventions import AnswerScore, InterventionRun, Restore
from spiritlens.traces.noise import embedding_noise, noise_scale, parse_noise
from spiritlens.crossmodal.fact import (
    SPEECH,
    TEXT,
    CrossModalFact,
    ResultFile,
    _answer_id,
    as_float_array,
    check_values,
)

from spiritlens.terms import PATCH_DIRECTIONS, PATCH_MODES
RECEIVER = {"text_to_speech": SPEECH, "speech_to_text": TEXT}
SOURCE = {"text_to_speech": TEXT, "speech_to_text": SPEECH}
DIRECTION_LABELS = {"text_to_speech": "text state → noised spoken run",
                    "speech_to_text": "speech state → noised text run"}
DEFAULT_MAX_BATCH_ROWS = 64  # rows per forward where the reference backend runs the patches


@dataclass
class ReceiverRun:
    """The noised run that receives states: its answer, baselines and noise (absolute scale)."""

    modality: str
    answer_id: int
    answer: str
    high_score: float
    low_score: float
    noise: float
    sigma: float | None
    subject_range: list[int]


@dataclass
class PatchCurve:
    """One direction x mode: receiving-run ``positions`` and the paired ``source_positions`` in the
    other run; ``scores`` / ``self_scores`` ``[n_layers]`` (see the module doc)."""

    direction: str
    mode: str
    positions: list[int]
    source_positions: list[int]
    scores: np.ndarray
    self_scores: np.ndarray

    def __post_init__(self):
        self.scores = as_float_array(self.scores)
        self.self_scores = as_float_array(self.self_scores)


@dataclass
class PatchingResult(ResultFile):
    """Cross-modal patching of one fact: the receiving runs and one :class:`PatchCurve` per
    direction x mode. ``settings`` records the noise rule, samples, seed, sigmas and modes."""

    ANALYSIS = "patching"

    name: str
    prompt: str
    subject: str
    n_layers: int
    settings: dict
    positions: dict
    receivers: dict
    curves: list
    unmapped_subject_tokens: list = field(default_factory=list)

    def __post_init__(self):
        self.receivers = {k: v if isinstance(v, ReceiverRun) else ReceiverRun(**v) for k, v in self.receivers.items()}
        self.curves = [c if isinstance(c, PatchCurve) else PatchCurve(**c) for c in self.curves]

    def validate(self) -> None:
        """Receivers' ``high_score``/``low_score`` and every curve's ``scores``/``self_scores`` ``[n_layers]``
        are probabilities in [0, 1]; noise scales finite and >= 0; one source position per patched one."""
        where = f"patching result {self.name}"
        for name, run in self.receivers.items():
            check_values(where, f"receivers[{name!r}] scores", [run.high_score, run.low_score], low=0.0, high=1.0)
            check_values(where, f"receivers[{name!r}] noise", run.noise, low=0.0)
        for curve in self.curves:
            label = f"{curve.direction}/{curve.mode}"
            if len(curve.positions) != len(curve.source_positions):
                raise ValueError(f"{where}: {label}: {len(curve.positions)} positions but "
                                 f"{len(curve.source_positions)} source positions")
            for name in ("scores", "self_scores"):
                check_values(where, f"{label} {name}", getattr(curve, name), low=0.0, high=1.0, shape=(self.n_layers,))

    def curve(self, direction: str, mode: str) -> PatchCurve:
        for curve in self.curves:
            if (curve.direction, curve.mode) == (direction, mode):
                return curve
        raise KeyError(f"no curve for direction {direction!r}, mode {mode!r} in {self.name!r}")

    def receiver(self, direction: str) -> ReceiverRun:
        return self.receivers[RECEIVER[direction]]


def paired_positions(fact: CrossModalFact, direction: str, mode: str) -> tuple[list[int], list[int]]:
    """(receiving-run positions, source-run positions), one pair per patched position (module doc)."""
    _check_choice("direction", direction, PATCH_DIRECTIONS)
    _check_choice("mode", mode, PATCH_MODES)
    text_last = fact.text_positions[fact.subject_tokens[-1]]
    speech_last = fact.speech_subject_range[1] - 1
    if mode == "last":
        return ([speech_last], [text_last]) if direction == "text_to_speech" else ([text_last], [speech_last])
    mapped = [i for i in fact.subject_tokens if fact.speech_positions(i)]
    if direction == "text_to_speech":
        speech = sorted({p for i in mapped for p in fact.speech_positions(i)})
        return speech, [fact.text_positions[fact.aligned_token(p, mapped)] for p in speech]
    return [fact.text_positions[i] for i in mapped], [fact.speech_positions(i)[-1] for i in mapped]


def cross_modal_patching(model, fact: CrossModalFact, *, noise: float | str = "3s",
                         sigma: float | Mapping[str, float] | None = None, samples: int = 10, seed: int = 1,
                         modes: Sequence[str] = PATCH_MODES, directions: Sequence[str] = PATCH_DIRECTIONS,
                         target: int | Mapping[str, int | None] | None = None,
                         max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS) -> PatchingResult:
    """Cross-modal patching of one fact, every layer, for the given directions and modes.

    Args:
        model: a :class:`~spiritlens.HookedSpiritLM`.
        fact: the paired text and spoken prompts.
        noise: the tracer's rule (``"3s"``, an absolute float, ``"3v"``, ``"u0.1"``).
        sigma: for ``Ks`` rules: one float for both modalities, or ``{"text": …, "speech": …}``
            (the experiment uses the text sigma for the text run and the speech sigma for the
            spoken run).
        samples, seed: noised samples per run and the numpy seed (one draw per receiving run).
        target: an explicit answer token id for both receiving runs, or ``{"text": id, "speech": id}``
            (the experiment passes the first token of each modality's judged generation); None (or a
            missing entry): each run's answer by the tracer's rule.
        max_batch_rows: rows per forward where the core runs the patches as full forwards.

    Returns:
        :class:`PatchingResult` with one curve ``[n_layers]`` per direction x mode.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    check_samples(samples)
    modes, directions = check_choices("modes", modes, PATCH_MODES), check_choices("directions", directions, PATCH_DIRECTIONS)
    spec = parse_noise(noise)
    L, d = model.cfg.n_layers, model.cfg.d_model
    receivers, curves = {}, []
    sigmas = {m: _sigma_of(sigma, m) for m in (TEXT, SPEECH)}
    for direction in directions:
        receiver, source = RECEIVER[direction], SOURCE[direction]
        rrun, srun = fact.clean_run(model, receiver), fact.clean_run(model, source)
        answer = _answer_id(model, rrun, target.get(receiver) if isinstance(target, Mapping) else target)
        b, e = fact.subject_range(receiver)
        scale = noise_scale(spec, sigma=sigmas[receiver], model=model, modality=receiver)
        noise = embedding_noise(spec, scale, samples=samples, seed=seed, subject_range=(b, e), d_model=d)
        run = InterventionRun(model, rrun.input_ids, noise, AnswerScore((answer,)), max_rows=max_batch_rows)
        run.add_source(source, activations={"resid_post": list(srun.resid_post)})
        restores, pairs = [], []
        for mode in modes:
            dest, src = paired_positions(fact, direction, mode)
            pairs.append((mode, dest, src))
            for layer in range(L):
                restores.append(Restore("resid_post", (layer,), tuple(dest), source, tuple(src)))
                restores.append(Restore("resid_post", (layer,), tuple(dest)))
        scores = run.scores(restores)
        receivers[receiver] = ReceiverRun(receiver, answer, model.tokenizer.decode([answer]), run.high_score,
                                          run.low_score, scale, sigmas[receiver], [b, e])
        for k, (mode, dest, src) in enumerate(pairs):
            block = scores[2 * L * k: 2 * L * (k + 1)]
            curves.append(PatchCurve(direction, mode, dest, src, block[0::2], block[1::2]))
    settings = {"noise_rule": spec.text, "samples": samples, "seed": seed, "sigma": sigmas,
                "target": target, "modes": list(modes), "directions": list(directions)}
    unmapped = [i for i in fact.subject_tokens if not fact.speech_positions(i)]
    return PatchingResult(fact.name, fact.prompt, fact.subject, L, settings, fact.positions_json(), receivers,
                          curves, unmapped)


def _sigma_of(sigma, modality: str) -> float | None:
    if sigma is None or isinstance(sigma, (int, float)):
        return None if sigma is None else float(sigma)
    value = sigma.get(modality)
    return None if value is None else float(value)


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{what}: unknown value {value!r}; use one of {', '.join(allowed)}")


def check_choices(what: str, values: Sequence[str] | str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``values`` (one string or several) checked against ``allowed``, duplicates dropped; a
    ValueError naming ``what`` for an empty list or an unknown value."""
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ValueError(f"{what} is empty; use some of {', '.join(allowed)}")
    for value in values:
        _check_choice(what, value, allowed)
    return tuple(dict.fromkeys(values))
