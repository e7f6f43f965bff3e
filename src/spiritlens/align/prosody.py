"""A spoken Expressive prompt under a prosody control (:mod:`spiritlens.units.controls`).

:func:`controlled_prompt` keeps the audio, the transcript, the alignment and the HuBERT units of a
:class:`~spiritlens.align.speech_prompt.SpeechPrompt`, applies the control to its pitch or style
stream, re-merges the streams by SpiritLM's rule and re-does what depends on the merged tokens: the
prompt's ids (SpiritLM's prompt path, ``model.encode``) and each text token's speech group (every
token of any stream whose 25 Hz span overlaps the token's aligned frames, the ``exact`` rule of
:func:`spiritlens.align.group_overlapping_tokens`, as for the original). The subject's HuBERT tokens
are unchanged, so the subject always has positions.
"""

from __future__ import annotations

import dataclasses

from spiritlens.align.mapping import group_overlapping_tokens
from spiritlens.align.speech_prompt import SpeechPrompt
from spiritlens.units.controls import ProsodyControl, apply_control, as_control
from spiritlens.units.expressive import ExpressiveUnits
from spiritlens.tokens.trace_prompt import display_tokens


def controlled_prompt(model, spoken: SpeechPrompt, control: "ProsodyControl | str",
                      donor: "SpeechPrompt | ExpressiveUnits | None" = None) -> SpeechPrompt:
    """``spoken`` with ``control`` applied to its Expressive units (module docstring).

    ``donor``: the recording whose pitch or style stream ``other_pitch`` / ``other_style`` take: its
    :class:`~spiritlens.units.expressive.ExpressiveUnits` (``model.speech_tokenizer.encode(audio)``) or a
    spoken prompt (its units; its alignment is not used). Raises ValueError for a model without pitch and
    style tokens, a prompt that is not Expressive, a code outside the model's pitch (``[Pi…]``) or style
    (``[St…]``) tokens, or as :func:`spiritlens.units.controls.apply_control`.
    """
    control = as_control(control)
    vocab = model.vocab
    if not vocab.is_expressive:
        raise ValueError("prosody controls need SpiritLM Expressive (a vocabulary with pitch and style tokens)")
    if spoken.speech_groups is None or not hasattr(spoken.units, "pitch"):
        raise ValueError(f"prosody controls need an Expressive spoken prompt; {spoken.transcript!r} has HuBERT "
                         "units only (made with the Base model?)")
    if control.code is not None:
        size = len(vocab.pitch_ids if control.stream == "pitch" else vocab.style_ids)
        if control.code >= size:
            raise ValueError(f"prosody control {control.name!r}: code {control.code} is outside this model's "
                             f"{size} {control.stream} tokens (0..{size - 1})")
    units = apply_control(spoken.units, control, donor.units if isinstance(donor, SpeechPrompt) else donor)
    groups = group_overlapping_tokens(spoken.token_frames.ctc_spans, units.spans,
                                      ctc_frame_seconds=spoken.alignment.frame_seconds,
                                      unit_frame_seconds=units.hubert.frame_seconds)
    ids, token_map = model.encode([("speech", units)])
    offset = next(p.position for p in token_map.positions if p.kind == "speech")
    return dataclasses.replace(spoken, units=units, speech_groups=groups, input_ids=ids[0].tolist(),
                               speech_offset=offset, labels=display_tokens(model, ids[0].tolist()))


__all__ = ["controlled_prompt"]
