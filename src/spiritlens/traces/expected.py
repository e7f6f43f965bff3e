"""A warning when a toy SpiritLM's traced answer is not the attribute it was trained on.

The toy learns its facts from text and from speech made by ``spiritlens.data.EspeakTTS`` (espeak-ng's
``en-us`` voice, 175 words per minute, in process). Speech made another way (the ``espeak-ng``
program: default voice ``en``, and about 0.3 s of trailing silence even with ``-v en-us``) gives it
other units, and the toy answers something else; a trace of that prompt is a trace of a wrong answer.
When the user gave neither ``attribute`` nor ``target``, :func:`warn_if_unexpected` compares the traced
answer with the attribute the toy's manifest records for that prompt (its Known prompt or a
paraphrase) and warns in one line when they differ. Models that are not a toy tree are left alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from spiritlens._io import read_json


# The toy tree's manifest (spiritlens.synthetic.toy.cache.MANIFEST, read here as a file: the traces
# stage does not import the toy builder, which sits above it).
TOY_MANIFEST = "toy_manifest.json"


class UnexpectedAnswerWarning(UserWarning):
    """The traced answer is not the attribute the toy SpiritLM was trained to give for the prompt."""


def trained_attribute(model, prompt_text: str) -> str | None:
    """The attribute a toy SpiritLM (``model.model_dir`` inside a ``make-toy`` tree) was trained to
    answer after ``prompt_text`` (its Known prompt or a paraphrase, compared without surrounding
    spaces), or None for another model or prompt."""
    model_dir = getattr(model, "model_dir", None)
    if model_dir is None or not prompt_text:
        return None
    root = Path(model_dir).parents[1] if len(Path(model_dir).parents) > 1 else None
    if root is None or not (root / TOY_MANIFEST).is_file():
        return None
    try:
        facts = read_json(root / TOY_MANIFEST, "toy manifest")["inputs"]["facts"]
    except (ValueError, KeyError, TypeError):
        return None  # not a finished toy: nothing to compare with
    wanted = prompt_text.strip()
    for fact in facts:
        if wanted in {fact["prompt"].strip(), *(p.strip() for p in fact.get("paraphrases", ()))}:
            return fact["attribute"]
    return None


def warn_if_unexpected(model, prompt, answer: str) -> None:
    """Warn (:class:`UnexpectedAnswerWarning`, one line) when ``answer`` is not what the toy learnt
    for ``prompt`` (a :class:`~spiritlens.tokens.trace_prompt.TracePrompt`)."""
    expected = trained_attribute(model, getattr(prompt, "prompt", ""))
    if expected is None or answer.strip() == expected.strip():
        return
    how = (" (check that the transcript is what the audio says; speech the toy understands comes from "
           "spiritlens.data.EspeakTTS(): espeak-ng's en-us voice, 175 wpm, no trailing silence, and the espeak-ng "
           "program's own voice gives other units)" if prompt.modality == "speech" else "")
    warnings.warn(f"the traced answer {answer.strip()!r} is not {expected!r}, the attribute the toy learnt for "
                  f"{prompt.prompt!r}{how}; pass attribute= to record it", UnexpectedAnswerWarning, stacklevel=3)
