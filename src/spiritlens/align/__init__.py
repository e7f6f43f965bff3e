"""Cross-modal position mapping: CTC forced alignment of a spoken prompt's transcript, and the
mapping of aligned words / LM text tokens to SpiritLM's deduplicated speech-token positions."""

from .ctc import (
    DEFAULT_MIN_CONFIDENCE,
    Alignment,
    LowAlignmentConfidence,
    TokenFrameMap,
    TokenFrames,
    WordSpan,
    align_emissions,
    map_words_to_text_tokens,
    viterbi_align,
)
from .emissions import CTCAligner, Emissions
from .mapping import (
    SpeechTokenMap,
    SpeechTokenRange,
    ctc_to_unit_frames,
    map_frames_to_speech_tokens,
    paper_seconds,
    paper_token_range,
    subject_speech_range,
)
from .normalize import NormalizedText, SpokenWord, normalize_transcript
from .tiny import write_tiny_ctc_model

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "Alignment",
    "CTCAligner",
    "Emissions",
    "LowAlignmentConfidence",
    "NormalizedText",
    "SpeechTokenMap",
    "SpeechTokenRange",
    "SpokenWord",
    "TokenFrameMap",
    "TokenFrames",
    "WordSpan",
    "align_emissions",
    "ctc_to_unit_frames",
    "map_frames_to_speech_tokens",
    "map_words_to_text_tokens",
    "normalize_transcript",
    "paper_seconds",
    "paper_token_range",
    "subject_speech_range",
    "viterbi_align",
    "write_tiny_ctc_model",
]
