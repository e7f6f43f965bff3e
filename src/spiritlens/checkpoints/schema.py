"""What each config file spiritlens reads may hold: field specs, and one check before anything is built.

A config is a description of sizes, and every size is memory or time: an F0 VQ-VAE ``config.yaml``
with ``width: 1000000`` asks for terabytes, ``depth: 3000000`` for a loop that never ends, a
``conv_feature_layers`` string for a list of 1e11 layers. So each file kind has a declarative
description here (:class:`Field`: type, range, required or not) and :func:`check` compares a parsed
document with it before anything is built from it. The first problem is one ValueError naming the
file, the field, the value and what is allowed::

    …/vqvae_f0_quantizer/config.yaml: encoder_params.width = 1000000 is not an integer in 1..1024

The limits are set from what the format's real models use, with room (sources beside each): a
config beyond them describes no model spiritlens can meet. Fields a reader does not use are not
checked (configs carry many). Cross-field rules (heads dividing the width, list lengths agreeing)
are in the readers, through :func:`fail`.

Schemas: :data:`LLAMA_CONFIG` (model ``config.json``), :data:`HUBERT_MODEL_CFG` and
:data:`HUBERT_TASK_CFG` (mHuBERT ``model_cfg``/``task_cfg``), :data:`QUANTIZER_CFG` (the linear
quantizer's ``model_cfg``), :data:`KMEANS` (k-means quantizer files), :data:`F0_VQVAE_CONFIG`
(``vqvae_f0_quantizer/config.yaml``), :data:`STYLE_CONFIG` (``style_encoder_w2v2/config.json``) and
:data:`WAV2VEC2_CONFIG` (a transformers HuBERT/wav2vec2 directory),
:data:`KNOWN_RECORD` (one Known record), and :data:`TOKENIZER_FILES` (a model directory's tokenizer
and generation JSONs, :func:`check_tokenizer_file`).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import dataclass, replace
from typing import Any, Mapping

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4
_REPR.maxlong = 40


def short(value: Any) -> str:
    """A bounded ``repr`` for messages (deep, long or self-containing values stay one short line)."""
    return _REPR.repr(value)


@dataclass(frozen=True)
class Field:
    """One field: ``kind`` ``"int"``, ``"float"`` (ints accepted), ``"bool"``, ``"str"``, ``"list"``
    or ``"dict"``; ``low``/``high`` bound a number (inclusive; ``open_low`` makes ``low`` exclusive) or
    the length of a string or list; ``choices`` the values a string may take; ``items`` the spec of a
    list's elements; ``fields`` the specs of a mapping's keys; ``nullable`` allows ``null``/``None``."""

    kind: str
    required: bool = False
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple | None = None
    nullable: bool = False
    items: "Field | None" = None
    fields: Mapping[str, "Field"] | None = None
    listable: bool = False  # an "int" that may also be a list of 1..8 such ints


    def allowed(self) -> str:
        """What the field may hold, in words: ``an integer in 1..1024``."""
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a finite number"
            text = noun + _range(self.low, self.high, self.open_low)
            text += " (or a list of 1..8 of them)" if self.listable else ""
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = ("one of " + ", ".join(repr(c) for c in self.choices)) if self.choices else \
                "a string" + (f" of at most {int(self.high)} characters" if self.high is not None else "")
        elif self.kind == "list":
            if self.high is None:
                count = ""
            elif self.low is None:
                count = f" of at most {_num(self.high)}"
            else:
                count = f" of {_num(self.low)}" + ("" if self.low == self.high else f"..{_num(self.high)}")
            text = f"a list{count} " + (_plural(self.items.allowed()) if self.items else "items")
        else:
            text = "a mapping"
        return text + (" or null" if self.nullable else "")


def _range(low, high, open_low: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if open_low else '>='} {_num(low)}"
    if low is None:
        return f" <= {_num(high)}"
    if open_low:
        return f" > {_num(low)} and <= {_num(high)}"
    return f" equal to {_num(low)}" if low == high else f" in {_num(low)}..{_num(high)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _plural(text: str) -> str:
    for single, many in (("an integer", "integers"), ("a finite number", "finite numbers"), ("a string", "strings"),
                         ("a list", "lists"), ("a mapping", "mappings"), ("one of", "values among")):
        if text.startswith(single):
            return many + text[len(single):]
    return text


def fail(source: str, name: str, value: Any, allowed: str) -> None:
    """Raise the one-line error of this module: ``<file>: <field> = <value> is not <allowed>``."""
    raise ValueError(f"{source}: {name} = {short(value)} is not {allowed}")


def check(document: Any, schema: Mapping[str, Field], source: str, *, prefix: str = "") -> Any:
    """Check ``document`` (a parsed JSON/YAML/pickled config) against ``schema``; returns it unchanged.

    Raises one ValueError naming ``source`` (the file), the dotted field name, the value and what
    is allowed, for the first field that is missing (``required``), of the wrong type, out of range
    or not one of its choices; a document that is not a mapping is refused whole. Keys not in the
    schema are not looked at.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'the file'} is a {type(document).__name__}, "
                         "expected a mapping of fields")
    for key, spec in schema.items():
        name = prefix + key
        if key not in document:
            if spec.required:
                raise ValueError(f"{source}: {name} is missing ({spec.allowed()})")
            continue
        check_value(document[key], spec, source, name)
    return document


def check_value(value: Any, spec: Field, source: str, name: str) -> None:
    """Check one value against its :class:`Field` (see :func:`check`)."""
    if value is None:
        if not spec.nullable:
            fail(source, name, value, spec.allowed())
        return
    kind = spec.kind
    if spec.listable and isinstance(value, (list, tuple)):
        if not 1 <= len(value) <= 8:
            fail(source, name, value, spec.allowed())
        for i, item in enumerate(value):
            check_value(item, replace(spec, listable=False, nullable=False), source, f"{name}[{i}]")
        return
    if kind in ("int", "float"):  # numpy scalars (pickled configs) count; bools do not
        number = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if kind == "float":
            number = number or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                and math.isfinite(value))
        if not number or not _within(value, spec.low, spec.high, spec.open_low):
            fail(source, name, value, spec.allowed())
    elif kind == "bool":
        if not isinstance(value, bool):
            fail(source, name, value, spec.allowed())
    elif kind == "str":
        if not isinstance(value, str) or (spec.choices is not None and value not in spec.choices) or \
                (spec.high is not None and len(value) > spec.high):
            fail(source, name, value, spec.allowed())
    elif kind == "list":
        if not isinstance(value, (list, tuple)) or not _within(len(value), spec.low, spec.high, False):
            fail(source, name, value, spec.allowed())
        if spec.items is not None:
            for i, item in enumerate(value):
                check_value(item, spec.items, source, f"{name}[{i}]")
    elif kind == "dict":
        if not isinstance(value, Mapping):
            fail(source, name, value, spec.allowed())
        if spec.fields is not None:
            check(value, spec.fields, source, prefix=name + ".")
    else:  # pragma: no cover - a schema bug
        raise TypeError(f"unknown field kind {kind!r}")


def _within(value, low, high, open_low: bool) -> bool:
    if low is not None and (value <= low if open_low else value < low):
        return False
    return high is None or value <= high


def Int(low=None, high=None, **kw) -> Field:  # noqa: N802 - spec constructors read like types
    return Field("int", low=low, high=high, **kw)


def Float(low=None, high=None, **kw) -> Field:  # noqa: N802
    return Field("float", low=low, high=high, **kw)


def Bool(**kw) -> Field:  # noqa: N802
    return Field("bool", **kw)


def Str(*choices, high=None, **kw) -> Field:  # noqa: N802
    return Field("str", choices=choices or None, high=high, **kw)


def List(items: Field | None = None, low=None, high=None, **kw) -> Field:  # noqa: N802
    return Field("list", items=items, low=low, high=high, **kw)


def Dict(fields: Mapping[str, Field] | None = None, **kw) -> Field:  # noqa: N802
    return Field("dict", fields=fields, **kw)


# ---------------------------------------------------------------------------------------- Llama
#: Model ``config.json`` (``LlamaConfig``). Limits: the largest Llama, Llama-3.1-405B (hidden 16384,
#: 126 layers, 128 heads, 8 KV heads, FFN 53248, vocabulary 128256, context 131072); SpiritLM-7B is
#: Llama-2-7B (4096, 32, 32, 11008; vocabulary 32512/32768; context 4096). ``quantization_config`` is
#: refused by :func:`spiritlens.checkpoints.validate.read_config` (spiritlens loads plain weights).
LLAMA_CONFIG: dict[str, Field] = {
    "model_type": Str("llama"),
    "architectures": List(Str("LlamaForCausalLM"), 1, 1, nullable=True),
    "hidden_size": Int(1, 16384, required=True),
    "num_hidden_layers": Int(1, 126, required=True),
    "num_attention_heads": Int(1, 128, required=True),
    "num_key_value_heads": Int(1, 128, nullable=True),
    "head_dim": Int(1, 1024, nullable=True),
    "intermediate_size": Int(1, 53248, required=True),
    "vocab_size": Int(1, 262144, required=True),
    "max_position_embeddings": Int(1, 131072),
    "rms_norm_eps": Float(0, 1, open_low=True),
    "rope_theta": Float(0, 1e9, open_low=True),
    "rope_scaling": Dict(nullable=True),
    "hidden_act": Str("silu", "gelu", "gelu_new", "relu", "swish"),
    "tie_word_embeddings": Bool(),
    "attention_bias": Bool(),
    "mlp_bias": Bool(),
    "pretraining_tp": Int(1, 8),
    "bos_token_id": Int(0, 262144, nullable=True),
    "eos_token_id": Int(0, 262144, nullable=True, listable=True),  # Llama 3: a list of ids
    "pad_token_id": Int(0, 262144, nullable=True),
    "torch_dtype": Str("float32", "float16", "bfloat16", nullable=True),
    "dtype": Str("float32", "float16", "bfloat16", nullable=True),
}

# -------------------------------------------------------------------------------------- mHuBERT
#: fairseq HuBERT ``model_cfg`` fields the converter reads. Limits: HuBERT X-Large (48 layers,
#: width 1280, FFN 5120, 16 heads), the largest of the family; SpiritLM's mHuBERT-25Hz is base-sized
#: (12, 768, 3072, 12; conv 8 layers of 512, kernel <= 10, stride <= 5; positional conv 128 in 16 groups).
#: ``conv_feature_layers`` is bounded as text (at most 1000 characters) and as a list by
#: :data:`MAX_CONV_LAYERS`, :data:`MAX_CONV_DIM`, :data:`MAX_CONV_KERNEL`, :data:`MAX_CONV_STRIDE`.
HUBERT_MODEL_CFG: dict[str, Field] = {
    "encoder_layers": Int(1, 48),
    "encoder_embed_dim": Int(1, 1280),
    "encoder_ffn_embed_dim": Int(1, 5120),
    "encoder_attention_heads": Int(1, 16),
    "conv_feature_layers": Str(high=1000),
    "conv_bias": Bool(),
    "conv_pos": Int(1, 256),
    "conv_pos_groups": Int(1, 64),
    "layer_norm_first": Bool(),
    "pos_conv_depth": Int(1, 1),
    "mask_prob": Float(0, 1),
    "mask_length": Int(1, 1000),
    "mask_channel_prob": Float(0, 1),
    "mask_channel_length": Int(1, 1000),
}
MAX_CONV_LAYERS, MAX_CONV_DIM, MAX_CONV_KERNEL, MAX_CONV_STRIDE = 16, 1024, 128, 16
#: ``task_cfg``: every fairseq HuBERT/wav2vec2 model reads 16 kHz audio; 8-48 kHz is allowed (the
#: rate audio is resampled to, so a rate of 1 Hz would make 16000 times fewer samples, or more).
HUBERT_TASK_CFG: dict[str, Field] = {
    "sample_rate": Int(8000, 48000),
    "normalize": Bool(),
}

# ------------------------------------------------------------------------------------ quantizer
#: The linear quantizer's ``model_cfg``: SpiritLM's ``L11_quantizer_500.pt`` has 500 units over
#: 768-dim features; textless-lib's HuBERT k-means go up to 2000 units. Limits: 10000 units,
#: features as wide as HuBERT X-Large's 1280.
QUANTIZER_CFG: dict[str, Field] = {
    "vocab_size": Int(1, 10000, required=True),
    "dim": Int(1, 1280, required=True),
    "upstream_dim": Int(1, 1280, required=True),
}
#: A k-means quantizer: ``cluster_centers`` ``[K, d]`` numbers (checked by its reader), ``n_clusters`` K.
KMEANS: dict[str, Field] = {
    "n_clusters": Int(1, 10000),
}
MAX_KMEANS_CLUSTERS, MAX_FEATURE_DIM = 10000, 1280

# --------------------------------------------------------------------------------- F0 VQ-VAE
#: One level of the Jukebox-style encoder of SpiritLM's F0 VQ-VAE. Real values: speech-resynthesis's
#: F0 VQ-VAE (width 32, depth 4, m_conv 1.0, dilation growth 3, downs_t [4], strides_t [2], codes 128
#: wide); Jukebox (levels 3, width 32-64, depth 4, 2048 codes of 64). Limits: width 1024, depth 16,
#: 4 levels, 8 down steps of stride <= 8 per level, m_conv <= 8, dilation growth <= 8 (and the
#: largest dilation, growth ** (depth - 1), at most :data:`MAX_F0_DILATION`, and each level's
#: downsampling, the product of stride ** down, at most :data:`MAX_F0_DOWNSAMPLING`: SpiritLM's is 16).
_F0_BLOCK: dict[str, Field] = {
    "input_emb_width": Int(2, 2, required=True),
    "output_emb_width": Int(1, 1024, required=True),
    "levels": Int(1, 4, required=True),
    "downs_t": List(Int(0, 8, listable=True), 1, 4, required=True),
    "strides_t": List(Int(1, 8, listable=True), 1, 4, required=True),
    "width": Int(1, 1024, required=True),
    "depth": Int(1, 16, required=True),
    "m_conv": Float(0, 8, open_low=True, required=True),
    "dilation_growth_rate": Int(1, 8),
    "dilation_cycle": Int(1, 16, nullable=True),
    "zero_out": Bool(),
    "res_scale": Bool(),
    "reverse_decoder_dilation": Bool(),
}
MAX_F0_DILATION, MAX_F0_DOWNSAMPLING = 4096, 1024
#: ``vqvae_f0_quantizer/config.yaml``: SpiritLM's has 64 codes (``[Pi0]``..``[Pi63]``); limit 16384.
F0_VQVAE_CONFIG: dict[str, Field] = {
    "encoder_params": Dict(_F0_BLOCK, required=True),
    "vq_params": Dict({"l_bins": Int(1, 16384, required=True), "emb_width": Int(1, 1024, required=True),
                       "levels": Int(1, 4)}, required=True),
    "features": Str("f0_interp,vuv", "f0,vuv", "norm_f0_interp,vuv", "norm_f0,vuv", required=True),
    "speaker_norm": Bool(nullable=True),
}

# ------------------------------------------------------------------------------- style encoder
#: A transformers wav2vec2/HuBERT ``config.json`` (``Wav2Vec2Config``, ``HubertConfig``), and
#: ``style_encoder_w2v2/config.json`` (:data:`STYLE_CONFIG`). SpiritLM's style encoder is
#: wav2vec2-base (hidden 768, 12 layers, 12 heads, FFN 3072, conv 7 x 512, 100 labels). Limits:
#: wav2vec2-large / XLS-R 300M (1024, 24 layers, 16 heads, 4096), doubled in depth and FFN: 1280
#: wide (XLS-R 1B), 48 layers, 16 heads, FFN 5120; conv lists as :data:`HUBERT_MODEL_CFG`'s.
_CONV_LIST = {"conv_dim": List(Int(1, MAX_CONV_DIM), 1, MAX_CONV_LAYERS),
              "conv_kernel": List(Int(1, MAX_CONV_KERNEL), 1, MAX_CONV_LAYERS),
              "conv_stride": List(Int(1, MAX_CONV_STRIDE), 1, MAX_CONV_LAYERS)}
WAV2VEC2_CONFIG: dict[str, Field] = {
    "model_type": Str("wav2vec2", "hubert"),
    "hidden_size": Int(1, 1280, required=True),
    "num_hidden_layers": Int(1, 48, required=True),
    "num_attention_heads": Int(1, 16, required=True),
    "intermediate_size": Int(1, 5120, required=True),
    **{name: replace(spec, required=True) for name, spec in _CONV_LIST.items()},
    "num_conv_pos_embeddings": Int(1, 256),
    "num_conv_pos_embedding_groups": Int(1, 64),
    "num_labels": Int(1, 10000),
    "classifier_proj_size": Int(1, 1280),
    "feat_extract_norm": Str("group", "layer"),
    "do_stable_layer_norm": Bool(),
    "conv_bias": Bool(),
    "use_weighted_layer_sum": Bool(),
    "num_feat_extract_layers": Int(1, MAX_CONV_LAYERS),
    "vocab_size": Int(1, 262144, nullable=True),
    "layer_norm_eps": Float(0, 1, open_low=True),
    "hidden_act": Str("gelu", "gelu_new", "relu", "swish", "silu", "tanh"),
    "feat_extract_activation": Str("gelu", "gelu_new", "relu", "swish", "silu", "tanh"),
    "id2label": Dict(nullable=True),
    "label2id": Dict(nullable=True),
}
STYLE_CONFIG: dict[str, Field] = {**WAV2VEC2_CONFIG, "model_type": Str("wav2vec2")}

# ---------------------------------------------------------------------------------------- Known
#: One Known record (ROME's ``known_1000.json``): ids 0..1208, prompts up to 110 characters, subjects
#: up to 54, attributes up to 14 (measured on the file). Limits: ids below 10**9 (they name result
#: files), prompts 1000 characters, subjects and attributes 300.
KNOWN_RECORD: dict[str, Field] = {
    "known_id": Int(0, 10**9 - 1, required=True),
    "prompt": Str(high=1000, required=True),
    "subject": Str(high=300, required=True),
    "attribute": Str(high=300, required=True),
    "relation_id": Str(high=100, nullable=True),
    "template": Str(high=1000, nullable=True),
    "prediction": Str(high=1000, nullable=True),
}

# ------------------------------------------------------------------------------ tokenizer JSONs
#: The shapes transformers' tokenizer loading assumes of a model directory's JSON files: each a
#: mapping; a token a string or a mapping with a string ``content`` (an AddedToken); ids below 262144.
_TOKEN_ID = Int(0, 262144, nullable=True)
TOKENIZER_CONFIG: dict[str, Field] = {
    "added_tokens_decoder": Dict(nullable=True),
    "additional_special_tokens": List(nullable=True, high=100000),
    "add_bos_token": Bool(nullable=True),
    "add_eos_token": Bool(nullable=True),
    "legacy": Bool(nullable=True),
    "model_max_length": Float(1, 1e31),
    "sp_model_kwargs": Dict(nullable=True),
    "tokenizer_class": Str(high=100, nullable=True),
    "clean_up_tokenization_spaces": Bool(nullable=True),
}
SPECIAL_TOKENS_MAP: dict[str, Field] = {
    "additional_special_tokens": List(nullable=True, high=100000),
}
GENERATION_CONFIG: dict[str, Field] = {
    "bos_token_id": _TOKEN_ID,
    "pad_token_id": _TOKEN_ID,
    "max_length": Int(1, 10**6),
    "max_new_tokens": Int(1, 10**6, nullable=True),
}
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKENIZER_FILES = {"tokenizer_config.json": TOKENIZER_CONFIG, "special_tokens_map.json": SPECIAL_TOKENS_MAP,
                   "added_tokens.json": None, "generation_config.json": GENERATION_CONFIG}


def check_token(value: Any, source: str, name: str) -> None:
    """A tokenizer file's token: a string, or a mapping with a string ``content`` (an AddedToken)."""
    if not (isinstance(value, str) or (isinstance(value, Mapping) and isinstance(value.get("content"), str))):
        fail(source, name, value, "a token (a string, or a mapping with a string 'content')")


def check_tokenizer_file(document: Any, name: str, source: str) -> Any:
    """One of a model directory's tokenizer JSONs (``name``: a key of :data:`TOKENIZER_FILES`) against
    its schema, with special tokens, ``added_tokens_decoder`` entries and ``added_tokens.json``'s
    token -> id pairs checked too. Returns the document."""
    if name == "added_tokens.json":
        if not isinstance(document, Mapping):
            raise ValueError(f"{source}: the file is a {type(document).__name__}, expected a mapping of token -> id")
        for token, index in document.items():
            check_value(index, Int(0, 262144), source, f"[{short(token)}]")
        return document
    check(document, TOKENIZER_FILES[name], source)
    if name == "generation_config.json":
        eos = document.get("eos_token_id")
        ids = eos if isinstance(eos, list) and 1 <= len(eos) <= 16 else [eos]
        if eos is not None and not all(isinstance(e, int) and not isinstance(e, bool) and 0 <= e <= 262144
                                       for e in ids):
            fail(source, "eos_token_id", eos, "a token id in 0..262144, a list of 1..16 of them, or null")
        return document
    for key in SPECIAL_TOKEN_KEYS:
        if document.get(key) is not None:
            check_token(document[key], source, key)
    for i, token in enumerate(document.get("additional_special_tokens") or []):
        check_token(token, source, f"additional_special_tokens[{i}]")
    for index, token in (document.get("added_tokens_decoder") or {}).items():
        if not (isinstance(index, str) and index.isdigit() and len(index) <= 6):
            fail(source, "added_tokens_decoder key", index, "a token id in 0..999999 (as a string)")
        if not (isinstance(token, Mapping) and isinstance(token.get("content"), str)):
            fail(source, f"added_tokens_decoder[{index}]", token, "a mapping with a string 'content'")
    return document


# ------------------------------------------------------------------------------------ arguments
#: Noise samples per traced prompt: ROME and the paper use 10; each sample is one more copy of the
#: prompt in every corrupted and restored forward (200000 samples of a 7B model's prompt are ~16 GB).
MAX_SAMPLES = 1000


def check_samples(samples: int, name: str = "samples") -> int:
    """ValueError unless ``samples`` is at most :data:`MAX_SAMPLES` (the lower bound, >= 1, is the
    caller's own check); returns it."""
    if isinstance(samples, int) and samples > MAX_SAMPLES:
        raise ValueError(f"{name} must be at most {MAX_SAMPLES} (ROME uses 10), got {samples}")
    return samples


__all__ = ["MAX_SAMPLES", "check_samples", "Field", "check", "check_value", "check_token", "check_tokenizer_file", "fail", "short",
           "LLAMA_CONFIG", "HUBERT_MODEL_CFG", "HUBERT_TASK_CFG", "QUANTIZER_CFG", "KMEANS", "F0_VQVAE_CONFIG",
           "STYLE_CONFIG", "WAV2VEC2_CONFIG", "KNOWN_RECORD", "TOKENIZER_CONFIG", "SPECIAL_TOKENS_MAP", "GENERATION_CONFIG",
           "TOKENIZER_FILES", "MAX_CONV_LAYERS", "MAX_CONV_DIM", "MAX_CONV_KERNEL", "MAX_CONV_STRIDE",
           "MAX_F0_DILATION", "MAX_F0_DOWNSAMPLING", "MAX_KMEANS_CLUSTERS", "MAX_FEATURE_DIM"]
