"""mHuBERT (fairseq / SpiritLM checkpoint) -> ``transformers.HubertModel``, without fairseq.

SpiritLM's speech tokenizer reads ``speech_tokenizer/hubert_25hz/mhubert_base_25hz.pt`` in one of
two layouts, both accepted by :func:`read_hubert_checkpoint`:

- **converted** (SpiritLM's default): ``{model_cfg, task_cfg, model_weight, dictionaries_symbols}``,
  plain dicts and tensors, loaded with ``weights_only=True``;
- **fairseq**: ``{cfg: {model, task}}`` or ``{args}``, plus ``model`` and ``task_state``. These pickle
  fairseq classes (``Dictionary``, an ``argparse.Namespace``, omegaconf containers), which
  :mod:`spiritlens.checkpoints.pickle_safe` replaces by inert stand-ins from its allow-list; any
  other global in the file is refused with one line naming it (nothing in a file is ever run).

The HF config is built from the checkpoint's own fields (the conv stack comes
from ``conv_feature_layers``, never assumed), the fairseq keys are renamed by :func:`hf_key`, and
the weights are loaded strictly: a missing, unused or wrongly shaped weight is an error naming the
key (and both shapes). Features are HF ``hidden_states[output_layer]`` (SpiritLM's 1-based
``output_layer=11``), i.e. the output of transformer layer ``output_layer`` before any final norm,
which is what fairseq's ``extract_features(output_layer=11)`` returns.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spiritlens._io import MAX_CONFIG_BYTES, read_json
from spiritlens.checkpoints import schema
from spiritlens.checkpoints.pickle_safe import load_checkpoint, to_plain
from spiritlens.checkpoints.validate import check_finite, check_state_dict

HUBERT_FILE = Path("hubert_25hz") / "mhubert_base_25hz.pt"
DEFAULT_OUTPUT_LAYER = 11  # SpiritLM's spiritlm_hubert(): hubert_layer=11 (1-based)
NORMALIZE_EPS = 1e-5  # F.layer_norm's default, as SpiritLM's HubertTokenizer (HF's extractor uses 1e-7)

# fairseq HubertConfig defaults for the fields we read (a converted model_cfg normally has them all).
_FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "conv_pos_batch_norm": False,
    "pos_conv_depth": 1,
    "mask_prob": 0.65,
    "mask_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
}
_TASK_DEFAULTS: dict[str, Any] = {"sample_rate": 16_000, "normalize": False}
# fairseq activation name -> transformers ACT2FN name
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu", "tanh": "tanh",
                "linear": "linear", "swish": "swish"}
# fairseq keys with no HF counterpart (pre-training heads), dropped on conversion.
_DROPPED = re.compile(r"^(label_embs_concat|final_proj\..*|target_glu\..*)$")
_KEY_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$"),
     r"feature_extractor.conv_layers.\1.conv.\2"),
    (re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)$"),
     r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (re.compile(r"^layer_norm\.(weight|bias)$"), r"feature_projection.layer_norm.\1"),
    (re.compile(r"^post_extract_proj\.(weight|bias)$"), r"feature_projection.projection.\1"),
    (re.compile(r"^encoder\.pos_conv\.0\.bias$"), r"encoder.pos_conv_embed.conv.bias"),
    (re.compile(r"^encoder\.pos_conv\.0\.weight_g$"), r"encoder.pos_conv_embed.conv.weight_g"),
    (re.compile(r"^encoder\.pos_conv\.0\.weight_v$"), r"encoder.pos_conv_embed.conv.weight_v"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$"),
     r"encoder.layers.\1.attention.\2_proj.\3"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$"),
     r"encoder.layers.\1.layer_norm.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$"),
     r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$"),
     r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (re.compile(r"^mask_emb$"), r"masked_spec_embed"),
]
# torch's parametrized weight norm stores g and v under these names.
_WEIGHT_NORM_PARAMETRIZED = {"weight_g": "parametrizations.weight.original0",
                             "weight_v": "parametrizations.weight.original1"}


@dataclass
class HubertCheckpoint:
    """An mHuBERT checkpoint as read from disk: configs as plain dicts, fairseq-keyed weights."""

    model_cfg: dict[str, Any]
    task_cfg: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    layout: str  # "converted" or "fairseq"
    source: str
    dictionaries_symbols: list = field(default_factory=list)

    def cfg(self, name: str) -> Any:
        return self.model_cfg.get(name, _FAIRSEQ_DEFAULTS.get(name))

    @property
    def conv_layers(self) -> list[tuple[int, int, int]]:
        """``[(dim, kernel, stride), ...]`` of the conv feature extractor."""
        return parse_conv_layers(self.cfg("conv_feature_layers"), source=self.source)

    @property
    def sample_rate(self) -> int:
        return int(self.task_cfg.get("sample_rate", _TASK_DEFAULTS["sample_rate"]))

    @property
    def normalize(self) -> bool:
        return bool(self.task_cfg.get("normalize", _TASK_DEFAULTS["normalize"]))


def read_hubert_checkpoint(path: str | Path) -> HubertCheckpoint:
    """Read an mHuBERT ``.pt`` in SpiritLM's converted layout or as a raw fairseq checkpoint."""
    path = Path(path)
    states = load_checkpoint(path, "mHuBERT")
    if not isinstance(states, dict):
        raise ValueError(f"{path}: not an mHuBERT checkpoint (top level is {type(states).__name__}, not a dict)")
    if "model_weight" in states:
        missing = [k for k in ("model_cfg", "model_weight") if k not in states]
        if missing:
            raise ValueError(f"{path}: converted mHuBERT checkpoint lacks {', '.join(missing)}")
        model_cfg, task_cfg = states["model_cfg"], states.get("task_cfg") or {}
        weights, layout = states["model_weight"], "converted"
        symbols = states.get("dictionaries_symbols") or []
    elif "model" in states and ("cfg" in states or "args" in states):
        cfg = to_plain(states.get("cfg"), source=str(path))
        if isinstance(cfg, dict) and cfg.get("model") is not None:
            model_cfg, task_cfg = cfg["model"], cfg.get("task") or {}
        elif states.get("args") is not None:
            model_cfg = task_cfg = to_plain(states["args"], source=str(path))
        else:
            raise ValueError(f"{path}: fairseq checkpoint has neither cfg.model nor args")
        weights, layout = states["model"], "fairseq"
        task_state = to_plain(states.get("task_state"), source=str(path))
        dictionaries = (task_state.get("dictionaries") if isinstance(task_state, dict) else None) or []
        symbols = [d.get("symbols") if isinstance(d, dict) else None for d in dictionaries] \
            if isinstance(dictionaries, (list, tuple)) else []
    else:
        raise ValueError(f"{path}: not an mHuBERT checkpoint: expected keys model_cfg/model_weight "
                         f"(converted) or cfg|args/model (fairseq), found {sorted(states)[:8]}")
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: mHuBERT weights are a {type(weights).__name__}, not a mapping of tensors")
    check_hubert_cfg(model_cfg, task_cfg, str(path))
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: mHuBERT weight {schema.short(bad[0])} is not a tensor")
    return HubertCheckpoint(model_cfg=dict(model_cfg), task_cfg=dict(task_cfg), state_dict=dict(weights),
                            layout=layout, source=str(path), dictionaries_symbols=list(symbols))


def check_hubert_cfg(model_cfg: Any, task_cfg: Any, source: str) -> None:
    """``model_cfg``/``task_cfg`` against :data:`spiritlens.checkpoints.schema.HUBERT_MODEL_CFG` and
    ``HUBERT_TASK_CFG`` (types, HuBERT X-Large's sizes as limits), the heads and positional-conv groups
    dividing the width, and ``conv_feature_layers`` parsed within its limits; one-line ValueError
    naming the file and the field."""
    for name, cfg, spec in (("model_cfg", model_cfg, schema.HUBERT_MODEL_CFG),
                            ("task_cfg", task_cfg, schema.HUBERT_TASK_CFG)):
        if not isinstance(cfg, dict):
            raise ValueError(f"{source}: {name} is a {type(cfg).__name__}, expected a mapping of fields")
        schema.check(cfg, spec, source, prefix=name + ".")
    width = model_cfg.get("encoder_embed_dim", _FAIRSEQ_DEFAULTS["encoder_embed_dim"])
    for key in ("encoder_attention_heads", "conv_pos_groups"):
        value = model_cfg.get(key, _FAIRSEQ_DEFAULTS[key])
        if width % value:
            schema.fail(source, f"model_cfg.{key}", value, f"a divisor of encoder_embed_dim {width}")
    parse_conv_layers(model_cfg.get("conv_feature_layers", _FAIRSEQ_DEFAULTS["conv_feature_layers"]), source=source)


def parse_conv_layers(spec: str | list, *, source: str = "mHuBERT") -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` (e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``) as triples.

    Evaluated safely (integer, list and tuple literals, ``+`` and ``*`` only), never with ``eval``,
    and bounded while it is evaluated: no list longer than ``MAX_CONV_LAYERS`` (16; SpiritLM's has 8)
    is ever built, and every dim, kernel and stride must lie within the limits of
    :mod:`spiritlens.checkpoints.schema` (1024, 128, 16). ValueError naming ``source`` otherwise.
    """
    limit = schema.MAX_CONV_LAYERS

    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > limit:
                raise ValueError(f"more than {limit} items")
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Mult):
                count, seq = (right, left) if isinstance(left, (list, tuple)) else (left, right)
                if isinstance(seq, (list, tuple)) and isinstance(count, int) and len(seq) * max(count, 0) > limit:
                    raise ValueError(f"a list of {len(seq)} x {count} items, more than {limit} layers")
                if isinstance(left, int) and isinstance(right, int) and abs(left * right) > 10**6:
                    raise ValueError("a number above 10**6")
            elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)) and len(left) + len(right) > limit:
                raise ValueError(f"more than {limit} layers")
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(type(node).__name__)

    try:
        if isinstance(spec, str):
            if len(spec) > 1000:
                raise ValueError(f"{len(spec)} characters, more than 1000")
            layers = value(ast.parse(spec, mode="eval").body)
        else:
            layers = list(spec)
        if len(layers) > limit:
            raise ValueError(f"{len(layers)} layers, more than {limit}")
        triples = [tuple(int(x) for x in layer) for layer in layers]
        if not triples or any(len(t) != 3 or min(t) <= 0 for t in triples):
            raise ValueError("not (dim, kernel, stride) triples")
        for dim, kernel, stride in triples:
            if dim > schema.MAX_CONV_DIM or kernel > schema.MAX_CONV_KERNEL or stride > schema.MAX_CONV_STRIDE:
                raise ValueError(f"layer {(dim, kernel, stride)} beyond the limits: dim <= {schema.MAX_CONV_DIM}, "
                                 f"kernel <= {schema.MAX_CONV_KERNEL}, stride <= {schema.MAX_CONV_STRIDE}")
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as error:
        raise ValueError(f"{source}: cannot parse conv_feature_layers {schema.short(spec)} ({error})") from None
    return triples  # type: ignore[return-value]


def conv_hop_samples(conv_layers: list[tuple[int, int, int]]) -> int:
    """Samples between consecutive frames: the product of the strides (640 for 25 Hz mHuBERT)."""
    return math.prod(stride for _, _, stride in conv_layers)


def conv_receptive_field(conv_layers: list[tuple[int, int, int]]) -> int:
    """Samples one frame sees, i.e. the shortest input giving one frame (720 for 25 Hz mHuBERT)."""
    field_ = 1
    for _, kernel, stride in reversed(conv_layers):
        field_ = (field_ - 1) * stride + kernel
    return field_


def conv_num_frames(num_samples: int, conv_layers: list[tuple[int, int, int]]) -> int:
    """Frames the conv stack gives for ``num_samples`` samples (HF ``_get_feat_extract_output_lengths``)."""
    length = num_samples
    for _, kernel, stride in conv_layers:
        length = (length - kernel) // stride + 1 if length >= kernel else 0
    return max(length, 0)


def hubert_config(checkpoint: HubertCheckpoint):
    """``transformers.HubertConfig`` equivalent to the checkpoint's fairseq ``model_cfg`` (dropouts 0)."""
    from transformers import HubertConfig

    source, cfg = checkpoint.source, checkpoint.cfg
    unsupported = []
    if cfg("layer_type") != "transformer":
        unsupported.append(f"layer_type={cfg('layer_type')!r}")
    if cfg("conv_pos_batch_norm"):
        unsupported.append("conv_pos_batch_norm=True")
    if int(cfg("pos_conv_depth") or 1) > 1:
        unsupported.append(f"pos_conv_depth={cfg('pos_conv_depth')}")
    if cfg("extractor_mode") not in ("default", "layer_norm"):
        unsupported.append(f"extractor_mode={cfg('extractor_mode')!r}")
    if cfg("activation_fn") not in _ACTIVATIONS:
        unsupported.append(f"activation_fn={cfg('activation_fn')!r}")
    if unsupported:
        raise ValueError(f"{source}: unsupported mHuBERT configuration: {', '.join(unsupported)}")
    layers = checkpoint.conv_layers
    return HubertConfig(
        hidden_size=int(cfg("encoder_embed_dim")),
        num_hidden_layers=int(cfg("encoder_layers")),
        num_attention_heads=int(cfg("encoder_attention_heads")),
        intermediate_size=int(cfg("encoder_ffn_embed_dim")),
        hidden_act=_ACTIVATIONS[cfg("activation_fn")],
        conv_dim=[d for d, _, _ in layers],
        conv_kernel=[k for _, k, _ in layers],
        conv_stride=[s for _, _, s in layers],
        conv_bias=bool(cfg("conv_bias")),
        feat_extract_norm="group" if cfg("extractor_mode") == "default" else "layer",
        feat_extract_activation="gelu",
        num_conv_pos_embeddings=int(cfg("conv_pos")),
        num_conv_pos_embedding_groups=int(cfg("conv_pos_groups")),
        do_stable_layer_norm=bool(cfg("layer_norm_first")),
        feat_proj_layer_norm=True,
        layer_norm_eps=1e-5,
        hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0,
        # Kept so that mask_emb has a home (masked_spec_embed); masking only happens in training.
        mask_time_prob=float(cfg("mask_prob") or 0.0) or 0.05,
        mask_time_length=int(cfg("mask_length") or 10),
        mask_feature_prob=float(cfg("mask_channel_prob") or 0.0),
        mask_feature_length=int(cfg("mask_channel_length") or 10),
    )


def hf_key(fairseq_key: str) -> str | None:
    """The HF ``HubertModel`` name of a fairseq key; None if dropped; the key itself if unknown."""
    if _DROPPED.match(fairseq_key):
        return None
    for pattern, replacement in _KEY_RULES:
        if pattern.match(fairseq_key):
            return pattern.sub(replacement, fairseq_key)
    return fairseq_key


def convert_state_dict(checkpoint: HubertCheckpoint, expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    """fairseq weights renamed for a HF model whose parameters are ``expected`` (meta tensors, or
    shapes); strict.

    Raises one ValueError naming the file and the first missing, unused or wrongly shaped weights
    (:func:`spiritlens.checkpoints.validate.check_state_dict`).
    """
    source = checkpoint.source
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unused = []
    for key, tensor in checkpoint.state_dict.items():
        name = hf_key(key)
        if name is None:
            continue
        for legacy, parametrized in _WEIGHT_NORM_PARAMETRIZED.items():
            if name.endswith(legacy) and name not in expected:
                name = name[: -len(legacy)] + parametrized
        if name not in expected:
            unused.append(key)
            continue
        converted[name], origin[name] = tensor, key
    proj = "feature_projection.projection."
    shape = tuple(getattr(expected.get(proj + "weight"), "shape", expected.get(proj + "weight")) or ())
    if shape and proj + "weight" not in converted and "post_extract_proj.weight" not in \
            checkpoint.state_dict and shape[0] == shape[1]:
        # fairseq has no post_extract_proj when conv dim == hidden size: the identity.
        converted[proj + "weight"] = torch.eye(shape[0])
        converted[proj + "bias"] = torch.zeros(shape[0])
    found = {**converted, **{key: checkpoint.state_dict[key] for key in unused}}
    check_state_dict(expected, found, source=source, what="mHuBERT",
                     label=lambda name: name if origin.get(name, name) == name else f"{origin[name]} (HF {name})")
    return converted


def build_hubert_model(checkpoint: HubertCheckpoint, *, dtype: torch.dtype = torch.float32):
    """A ``transformers.HubertModel`` (eval mode, eager attention) holding the checkpoint's weights."""
    from transformers import HubertModel

    config = hubert_config(checkpoint)
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = HubertModel(config)
    expected = model.state_dict()  # meta tensors: names, shapes and dtypes, no memory
    weights = convert_state_dict(checkpoint, expected)
    check_finite(checkpoint.state_dict.items(), checkpoint.source)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    return model.to(dtype).eval().requires_grad_(False)


class HubertFeatures:
    """mHuBERT as a frame-level feature extractor.

    ``features(samples)`` maps ``[N]`` samples at ``sample_rate`` to ``[frames, hidden]`` features
    (HF ``hidden_states[output_layer]``), with SpiritLM's optional whole-input ``layer_norm``.
    """

    def __init__(self, model, *, conv_layers: list[tuple[int, int, int]], output_layer: int = DEFAULT_OUTPUT_LAYER,
                 normalize: bool = False, sample_rate: int = 16_000, source: str = "mHuBERT"):
        n_layers = int(model.config.num_hidden_layers)
        if not isinstance(output_layer, int) or not 1 <= output_layer <= n_layers:
            raise ValueError(f"{source}: output_layer must be in 1..{n_layers} (1-based, as SpiritLM's "
                             f"hubert_layer), got {output_layer!r}")
        self.model = model
        self.conv_layers = list(conv_layers)
        self.output_layer = output_layer
        self.normalize = normalize
        self.sample_rate = int(sample_rate)
        self.source = source

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, output_layer: int = DEFAULT_OUTPUT_LAYER,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "HubertFeatures":
        """Load a SpiritLM/fairseq ``mhubert_base_25hz.pt`` (either layout)."""
        checkpoint = read_hubert_checkpoint(path)
        model = build_hubert_model(checkpoint, dtype=dtype).to(device)
        return cls(model, conv_layers=checkpoint.conv_layers, output_layer=output_layer,
                   normalize=checkpoint.normalize, sample_rate=checkpoint.sample_rate, source=checkpoint.source)

    @classmethod
    def from_hf_dir(cls, directory: str | Path, *, output_layer: int = DEFAULT_OUTPUT_LAYER,
                    device: str | torch.device = "cpu") -> "HubertFeatures":
        """Load a directory written by :func:`save_hf_dir` (``config.json`` + ``preprocessor_config.json``)."""
        from transformers import HubertModel

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no config.json (not a transformers model directory)")
        config = read_json(directory / "config.json", "mHuBERT config", max_bytes=MAX_CONFIG_BYTES)
        schema.check(config, {**schema.WAV2VEC2_CONFIG, "model_type": schema.Str("hubert")},
                     f"mHuBERT config {directory / 'config.json'}")
        model = HubertModel.from_pretrained(str(directory), attn_implementation="eager").to(device).eval()
        check_finite(model.named_parameters(), str(directory))
        pre_path = directory / "preprocessor_config.json"
        pre = read_json(pre_path, "feature extractor config", max_bytes=MAX_CONFIG_BYTES) if pre_path.is_file() else {}
        schema.check(pre, {"do_normalize": schema.Bool(), "sampling_rate": schema.HUBERT_TASK_CFG["sample_rate"]},
                     f"feature extractor config {pre_path}")
        layers = list(zip(model.config.conv_dim, model.config.conv_kernel, model.config.conv_stride))
        return cls(model.requires_grad_(False), conv_layers=layers, output_layer=output_layer,
                   normalize=bool(pre.get("do_normalize", False)),
                   sample_rate=int(pre.get("sampling_rate", 16_000)), source=str(directory))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def hop_samples(self) -> int:
        return conv_hop_samples(self.conv_layers)

    @property
    def receptive_field_samples(self) -> int:
        return conv_receptive_field(self.conv_layers)

    @property
    def frame_seconds(self) -> float:
        return self.hop_samples / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        return conv_num_frames(num_samples, self.conv_layers)

    @torch.inference_mode()
    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """``[N]`` waveform (``N >= receptive_field_samples``) -> ``[frames, hidden]`` float features."""
        if samples.dim() != 1:
            raise ValueError(f"{self.source}: expected a 1-D waveform, got shape {list(samples.shape)}")
        if samples.shape[0] < self.receptive_field_samples:
            raise ValueError(f"{self.source}: {samples.shape[0]} samples are fewer than the receptive field "
                             f"of the conv stack ({self.receptive_field_samples} samples)")
        parameter = next(self.model.parameters())
        x = samples.to(device=parameter.device, dtype=parameter.dtype).view(1, -1)
        if self.normalize:
            x = F.layer_norm(x, x.shape, eps=NORMALIZE_EPS)
        out = self.model(x, output_hidden_states=True)
        return out.hidden_states[self.output_layer][0].float()

    def save_hf_dir(self, directory: str | Path) -> Path:
        """Write a transformers directory: the model plus a ``preprocessor_config.json``.

        The feature extractor records ``do_normalize`` and the sample rate; note that HF's extractor
        normalises with eps 1e-7 while SpiritLM uses 1e-5 (this class always uses 1e-5).
        """
        from transformers import Wav2Vec2FeatureExtractor

        directory = Path(directory)
        self.model.save_pretrained(str(directory))
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=self.sample_rate, padding_value=0.0,
                                 do_normalize=self.normalize,
                                 return_attention_mask=False).save_pretrained(str(directory))
        return directory
