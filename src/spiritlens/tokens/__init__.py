"""Text and speech to token ids: the slow-Llama tokenisation SpiritLM used (also the Llama-2 backbone's), the
family-neutral vocabulary, the segments of a prompt and their TokenMap, and the tracer's prompt type. A
family's own spelling (SpiritLM's markers and units) lives with the family: :mod:`spiritlens.models`."""

from spiritlens.tokens.prompt import (
    Modality,
    MODALITIES,
    OUTPUT_MODALITIES,
    Segment,
    TokenInfo,
    TokenMap,
    find_span,
    check_output_modality,
    encode_segments,
)
from spiritlens.tokens.vocab import STREAMS, Vocabulary

__all__ = [
    "Modality",
    "MODALITIES",
    "OUTPUT_MODALITIES",
    "STREAMS",
    "Segment",
    "TokenInfo",
    "TokenMap",
    "Vocabulary",
    "find_span",
    "check_output_modality",
    "encode_segments",
]
