"""SpeechGPT's prompt rules (``src/infer/cli_infer.py``, the repository's inference code).

**Chat template** (default): the prompt is ``META_INSTRUCTION`` (L27) followed by the template
``"[Human]: {question} <eoh>. [SpeechGPT]: "`` (L61), ``{question}`` being the user's input with each
audio file replaced by its units' string ``<sosp><u1><u2>…<eosp>`` (``preprocess``, L110-123, and
``utils/speech2unit/speech2unit.py`` L169: deduplicated units). The string is tokenised in one call with
BOS and no EOS by transformers 4.33's slow ``LlamaTokenizer`` (L90-91, L150), whose rules strip the
whitespace around every added token (:mod:`spiritlens.tokens.llama`, ``rules="4.33"``)::

    T->T   …outputs.\\n[Human]: The capital of Italy is <eoh>. [SpeechGPT]:
           ->  <s> ▁You ▁are … [Human] ▁: ▁The ▁capital ▁of ▁Italy ▁is <eoh> ▁. [SpeechGPT] ▁: ▁
    S->T   …[Human]: <sosp><99><49><eosp> <eoh>. [SpeechGPT]:
           ->  <s> ▁You … [Human] ▁: <sosp> <99> <49> <eosp> <eoh> ▁. [SpeechGPT] ▁: ▁

The template's own text (the instruction, ``: ``, ``. ``) gives tokens that belong to no segment of the
prompt: their kind is ``"template"`` in the :class:`~spiritlens.tokens.prompt.TokenMap`; the chat tokens
and ``<sosp>``/``<eosp>`` are markers.

**Raw** (``SpeechGPT(template=False)``): the segments alone, text as it is and speech as
``<sosp>…<eosp>``, as SpeechGPT's stage-1 model (SpeechGPT-7B-ma) was trained on unit sequences and as
ROME and spiritlens prompt SpiritLM and Llama-2 (a completion, no chat turn)::

    T->T   The capital of Italy is      ->  <s> ▁The ▁capital ▁of ▁Italy ▁is
    S->T   <sosp><99><49><eosp>         ->  <s> <sosp> <99> <49> <eosp>

Output modality: ``"speech"`` appends ``<sosp>`` (SpeechGPT answers in speech as ``<sosp>…<eosp>``:
``cli_infer.py`` L196-197), ``"text"`` and ``"arbitrary"`` append nothing.
"""

from __future__ import annotations

from typing import Sequence

from spiritlens.models.speechgpt.vocab import ASSISTANT, END_OF_HUMAN, HUMAN, SPEECH_END, SPEECH_START
from spiritlens.tokens.prompt import check_output_modality

META_INSTRUCTION = (
    "You are an AI assistant whose name is SpeechGPT.\n- SpeechGPT is a intrinsic cross-modal conversational "
    "language model that is developed by Fudan University.  SpeechGPT can understand and communicate fluently "
    "with human through speech or text chosen by the user.\n- It can perceive cross-modal inputs and generate "
    "cross-modal outputs.\n"
)  # cli_infer.py L27, verbatim (the double space included)
TEMPLATE_HEAD = f"{HUMAN}: "  # cli_infer.py L61: "[Human]: {question} <eoh>. [SpeechGPT]: "
TEMPLATE_TAIL = f" {END_OF_HUMAN}. {ASSISTANT}: "


def build_prompt_string(segments: Sequence, segment_text, output_modality: str = "text", *,
                        template: bool = True) -> tuple[str, list[int]]:
    """SpeechGPT's prompt string and the start offset of each segment's content in it (module
    docstring). ``segment_text(segment)``: a segment as the string holds it (speech as its units'
    ``<u>`` strings, which this function wraps in ``<sosp>``/``<eosp>``)."""
    check_output_modality(output_modality)
    parts: list[str] = [META_INSTRUCTION + TEMPLATE_HEAD] if template else []
    offsets: list[int] = []
    length = len(parts[0]) if parts else 0
    for segment in segments:
        speech = segment.modality == "speech"
        if speech:
            parts.append(SPEECH_START)
            length += len(SPEECH_START)
        offsets.append(length)
        content = segment_text(segment)
        parts.append(content)
        length += len(content)
        if speech:
            parts.append(SPEECH_END)
            length += len(SPEECH_END)
    if template:
        parts.append(TEMPLATE_TAIL)
    if output_modality == "speech":
        parts.append(SPEECH_START)
    return "".join(parts), offsets
