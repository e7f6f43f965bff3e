"""Audio -> SpiritLM Expressive pitch codes ``[Pi0]``..``[Pi63]`` (12.5 Hz): FCPE F0 + F0 VQ-VAE.

Pipeline (the behaviour of SpiritLM's ``spiritlm_expressive_f0()``, i.e.
``F0Tokenizer(f0_extractor_method="fcpe", hop_length=80, sampling_rate=16000, interpolate=True)``):

1. **F0 by FCPE** (:class:`FcpeF0`): torchfcpe's bundled pretrained network (its mel front end and
   ``CFNaiveMelPE``, run through the package's own classes, weights read through spiritlens' safe
   loading) gives raw F0 in Hz every 160 samples (100 Hz), decoder ``local_argmax``, threshold 0.05.
2. **Voicing and interpolation** (:func:`f0_track`): a frame is unvoiced when its raw F0 is below
   ``f0_min`` = 50 Hz; unvoiced frames take the linear interpolation between the nearest voiced
   frames (the edge values beyond the first/last voiced frame); values above ``f0_max`` = 1100 Hz
   are clipped; both tracks are resized (nearest) to ``N // 80 + 1`` frames (200 Hz at 16 kHz).
   ``vuv = 1 - unvoiced``.
3. **Normalisation** (when the quantizer's ``features`` start with ``norm_`` or ``speaker_norm``
   is set): every non-zero F0 value minus the mean F0 over the voiced frames of the utterance
   (a subtraction, as upstream, not a division).
4. **VQ-VAE encoder** (:class:`F0Quantizer`) over ``[1, 2, T]`` = (F0, vuv): strided convolutions
   with dilated residual blocks downsample by ``prod(stride ** down)`` (16: 200 Hz -> 12.5 Hz),
   then the nearest codebook vector (squared Euclidean distance) gives one code per 80 ms frame.

Files: ``speech_tokenizer/vqvae_f0_quantizer/{config.yaml, model.pt}``. ``config.yaml`` is read with
``yaml.safe_load`` (SpiritLM: OmegaConf), aliases refused and size and depth bounded, and checked
against :data:`spiritlens.checkpoints.schema.F0_VQVAE_CONFIG` (:func:`check_f0_config`); its
``encoder_params``/``vq_params`` build the encoder and codebook on the meta device; ``model.pt`` holds ``{"model": state_dict}`` and is read through spiritlens' safe loading
(tensors and plain containers only; upstream unpickles it unrestricted): keys ``encoder.*`` and ``vq.*`` load strictly, ``decoder.*``
(the F0 reconstruction half, unused for tokenising) is checked to be the only other prefix; the
weights must be floating point and finite.

**Where SpiritLM crashes** (spiritlm issue #17) spiritlens gives a defined result or a one-line
error: a waveform with no voiced frame (silence, noise) has nothing to interpolate from (torchfcpe
raises IndexError): its F0 stays as FCPE gives it (0 Hz) and vuv is 0 everywhere; audio shorter
than ``min_samples`` (1280 samples, SpiritLM's minimum chunk, which leaves at least one code) is a
ValueError naming the input. Clipped audio needs no special case (FCPE's mel is finite for any
finite input; non-finite samples are rejected by :func:`spiritlens.audio.load_audio`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spiritlens._io import read_yaml
from spiritlens.audio.waveform import check_mono_samples
from spiritlens.checkpoints import schema
from spiritlens.checkpoints.pickle_safe import load_checkpoint
from spiritlens.checkpoints.validate import check_finite, check_state_dict

F0_QUANTIZER_DIR = Path("vqvae_f0_quantizer")
F0_CONFIG_FILE = F0_QUANTIZER_DIR / "config.yaml"
F0_MODEL_FILE = F0_QUANTIZER_DIR / "model.pt"

SAMPLE_RATE = 16_000
F0_HOP_SAMPLES = 80  # SpiritLM's hop_length: one F0 value per 5 ms
FCPE_DECODER = "local_argmax"  # SpiritLM's FCPE arguments (f0_extractor.py)
FCPE_THRESHOLD = 0.05
F0_MIN_HZ = 50.0
F0_MAX_HZ = 1100.0
MIN_SAMPLES = 1280  # SpiritLMTokenizer.min_wav_chunk ("1280 (80ms) is minimum for pitch")
FEATURE_SETS = schema.F0_VQVAE_CONFIG["features"].choices  # F0Tokenizer's accepted list
FCPE_WEIGHTS = Path("assets") / "fcpe_c_v001.pt"  # inside the torchfcpe package


# ---------------------------------------------------------------------------------------- FCPE
class _NoTorchaudioResample:
    """Placeholder for ``torchaudio.transforms.Resample`` while torchfcpe is imported without torchaudio.

    torchfcpe builds a Resample only for input that is not at FCPE's own 16 kHz; spiritlens resamples
    with soxr before FCPE, so constructing one is a bug and raises.
    """

    def __init__(self, *args, **kwargs):
        raise RuntimeError("FCPE was asked to resample (input not at 16 kHz); spiritlens resamples with "
                           "soxr before FCPE and never installs torchaudio")


def import_torchfcpe() -> types.ModuleType:
    """Import torchfcpe's ``models_infer`` module without torchaudio being installed.

    torchfcpe 0.0.4 imports ``torchaudio.transforms.Resample`` at import time (``mel_extractor.py``)
    and uses it only for input rates other than 16 kHz. When torchaudio is absent (spiritlens never
    installs it: its PyPI wheel breaks transformers next to CPU torch), a
    placeholder module holding :class:`_NoTorchaudioResample` is visible in ``sys.modules`` only for
    the duration of the import and removed afterwards, so nothing else (transformers'
    ``is_torchaudio_available``) ever sees it. torchfcpe's import-time prints are swallowed.
    Raises ImportError with the install line when torchfcpe (or its einops/local-attention) is missing.
    """
    if "torchfcpe.models_infer" in sys.modules:
        return sys.modules["torchfcpe.models_infer"]
    if importlib.util.find_spec("torchfcpe") is None:
        raise ImportError("FCPE pitch extraction needs torchfcpe: pip install --no-deps 'torchfcpe==0.0.4' "
                          "einops local-attention (--no-deps keeps torchaudio out)")
    shimmed = []
    if importlib.util.find_spec("torchaudio") is None:
        for name in ("torchaudio", "torchaudio.transforms"):
            module = types.ModuleType(name)
            module.__spec__ = None
            sys.modules[name] = module
            shimmed.append(name)
        sys.modules["torchaudio"].transforms = sys.modules["torchaudio.transforms"]
        sys.modules["torchaudio.transforms"].Resample = _NoTorchaudioResample
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("torchfcpe.models_infer")
    except ImportError as error:
        raise ImportError(f"torchfcpe could not be imported ({error}); install its dependencies: "
                          "pip install einops local-attention") from None
    finally:
        for name in shimmed:
            sys.modules.pop(name, None)


def fcpe_weights_path() -> Path:
    """``torchfcpe/assets/fcpe_c_v001.pt``, FCPE's pretrained weights shipped in torchfcpe's wheel."""
    module = import_torchfcpe()
    return Path(module.__file__).resolve().parent / FCPE_WEIGHTS


class FcpeF0(nn.Module):
    """torchfcpe's pretrained FCPE, loaded through spiritlens' safe loading.

    ``raw_f0(wav [N])`` -> ``[N // hop + 1]`` float32 F0 in Hz at FCPE's hop (160 samples at 16 kHz),
    exactly ``InferCFNaiveMelPE.__call__`` with SpiritLM's decoder and threshold; 0 Hz (or a value
    below ``f0_min``) where FCPE finds no pitch. The weight file is ``{global_step, model,
    config_dict}`` (plain tensors and dicts); ``config_dict`` builds the network as
    ``spawn_bundled_infer_model`` does (dropouts 0).
    """

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        models_infer = import_torchfcpe()
        path = Path(weights) if weights is not None else fcpe_weights_path()
        checkpoint = load_checkpoint(path, "FCPE")
        if not isinstance(checkpoint, dict) or not {"model", "config_dict"} <= checkpoint.keys() or not \
                isinstance(checkpoint["model"], dict) or not isinstance(checkpoint["config_dict"], dict):
            raise ValueError(f"{path}: not an FCPE checkpoint (expected keys 'model' and 'config_dict')")
        if not all(isinstance(v, torch.Tensor) for v in checkpoint["model"].values()):
            raise ValueError(f"{path}: FCPE 'model' is not a state dict of tensors")
        check_finite(checkpoint["model"].items(), str(path))
        config = {key: dict(value) if isinstance(value, dict) else value
                  for key, value in checkpoint["config_dict"].items()}
        config["model"] = {**config.get("model", {}), "conv_dropout": 0.0, "atten_dropout": 0.0}
        tools = sys.modules["torchfcpe.tools"]
        with contextlib.redirect_stdout(io.StringIO()):
            self.network = models_infer.InferCFNaiveMelPE(tools.DotDict(config), checkpoint["model"])
        self.network.eval()
        self.source = str(path)
        self.sample_rate = int(config["mel"]["sr"])
        self.hop_samples = int(config["mel"]["hop_size"])

    @torch.inference_mode()
    def raw_f0(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 1:
            raise ValueError(f"FCPE expects a 1-D waveform, got shape {list(wav.shape)}")
        out = self.network(wav.float().view(1, -1, 1), self.sample_rate, FCPE_DECODER, FCPE_THRESHOLD)
        return out.view(-1)


def interpolate_unvoiced(f0: torch.Tensor, unvoiced: torch.Tensor) -> torch.Tensor:
    """``f0 [T]`` with every unvoiced frame replaced by the linear interpolation of its voiced neighbours.

    Frames before the first (after the last) voiced frame take its value; with no voiced frame
    ``f0`` is returned unchanged. The arithmetic is float32 ``y_l + (t - t_l) * (y_r - y_l) / (t_r - t_l)``
    in frame indices, the order torchfcpe evaluates it in (so results agree bit for bit).
    """
    voiced_t = torch.nonzero(~unvoiced).view(-1)
    if voiced_t.numel() == 0:
        return f0.clone()
    gap_t = torch.nonzero(unvoiced).view(-1)
    voiced_f0 = f0[voiced_t]
    right = torch.searchsorted(voiced_t, gap_t).clamp(max=voiced_t.numel() - 1)
    left = (right - 1).clamp(min=0)
    t_l, t_r = voiced_t[left], voiced_t[right]
    y_l, y_r = voiced_f0[left], voiced_f0[right]
    filled = y_l + (gap_t - t_l) * (y_r - y_l) / (t_r - t_l)
    filled[gap_t < voiced_t[0]] = voiced_f0[0]
    filled[gap_t > voiced_t[-1]] = voiced_f0[-1]
    out = f0.clone()
    out[gap_t] = filled
    return out


def f0_track(raw_f0: torch.Tensor, num_samples: int, *, hop_samples: int = F0_HOP_SAMPLES,
             f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ,
             interpolate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """FCPE's raw F0 -> ``(f0 [T], vuv [T])`` float32 with ``T = num_samples // hop_samples + 1``.

    Unvoiced = raw F0 below ``f0_min`` (decided before interpolation); ``interpolate`` fills those
    frames (:func:`interpolate_unvoiced`); F0 above ``f0_max`` is clipped to it; both tracks are
    resized to ``T`` frames by nearest-neighbour (``torch.nn.functional.interpolate``).
    """
    raw_f0 = raw_f0.float().view(-1)
    unvoiced = raw_f0 < f0_min
    f0 = interpolate_unvoiced(raw_f0, unvoiced) if interpolate else raw_f0.clone()
    f0 = torch.where(f0 > f0_max, torch.full_like(f0, f0_max), f0)
    target = num_samples // hop_samples + 1

    def resize(track: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(track.view(1, 1, -1), size=target, mode="nearest").view(-1)

    return resize(f0), 1.0 - resize(unvoiced.float())


def normalize_f0(f0: torch.Tensor, vuv: torch.Tensor) -> torch.Tensor:
    """Non-zero F0 values minus the mean F0 of the voiced frames (``vuv != 0``); no voiced frame: unchanged."""
    voiced = vuv != 0
    if not bool(voiced.any()):
        return f0.clone()
    out = f0.clone()
    nonzero = out != 0
    out[nonzero] = out[nonzero] - torch.mean(f0[voiced])
    return out


# ------------------------------------------------------------------------------------ VQ-VAE
class _DilatedResidual(nn.Module):
    """``x + scale * Conv1x1(ReLU(Conv3_dilated(ReLU(x))))`` (key layout ``model.{1,3}.*``)."""

    def __init__(self, channels: int, inner: int, dilation: int, scale: float):
        super().__init__()
        self.model = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, inner, 3, 1, dilation, dilation),
                                   nn.ReLU(), nn.Conv1d(inner, channels, 1, 1, 0))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.model(x)


class _ResidualStack(nn.Module):
    def __init__(self, channels: int, depth: int, m_conv: float, growth: int, cycle: int | None, res_scale: bool,
                 reverse: bool = False):
        super().__init__()
        scale = 1.0 / math.sqrt(depth) if res_scale else 1.0
        blocks = [_DilatedResidual(channels, int(m_conv * channels), growth ** (d % cycle if cycle else d), scale)
                  for d in range(depth)]
        self.model = nn.Sequential(*(blocks[::-1] if reverse else blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _down_kernel(stride: int) -> tuple[int, int]:
    """(kernel, padding) of one strided conv: ``2s, s//2`` (even ``s``) or ``2s+1, s//2+1`` (odd, list form)."""
    return (stride * 2, stride // 2) if stride % 2 == 0 else (stride * 2 + 1, stride // 2 + 1)


class _EncoderLevel(nn.Module):
    """One level: ``down`` x (strided conv + residual stack) per stride, then a 3-tap conv to the code width."""

    def __init__(self, n_in: int, n_out: int, down_t, stride_t, width: int, depth: int, m_conv: float,
                 dilation_growth_rate: int = 1, dilation_cycle: int | None = None, zero_out: bool = False,
                 res_scale: bool = False, **_ignored):
        super().__init__()
        pairs = list(zip(stride_t, down_t)) if isinstance(stride_t, (list, tuple)) else [(stride_t, down_t)]
        blocks, first = [], True
        for stride, down in pairs:
            kernel, pad = _down_kernel(stride) if isinstance(stride_t, (list, tuple)) else (stride * 2, stride // 2)
            for _ in range(down):
                blocks.append(nn.Sequential(
                    nn.Conv1d(n_in if first else width, width, kernel, stride, pad),
                    _ResidualStack(width, depth, m_conv, dilation_growth_rate, dilation_cycle, res_scale)))
                first = False
        if blocks or isinstance(stride_t, (list, tuple)):
            blocks.append(nn.Conv1d(width, n_out, 3, 1, 1))
        self.model = nn.Sequential(*blocks)
        self.factor = int(np.prod([s ** d for s, d in pairs]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Encoder(nn.Module):
    def __init__(self, input_emb_width: int, output_emb_width: int, levels: int, downs_t, strides_t, **block):
        super().__init__()
        block.pop("reverse_decoder_dilation", None)
        self.input_emb_width, self.output_emb_width = int(input_emb_width), int(output_emb_width)
        self.level_blocks = nn.ModuleList(
            _EncoderLevel(input_emb_width if level == 0 else output_emb_width, output_emb_width, down, stride, **block)
            for level, down, stride in zip(range(levels), downs_t, strides_t))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for level in self.level_blocks:
            length = x.shape[-1] // level.factor
            x = level(x)
            if x.shape[-1] != length:
                raise ValueError(f"F0 VQ-VAE encoder: expected {length} frames after a level, got {x.shape[-1]}")
            outputs.append(x)
        return outputs


class _Codebook(nn.Module):
    """One VQ level: buffer ``k [l_bins, emb_width]``; code = nearest row by squared distance."""

    def __init__(self, l_bins: int, emb_width: int):
        super().__init__()
        self.emb_width = emb_width
        self.register_buffer("k", torch.zeros(l_bins, emb_width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, width, t = z.shape
        x = z.permute(0, 2, 1).reshape(-1, width)
        if width == 2 * self.emb_width:  # two halves summed, as the bottleneck's preprocess does
            x = x[:, : self.emb_width] + x[:, self.emb_width:]
        elif width != self.emb_width:
            raise ValueError(f"F0 VQ-VAE: encoder gives {width} channels, codebook width is {self.emb_width}")
        codebook = self.k.t()
        # ||x||^2 - 2 x.k + ||k||^2, evaluated in this order so ties and rounding match upstream
        distance = (x.pow(2).sum(dim=-1, keepdim=True) - 2 * (x @ codebook)
                    + codebook.pow(2).sum(dim=0, keepdim=True))
        return distance.argmin(dim=-1).view(n, t)


class F0Quantizer(nn.Module):
    """SpiritLM's F0 VQ-VAE, encoder and codebook only: ``[B, 2, T]`` (F0, vuv) -> ``[B, T // factor]`` codes.

    ``config``: the parsed ``config.yaml`` (keys ``encoder_params``, ``vq_params``, ``features``,
    optional ``speaker_norm``). ``factor`` = product of ``stride ** down`` of level 0 (16 for
    200 Hz F0 -> 12.5 Hz codes). Source: facebookresearch/spiritlm ``speech_tokenizer/f0/vqvae.py``
    (a Jukebox-style VQ-VAE), reimplemented for inference.
    """

    def __init__(self, config: dict, *, source: str = "F0 quantizer"):
        super().__init__()
        check_f0_config(config, source)
        enc, vq = dict(config["encoder_params"]), dict(config["vq_params"])
        features = config["features"]
        self.encoder = _Encoder(**enc)
        self.vq = nn.Module()
        self.vq.level_blocks = nn.ModuleList(_Codebook(vq["l_bins"], vq["emb_width"])
                                             for _ in range(vq.get("levels", enc["levels"])))
        self.features = features
        self.normalize = bool(config.get("speaker_norm", False)) or "norm_" in features
        self.num_codes = vq["l_bins"]
        self.factor = self.encoder.level_blocks[0].factor
        self.source = source

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.encoder(x)
        return self.vq.level_blocks[0](levels[0])  # SpiritLM keeps level 0's codes

    def load_weights(self, state_dict: dict, source: str) -> None:
        """Strict load of ``encoder.*``/``vq.*``; any other key must be ``decoder.*`` (ignored).
        Names, shapes, dtypes (floating point) and values (finite) are checked first; the tensors are
        then assigned as float32 (so a quantizer built on the meta device allocates nothing before)."""
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
            raise ValueError(f"{source}: F0 VQ-VAE 'model' is not a state dict of tensor names -> tensors")
        kept = {k: v for k, v in state_dict.items() if not k.startswith("decoder.")}
        check_state_dict(self.state_dict(), kept, source=source, what="F0 VQ-VAE")
        check_finite(kept.items(), source)
        self.load_state_dict({k: v.float() for k, v in kept.items()}, strict=True, assign=True)


def check_f0_config(config: dict, source: str) -> None:
    """The F0 VQ-VAE ``config.yaml`` against :data:`spiritlens.checkpoints.schema.F0_VQVAE_CONFIG`
    (types, required keys, the limits of real Jukebox-style VQ-VAEs), and what ties its fields
    together: one ``downs_t``/``strides_t`` entry per level, of equal shapes; the codebook levels
    and width matching the encoder's; the largest dilation and each level's downsampling within
    the limits. One-line ValueError naming the file and the field."""
    schema.check(config, schema.F0_VQVAE_CONFIG, source)
    enc, vq = config["encoder_params"], config["vq_params"]
    levels = enc["levels"]
    if vq.get("levels", levels) != levels:
        schema.fail(source, "vq_params.levels", vq["levels"], f"equal to encoder_params.levels ({levels})")
    for key in ("downs_t", "strides_t"):
        if len(enc[key]) != levels:
            schema.fail(source, f"encoder_params.{key}", enc[key], f"a list of one entry per level ({levels})")
    factors = []
    for level, (down, stride) in enumerate(zip(enc["downs_t"], enc["strides_t"])):
        if isinstance(down, list) != isinstance(stride, list) or (isinstance(down, list) and len(down) != len(stride)):
            schema.fail(source, f"encoder_params.downs_t[{level}]", down,
                        f"shaped like strides_t[{level}] ({schema.short(stride)})")
        pairs = list(zip(stride, down)) if isinstance(stride, list) else [(stride, down)]
        factors.append(math.prod(s ** d for s, d in pairs))
        if factors[-1] > schema.MAX_F0_DOWNSAMPLING:
            schema.fail(source, f"encoder_params.strides_t[{level}] ** downs_t[{level}]", factors[-1],
                        f"a downsampling factor of at most {schema.MAX_F0_DOWNSAMPLING} (SpiritLM's: 16)")
    depth, cycle = enc["depth"], enc.get("dilation_cycle")
    largest = enc.get("dilation_growth_rate", 1) ** ((min(depth, cycle) if cycle else depth) - 1)
    if largest > schema.MAX_F0_DILATION:
        schema.fail(source, "encoder_params.dilation_growth_rate ** (depth - 1)", largest,
                    f"a dilation of at most {schema.MAX_F0_DILATION} (SpiritLM's: 27)")
    if int(enc["m_conv"] * enc["width"]) < 1:
        schema.fail(source, "encoder_params.m_conv", enc["m_conv"], f"at least 1 / width (1 / {enc['width']})")
    if enc["output_emb_width"] not in (vq["emb_width"], 2 * vq["emb_width"]):
        schema.fail(source, "vq_params.emb_width", vq["emb_width"],
                    f"encoder_params.output_emb_width ({enc['output_emb_width']}) or half of it")


def read_f0_config(path: str | Path) -> dict:
    """``config.yaml`` as a dict: ``yaml.safe_load`` with aliases refused, at most 1 MiB and 64 levels
    (:func:`spiritlens._io.read_yaml`); ValueError naming the file when it is not a mapping. The
    fields are checked by :func:`check_f0_config` (called by :class:`F0Quantizer`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: F0 quantizer config not found")
    config = read_yaml(path, "F0 quantizer config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(config).__name__}")
    return config


def load_f0_quantizer(directory: str | Path) -> F0Quantizer:
    """``DIR/vqvae_f0_quantizer/{config.yaml, model.pt}`` -> :class:`F0Quantizer` (eval mode).

    The config is checked (:func:`check_f0_config`) and the network built on the meta device before
    ``model.pt`` is read: memory is allocated only for the weights the file holds, once their names,
    shapes, dtypes and values passed :meth:`F0Quantizer.load_weights`."""
    directory = Path(directory)
    config = read_f0_config(directory / F0_CONFIG_FILE)
    with torch.device("meta"):
        quantizer = F0Quantizer(config, source=str(directory / F0_CONFIG_FILE))
    checkpoint = load_checkpoint(directory / F0_MODEL_FILE, "F0 VQ-VAE")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ValueError(f"{directory / F0_MODEL_FILE}: expected a dict with a 'model' state dict")
    quantizer.load_weights(checkpoint["model"], str(directory / F0_MODEL_FILE))
    return quantizer.eval()


# ------------------------------------------------------------------------------------ tokenizer
@dataclass
class PitchCodes:
    """Pitch of one 16 kHz waveform (one chunk).

    ``f0``/``vuv``: ``[T]`` float32 at ``F0_HOP_SAMPLES`` (5 ms), ``T = N // 80 + 1``, F0 after
    interpolation and before normalisation. ``codes``: ``T // factor`` ints in ``0..l_bins-1``, code
    ``j`` covering samples ``[j * factor * 80, (j + 1) * factor * 80)`` (80 ms for factor 16).
    """

    f0: np.ndarray
    vuv: np.ndarray
    codes: list[int]
    code_samples: int


class PitchTokenizer:
    """16 kHz waveform -> :class:`PitchCodes`, as SpiritLM's FCPE F0 tokenizer.

    Build with :meth:`from_dir` (SpiritLM's ``speech_tokenizer/`` folder). ``fcpe``: an
    :class:`FcpeF0` (default: torchfcpe's bundled weights).
    """

    def __init__(self, quantizer: F0Quantizer, fcpe: FcpeF0 | None = None, *, interpolate: bool = True):
        self.quantizer = quantizer
        self.fcpe = fcpe if fcpe is not None else FcpeF0()
        if self.fcpe.sample_rate != SAMPLE_RATE:
            raise ValueError(f"{self.fcpe.source}: FCPE runs at {self.fcpe.sample_rate} Hz, spiritlens feeds 16 kHz")
        self.interpolate = interpolate
        self.code_samples = F0_HOP_SAMPLES * quantizer.factor

    @classmethod
    def from_dir(cls, speech_tokenizer_dir: str | Path, *, fcpe_weights: str | Path | None = None) -> "PitchTokenizer":
        return cls(load_f0_quantizer(speech_tokenizer_dir), FcpeF0(fcpe_weights))

    @property
    def min_samples(self) -> int:
        return max(MIN_SAMPLES, self.code_samples)

    def features(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav [N]`` (16 kHz) -> ``(f0 [T], vuv [T])`` before normalisation (:func:`f0_track`)."""
        return f0_track(self.fcpe.raw_f0(wav), wav.shape[0], interpolate=self.interpolate)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor | np.ndarray, *, source: str = "waveform") -> PitchCodes:
        """Codes of a 16 kHz mono waveform ``[N]``; ValueError (naming ``source``) if ``N < min_samples``."""
        wav = torch.as_tensor(wav, dtype=torch.float32)
        check_mono_samples(wav, self.min_samples, source=source, what="pitch tokens")
        f0, vuv = self.features(wav)
        x = normalize_f0(f0, vuv) if self.quantizer.normalize else f0
        codes = self.quantizer(torch.stack([x, vuv]).unsqueeze(0))[0]
        return PitchCodes(f0=f0.numpy(), vuv=vuv.numpy(), codes=[int(c) for c in codes],
                          code_samples=self.code_samples)


__all__ = [
    "F0Quantizer", "FcpeF0", "PitchCodes", "PitchTokenizer", "f0_track", "fcpe_weights_path", "import_torchfcpe",
    "interpolate_unvoiced", "load_f0_quantizer", "normalize_f0", "read_f0_config",
    "F0_CONFIG_FILE", "F0_MODEL_FILE", "F0_HOP_SAMPLES", "MIN_SAMPLES",
]
