"""Text and speech to SpiritLM token ids: the slow-Llama tokenisation SpiritLM used, its vocabulary layout, prompt building with markers, the TokenMap, and the tracer's prompt type."""

from spiritlens.tokens.prompt import (
    Modality,
    MODALITIES,
    OUTPUT_MODALITIES,
    Segment,
    TokenInfo,
    TokenMap,
    find_span,
    check_output_modality,
    build_prompt_string,
    encode_segments,
)
from spiritlens.tokens.vocab import (
    TEXT_MARKER,
    SPEECH_MARKER,
    N_HUBERT_TOKENS,
    N_PITCH_TOKENS,
    N_STYLE_TOKENS,
    hubert_token,
    pitch_token,
    style_token,
    SpiritVocab,
)

__all__ = [
    "Modality",
    "MODALITIES",
    "OUTPUT_MODALITIES",
    "Segment",
    "TokenInfo",
    "TokenMap",
    "find_span",
    "check_output_modality",
    "build_prompt_string",
    "encode_segments",
    "TEXT_MARKER",
    "SPEECH_MARKER",
    "N_HUBERT_TOKENS",
    "N_PITCH_TOKENS",
    "N_STYLE_TOKENS",
    "hubert_token",
    "pitch_token",
    "style_token",
    "SpiritVocab",
]
