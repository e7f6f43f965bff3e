"""Audio -> SpiritLM HuBERT units: mHuBERT (as HF HubertModel), quantizer, deduplication, spans."""

from spiritlens.units.hubert import (
    DEFAULT_OUTPUT_LAYER,
    HubertCheckpoint,
    HubertFeatures,
    build_hubert_model,
    conv_hop_samples,
    conv_num_frames,
    conv_receptive_field,
    hf_key,
    hubert_config,
    parse_conv_layers,
    read_hubert_checkpoint,
)
from spiritlens.units.quantizer import KmeansQuantizer, LinearQuantizer, fill_blanks, load_quantizer
from spiritlens.units.speech_tokenizer import (
    Chunk,
    SpeechTokenizer,
    SpeechUnits,
    deduplicate,
    default_speech_tokenizer_dir,
    plan_chunks,
)

__all__ = [
    "DEFAULT_OUTPUT_LAYER",
    "Chunk",
    "HubertCheckpoint",
    "HubertFeatures",
    "KmeansQuantizer",
    "LinearQuantizer",
    "SpeechTokenizer",
    "SpeechUnits",
    "build_hubert_model",
    "conv_hop_samples",
    "conv_num_frames",
    "conv_receptive_field",
    "deduplicate",
    "default_speech_tokenizer_dir",
    "fill_blanks",
    "hf_key",
    "hubert_config",
    "load_quantizer",
    "parse_conv_layers",
    "plan_chunks",
    "read_hubert_checkpoint",
]
