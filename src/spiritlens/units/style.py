"""Audio -> SpiritLM Expressive style codes ``[St0]``..``[St99]``: one per second (wav2vec2 classifier).

SpiritLM's ``Wav2Vec2StyleEncoder`` (``speech_tokenizer/style_encoder/w2v2_encoder.py``) is a
``Wav2Vec2ForSequenceClassification`` whose forward differs from the stock one: for a 16 kHz
waveform ``[N]``

1. normalise with wav2vec2-base's feature extractor: ``(x - mean) / sqrt(var + 1e-7)`` over the whole
   waveform, in float32 numpy (SpiritLM downloads that extractor from the Hub; its settings are
   fixed: 16 kHz, ``do_normalize=True``, no padding, no attention mask, so it is computed here);
2. ``wav2vec2(x).last_hidden_state`` ``[1, F, hidden]`` (F frames at 50 Hz: hop 320, receptive
   field 400) -> ``projector`` ``[1, F, proj]``;
3. mean over consecutive chunks of ``pool_size`` = 50 frames (the last chunk may be shorter):
   ``[1, ceil(F / 50), proj]``;
4. ``classifier`` -> argmax per chunk: one code per second (``num_labels`` = 100 classes).

Files: ``speech_tokenizer/style_encoder_w2v2/{config.json, pytorch_model.bin}``: the config builds a
transformers ``Wav2Vec2Config``; the weights (``wav2vec2.*``, ``projector.*``, ``classifier.*`` and the
subclass's ``_float_tensor`` device marker) load strictly through spiritlens' safe loading
(``weights_only=True``). Positional-conv weight norm is accepted in both spellings (``weight_g``/
``weight_v`` or ``parametrizations.weight.original0/1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spiritlens._io import MAX_CONFIG_BYTES, read_json
from spiritlens.audio.waveform import check_mono_samples
from spiritlens.checkpoints import schema
from spiritlens.checkpoints.pickle_safe import load_weights
from spiritlens.checkpoints.validate import check_finite, check_state_dict

STYLE_DIR = Path("style_encoder_w2v2")
STYLE_CONFIG_FILE = STYLE_DIR / "config.json"
STYLE_WEIGHTS_FILE = STYLE_DIR / "pytorch_model.bin"
POOL_SIZE = 50  # Wav2Vec2StyleEncoder(pool_size=50): 50 frames of 20 ms = 1 s
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
DEVICE_MARKER = "_float_tensor"  # a buffer of SpiritLM's subclass, saved with the weights
_WEIGHT_NORM_NAMES = {".weight_g": ".parametrizations.weight.original0",
                      ".weight_v": ".parametrizations.weight.original1"}


def normalize_waveform(wav: np.ndarray) -> np.ndarray:
    """wav2vec2-base's input normalisation: float32 ``(x - x.mean()) / sqrt(x.var() + 1e-7)``.

    ``wav``: ``[N]`` samples. Source: transformers ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``
    with facebook/wav2vec2-base's ``preprocessor_config.json`` (do_normalize, no attention mask).
    """
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"style normalisation expects a mono waveform [N], got shape {list(x.shape)}")
    return (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)


def pool_chunks(hidden: torch.Tensor, pool_size: int = POOL_SIZE) -> torch.Tensor:
    """``[B, F, D]`` -> ``[B, ceil(F / pool_size), D]``: the mean of each run of ``pool_size`` frames."""
    return torch.stack([hidden[:, i:i + pool_size].mean(dim=1) for i in range(0, hidden.shape[1], pool_size)], dim=1)


@dataclass
class StyleCodes:
    """Style of one 16 kHz waveform (one chunk).

    ``codes[i]``: class of wav2vec2 frames ``[50 i, min(50 (i + 1), num_frames))``, i.e. second ``i``.
    ``num_frames``: wav2vec2 frames (``(N - 400) // 320 + 1`` for the standard conv stack).
    """

    codes: list[int]
    num_frames: int
    frame_samples: int
    pool_size: int


class StyleEncoder:
    """SpiritLM's style encoder on transformers' ``Wav2Vec2ForSequenceClassification`` (no Hub).

    Build with :meth:`from_dir` (SpiritLM's ``speech_tokenizer/`` folder).
    """

    def __init__(self, model, *, pool_size: int = POOL_SIZE, source: str = "style encoder"):
        self.model = model.eval()
        self.pool_size = pool_size
        self.source = source
        strides = list(model.config.conv_stride)
        self.frame_samples = int(np.prod(strides))
        kernels = list(model.config.conv_kernel)
        field, jump = 1, 1
        for kernel, stride in zip(kernels, strides):
            field += (kernel - 1) * jump
            jump *= stride
        self.receptive_field = field

    @classmethod
    def from_dir(cls, speech_tokenizer_dir: str | Path, *, pool_size: int = POOL_SIZE) -> "StyleEncoder":
        """Load ``DIR/style_encoder_w2v2/{config.json, pytorch_model.bin}`` strictly.

        ``config.json`` is checked first (:func:`read_style_config`) and the network is built on the
        meta device: memory is allocated only for the weights the file holds, after their names,
        shapes, dtypes (floating point) and values (finite) passed."""
        from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

        directory = Path(speech_tokenizer_dir)
        config_path, weights_path = directory / STYLE_CONFIG_FILE, directory / STYLE_WEIGHTS_FILE
        raw = read_style_config(config_path)
        try:
            config = Wav2Vec2Config.from_dict(raw)
        except Exception as error:  # noqa: BLE001 - transformers raises ValueError/TypeError/... for a bad field
            raise ValueError(f"style encoder config {config_path}: {schema.short(str(error).splitlines()[0])}") from None
        with torch.device("meta"):
            model = Wav2Vec2ForSequenceClassification(config)
        state = load_weights(weights_path, "style encoder")
        if not isinstance(state, dict):
            raise ValueError(f"{weights_path}: expected a state dict, got {type(state).__name__}")
        _load_strict(model, state, str(weights_path))
        return cls(model, pool_size=pool_size, source=str(directory / STYLE_DIR))

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def min_samples(self) -> int:
        return self.receptive_field

    def num_frames(self, num_samples: int) -> int:
        return int(self.model.wav2vec2._get_feat_extract_output_lengths(torch.tensor(num_samples)).item())

    @torch.inference_mode()
    def logits(self, wav: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[N]`` 16 kHz -> ``[ceil(F / pool_size), num_labels]`` class logits, one row per second."""
        x = torch.from_numpy(normalize_waveform(np.asarray(wav, dtype=np.float32))).unsqueeze(0)
        hidden = self.model.wav2vec2(x).last_hidden_state
        return self.model.classifier(pool_chunks(self.model.projector(hidden), self.pool_size))[0]

    def encode(self, wav: torch.Tensor | np.ndarray, *, source: str = "waveform") -> StyleCodes:
        """Style codes of a 16 kHz mono waveform; ValueError (naming ``source``) if shorter than one frame."""
        wav = np.asarray(wav, dtype=np.float32)
        check_mono_samples(wav, self.min_samples, source=source, what="a style token")
        codes = self.logits(wav).argmax(dim=-1)
        return StyleCodes(codes=[int(c) for c in codes], num_frames=self.num_frames(wav.shape[0]),
                          frame_samples=self.frame_samples, pool_size=self.pool_size)


def read_style_config(path: str | Path) -> dict:
    """``style_encoder_w2v2/config.json`` (at most 1 MiB, 64 levels deep) checked against
    :data:`spiritlens.checkpoints.schema.STYLE_CONFIG` (types, wav2vec2-large-sized limits) and what
    ties its fields together (heads and positional-conv groups dividing the width, one kernel and
    stride per conv layer); no ``quantization_config``, no weighted layer sum (SpiritLM's style
    encoder reads the last hidden state). One-line ValueError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: style encoder config not found")
    source = f"style encoder config {path}"
    raw = read_json(path, "style encoder config", max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(raw, dict):
        raise ValueError(f"{source} is a JSON {type(raw).__name__}, expected an object")
    if raw.get("model_type", "wav2vec2") != "wav2vec2":
        raise ValueError(f"{path}: model_type {schema.short(raw.get('model_type'))}, expected 'wav2vec2'")
    if raw.get("quantization_config") is not None:
        schema.fail(source, "quantization_config", raw["quantization_config"], "absent (spiritlens loads float weights)")
    schema.check(raw, schema.STYLE_CONFIG, source)
    if raw.get("use_weighted_layer_sum"):
        raise ValueError(f"{path}: use_weighted_layer_sum=true; SpiritLM's style encoder reads "
                         "the last hidden state")
    layers = len(raw["conv_dim"])
    for key in ("conv_kernel", "conv_stride"):
        if len(raw[key]) != layers:
            schema.fail(source, key, raw[key], f"a list of one entry per conv_dim layer ({layers})")
    if raw.get("num_feat_extract_layers", layers) != layers:
        schema.fail(source, "num_feat_extract_layers", raw["num_feat_extract_layers"], f"len(conv_dim) ({layers})")
    for key in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        if key in raw and raw["hidden_size"] % raw[key]:
            schema.fail(source, key, raw[key], f"a divisor of hidden_size {raw['hidden_size']}")
    return raw


def _load_strict(model, state: dict, source: str) -> None:
    """Load ``state`` into ``model`` (built on the meta device) after renaming weight-norm keys and
    dropping the device marker: names, shapes and dtypes checked, values finite, then assigned as float32."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{source}: not a state dict of tensor names -> tensors")
    own = model.state_dict()
    renamed = {}
    for key, value in state.items():
        if key == DEVICE_MARKER:
            continue
        for old, new in _WEIGHT_NORM_NAMES.items():
            if key.endswith(old) and key not in own and key[: -len(old)] + new in own:
                key = key[: -len(old)] + new
        renamed[key] = value
    check_state_dict(own, renamed, source=source, what="style encoder")
    check_finite(renamed.items(), source)
    model.load_state_dict({k: v.float() for k, v in renamed.items()}, strict=True, assign=True)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:  # a tensor the state dict does not cover (none in transformers' wav2vec2): never run on meta
        raise ValueError(f"{source}: style encoder tensors not in the file: {', '.join(left[:3])}")


__all__ = ["StyleCodes", "StyleEncoder", "normalize_waveform", "pool_chunks", "read_style_config", "POOL_SIZE",
           "STYLE_CONFIG_FILE", "STYLE_WEIGHTS_FILE"]
