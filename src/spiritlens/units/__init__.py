"""Audio -> SpiritLM speech tokens: mHuBERT (as HF HubertModel), quantizer, deduplication, spans; and for
the Expressive model pitch (FCPE + F0 VQ-VAE) and style (wav2vec2 classifier) tokens merged on one time line."""

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
from spiritlens.units.quantizer import KmeansQuantizer, LinearQuantizer, fill_blanks, load_kmeans_joblib, load_quantizer
from spiritlens.units.speech_tokenizer import (
    Chunk,
    SpeechTokenizer,
    SpeechUnits,
    deduplicate,
    default_speech_tokenizer_dir,
    plan_chunks,
)
from spiritlens.units.expressive import ExpressiveTokenizer, ExpressiveUnits, StreamToken, units_string
from spiritlens.units.pitch import PitchTokenizer
from spiritlens.units.style import StyleEncoder

__all__ = [
    "ExpressiveTokenizer",
    "ExpressiveUnits",
    "PitchTokenizer",
    "StreamToken",
    "StyleEncoder",
    "units_string",
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
    "load_kmeans_joblib",
    "load_quantizer",
    "parse_conv_layers",
    "plan_chunks",
    "read_hubert_checkpoint",
]
