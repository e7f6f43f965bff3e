"""SpeechGPT's vocabulary: its speech-unit and chat token names, and their ids read from a tokenizer.

SpeechGPT extends LLaMA-7B's 32,000 SentencePiece pieces with plain (non-special) added tokens, in
this order, so with ``n`` text pieces their ids are consecutive from ``n``:

- ``<0>`` .. ``<999>`` (ids ``n`` .. ``n + 999``): the units of its mHuBERT k-means (1000 clusters),
  then ``<sosp>`` and ``<eosp>`` (``n + 1000``, ``n + 1001``), which open and close a unit sequence
  (``src/train/ma_pretrain.py`` L173-177: stage 1 adds these 1002 tokens);
- ``[Human]``, ``[SpeechGPT]``, ``<eoh>``, ``<eos>`` (``n + 1002`` .. ``n + 1005``), the chat tokens
  (``src/train/cm_sft.py`` L164-172: stage 2 adds each one missing after the units).

The ids are never hard-coded: they are read from the checkpoint's own tokenizer, and each name must be
one token there. ``<eos>`` is added by ``cm_sft.py`` but no SpeechGPT code writes or reads it (training
ends a sequence with the tokenizer's EOS ``</s>``, ``cm_sft.py`` L189-195): it is checked to exist and is otherwise an
ordinary token.
"""

from __future__ import annotations

from spiritlens.tokens.vocab import Vocabulary

N_UNITS = 1000  # mhubert_base_vp_en_es_fr_it3_L11_km1000.bin: 1000 clusters
SPEECH_START = "<sosp>"
SPEECH_END = "<eosp>"
HUMAN = "[Human]"
ASSISTANT = "[SpeechGPT]"
END_OF_HUMAN = "<eoh>"
UNUSED_EOS = "<eos>"
CHAT_TOKENS = (HUMAN, ASSISTANT, END_OF_HUMAN, UNUSED_EOS)


def unit_token(unit: int) -> str:
    """A speech unit's token as SpeechGPT writes it (``<12>``; ``utils/speech2unit/speech2unit.py`` L169)."""
    return f"<{int(unit)}>"


def added_tokens() -> list[str]:
    """SpeechGPT's added tokens in id order (module docstring)."""
    return [unit_token(u) for u in range(N_UNITS)] + [SPEECH_START, SPEECH_END, *CHAT_TOKENS]


def speechgpt_vocabulary(tokenizer, *, source: str = "tokenizer") -> Vocabulary:
    """SpeechGPT's special ids read from ``tokenizer`` and checked (every unit and chat token a single
    token, no id shared); ValueError naming what is missing. The markers (never generated, never a
    subject) are ``<sosp>``, ``<eosp>``, ``[Human]``, ``[SpeechGPT]`` and ``<eoh>``; ``<sosp>`` opens speech."""
    vocab = tokenizer.get_vocab()
    names = added_tokens()
    missing = [name for name in names if name not in vocab]
    if missing:
        shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
        raise ValueError(f"{source}: SpeechGPT tokens {shown} ({len(missing)} of {len(names)}) are not single tokens "
                         "of this tokenizer; is this SpeechGPT-7B-cm's folder (added_tokens.json with <0>..<999>, "
                         "<sosp>, <eosp>, [Human], [SpeechGPT], <eoh>, <eos>)?")
    ids = [int(vocab[name]) for name in names]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: SpeechGPT's added tokens share ids")
    if tokenizer.bos_token_id is None:
        raise ValueError(f"{source}: the tokenizer has no BOS token")
    start, end, human, assistant, end_of_human = (int(vocab[t]) for t in
                                                  (SPEECH_START, SPEECH_END, HUMAN, ASSISTANT, END_OF_HUMAN))
    return Vocabulary(
        bos_id=int(tokenizer.bos_token_id),
        eos_id=int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1),
        marker_ids=(start, end, human, assistant, end_of_human),
        hubert_ids=tuple(ids[:N_UNITS]),
        speech_marker_id=start,
    )
