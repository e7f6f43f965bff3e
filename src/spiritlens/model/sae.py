"""Sparse autoencoders saved in SAELens' on-disk format, read without sae_lens, spliced into HookedSpiritLM.

SAELens needs TransformerLens < 4, so it cannot be installed beside spiritlens; its SAEs are
plain files, and this module reads them itself. A SAELens SAE folder holds ``cfg.json`` and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``; a JumpReLU SAE adds ``threshold [d_sae]``). ``cfg.json`` names the hook point
(``hook_name``, or ``metadata``/``meta.hook_name`` since SAELens 6, ``hook_point`` before 3), the
architecture (``standard`` = ReLU, ``jumprelu``, ``topk`` with ``k``), ``apply_b_dec_to_input``
(default true) and ``normalize_activations`` (``none`` or ``constant_norm_rescale`` here; the
others need a dataset-derived factor and are refused in one line). Computation (SAELens'
definition, written here from its documented formulas)::

    x' = x * sqrt(d_in) / ||x||         (constant_norm_rescale only)
    pre = (x' - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    acts = relu(pre)                      standard
         = pre * (pre > threshold)        jumprelu
         = relu(top-k of pre, others 0)   topk
    recons = acts @ W_dec + b_dec         (then / (sqrt(d_in) / ||x||) for constant_norm_rescale)

Splicing (``model.saes(sae)``, a context manager, or :func:`splice`): a TransformerLens hook at
the SAE's hook point replaces the activation by the reconstruction (``use_error_term=True`` adds
back the error ``x - recons``, so the model's output is unchanged and the features can be read).
While spliced, ``model.run_with_cache`` adds to the cache, per SAE, ``<hook>.hook_sae_input``,
``.hook_sae_acts_pre``, ``.hook_sae_acts_post`` (feature activations ``[batch, pos, d_sae]``),
``.hook_sae_recons`` and ``.hook_sae_error`` (``x - recons``), SAELens' names. A spliced SAE is a
hook like any other: causal tracing applies it in every run (it takes the plain path).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "jumprelu", "topk")
NORMALIZATIONS = ("none", "constant_norm_rescale")
SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error")


class SAE(torch.nn.Module):
    """A sparse autoencoder at one hook point (see the module docstring for the computation).

    Parameters ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``
    and, for ``jumprelu``, ``threshold [d_sae]``; ``k`` for ``topk``. Build one with :func:`load_sae`
    or directly (e.g. to train it, then :meth:`save`).
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, *,
                 hook_name: str, architecture: str = "standard", threshold: torch.Tensor | None = None,
                 k: int | None = None, apply_b_dec_to_input: bool = True, normalize_activations: str = "none",
                 cfg: dict | None = None):
        super().__init__()
        d_in, d_sae = W_enc.shape
        shapes = {"b_enc": (b_enc, (d_sae,)), "W_dec": (W_dec, (d_sae, d_in)), "b_dec": (b_dec, (d_in,))}
        if architecture == "jumprelu":
            if threshold is None:
                raise ValueError("a jumprelu SAE needs a threshold [d_sae]")
            shapes["threshold"] = (threshold, (d_sae,))
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"SAE {name} has shape {tuple(tensor.shape)}, expected {shape} "
                                 f"(W_enc is [{d_in}, {d_sae}])")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"SAE architecture {architecture!r} is not supported; use one of "
                             f"{', '.join(ARCHITECTURES)}")
        if architecture == "topk" and (not isinstance(k, int) or not 0 < k <= d_sae):
            raise ValueError(f"a topk SAE needs k in 1..{d_sae}, got {k!r}")
        if normalize_activations not in NORMALIZATIONS:
            raise ValueError(f"SAE normalize_activations {normalize_activations!r} is not supported (it needs "
                             f"SAELens' dataset scaling factor); fold it into the weights first, or use one of "
                             f"{', '.join(NORMALIZATIONS)}")
        self.W_enc = torch.nn.Parameter(W_enc)
        self.b_enc = torch.nn.Parameter(b_enc)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.b_dec = torch.nn.Parameter(b_dec)
        self.threshold = torch.nn.Parameter(threshold) if threshold is not None else None
        self.hook_name = hook_name
        self.architecture = architecture
        self.k = k
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.normalize_activations = normalize_activations
        self.cfg = dict(cfg or {})

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def _norm_coeff(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.normalize_activations == "constant_norm_rescale":
            return math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
        return None

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., d_sae]`` of activations ``x [..., d_in]`` (in the SAE's dtype)."""
        x = x.to(self.W_enc.dtype)
        coeff = self._norm_coeff(x)
        if coeff is not None:
            x = x * coeff
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` from pre-activations."""
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold)
        if self.architecture == "topk":
            values, indices = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of ``x [..., d_in]``."""
        return self.activation(self.encode_pre(x))

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``[..., d_in]`` of feature activations; ``x`` (the input) is needed for
        ``constant_norm_rescale`` to undo the rescaling."""
        out = acts @ self.W_dec + self.b_dec
        if self.normalize_activations == "constant_norm_rescale":
            if x is None:
                raise ValueError("decode needs the input x to undo constant_norm_rescale")
            out = out / self._norm_coeff(x.to(out.dtype))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x [..., d_in]`` (same dtype as ``x``)."""
        return self.decode(self.encode(x), x).to(x.dtype)

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every SAELens hook value for input ``x``: ``hook_sae_input``, ``hook_sae_acts_pre``,
        ``hook_sae_acts_post``, ``hook_sae_recons`` (``x``'s dtype) and ``hook_sae_error``
        (``x - recons``)."""
        pre = self.encode_pre(x)
        acts = self.activation(pre)
        recons = self.decode(acts, x).to(x.dtype)
        return {"hook_sae_input": x, "hook_sae_acts_pre": pre, "hook_sae_acts_post": acts,
                "hook_sae_recons": recons, "hook_sae_error": x - recons}

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` in SAELens' format (SAELens 6
        layout: ``metadata.hook_name`` and a top-level ``hook_name`` for older readers)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().contiguous().cpu() for name, p in
                   (("W_enc", self.W_enc), ("b_enc", self.b_enc), ("W_dec", self.W_dec), ("b_dec", self.b_dec),
                    ("threshold", self.threshold)) if p is not None}
        save_file(tensors, str(path / WEIGHTS_FILE))
        cfg = dict(self.cfg)
        cfg.update({"d_in": self.d_in, "d_sae": self.d_sae, "architecture": self.architecture,
                    "dtype": str(self.W_enc.dtype).removeprefix("torch."), "device": "cpu",
                    "apply_b_dec_to_input": self.apply_b_dec_to_input,
                    "normalize_activations": self.normalize_activations, "hook_name": self.hook_name,
                    "metadata": {**cfg.get("metadata", {}), "hook_name": self.hook_name}})
        if self.k is not None:
            cfg["k"] = self.k
        (path / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"SAE({self.hook_name!r}, {self.architecture}, d_in={self.d_in}, d_sae={self.d_sae})"


def _hook_name(cfg: dict, path: Path) -> str:
    for source in (cfg.get("metadata"), cfg.get("meta"), cfg):
        if isinstance(source, dict):
            for key in ("hook_name", "hook_point"):
                if isinstance(source.get(key), str):
                    return source[key]
    raise ValueError(f"{path / CFG_FILE}: no hook_name (nor metadata.hook_name, hook_point)")


def load_sae(path: str | Path, *, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> SAE:
    """Read a SAELens SAE folder (``cfg.json`` + ``sae_weights.safetensors``) into an :class:`SAE`.

    ``dtype``: default the weights' own. Raises FileNotFoundError for a missing file, ValueError
    (one line naming the file and field) for what the format does not allow or this reader does
    not support (``hook_z`` reshaping, a fine-tuning scaling factor, an unknown architecture)."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: a SAELens SAE folder has {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads((path / CFG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path / CFG_FILE} is not JSON: {error}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path / CFG_FILE} must hold a JSON object")
    weights = load_file(str(path / WEIGHTS_FILE))
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in weights]
    if missing:
        raise ValueError(f"{path / WEIGHTS_FILE} lacks {', '.join(missing)} (has {', '.join(sorted(weights))})")
    if cfg.get("reshape_activations", "none") != "none":
        raise ValueError(f"{path / CFG_FILE}: reshape_activations {cfg['reshape_activations']!r} (hook_z SAEs) "
                         "is not supported")
    if cfg.get("finetuning_scaling_factor") or "finetuning_scaling_factor" in weights:
        raise ValueError(f"{path / CFG_FILE}: a fine-tuning scaling factor is not supported")
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
    if architecture == "standard" and activation == "topk":
        architecture = "topk"  # SAELens 4-5 wrote topk SAEs as standard ones with a topk activation
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    normalize = cfg.get("normalize_activations", "none")
    if isinstance(normalize, bool):  # SAELens < 3
        normalize = "expected_average_only_in" if normalize else "none"
    tensors = {name: t.to(device=device, dtype=dtype or t.dtype) for name, t in weights.items()}
    try:
        return SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"],
                   hook_name=_hook_name(cfg, path), architecture=architecture, threshold=tensors.get("threshold"),
                   k=int(k) if k is not None else None,
                   apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True), normalize_activations=normalize,
                   cfg=cfg)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


class SAERecords:
    """The SAE hook values of the last forward, by cache name (``<hook>.hook_sae_acts_post``, ...)."""

    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.values.clear()


def _splice_hook(sae: SAE, records: SAERecords, use_error_term: bool):
    def splice_hook(act, hook):
        values = sae.run(act)
        for name, value in values.items():
            records.values[f"{sae.hook_name}.{name}"] = value.detach()
        return act if use_error_term else values["hook_sae_recons"]

    return splice_hook


@contextmanager
def splice(model, saes: "SAE | Sequence[SAE]", *, use_error_term: bool = False) -> Iterator[list[SAE]]:
    """Within the block, each SAE replaces the activation at its hook point by its reconstruction
    (``use_error_term=True``: by the activation itself, the reconstruction plus its error, so only
    the features are read). ``model``: a HookedSpiritLM. ValueError for an unknown hook point, two
    SAEs at one hook point, or an SAE whose ``d_in`` is not the hook's width (checked on the first
    forward: one line naming both)."""
    saes = [saes] if isinstance(saes, SAE) else list(saes)
    if not saes:
        raise ValueError("give at least one SAE")
    names = [sae.hook_name for sae in saes]
    if len(set(names)) != len(names):
        raise ValueError(f"two SAEs at one hook point: {sorted(n for n in names if names.count(n) > 1)[0]}")
    hooks = []
    for sae in saes:
        if not isinstance(sae, SAE):
            raise ValueError(f"expected an SAE (spiritlens.model.sae.load_sae), got {type(sae).__name__}")
        hooks.append((sae.hook_name, _checked(sae, _splice_hook(sae, model._sae_records, use_error_term))))
    with model.hooks(fwd_hooks=hooks):
        try:
            yield saes
        finally:
            model._sae_records.clear()


def _checked(sae: SAE, splice_hook):
    def run(act, hook):
        if act.shape[-1] != sae.d_in:
            raise ValueError(f"SAE at {sae.hook_name} has d_in {sae.d_in} but the activation there has width "
                             f"{act.shape[-1]}")
        return splice_hook(act, hook)

    return run
