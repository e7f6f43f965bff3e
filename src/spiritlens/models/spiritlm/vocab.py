"""SpiritLM's vocabulary: marker, HuBERT-unit, pitch and style token names, and their ids read from a tokenizer.

SpiritLM extends Llama-2's 32,000 text pieces with ``[Text]``, ``[Speech]``, ``[Hu0]``..``[Hu500]``
and, in the Expressive model, ``[Pi0]``..``[Pi63]`` and ``[St0]``..``[St99]``. The ids are never
hard-coded here: they are read from the checkpoint's own tokenizer and checked to be single tokens.
"""

from __future__ import annotations

from spiritlens.tokens.vocab import Vocabulary

TEXT_MARKER = "[Text]"
SPEECH_MARKER = "[Speech]"
N_HUBERT_TOKENS = 501  # [Hu0]..[Hu500]; the quantizer emits 0..499, 500 is reserved
N_PITCH_TOKENS = 64
N_STYLE_TOKENS = 100


def hubert_token(unit: int) -> str:
    return f"[Hu{unit}]"


def pitch_token(unit: int) -> str:
    return f"[Pi{unit}]"


def style_token(unit: int) -> str:
    return f"[St{unit}]"


STREAM_TOKENS = {"hubert": hubert_token, "pitch": pitch_token, "style": style_token}


def unit_string(stream: str, unit: int) -> str:
    """A speech unit's token as SpiritLM writes it (``[Hu12]``, ``[Pi3]``, ``[St71]``)."""
    return STREAM_TOKENS[stream](int(unit))


def spiritlm_vocabulary(tokenizer, *, source: str = "tokenizer") -> Vocabulary:
    """SpiritLM's special ids read from ``tokenizer`` and checked (every marker and unit a single
    token, no id shared); ValueError naming what is missing."""
    vocab = tokenizer.get_vocab()

    def single(token: str) -> int | None:
        return vocab.get(token)

    def require(tokens: list[str], what: str) -> tuple[int, ...]:
        ids = [single(t) for t in tokens]
        missing = [t for t, i in zip(tokens, ids) if i is None]
        if missing:
            shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
            raise ValueError(
                f"{source}: {what} {shown} ({len(missing)} of {len(tokens)}) are not single "
                "tokens of this tokenizer; is this a SpiritLM tokenizer.model?"
            )
        return tuple(int(i) for i in ids)  # type: ignore[arg-type]

    text_id, speech_id = require([TEXT_MARKER, SPEECH_MARKER], "marker tokens")
    hubert = require([hubert_token(u) for u in range(N_HUBERT_TOKENS)], "HuBERT unit tokens")
    pitch_names = [pitch_token(u) for u in range(N_PITCH_TOKENS)]
    style_names = [style_token(u) for u in range(N_STYLE_TOKENS)]
    has_pitch = any(single(t) is not None for t in pitch_names)
    has_style = any(single(t) is not None for t in style_names)
    pitch = require(pitch_names, "pitch tokens") if (has_pitch or has_style) else ()
    style = require(style_names, "style tokens") if (has_pitch or has_style) else ()
    if tokenizer.bos_token_id is None:
        raise ValueError(f"{source}: the tokenizer has no BOS token")
    all_ids = [text_id, speech_id, *hubert, *pitch, *style]
    if len(set(all_ids)) != len(all_ids):
        raise ValueError(f"{source}: SpiritLM special tokens share ids")
    return Vocabulary(
        marker_ids=(text_id, speech_id),
        text_marker_id=text_id,
        speech_marker_id=speech_id,
        hubert_ids=hubert,
        pitch_ids=pitch,
        style_ids=style,
        bos_id=int(tokenizer.bos_token_id),
        eos_id=int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1),
    )
