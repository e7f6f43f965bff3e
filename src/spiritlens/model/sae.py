"""Sparse autoencoders saved by SAELens (versions 5 and 6), read without sae_lens, spliced into HookedSpiritLM.

SAELens needs TransformerLens < 4, so it cannot be installed beside spiritlens; its SAEs are
plain files, and this module reads them and computes them as SAELens' own classes do (checked
against SAELens 5.11 and 6.54 on files they wrote: ``tests/fixtures/sae/``, made by
``scripts/make_sae_fixtures.py``). A SAELens SAE folder holds ``cfg.json`` and
``sae_weights.safetensors``; a SAELens 6 training checkpoint also ``activation_scaler.json`` (and
``activation_whitening.safetensors``).

Architectures (``cfg.json`` ``architecture``), with ``sae_in`` the input after the steps below::

    standard  acts = f(sae_in @ W_enc + b_enc)
    jumprelu  acts = f(pre) * (pre > threshold),         pre = sae_in @ W_enc + b_enc
    topk      acts = the k largest of pre (ReLU'd), 0 elsewhere; with rescale_acts_by_decoder_norm
              the k are chosen on pre * ||W_dec[i]|| and decoding divides by ||W_dec[i]|| again
    gated     acts = (sae_in @ W_enc + b_gate > 0) * f(sae_in @ (W_enc * exp(r_mag)) + b_mag)
    recons    = acts @ W_dec + b_dec

``f`` is ReLU, or SAELens 5's ``activation_fn_str``: ``tanh-relu`` (``tanh(relu(x))``) or ``topk``
with ``activation_fn_kwargs.k`` (SAELens 5 also wrote TopK SAEs as ``standard`` ones so). Input
steps, in SAELens' order: cast to the SAE's dtype; ``hook_z`` SAEs (``reshape_activations:
hook_z``, or before SAELens 6 a hook name ending in ``hook_z``) flatten ``[..., n_heads, d_head]``
to ``[..., n_heads * d_head]`` and the output is unflattened back; ``normalize_activations``:
``none`` (or null), ``constant_norm_rescale`` (``x * sqrt(d_in) / ||x||``, undone on the output),
``layer_norm`` (``(x - mean) / (std + 1e-5)`` with the unbiased std, output ``* std + mean``);
``expected_average_only_in`` and ``covariance_whitening`` use the dataset statistics SAELens 6
stores in ``activation_scaler.json`` / ``activation_whitening.safetensors`` and are folded into
the weights at load time exactly as SAELens' ``fold_activation_norm_scaling_factor`` /
``fold_activation_whitening`` do (without those files they are refused: SAELens itself would
silently leave them out). Then ``sae_in = x - b_dec`` when ``apply_b_dec_to_input`` (default).

Everything else is refused in one ValueError line naming the file, the field and its value:
other architectures (``batchtopk`` and ``matryoshka_batchtopk`` training saves: SAELens' own
``save_inference_model`` writes them as ``jumprelu``; ``abstopk``, transcoders, ...), a
``hook_head_index``, a fine-tuning scaling factor, a ``cfg.json`` whose sizes, tensor names,
shapes or dtypes disagree with the weights, integer or non-finite weights.

Splicing (``model.saes(sae)``, a context manager, or :func:`splice`): a TransformerLens hook at
the SAE's hook point replaces the activation by the SAE's output (``use_error_term=True`` adds
back the error ``x - output`` as SAELens does, so the model's output is unchanged and the
features can be read). While spliced, ``model.run_with_cache`` adds to the cache, per SAE,
SAELens' hook values ``<hook>.hook_sae_input`` (the flattened, cast input),
``.hook_sae_acts_pre``, ``.hook_sae_acts_post`` (the features ``[batch, pos, d_sae]``),
``.hook_sae_recons`` (``acts @ W_dec + b_dec`` before the output steps), ``.hook_sae_output``
(what went on through the model) and ``.hook_sae_error`` (``x - output``). A spliced SAE is a hook
like any other: causal tracing applies it in every run (it takes the plain path).
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from spiritlens._io import read_json
from spiritlens.checkpoints.validate import check_finite, compare_shapes, tensor_shapes

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"  # SAELens 6 training checkpoints
WHITENING_FILE = "activation_whitening.safetensors"
ARCHITECTURES = ("standard", "gated", "jumprelu", "topk")
ACTIVATION_FNS = ("relu", "tanh-relu", "topk")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")  # computed at run time
FOLDED_NORMALIZATIONS = ("expected_average_only_in", "covariance_whitening")  # folded in at load time
DTYPES = {name: getattr(torch, name) for name in ("float32", "float64", "float16", "bfloat16")}
LAYER_NORM_EPS = 1e-5  # SAELens' layer_norm normalisation
SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output",
             "hook_sae_error")
_ENCODER = {"standard": ("b_enc",), "topk": ("b_enc",), "jumprelu": ("b_enc", "threshold"),
            "gated": ("b_gate", "b_mag", "r_mag")}


def parameter_shapes(architecture: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    """The tensors of a SAELens SAE of this architecture and their shapes."""
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    shapes.update({name: (d_sae,) for name in _ENCODER[architecture]})
    return shapes


class SAE(torch.nn.Module):
    """A sparse autoencoder at one hook point, computed as SAELens computes it (module docstring).

    Parameters ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, by
    architecture, ``b_enc [d_sae]`` (standard, topk, jumprelu), ``threshold [d_sae]`` (jumprelu),
    ``b_gate``, ``b_mag``, ``r_mag [d_sae]`` (gated, which has no ``b_enc``). ``activation_fn``:
    ``relu`` (default), ``tanh-relu`` or ``topk`` (the default for ``architecture="topk"``; needs
    ``k``). Build one with :func:`load_sae` or directly (e.g. to train it, then :meth:`save`).
    ValueError (one line) for what SAELens would not build or compute.
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor | None, W_dec: torch.Tensor, b_dec: torch.Tensor,
                 *, hook_name: str, architecture: str = "standard", threshold: torch.Tensor | None = None,
                 b_gate: torch.Tensor | None = None, b_mag: torch.Tensor | None = None,
                 r_mag: torch.Tensor | None = None, k: int | None = None, activation_fn: str | None = None,
                 rescale_acts_by_decoder_norm: bool = False, apply_b_dec_to_input: bool = True,
                 normalize_activations: str = "none", reshape_activations: str = "none", cfg: dict | None = None):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"SAE architecture {architecture!r} is not supported; use one of "
                             f"{', '.join(ARCHITECTURES)}")
        activation_fn = activation_fn or ("topk" if architecture == "topk" else "relu")
        if activation_fn not in ACTIVATION_FNS:
            raise ValueError(f"SAE activation_fn {activation_fn!r} is not supported; use one of "
                             f"{', '.join(ACTIVATION_FNS)}")
        if architecture == "topk" and activation_fn != "topk":
            raise ValueError(f"a topk SAE needs activation_fn 'topk', got {activation_fn!r}")
        d_in, d_sae = W_enc.shape
        if activation_fn == "topk" and (isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae):
            raise ValueError(f"a topk SAE needs k in 1..d_sae={d_sae}, got {k!r}")
        if rescale_acts_by_decoder_norm and architecture != "topk":
            raise ValueError(f"rescale_acts_by_decoder_norm applies to topk SAEs only, not {architecture!r}")
        if normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"SAE normalize_activations {normalize_activations!r} is not computed at run time; use "
                             f"one of {', '.join(NORMALIZATIONS)} (load_sae folds "
                             f"{' and '.join(FOLDED_NORMALIZATIONS)} into the weights from SAELens' statistics)")
        if reshape_activations not in ("none", "hook_z"):
            raise ValueError(f"SAE reshape_activations {reshape_activations!r} is not 'none' or 'hook_z'")
        if reshape_activations == "hook_z" and not hook_name.endswith("_z"):
            raise ValueError(f"reshape_activations 'hook_z' needs a hook_z hook point, not {hook_name!r}")
        given = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold,
                 "b_gate": b_gate, "b_mag": b_mag, "r_mag": r_mag}
        expected = parameter_shapes(architecture, d_in, d_sae)
        found = {name: tuple(t.shape) for name, t in given.items() if t is not None}
        mismatch = compare_shapes(expected, found, ignored=None)
        if mismatch:
            raise ValueError(f"{architecture} SAE parameters (W_enc is [{d_in}, {d_sae}]): {mismatch.describe()}")
        dtypes = {str(t.dtype).removeprefix("torch.") for t in given.values() if t is not None}
        if len(dtypes) != 1 or next(iter(dtypes)) not in DTYPES:
            raise ValueError(f"SAE parameters must share one float dtype ({', '.join(DTYPES)}), got {sorted(dtypes)}")
        for name in expected:
            setattr(self, name, torch.nn.Parameter(given[name]))
        self.hook_name = hook_name
        self.architecture = architecture
        self.activation_fn = activation_fn
        self.k = k
        self.rescale_acts_by_decoder_norm = bool(rescale_acts_by_decoder_norm)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.normalize_activations = normalize_activations
        self.reshape_activations = reshape_activations
        self.cfg = dict(cfg or {})

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # ------------------------------------------------------------------ computation
    def _flat_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the SAE's dtype, ``hook_z`` heads flattened: SAELens' ``hook_sae_input``."""
        if self.reshape_activations == "hook_z":
            if x.ndim < 2 or x.shape[-2] * x.shape[-1] != self.d_in:
                raise ValueError(f"hook_z SAE at {self.hook_name} has d_in {self.d_in} but the activation is "
                                 f"{list(x.shape)} (expected [..., n_heads, d_head] with n_heads * d_head = d_in)")
            x = x.flatten(-2)
        elif x.shape[-1] != self.d_in:
            raise ValueError(f"SAE at {self.hook_name} has d_in {self.d_in} but the activation there has width "
                             f"{x.shape[-1]}")
        return x.to(self.dtype)

    def _normalizer(self, flat: torch.Tensor):
        """The run-time normalisation of ``flat`` and its inverse (SAELens'
        ``run_time_activation_norm_fn_in`` / ``_out``)."""
        if self.normalize_activations == "constant_norm_rescale":
            coeff = self.d_in ** 0.5 / flat.norm(dim=-1, keepdim=True)
            return flat * coeff, lambda y: y / coeff
        if self.normalize_activations == "layer_norm":
            mu = flat.mean(dim=-1, keepdim=True)
            centred = flat - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + LAYER_NORM_EPS), lambda y: y * std + mu
        return flat, lambda y: y

    def _encode(self, x: torch.Tensor):
        flat = self._flat_input(x)
        normed, denormalize = self._normalizer(flat)
        sae_in = normed - self.b_dec if self.apply_b_dec_to_input else normed
        if self.architecture == "gated":
            pre = sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        else:
            pre = sae_in @ self.W_enc + self.b_enc
        hidden = pre * self.W_dec.norm(dim=-1) if self.rescale_acts_by_decoder_norm else pre
        if self.activation_fn == "topk":
            values, indices = hidden.topk(self.k, dim=-1, sorted=False)
            acts = torch.zeros_like(hidden).scatter(-1, indices, values.relu())
        elif self.activation_fn == "tanh-relu":
            acts = torch.tanh(torch.relu(hidden))
        else:
            acts = torch.relu(hidden)
        if self.architecture == "jumprelu":
            acts = acts * (pre > self.threshold).to(acts.dtype)
        elif self.architecture == "gated":
            acts = (sae_in @ self.W_enc + self.b_gate > 0).to(acts.dtype) * acts
        return flat, pre, acts, denormalize

    def _decode_flat(self, acts: torch.Tensor) -> torch.Tensor:
        if self.rescale_acts_by_decoder_norm:
            acts = acts * (1 / self.W_dec.norm(dim=-1))
        return acts @ self.W_dec + self.b_dec

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., d_sae]`` (SAELens' ``hook_sae_acts_pre``; gated: the magnitude
        path; topk with rescaling: before the decoder norms) of activations ``x``."""
        return self._encode(x)[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of ``x [..., d_in]`` (``hook_z``: ``[..., n_heads,
        d_head]``), in the SAE's dtype."""
        return self._encode(x)[2]

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction of feature activations ``acts [..., d_sae]``. ``x``, the input the
        features came from, is needed to undo a run-time normalisation (``constant_norm_rescale``,
        ``layer_norm``: ValueError without it) and gives a ``hook_z`` SAE's output its
        ``[..., n_heads, d_head]`` shape (without ``x``: ``[..., d_in]``)."""
        recons = self._decode_flat(acts)
        if x is None:
            if self.normalize_activations != "none":
                raise ValueError(f"decode needs the input x to undo normalize_activations "
                                 f"{self.normalize_activations!r}")
            return recons
        flat = self._flat_input(x)
        out = self._normalizer(flat)[1](recons)
        return out.unflatten(-1, x.shape[-2:]) if self.reshape_activations == "hook_z" else out

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """SAELens' hook values for input ``x``: ``hook_sae_input``, ``hook_sae_acts_pre``,
        ``hook_sae_acts_post``, ``hook_sae_recons`` (before the output steps) and
        ``hook_sae_output`` (``x``'s shape), all in the SAE's dtype."""
        flat, pre, acts, denormalize = self._encode(x)
        recons = self._decode_flat(acts)
        out = denormalize(recons)
        if self.reshape_activations == "hook_z":
            out = out.unflatten(-1, x.shape[-2:])
        return {"hook_sae_input": flat, "hook_sae_acts_pre": pre, "hook_sae_acts_post": acts,
                "hook_sae_recons": recons, "hook_sae_output": out}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The SAE's output for ``x`` (same shape and dtype as ``x``)."""
        return self.run(x)["hook_sae_output"].to(x.dtype)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` in SAELens' format (the pre-6 layout
        both SAELens 5 and 6 read: top-level ``hook_name``, ``activation_fn_str``; also
        ``metadata.hook_name``). Returns the folder."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        names = parameter_shapes(self.architecture, self.d_in, self.d_sae)
        save_file({name: getattr(self, name).detach().contiguous().cpu() for name in names},
                  str(path / WEIGHTS_FILE))
        cfg = {key: value for key, value in self.cfg.items() if key not in ("sae_lens_version",)}
        metadata = {k: v for k, v in (cfg.get("metadata") or {}).items() if k != "sae_lens_version"}
        cfg.update({"d_in": self.d_in, "d_sae": self.d_sae, "architecture": self.architecture,
                    "dtype": str(self.dtype).removeprefix("torch."), "device": "cpu",
                    "apply_b_dec_to_input": self.apply_b_dec_to_input,
                    "normalize_activations": self.normalize_activations,
                    "reshape_activations": self.reshape_activations, "hook_name": self.hook_name,
                    "hook_head_index": None, "activation_fn_str": self.activation_fn,
                    "activation_fn_kwargs": {"k": self.k} if self.activation_fn == "topk" else {},
                    "finetuning_scaling_factor": False,
                    "metadata": {**metadata, "hook_name": self.hook_name}})
        for key in ("k", "rescale_acts_by_decoder_norm", "activation_fn"):
            cfg.pop(key, None)
        if self.architecture == "topk":
            cfg.update(k=self.k, rescale_acts_by_decoder_norm=self.rescale_acts_by_decoder_norm)
        (path / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"SAE({self.hook_name!r}, {self.architecture}, d_in={self.d_in}, d_sae={self.d_sae})"


# ---------------------------------------------------------------------- reading cfg.json
def _sae_lens_6(cfg: dict, where: str) -> bool:
    """Whether SAELens treats ``cfg`` as a 6.x config (``sae_lens_version`` >= 6, top level or in
    ``metadata``); older configs (SAELens 5 writes only ``sae_lens_training_version``) get its
    pre-6 defaults."""
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    version = cfg.get("sae_lens_version") or metadata.get("sae_lens_version")
    if not version:
        return False
    match = re.match(r"v?(\d+)\.", str(version))
    if not match:
        raise ValueError(f"{where}: sae_lens_version {version!r} is not a version number")
    return int(match.group(1)) >= 6


def _field(cfg: dict, key: str, where: str, allowed, default):
    value = cfg.get(key)
    if value is None:  # absent or null: SAELens' default
        value = default
    if value not in allowed or isinstance(value, bool) != isinstance(default, bool):
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{where}: {key} {value!r} is not supported (supported: {shown})")
    return value


def read_cfg(cfg: dict, where: str) -> dict:
    """What a SAELens ``cfg.json`` asks for, as SAELens 5 / 6 read it: the keyword arguments of
    :class:`SAE` plus ``d_in``, ``d_sae``, ``dtype`` and ``normalize_activations`` (which may be a
    folded one). ``where`` names the file in the one-line ValueError for a field that is missing,
    malformed, contradictory or not supported."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(cfg).__name__}")
    v6 = _sae_lens_6(cfg, where)
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    names = {source[key] for source in (metadata, cfg) for key in ("hook_name", "hook_point")
             if isinstance(source.get(key), str)}
    if len(names) != 1:
        raise ValueError(f"{where}: " + (f"hook_name and metadata.hook_name disagree: {sorted(names)}" if names
                                         else "no hook_name (nor metadata.hook_name, hook_point)"))
    hook_name = names.pop()
    for key in ("hook_head_index", "hook_point_head_index"):
        if metadata.get(key) is not None or cfg.get(key) is not None:
            raise ValueError(f"{where}: {key} {metadata.get(key, cfg.get(key))!r} is not supported (an SAE on "
                             f"one head of {hook_name}; SAELens splices it only with its own activation store)")
    for key in ("hook_name_out", "hook_layer_out"):
        if metadata.get(key) is not None or cfg.get(key) is not None:
            raise ValueError(f"{where}: {key} is set: a transcoder, not an SAE, is not supported")
    sizes = {}
    for key in ("d_in", "d_sae"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
        sizes[key] = value
    dtype = cfg.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype.removeprefix("torch.") not in DTYPES:
        raise ValueError(f"{where}: dtype {dtype!r} is not supported (supported: {', '.join(DTYPES)})")
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise ValueError(f"{where}: apply_b_dec_to_input must be true or false, got {apply_b_dec!r}")
    normalize = cfg.get("normalize_activations", "none")
    if normalize is None:
        normalize = "none"
    elif isinstance(normalize, bool):  # SAELens < 3
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize not in NORMALIZATIONS + FOLDED_NORMALIZATIONS:
        raise ValueError(f"{where}: normalize_activations {normalize!r} is not supported (supported: none, null, "
                         f"{', '.join(NORMALIZATIONS[1:] + FOLDED_NORMALIZATIONS)})")
    if cfg.get("finetuning_scaling_factor"):
        raise ValueError(f"{where}: finetuning_scaling_factor {cfg['finetuning_scaling_factor']!r} is not supported "
                         "(SAELens 6 has no fine-tuning scale, and SAELens 5 cannot load the file it writes)")
    architecture = cfg.get("architecture", None if v6 else "standard")
    if architecture not in ARCHITECTURES:
        hint = (" (a BatchTopK SAE is read once saved with SAELens' save_inference_model, as a jumprelu SAE)"
                if architecture in ("batchtopk", "matryoshka_batchtopk") else "")
        raise ValueError(f"{where}: architecture {architecture!r} is not supported (supported: "
                         f"{', '.join(ARCHITECTURES)}){hint}")
    kwargs = {"architecture": architecture, "hook_name": hook_name, "apply_b_dec_to_input": apply_b_dec}
    if v6:
        # SAELens 6 reads no activation function from cfg.json: ReLU, TopK for topk (k default 100).
        reshape = _field(cfg, "reshape_activations", where, ("none", "hook_z"), "none")
        if architecture == "topk":
            kwargs["k"] = cfg.get("k", 100)
            kwargs["rescale_acts_by_decoder_norm"] = _field(cfg, "rescale_acts_by_decoder_norm", where,
                                                            (True, False), False)
    else:
        # SAELens 5: activation_fn_str (earlier activation_fn) with activation_fn_kwargs.
        activation = cfg.get("activation_fn_str", cfg.get("activation_fn"))
        if activation is None:
            activation = "topk" if architecture == "topk" else "relu"
        if activation not in ACTIVATION_FNS:
            raise ValueError(f"{where}: activation_fn_str {activation!r} is not supported (supported: "
                             f"{', '.join(ACTIVATION_FNS)})")
        if architecture == "topk" and activation != "topk":
            raise ValueError(f"{where}: architecture 'topk' with activation_fn_str {activation!r} contradicts itself")
        kwargs["activation_fn"] = activation
        if activation == "topk":
            fn_kwargs = cfg.get("activation_fn_kwargs") or {}
            k = fn_kwargs.get("k") if isinstance(fn_kwargs, dict) else None
            kwargs["k"] = cfg.get("k") if k is None else k
            if cfg.get("k") is not None and cfg.get("k") != kwargs["k"]:
                raise ValueError(f"{where}: k {cfg['k']!r} and activation_fn_kwargs.k {k!r} disagree")
        if architecture == "topk":
            kwargs["rescale_acts_by_decoder_norm"] = _field(cfg, "rescale_acts_by_decoder_norm", where,
                                                            (True, False), False)
        by_name = hook_name.endswith("_z"), "hook_z" in hook_name  # SAELens 5's rule, SAELens 6's for old files
        if "reshape_activations" in cfg:
            reshape = _field(cfg, "reshape_activations", where, ("none", "hook_z"), "none")
        elif by_name[0] != by_name[1]:
            raise ValueError(f"{where}: hook_name {hook_name!r}: SAELens 5 and 6 disagree whether to reshape it "
                             "as hook_z; set reshape_activations")
        else:
            reshape = "hook_z" if by_name[0] else "none"
    if reshape == "hook_z" and not hook_name.endswith("_z"):
        raise ValueError(f"{where}: reshape_activations 'hook_z' at hook_name {hook_name!r}, which is not a hook_z")
    if "k" in kwargs and (isinstance(kwargs["k"], bool) or not isinstance(kwargs["k"], int)
                          or not 0 < kwargs["k"] <= sizes["d_sae"]):
        raise ValueError(f"{where}: k {kwargs['k']!r} is not an integer in 1..d_sae={sizes['d_sae']}")
    kwargs["reshape_activations"] = reshape
    return {"kwargs": kwargs, "normalize_activations": normalize, "dtype": DTYPES[dtype.removeprefix("torch.")],
            **sizes}


# ---------------------------------------------------------------------- reading the weights
def _read_tensors(path: Path, expected: dict[str, tuple[int, ...]], where: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, checked: names and shapes against ``expected`` (``where`` says what
    set them), float dtype, finite values. One-line ValueError naming the file and tensor."""
    from safetensors.torch import load_file

    shapes = tensor_shapes(path)  # a truncated or malformed file is one line here
    tensors = load_file(str(path))
    ones = tensors.get("scaling_factor")  # older SAELens wrote an all-ones one; SAELens drops it
    if ones is not None and ones.is_floating_point() and torch.equal(ones, torch.ones_like(ones)):
        del tensors["scaling_factor"], shapes["scaling_factor"]
    mismatch = compare_shapes(expected, shapes, ignored=None)
    if mismatch:
        raise ValueError(f"{path}: tensors do not match {where}: {mismatch.describe()}")
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or str(tensor.dtype).removeprefix("torch.") not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {str(tensor.dtype).removeprefix('torch.')}; SAE "
                             f"weights must be float ({', '.join(DTYPES)})")
    check_finite(tensors.items(), str(path))
    return tensors


def _statistics(folder: Path, normalize: str, d_in: int) -> dict:
    """SAELens 6's dataset statistics beside a training checkpoint: ``{"scaling_factor": s}`` or
    ``{"mean", "matrix", "inverse_matrix"}`` (whitening). ValueError where they are absent or bad."""
    scaler = folder / SCALER_FILE
    cfg_path = folder / CFG_FILE
    if not scaler.is_file():
        raise ValueError(f"{cfg_path}: normalize_activations {normalize!r} needs the dataset statistics SAELens 6 "
                         f"writes beside a training checkpoint ({SCALER_FILE}), and there are none (SAELens would "
                         "run without them: fold them into the weights first)")
    data = read_json(scaler, "SAELens activation scaler")
    if not isinstance(data, dict):
        raise ValueError(f"{scaler}: must hold a JSON object, got {type(data).__name__}")
    factor, whitening = data.get("scaling_factor"), data.get("has_whitening", False)
    if normalize == "expected_average_only_in":
        if whitening or isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
                math.isfinite(factor) and factor > 0):
            raise ValueError(f"{scaler}: scaling_factor {factor!r} (has_whitening {whitening!r}) is not the positive "
                             f"number normalize_activations 'expected_average_only_in' in {cfg_path} needs")
        return {"scaling_factor": float(factor)}
    if whitening is not True or factor is not None:
        raise ValueError(f"{scaler}: has_whitening {whitening!r} (scaling_factor {factor!r}) is not what "
                         f"normalize_activations 'covariance_whitening' in {cfg_path} needs")
    path = folder / WHITENING_FILE
    if not path.is_file():
        raise ValueError(f"{cfg_path}: normalize_activations 'covariance_whitening' needs {path}, not found")
    shapes = {"mean": (d_in,), "matrix": (d_in, d_in), "inverse_matrix": (d_in, d_in)}
    return _read_tensors(path, shapes, f"d_in {d_in} in {cfg_path}")


@torch.no_grad()
def _fold(weights: dict[str, torch.Tensor], kwargs: dict, statistics: dict) -> None:
    """Fold dataset statistics into ``weights`` in place, as SAELens' ``fold_activation_norm_scaling_factor``
    (``W_enc * s``, ``W_dec / s``, ``b_dec / s``) and ``fold_activation_whitening`` do (a TopK SAE with
    decoder-norm rescaling first folds its decoder norms, SAELens' ``fold_W_dec_norm``)."""
    if "scaling_factor" in statistics:
        s = statistics["scaling_factor"]
        weights["W_enc"] = weights["W_enc"] * s
        weights["W_dec"] = weights["W_dec"] / s
        weights["b_dec"] = weights["b_dec"] / s
        return
    if kwargs.get("rescale_acts_by_decoder_norm"):
        norms = weights["W_dec"].norm(dim=-1).clamp(min=1e-8)
        weights["W_dec"] = weights["W_dec"] / norms.unsqueeze(1)
        weights["W_enc"] = weights["W_enc"] * norms.unsqueeze(1).T
        weights["b_enc"] = weights["b_enc"] * norms
        kwargs["rescale_acts_by_decoder_norm"] = False
    own = weights["W_enc"].dtype
    dtype = torch.promote_types(own, statistics["matrix"].dtype)
    mean, matrix, inverse = (statistics[k].to(dtype) for k in ("mean", "matrix", "inverse_matrix"))
    weights["W_enc"] = (matrix @ weights["W_enc"].to(dtype)).to(own)
    if not kwargs["apply_b_dec_to_input"] and "b_enc" in weights:
        weights["b_enc"] = (weights["b_enc"] - mean @ weights["W_enc"].to(dtype)).to(own)
    elif not kwargs["apply_b_dec_to_input"]:  # gated, in its own dtype; the magnitude path is W_enc * exp(r_mag)
        shift = statistics["mean"].to(own) @ weights["W_enc"]
        weights["b_gate"] = weights["b_gate"] - shift
        weights["b_mag"] = weights["b_mag"] - shift * weights["r_mag"].exp()
    weights["W_dec"] = (weights["W_dec"].to(dtype) @ inverse).to(own)
    weights["b_dec"] = (weights["b_dec"].to(dtype) @ inverse + mean).to(own)


def load_sae(path: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             model=None) -> SAE:
    """Read a folder SAELens 5 or 6 wrote (``cfg.json`` + ``sae_weights.safetensors``, plus
    ``activation_scaler.json`` for the dataset normalisations) into an :class:`SAE` that computes
    what SAELens' ``SAE.load_from_disk`` computes (see the module docstring).

    ``dtype``: default the ``cfg.json`` dtype, to which every tensor is cast, as SAELens does.
    ``model`` (a HookedSpiritLM): also check that the hook point exists and has the SAE's width.
    Raises FileNotFoundError for a missing file, ValueError (one line naming the file, the field or
    tensor and the value) for a config that is malformed, contradicts the weights or asks for what
    is not supported, and for integer or non-finite weights."""
    path = Path(path)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: a SAELens SAE folder has {CFG_FILE} and {WEIGHTS_FILE}")
    where = str(path / CFG_FILE)
    cfg = read_json(path / CFG_FILE, "SAE config")
    spec = read_cfg(cfg, where)
    kwargs = spec["kwargs"]
    expected = parameter_shapes(kwargs["architecture"], spec["d_in"], spec["d_sae"])
    described = f"{where} ({kwargs['architecture']}, d_in {spec['d_in']}, d_sae {spec['d_sae']})"
    tensors = _read_tensors(path / WEIGHTS_FILE, expected, described)
    target = dtype or spec["dtype"]
    weights = {name: tensor.to(dtype=target) for name, tensor in tensors.items()}
    normalize = spec["normalize_activations"]
    if normalize in FOLDED_NORMALIZATIONS:
        _fold(weights, kwargs, _statistics(path, normalize, spec["d_in"]))
        normalize = "none"
    weights = {name: tensor.to(device=device).contiguous() for name, tensor in weights.items()}
    try:
        sae = SAE(weights["W_enc"], weights.get("b_enc"), weights["W_dec"], weights["b_dec"],
                  threshold=weights.get("threshold"), b_gate=weights.get("b_gate"), b_mag=weights.get("b_mag"),
                  r_mag=weights.get("r_mag"), normalize_activations=normalize, cfg=cfg,
                  **kwargs)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if model is not None:
        check_hook_point(model, sae)
    return sae


# ---------------------------------------------------------------------- splicing
def hook_point_shape(model, hook_name: str) -> tuple[int, ...] | None:
    """The trailing shape of the activation at ``hook_name`` on ``model`` from its config
    (``[d_model]`` for the residual stream and block outputs, ``[d_mlp]`` for ``mlp.hook_pre``/
    ``hook_post``, ``[n_heads, d_head]`` for ``attn.hook_z``/``hook_q``, ``[n_key_value_heads,
    d_head]`` for ``hook_k``/``hook_v``); None for other hook points (checked on the first forward)."""
    cfg = model.cfg
    last = hook_name.rsplit(".", 1)[-1]
    if re.fullmatch(r"blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_attn_out|hook_mlp_out)", hook_name):
        return (cfg.d_model,)
    if re.fullmatch(r"blocks\.\d+\.mlp\.hook_(pre|post)", hook_name):
        return (cfg.d_mlp,)
    if re.fullmatch(r"blocks\.\d+\.attn\.hook_[qkvz]", hook_name):
        heads = cfg.n_heads
        if last in ("hook_k", "hook_v"):
            heads = getattr(cfg, "n_key_value_heads", None) or heads
        return (heads, cfg.d_head)
    return None


def check_hook_point(model, sae: SAE) -> None:
    """ValueError (one line) unless ``model`` has the SAE's hook point and its width is the SAE's
    ``d_in`` (``hook_z`` SAEs: ``n_heads * d_head``)."""
    if sae.hook_name not in model.bridge.hook_dict:
        raise ValueError(f"unknown hook name {sae.hook_name!r} (e.g. 'blocks.0.hook_resid_post')")
    shape = hook_point_shape(model, sae.hook_name)
    if shape is None:
        return
    if sae.reshape_activations == "hook_z" and len(shape) < 2:
        raise ValueError(f"hook_z SAE at {sae.hook_name}: the activation there is [..., {shape[-1]}], not "
                         "[..., n_heads, d_head]")
    width = math.prod(shape[-2:]) if sae.reshape_activations == "hook_z" else shape[-1]
    if width != sae.d_in:
        raise ValueError(f"SAE at {sae.hook_name} has d_in {sae.d_in} but the activation there has width {width}"
                         + (f" ({shape[0]} heads x {shape[1]})" if sae.reshape_activations == "hook_z" else ""))


class SAERecords:
    """The SAE hook values of the last forward, by cache name (``<hook>.hook_sae_acts_post``, ...)."""

    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.values.clear()


def _splice_hook(sae: SAE, records: SAERecords, use_error_term: bool):
    def splice_hook(act, hook):
        values = sae.run(act)
        out = values["hook_sae_output"]
        values["hook_sae_error"] = act - out
        if use_error_term:  # SAELens: output + (x - output), the error detached
            out = out + values["hook_sae_error"].detach()
        values["hook_sae_output"] = out
        for name, value in values.items():
            records.values[f"{sae.hook_name}.{name}"] = value.detach()
        return out.to(act.dtype)

    return splice_hook


@contextmanager
def splice(model, saes: "SAE | Sequence[SAE]", *, use_error_term: bool = False) -> Iterator[list[SAE]]:
    """Within the block, each SAE replaces the activation at its hook point by its output
    (``use_error_term=True``: by the output plus its error ``x - output``, as SAELens does, so only
    the features are read). ``model``: a HookedSpiritLM. ValueError (one line) for an unknown hook
    point, two SAEs at one hook point, or an SAE whose ``d_in`` is not the hook's width (checked
    here from the model's config, and on every forward)."""
    saes = [saes] if isinstance(saes, SAE) else list(saes)
    if not saes:
        raise ValueError("give at least one SAE")
    for sae in saes:
        if not isinstance(sae, SAE):
            raise ValueError(f"expected an SAE (spiritlens.model.sae.load_sae), got {type(sae).__name__}")
    names = [sae.hook_name for sae in saes]
    if len(set(names)) != len(names):
        raise ValueError(f"two SAEs at one hook point: {sorted(n for n in names if names.count(n) > 1)[0]}")
    for sae in saes:
        check_hook_point(model, sae)
    hooks = [(sae.hook_name, _splice_hook(sae, model._sae_records, use_error_term)) for sae in saes]
    with model.hooks(fwd_hooks=hooks):
        try:
            yield saes
        finally:
            model._sae_records.clear()
