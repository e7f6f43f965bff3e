"""Cross-modal position mapping: forced alignment of a spoken prompt's transcript (the paper's CTC path,
or pocketsphinx offline), and the mapping of aligned words / LM text tokens to SpiritLM's deduplicated
speech-token positions, and :class:`SpeechPrompt` (a spoken prompt aligned and mapped, ready to trace)."""

from spiritlens.align.ctc import (
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
from spiritlens.align.aligner import POCKETSPHINX, Aligner, get_aligner
from spiritlens.align.emissions import CTCAligner, Emissions, align_with_emissions
from spiritlens.align.mapping import (
    SpeechTokenMap,
    SpeechTokenRange,
    ctc_to_unit_frames,
    map_frames_to_speech_tokens,
    group_overlapping_tokens,
    map_seconds_to_speech_tokens,
    paper_seconds,
    paper_token_range,
    seconds_to_unit_frames,
    subject_speech_range,
)
from spiritlens.align.normalize import NormalizedText, SpokenWord, normalize_transcript
from spiritlens.align.pocketsphinx import PocketsphinxAligner, ipa_to_arpabet
from spiritlens.align.speech_prompt import SpeechPrompt

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "POCKETSPHINX",
    "Aligner",
    "Alignment",
    "CTCAligner",
    "Emissions",
    "LowAlignmentConfidence",
    "NormalizedText",
    "PocketsphinxAligner",
    "SpeechPrompt",
    "SpeechTokenMap",
    "SpeechTokenRange",
    "SpokenWord",
    "TokenFrameMap",
    "TokenFrames",
    "WordSpan",
    "align_emissions",
    "align_with_emissions",
    "ctc_to_unit_frames",
    "get_aligner",
    "ipa_to_arpabet",
    "map_frames_to_speech_tokens",
    "group_overlapping_tokens",
    "map_seconds_to_speech_tokens",
    "map_words_to_text_tokens",
    "normalize_transcript",
    "paper_seconds",
    "paper_token_range",
    "seconds_to_unit_frames",
    "subject_speech_range",
    "viterbi_align",
]
