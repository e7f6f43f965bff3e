"""The tracer's input: a prompt's ids, readable tokens, the subject's positions and its rows (positions or position groups)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence
import torch
from spiritlens.tokens.pieces import readable_pieces


@dataclass
class TracePrompt:
    """A prompt ready to trace: ids ``[T]``, the subject's positions [b, e) and the rows.

    ``rows``: the rows of the scores table (default: one per position). ``subject_rows``: the
    subject in row indices. ``groups`` (optional): position groups, e.g. the speech tokens of
    each text token, for ``row_mode="groups"`` or ``"mean"``, with their own ``group_subject_rows``
    and ``group_ignored_rows``.
    """

    input_ids: list[int]
    tokens: list[str]
    subject_range: tuple[int, int]
    modality: str = "text"
    prompt: str = ""
    subject: str = ""
    groups: list[Row] | None = None
    group_subject_rows: tuple[int, int] | None = None
    group_ignored_rows: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    output_modality: str = "text"  # what the prompt asks for next (its answer's allowed tokens)
    prompt_string: str = ""  # SpiritLM's prompt string, when known (targets are tokenised after it)

    def __post_init__(self):
        b, e = (int(x) for x in self.subject_range)
        T = len(self.input_ids)
        if not (1 <= b < e <= T):
            raise ValueError(f"subject range [{b}, {e}) is not inside the prompt's positions 1..{T - 1} "
                             "(position 0 is BOS)")
        self.subject_range = (b, e)


def display_tokens(model, ids: Sequence[int]) -> list[str]:
    """One readable label per token id (``tokens`` of results, row labels of figures).

    ``▁`` is shown as a space (``▁capital`` -> `` capital``), a lone ``▁`` as ``␣``, byte-fallback
    pieces as the character they spell (``日(1/3)`` ``日(2/3)`` ``日(3/3)``, ``<0x58>`` -> ``X``):
    :func:`spiritlens.tokens.pieces.readable_pieces`. Ids outside the vocabulary raise ValueError.
    """
    ids = [int(i) for i in (ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else ids)]
    model.check_token_ids(ids)
    return readable_pieces(model.tokenizer.convert_ids_to_tokens(ids))


def prepare_prompt(model, prompt: Any, subject: str | None = None, *,
                   subject_range: tuple[int, int] | None = None,
                   occurrence: str = "unique") -> TracePrompt:
    """A :class:`TracePrompt` from a string, (modality, content) pairs, token ids or a TracePrompt.

    The subject is located through the TokenMap's character offsets (ROME's decode-and-join rule
    fails with SentencePiece), or given directly as a [b, e) position range.
    """
    if isinstance(prompt, TracePrompt):
        return prompt
    if hasattr(prompt, "trace_prompt"):  # a SpeechPrompt: its subject was aligned when it was made
        own = getattr(prompt, "subject", None)
        if subject is not None and own is not None and subject.strip() != own.strip():
            raise ValueError(f"subject {subject!r} differs from the spoken prompt's subject {own!r} (aligned when "
                             "the SpeechPrompt was made): leave subject out, or make the prompt with this subject")
        return prompt.trace_prompt(model)
    if isinstance(prompt, (list, tuple)) and prompt and all(
            isinstance(item, str) or (isinstance(item, (list, tuple)) and item and isinstance(item[0], (list, tuple)))
            for item in prompt):
        raise ValueError(f"trace takes one prompt, got a list of {len(prompt)} prompts: trace each in turn "
                         "(a spoken or interleaved prompt is one list of (modality, content) pairs)")
    if isinstance(prompt, torch.Tensor) or (isinstance(prompt, (list, tuple)) and prompt
                                            and all(isinstance(i, int) for i in prompt)):
        ids = torch.as_tensor(prompt).reshape(-1).tolist()
        model.check_token_ids(ids, where="prompt token ids")
        if subject_range is None:
            raise ValueError("token-id prompts need subject_range=(b, e)")
        return TracePrompt(ids, display_tokens(model, ids), tuple(subject_range), subject=subject or "",
                           output_modality=output_modality_of(model, ids))
    ids_tensor, token_map = model.encode(prompt)
    ids = ids_tensor[0].tolist()
    if subject_range is None:
        if subject is None:
            raise ValueError("give the subject (a string in the prompt) or subject_range=(b, e)")
        subject_range = token_map.find_text(subject, occurrence=occurrence)
    modality = "speech" if any(s.modality == "speech" for s in token_map.segments) else "text"
    text = " ".join(s.content for s in token_map.segments if s.modality == "text")
    return TracePrompt(ids, display_tokens(model, ids), tuple(subject_range), modality=modality,
                       prompt=text, subject=(subject or "").strip(), output_modality=token_map.output_modality,
                       prompt_string=token_map.prompt_string)


@dataclass
class Row:
    """One row of the scores table: a label and the token positions restored together."""

    label: str
    positions: list[int]


def output_modality_of(model, input_ids: Sequence[int]) -> str:
    """The output modality a prompt's ids ask for: ``"speech"`` after a ``[Speech]`` marker or a
    speech token with no ``[Text]`` after it, else ``"text"`` (SpiritLM appends ``[Text]`` to
    speech prompts for text output)."""
    last = int(input_ids[-1])
    vocab = model.vocab
    return "speech" if last == vocab.speech_marker_id or last in vocab.speech_ids else "text"
