"""One fact as two runs, written and spoken, with the correspondence between their positions.

A :class:`CrossModalFact` holds the text prompt (``<s>[Text]The Space Needle is located in …``)
and the spoken prompt (``<s>[Speech][Hu…]…[Text]``, a :class:`~spiritlens.align.speech_prompt.SpeechPrompt`)
of the same sentence. The speech prompt's transcript is tokenised as text by the same tokenizer
call, so LM text token ``i`` sits at position ``text_positions[i]`` of the text run and is realised
by the speech positions ``speech_positions(i)`` of the spoken run (its aligned speech group; empty
when the aligner gave it no speech token). Every cross-modal analysis pairs positions through this
one table.

Both runs are clean (no noise) forwards through the hooked model (hooks attached act, as in every
run of :mod:`spiritlens.interventions`); :meth:`CrossModalFact.clean_run` caches the residual
stream ``blocks.{l}.hook_resid_post`` of every layer and the last-position logits.

The answer of a run, when no explicit target id is given, follows the tracer's rule through
:func:`_answer_id` (the one place that decides it in this package).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from spiritlens._io import read_json, write_json_atomic
from spiritlens.runkey import UntrustedFile, stamp, verify
from spiritlens.model import hook_names

TEXT, SPEECH = "text", "speech"
from spiritlens.terms import MODALITIES
RESULT_VERSION = 1


@dataclass
class CleanRun:
    """A clean forward of one prompt: ids ``[T]``, ``resid_post`` ``[L, T, d_model]`` (model dtype,
    model device; layer ``l`` is the output of decoder block ``l``, before the final norm) and the
    last position's logits ``[d_vocab]`` (float32)."""

    modality: str
    input_ids: list[int]
    resid_post: torch.Tensor
    last_logits: torch.Tensor


def _answer_id(model, run: CleanRun, target: int | None) -> int:
    """The token whose probability the patching scores: ``target`` if given, else the tracer's rule.

    The tracer's rule (:mod:`spiritlens.traces.answer`): the most probable token of the clean run's
    last position among the tokens the run's output modality allows (SpiritLM's forbidden-token
    rule, so it is greedy generation's first token). An explicit id is range-checked.
    """
    from spiritlens.tokens.trace_prompt import output_modality_of
    from spiritlens.traces.answer import resolve_answer

    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
        raise ValueError(f"target must be a token id (int), got {target!r}")
    rule = resolve_answer(model, None, None if target is None else int(target),
                          output_modality=output_modality_of(model, run.input_ids))
    return rule.choose(model, torch.softmax(run.last_logits.float(), dim=-1))


@dataclass
class Word:
    """A whitespace-separated word of the prompt: its characters, its LM text tokens (indices),
    their positions in the text run and its aligned speech positions in the spoken run."""

    text: str
    char_span: tuple[int, int]
    tokens: list[int]
    text_positions: list[int]
    speech_positions: list[int]


@dataclass
class CrossModalFact:
    """A fact's text prompt and spoken prompt, paired position by position (see the module doc).

    ``text_positions[i]``: position in ``text_ids`` of the transcript's LM text token ``i``
    (``speech.text_tokens[i]``). ``subject_tokens``: indices of the subject's LM text tokens.
    ``text_subject_range``: the subject's [b, e) positions in the text run (the tracer's rule,
    ``TokenMap.find_text``); ``speech_subject_range`` the spoken run's (from the alignment).
    """

    name: str
    prompt: str
    subject: str
    text_ids: list[int]
    text_positions: list[int]
    text_subject_range: tuple[int, int]
    subject_tokens: list[int]
    speech: Any  # spiritlens.align.speech_prompt.SpeechPrompt (or an object with its attributes)
    _runs: dict = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        return (f"CrossModalFact({self.name!r}, {self.prompt!r}, subject={self.subject!r}, "
                f"text subject {tuple(self.text_subject_range)} of {len(self.text_ids)} tokens, "
                f"speech subject {tuple(self.speech_subject_range)} of {len(self.speech_ids)} tokens)")

    # ---------------------------------------------------------------- building
    @classmethod
    def from_speech_prompt(cls, model, speech, *, prompt: str | None = None, name: str = "") -> "CrossModalFact":
        """Pair an aligned spoken prompt with its text prompt (default: its transcript).

        Raises ValueError when the text prompt does not tokenise to the transcript's LM text
        tokens (positions are paired token by token), or when the text run's subject tokens
        (``TokenMap.find_text``) differ from the speech prompt's ``subject_tokens``.
        """
        prompt = speech.transcript if prompt is None else prompt
        ids, token_map = model.encode(prompt)
        text = [p for p in token_map.positions if p.kind == "text"]
        pieces = model.tokenizer.convert_ids_to_tokens([p.token_id for p in text])
        ours = [(piece.replace("▁", " "), tuple(p.char_span)) for piece, p in zip(pieces, text)]
        theirs = [(label, tuple(span)) for label, span in speech.text_tokens]
        if ours != theirs:
            raise ValueError(
                f"the text prompt {prompt!r} and the transcript {speech.transcript!r} tokenise differently "
                f"({[t for t, _ in ours][:8]} vs {[t for t, _ in theirs][:8]}); positions are paired token by "
                "token, so give the transcript as the text prompt")
        b, e = token_map.find_text(speech.subject, occurrence="first")
        positions = [p.position for p in text]
        subject_tokens = [i for i, p in enumerate(positions) if b <= p < e]
        if subject_tokens != list(speech.subject_tokens):
            raise ValueError(
                f"subject {speech.subject!r}: the text run's subject tokens {subject_tokens} differ from the "
                f"spoken prompt's {list(speech.subject_tokens)}")
        return cls(name or _default_name(prompt), prompt, speech.subject, ids[0].tolist(), positions, (b, e),
                   subject_tokens, speech)

    @classmethod
    def from_audio(cls, model, audio: Any, *, prompt: str, subject: str, aligner: Any,
                   transcript: str | None = None, mapping: str = "exact", occurrence: str = "unique",
                   sample_rate: int | None = None, name: str = "") -> "CrossModalFact":
        """Align ``audio`` (a path or waveform) to ``transcript`` (default: ``prompt``) with
        :meth:`SpeechPrompt.from_audio <spiritlens.align.speech_prompt.SpeechPrompt.from_audio>` and pair it
        with the text prompt. ``occurrence``: "unique" (a subject found twice is an error) or
        "first" (ROME's rule)."""
        from spiritlens.align.speech_prompt import SpeechPrompt

        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt is empty")
        speech = SpeechPrompt.from_audio(model, audio, transcript=prompt if transcript is None else transcript,
                                         subject=subject, aligner=aligner, mapping=mapping,
                                         occurrence=occurrence, sample_rate=sample_rate)
        return cls.from_speech_prompt(model, speech, prompt=prompt, name=name)

    # --------------------------------------------------------------- positions
    @property
    def speech_ids(self) -> list[int]:
        return list(self.speech.input_ids)

    @property
    def speech_subject_range(self) -> tuple[int, int]:
        return tuple(self.speech.subject_range)

    @property
    def token_labels(self) -> list[str]:
        """Display string of each LM text token of the prompt (``▁`` shown as a space)."""
        return [label for label, _ in self.speech.text_tokens]

    def ids(self, modality: str) -> list[int]:
        """Token ids of the text run or the spoken run."""
        _check_modality(modality)
        return list(self.text_ids) if modality == TEXT else self.speech_ids

    def subject_range(self, modality: str) -> tuple[int, int]:
        _check_modality(modality)
        return tuple(self.text_subject_range) if modality == TEXT else self.speech_subject_range

    def speech_positions(self, token: int) -> list[int]:
        """Spoken-run positions of LM text token ``token``'s aligned speech group ([] if unmapped; on the
        Expressive model the group holds the HuBERT, pitch and style tokens overlapping the token)."""
        group = self.speech.token_groups()[token]
        offset = self.speech.speech_offset
        return [offset + k for k in group] if group else []

    def aligned_token(self, speech_position: int, tokens: Sequence[int] | None = None) -> int | None:
        """The LM text token (among ``tokens``, default all) whose speech group holds the position;
        a position shared by two groups (a word boundary inside a 40 ms token) goes to the later one."""
        found = None
        for i in range(len(self.text_positions)) if tokens is None else tokens:
            if speech_position in self.speech_positions(i):
                found = i
        return found

    def words(self) -> list[Word]:
        """The prompt's whitespace-separated words with their tokens and positions in both runs."""
        spans = [span for _, span in self.speech.text_tokens]  # characters of each LM text token
        words = []
        for match in re.finditer(r"\S+", self.prompt):
            a, b = match.span()
            tokens = [i for i, (s, e) in enumerate(spans) if s < b and e > a]
            speech = sorted({p for i in tokens for p in self.speech_positions(i)})
            words.append(Word(match.group(), (a, b), tokens, [self.text_positions[i] for i in tokens], speech))
        return words

    def positions_json(self) -> dict:
        """The pairing, for result files: tokens, their positions in both runs, subject ranges."""
        return {
            "text_tokens": self.token_labels,
            "text_positions": list(self.text_positions),
            "speech_positions": [self.speech_positions(i) for i in range(len(self.text_positions))],
            "subject_tokens": list(self.subject_tokens),
            "text_subject_range": list(self.text_subject_range),
            "speech_subject_range": list(self.speech_subject_range),
            "mapping": getattr(self.speech, "mapping", None),
            "alignment_confidence": _confidence(self.speech),
        }

    # --------------------------------------------------------------- clean runs
    def clean_run(self, model, modality: str) -> CleanRun:
        """The clean forward of the text or spoken prompt, cached on this fact (per model) while no hook
        is attached (with hooks it is recomputed: they may change between calls)."""
        from spiritlens.interventions import user_hooks

        _check_modality(modality)
        key = (id(model), modality)
        if key in self._runs and not user_hooks(model):
            return self._runs[key]
        ids = torch.tensor([self.ids(modality)], device=model.device)
        names = [hook_names.resid_post(l) for l in range(model.cfg.n_layers)]
        wanted = set(names)
        with torch.inference_mode():
            logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in wanted)
        resid = torch.stack([cache[n][0] for n in names])
        run = CleanRun(modality, self.ids(modality), resid, logits[0, -1].float())
        if not user_hooks(model):
            self._runs[key] = run
        return run


def _default_name(prompt: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:40] or "fact"


def _confidence(speech) -> float | None:
    try:
        return float(speech.confidence)
    except (AttributeError, TypeError, ValueError):
        return None


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; use 'text' or 'speech'")


# ------------------------------------------------------------------ result files
def plain(value: Any) -> Any:
    """A JSON-ready copy: arrays and tensors to lists, NaN to None, dataclasses to dicts."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def as_float_array(values: Any) -> np.ndarray:
    """float64 array from JSON lists (None read back as NaN)."""
    return np.asarray(values if values is not None else [], dtype=np.float64)


class ResultFile:
    """``to_json``/``save``/``load``/``validate`` for the analysis results (dataclasses with an ``ANALYSIS`` name).

    One schema for every cross-modal file (``patching.json``, ``geometry.json``, ``logit_lens.json``, the
    summary): the fields, ``analysis``, ``version``, the ``run_key`` it was computed under
    (:mod:`spiritlens.runkey`; when given) and a ``checksum`` over all of it. :meth:`load` refuses a
    file whose checksum fails, whose key is not the expected one, or whose numbers do not validate."""

    ANALYSIS: ClassVar[str] = ""

    def to_json(self) -> dict:
        """A JSON-serialisable dict of every field, plus ``analysis`` and ``version``."""
        data = plain(self)
        data.update(analysis=self.ANALYSIS, version=RESULT_VERSION)
        return data

    def validate(self) -> None:
        """ValueError (one line) when the numbers are impossible (subclasses check theirs); run before
        saving and after loading."""

    @classmethod
    def from_json(cls, data: dict):
        if data.get("analysis") != cls.ANALYSIS:
            raise ValueError(f"not a {cls.ANALYSIS} result (analysis {data.get('analysis')!r})")
        known = {f.name for f in fields(cls)}
        missing = [name for name in known if name not in data and not name.startswith("_")]
        if missing:
            raise ValueError(f"{cls.ANALYSIS} result lacks the fields {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | os.PathLike, *, run_key: dict | None = None) -> Path:
        """:meth:`validate`, then write the JSON with its ``run_key`` (when given) and ``checksum``
        atomically (a reader never sees half a file); returns the path."""
        self.validate()
        return write_json_atomic(path, stamp(self.to_json(), run_key))

    @classmethod
    def load(cls, path: str | os.PathLike, *, run_key: dict | None = None):
        """Read a result file: a :class:`~spiritlens.runkey.UntrustedFile` (a ValueError) naming the file
        and why when it is unreadable, its checksum fails, its run key differs from ``run_key`` (when
        given), its fields are malformed or its numbers do not validate."""
        what = f"{cls.ANALYSIS} result"
        try:
            data = verify(read_json(path, what), run_key, what=what, path=path)
        except UntrustedFile:
            raise
        except ValueError as error:
            raise UntrustedFile(what, path, f"unreadable ({error})") from None
        try:
            result = cls.from_json(data)
            result.validate()
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise UntrustedFile(what, path, f"malformed ({error})") from None
        return result


def check_values(where: str, name: str, values: Any, *, low: float | None = None, high: float | None = None,
                 allow_nan: bool = False, shape: tuple | None = None) -> None:
    """ValueError (one line naming ``where`` and ``name``) unless ``values`` has ``shape`` (when given; None
    entries match any size) and every entry is finite (NaN too when ``allow_nan``) and within
    [``low``, ``high``]: the checks of :meth:`ResultFile.validate`."""
    array = np.asarray(values, dtype=np.float64)
    if shape is not None and (array.ndim != len(shape) or any(n is not None and n != m
                                                                 for n, m in zip(shape, array.shape))):
        raise ValueError(f"{where}: {name} has shape {list(array.shape)}, expected "
                         f"{['*' if n is None else n for n in shape]}")
    bad = np.isinf(array) | (np.isnan(array) if not allow_nan else False)
    with np.errstate(invalid="ignore"):
        if low is not None:
            bad |= array < low
        if high is not None:
            bad |= array > high
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        bounds = f" in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{where}: {name}{list(index)} = {float(array[index])!r} is not a finite number"
                         f"{bounds if low is not None or high is not None else ''}")
