"""Stream-aware causal tracing of a spoken SpiritLM Expressive prompt: which stream carries the subject.

An Expressive prompt interleaves three streams (:mod:`spiritlens.units.expressive`): HuBERT ``[Hu…]``,
pitch ``[Pi…]`` and style ``[St…]``. A spoken prompt's rows are text-token groups: every speech
position, of any stream, whose 25 Hz span overlaps the token's aligned frames
(:class:`~spiritlens.align.speech_prompt.SpeechPrompt`). Here:

- **rows** (``row_mode="streams"``, :func:`stream_rows`): each of the subject's rows is split into up to
  three rows, its HuBERT positions (label ``<token>/Hu``), its pitch positions (``/Pi``) and the style
  positions overlapping it (``/St``); a stream with no position in the row gives no row. Every other row
  (BOS, markers, the words before and after the subject, silence, the final ``[Text]``) is as in
  ``"groups"``. The subject rows stay contiguous, ``[b, e)`` in row space, with silence inside the
  subject still ignored. Each row records its stream (``row_streams``: ``"hubert"``/``"pitch"``/
  ``"style"``, None for an unsplit row) and which of the subject's tokens it comes from
  (``row_subject_token``: 0 for the subject's first text token with speech, ..., None outside the
  subject), from which :func:`spiritlens.aggregates.aie.stream_categorize` derives the per-stream
  categories.
- **corruption** (``noise_streams``, :func:`stream_noise`): ROME's embedding noise
  (:class:`~spiritlens.interventions.corruptions.EmbeddingNoise`) on exactly the subject's positions of
  the chosen streams (the union of the subject rows' positions of those streams; one draw
  ``[samples, positions, d_model]`` in position order), e.g. ``("pitch",)`` noises the subject's pitch
  tokens and nothing else. With all three streams these are the subject's speech positions, which can
  differ from the contiguous range ``[first, last + 1)`` that a plain trace noises: that range can reach
  back over positions of the previous word (a style token sorts at the start of its second).

A position's stream is read from its token id (the vocabulary's ``[Hu…]``, ``[Pi…]`` and ``[St…]`` ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from spiritlens.tokens.trace_prompt import Row, TracePrompt

STREAMS = ("hubert", "pitch", "style")  # display order (units.expressive.STREAMS is the merge's tie order)
STREAM_LABELS = {"hubert": "HuBERT", "pitch": "pitch", "style": "style"}
STREAM_TAGS = {"hubert": "Hu", "pitch": "Pi", "style": "St"}
STREAM_ROW_MODE = "streams"


def check_streams(streams: Sequence[str] | str, what: str = "noise_streams") -> tuple[str, ...]:
    """``streams`` as a tuple in :data:`STREAMS` order; ValueError naming ``what`` for an empty, unknown
    or repeated stream (a single string is one stream)."""
    items = (streams,) if isinstance(streams, str) else tuple(streams)
    unknown = [s for s in items if s not in STREAMS]
    if not items or unknown or len(set(items)) != len(items):
        raise ValueError(f"{what} must be a non-empty list of distinct streams among {', '.join(STREAMS)}, got "
                         f"{list(items)!r}")
    return tuple(s for s in STREAMS if s in items)


def position_streams(model, ids: Sequence[int]) -> list[str | None]:
    """The stream of each position of ``ids`` (``"hubert"``, ``"pitch"``, ``"style"``; None for text,
    markers and BOS)."""
    vocab = model.vocab
    of = {**{i: "hubert" for i in vocab.hubert_ids}, **{i: "pitch" for i in vocab.pitch_ids},
          **{i: "style" for i in vocab.style_ids}}
    return [of.get(int(i)) for i in ids]


def _check_expressive(model, prompt: TracePrompt, what: str) -> None:
    if not model.vocab.is_expressive:
        raise ValueError(f"{what} needs SpiritLM Expressive (a vocabulary with pitch and style tokens)")
    if prompt.groups is None or prompt.group_subject_rows is None:
        raise ValueError(f"{what} needs a spoken prompt whose positions are grouped by text token (a SpeechPrompt)")


def _subject_group_rows(prompt: TracePrompt) -> list[int]:
    """The subject's group rows (indices into ``prompt.groups``), silence left out, in row order."""
    b, e = prompt.group_subject_rows
    ignored = set(prompt.group_ignored_rows)
    return [r for r in range(b, e) if r not in ignored]


@dataclass
class StreamRows:
    """Rows of a ``"streams"`` trace (module docstring): ``rows``, the subject's rows ``[b, e)``, the
    ignored (silence) rows, and per row its stream and subject token (None where not split)."""

    rows: list[Row]
    subject_rows: tuple[int, int]
    ignored_rows: list[int]
    row_streams: list[str | None]
    row_subject_token: list[int | None]

    def record(self) -> dict:
        """The fields a result carries (``row_mode``, ``row_streams``, ``row_subject_token``)."""
        return {"row_mode": STREAM_ROW_MODE, "row_streams": list(self.row_streams),
                "row_subject_token": list(self.row_subject_token)}


def stream_rows(model, prompt: TracePrompt) -> StreamRows:
    """The ``"streams"`` rows of a spoken Expressive prompt (module docstring). Raises ValueError for a
    prompt without groups or a model without pitch and style tokens."""
    _check_expressive(model, prompt, "row_mode 'streams'")
    streams = position_streams(model, prompt.input_ids)
    groups, (b, e) = prompt.groups, prompt.group_subject_rows
    ignored = set(prompt.group_ignored_rows)
    subject = {r: j for j, r in enumerate(_subject_group_rows(prompt))}
    rows: list[Row] = []
    row_streams: list[str | None] = []
    tokens: list[int | None] = []
    new_ignored: list[int] = []
    first = last = None
    for r, row in enumerate(groups):
        if r == b:
            first = len(rows)
        if r in subject:
            for stream in STREAMS:
                positions = [p for p in row.positions if streams[p] == stream]
                if positions:
                    rows.append(Row(f"{row.label}/{STREAM_TAGS[stream]}", positions))
                    row_streams.append(stream)
                    tokens.append(subject[r])
        else:
            if r in ignored:
                new_ignored.append(len(rows))
            rows.append(Row(row.label, list(row.positions)))
            row_streams.append(None)
            tokens.append(None)
        if r == e - 1:
            last = len(rows)
    return StreamRows(rows, (first, last), new_ignored, row_streams, tokens)


def subject_stream_positions(model, prompt: TracePrompt, streams: Sequence[str]) -> tuple[int, ...]:
    """The subject's positions of ``streams`` (sorted): the union of its group rows' positions whose
    token is of one of those streams. Raises ValueError when the subject has none."""
    _check_expressive(model, prompt, "noise_streams")
    chosen = check_streams(streams)
    of = position_streams(model, prompt.input_ids)
    positions = sorted({p for r in _subject_group_rows(prompt) for p in prompt.groups[r].positions
                        if of[p] in chosen})
    if not positions:
        raise ValueError(f"the subject {prompt.subject!r} has no {'/'.join(chosen)} positions to noise")
    return tuple(positions)


def stream_noise(model, prompt: TracePrompt, streams: Sequence[str], spec, scale: float, *, samples: int,
                 seed: int, replace: bool = False, low_score_follows_replace: bool = False):
    """ROME's noise (``spec``, absolute ``scale``) on the subject's positions of ``streams`` only: an
    :class:`~spiritlens.interventions.corruptions.EmbeddingNoise` with those ``positions``."""
    from spiritlens.traces.noise import embedding_noise

    positions = subject_stream_positions(model, prompt, streams)
    return embedding_noise(spec, scale, samples=samples, seed=seed, subject_range=(positions[0], positions[-1] + 1),
                           d_model=int(model.cfg.d_model), replace=replace,
                           low_score_follows_replace=low_score_follows_replace, positions=positions)


def stream_low_scores(model, prompt: TracePrompt, answer_id: int, spec, scale: float, *, samples: int,
                      seed: int) -> dict[str, float | None]:
    """Per stream, p(answer) with only the subject's positions of that stream noised (the corrupted run
    of :func:`stream_noise`, ROME's metric: the mean over the ``samples`` rows of the softmax probability
    of ``answer_id`` at the last position); None for a stream the subject has no position of. The total
    effect of corrupting one stream alone is ``high_score`` minus it."""
    import torch

    from spiritlens.interventions import AnswerScore
    from spiritlens.interventions.run import forward

    _check_expressive(model, prompt, "stream_low_scores")
    metric = AnswerScore((int(answer_id),))
    ids = torch.as_tensor([list(prompt.input_ids)], device=model.device)
    of = position_streams(model, prompt.input_ids)
    subject = {of[p] for r in _subject_group_rows(prompt) for p in prompt.groups[r].positions}
    out: dict[str, float | None] = {}
    for stream in STREAMS:
        if stream not in subject:
            out[stream] = None
            continue
        noise = stream_noise(model, prompt, (stream,), spec, scale, samples=samples, seed=seed)
        logits, _ = forward(model, ids, noise)
        out[stream] = metric.score(logits)
    return out


__all__ = ["STREAMS", "STREAM_LABELS", "STREAM_ROW_MODE", "STREAM_TAGS", "StreamRows", "check_streams",
           "position_streams", "stream_low_scores", "stream_noise", "stream_rows", "subject_stream_positions"]
