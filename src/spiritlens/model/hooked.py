"""HookedSpeechLM: a speech language model (or its text-only backbone) behind TransformerLens 4's
``TransformerBridge`` API; HookedSpiritLM is SpiritLM's.

What differs between model families (checkpoint layout, tokenizer, prompt rules such as SpiritLM's
markers, the speech tokenizer) is the family's (:mod:`spiritlens.models`): this module speaks only to
that boundary. Below, "SpiritLM's" rules stand for the loaded family's.

The bridge is held (``model.bridge``), not subclassed (TransformerLens' ``boot`` always builds a
plain bridge): the TransformerLens API (``forward``, ``run_with_cache``, ``run_with_hooks``,
``hooks``, ``cfg``...) is delegated to it, and spiritlens adds SpiritLM's prompts (markers,
HuBERT units, a TokenMap), modality-constrained generation and the speech tokenizer. Where SpiritLM
does not force a difference, the bridge's contract holds: ``generate``/``generate_stream`` take
TransformerLens' arguments and return what it returns, ``model.tokenizer`` behaves as a transformers
tokenizer, lists are padded on the tokenizer's side (``"left"``), ``to_string`` and
``input_to_embed`` answer as on the bridge. SpiritLM's own rules live in small named pieces: the
prompt path (:meth:`HookedSpiritLM.encode`), the forbidden tokens
(:meth:`HookedSpiritLM.forbidden_token_ids`, applied at sampling by
``_forbidden_tokens_at_sampling``) and the text of a continuation (``_continuation_text``).

One way into the model: every method that takes a prompt (``model(p)``, ``run_with_cache``,
``run_with_hooks``, ``generate``, ``to_tokens``, ``to_str_tokens``, ``input_to_embed``) reads a
string or ``(modality, content)`` pairs through SpiritLM's prompt path (markers, then SpiritLM's own
tokenisation, :mod:`spiritlens.tokens.llama`), and a list of prompts row by row, padded and masked
(:mod:`spiritlens.model.batching`); token ids pass through after a range check. The bridge's own
string paths (``model.bridge("...")``, its ``to_tokens``, ``run_with_cache``, ``get_token_position``)
are pointed at SpiritLM's, ``model.tokenizer`` warns on a string without a marker, and the bridge
methods that tokenise a string by other routes (``hf_generate``, ``to_sentence_pair_tokens``) refuse
one (:mod:`spiritlens.model.bridge_paths`). Delegated
methods that return the bridge (``to``, ``cuda``, ``cpu``, ``half``, ``float``, ``eval``, ``train``,
...) return the HookedSpiritLM instead, so ``model = model.to("cuda")`` keeps SpiritLM's prompts, and
``cfg.dtype``/``cfg.device`` follow the weights.

Numerics: by default the weights are the raw checkpoint weights, so logits equal
``transformers.LlamaForCausalLM`` (eager attention, same dtype) on the same directory, and
``blocks.{l}.hook_resid_post`` equals the output of HF ``model.layers[l]``. TransformerLens' cache
helpers assume folded norms; the cache ``run_with_cache`` returns applies the RMSNorm gains they
would drop (:mod:`spiritlens.model.cache`), so the logit lens and direct logit attribution give the
model's true numbers. TransformerLens' weight processing (folded norms, centred weights) is opt-in
with ``process_weights=True``. SAEs in SAELens' format splice in with :meth:`HookedSpiritLM.saes`
(:mod:`spiritlens.model.sae`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from spiritlens.progress import transformers_progress
from spiritlens.checkpoints.tree import check_device, check_model_dir, resolve_dtype
from spiritlens.checkpoints.validate import check_finite, check_model_dir_weights, read_config, weight_files
from spiritlens.models import ModelFamily, detect_family, get_family, resolve_model, tree_hint
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.tokens.layout import TokenizerLayout, check_tokenization
from spiritlens.tokens.prompt import MODALITIES, Segment, TokenMap, check_output_modality, encode_segments
from spiritlens.tokens.vocab import Vocabulary
from spiritlens.model.batching import PromptBatch, check_padding_side, continuation_start, default_padding_side, \
    encode_batch, is_prompt_batch, left_padding_mask, pad_id, pad_rows, prompt_rows
from spiritlens.model.bridge_paths import PromptRuleTokenizer, check_move, named_hook, names_filter_of, \
    route_bridge_strings
from spiritlens.model.sae import SAERecords, splice

Prompt = str | Sequence[tuple[str, Any]]
logger = logging.getLogger("spiritlens")

# Bridge methods that would tokenise a string with the bridge's own tokenizer (no SpiritLM markers);
# the bridge's other string methods reach SpiritLM's path through its routed to_tokens (bridge_paths).
_BRIDGE_STRING_METHODS = frozenset({"to_sentence_pair_tokens", "hf_generate", "diffusion_generate"})
# generate() options spiritlens sets itself.
_GENERATE_RESERVED = {
    "suppress_tokens": "the output modality's forbidden tokens (forbidden_token_ids)",
    "bad_words_ids": "the output modality's forbidden tokens (forbidden_token_ids)",
    "pad_token_id": "the EOS id",
    "use_cache": "False (TransformerLens 4.3's bridge breaks HF's KV cache)",
    "attention_mask": "from the prompts' padding (a list of prompts is left-padded and masked)",
}
_GENERATE_EXTRA = frozenset({"logits_processor", "stopping_criteria", "streamer"})


class HookedSpeechLM:
    """A language model whose vocabulary holds speech units (or a text-only backbone) with
    TransformerLens hooks. Build it with :meth:`from_pretrained`; :class:`HookedSpiritLM` is SpiritLM's.

    Attributes: ``bridge`` (the TransformerBridge, with its own transformers tokenizer),
    ``family`` (the :class:`~spiritlens.models.base.ModelFamily`: checkpoint layout, tokenizer, prompt
    rules, speech tokenizer), ``tokenizer`` (the family's tokenizer: for SpiritLM
    :class:`~spiritlens.tokens.llama.SlowLlamaTokenizer`, or the installed transformers' ``LlamaTokenizer``
    with ``tokenization="transformers"``), ``tokenization`` (:class:`~spiritlens.tokens.layout.TokenizerLayout`
    where the family has markers: where they live, ``legacy``, which path tokenises), ``vocab``
    (:class:`~spiritlens.tokens.vocab.Vocabulary`), ``model_dir``, ``variant``.
    """

    FAMILY: str | None = None  # a subclass bound to one family (HookedSpiritLM: "spiritlm")

    def __init__(self, bridge, tokenizer, vocab: Vocabulary, model_dir: Path,
                 speech_tokenizer: Any = None, tokenization: TokenizerLayout | None = None,
                 family: ModelFamily | str = "spiritlm"):
        self.family = get_family(family)
        self.bridge = bridge
        self._n_token_ids = len(tokenizer)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.model_dir = Path(model_dir)
        self.tokenization = tokenization
        self._speech_tokenizer_source = speech_tokenizer
        self._speech_tokenizer = None
        self._sae_records = SAERecords()
        route_bridge_strings(bridge, self)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "auto",
        speech_tokenizer: Any = None,
        device_map: str | dict | None = None,
        n_devices: int | None = None,
        max_memory: dict | None = None,
        process_weights: bool = False,
        tokenization: str = "spiritlm",
        progress: bool | None = None,
        family: "str | ModelFamily | None" = None,
    ) -> "HookedSpeechLM":
        """Load a model directory (or a checkpoint name a family knows, e.g. a SpiritLM variant under
        ``$SPIRITLM_CHECKPOINTS_DIR``).

        ``family``: ``"spiritlm"``, ``"speechgpt"``, ``"llama"`` (a text-only Llama-2 backbone), ...
        (:data:`spiritlens.models.FAMILIES`), or a family instance with options (``SpeechGPT(template=False)``);
        default: detected from the folder's config and tokenizer (:func:`spiritlens.models.detect_family`).
        ``tokenization``: ``"spiritlm"`` (default) tokenises prompt strings exactly as the family's own
        code does (SpiritLM: transformers 4.x's slow ``LlamaTokenizer`` on the checkpoint's
        ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json``,
        ``added_tokens.json``); ``"transformers"`` uses the installed transformers' ``LlamaTokenizer``
        instead (which differs when SpiritLM's markers are SentencePiece pieces). A family with markers
        logs where they live (logger ``"spiritlens"``, INFO) and keeps it as ``model.tokenization``.

        Before anything is built, ``config.json`` is compared with the weight files' tensor names and
        shapes (:func:`spiritlens.checkpoints.validate.check_model_dir_weights`): a missing, unexpected
        or mis-shaped tensor, a malformed config, an unreadable weight file or ``tokenizer.model`` is one
        ValueError naming the file; after loading, a weight holding NaN or inf is one too.
        ``dtype``: "auto" (default: bfloat16 for SpiritLM's 7B, float32 for the toy and tiny models;
        :func:`spiritlens.checkpoints.tree.resolve_dtype`), float32, bfloat16 or float16; weights are loaded straight into it
        (a bf16 checkpoint never passes through a float32 copy). ``device``: "cpu", "cuda", ...;
        or ``device_map``/``n_devices``/``max_memory`` for the bridge's multi-GPU placement.
        ``speech_tokenizer``: a speech-tokenizer folder, a :class:`spiritlens.units.SpeechTokenizer`,
        or SpiritLM's own speech tokenizer object; by default the ``speech_tokenizer/`` folder of
        ``$SPIRITLM_CHECKPOINTS_DIR`` (or next to the model's ``spiritlm_model/``), loaded on first use.
        ``progress``: transformers' loading bar and warnings; None (default) only when stderr is a
        terminal (tqdm's rule, :mod:`spiritlens.progress`), so a notebook stays quiet.
        """
        from transformer_lens.model_bridge import TransformerBridge

        check_tokenization(tokenization)
        wanted = None if family is None else get_family(family)
        if cls.FAMILY is not None:
            wanted = get_family(cls.FAMILY) if wanted is None else wanted
        model_dir = resolve_model(os.fspath(name_or_path), wanted)
        check_model_dir(model_dir, hint=tree_hint)
        detected = detect_family(model_dir, read_config(model_dir),
                                 SlowLlamaTokenizer.from_pretrained(model_dir, add_bos_token=True, add_eos_token=False))
        chosen = wanted or detected
        if wanted is not None and detected.name != wanted.name:  # an instance with options (SpeechGPT(template=False))
            raise ValueError(f"{model_dir} is a {detected.label} checkpoint, not {wanted.label}: load it with "
                             f"HookedSpeechLM.from_pretrained(..., family={detected.name!r})")
        # config.json against the weight files' tensor names and shapes (headers only), before anything is built
        config = check_model_dir_weights(model_dir, ignorable=chosen.ignorable_weights)
        torch_dtype = resolve_dtype(dtype, model_dir)  # the one dtype rule (checkpoints.tree)
        if device is not None and (device_map is not None or n_devices is not None):
            raise ValueError("pass either device or device_map/n_devices, not both")
        try:
            check_device(device)
        except ValueError as error:
            raise ValueError(f"device {error}") from None
        # the family's own tokenizer; the bridge keeps the installed transformers' tokenizer for itself
        tokenizer, bridge_tokenizer, layout = chosen.load_tokenizer(model_dir, tokenization)
        if layout is not None:
            logger.info("%s: %s", model_dir, layout.describe())
        vocab = chosen.vocabulary(tokenizer, source=f"tokenizer of {model_dir}")
        rows = int(config.get("vocab_size", 0))
        if rows <= vocab.max_id() or rows < len(tokenizer):
            raise ValueError(
                f"{model_dir}/config.json: vocab_size {rows} embedding rows is fewer than the "
                f"tokenizer's {max(len(tokenizer), vocab.max_id() + 1)} ids"
            )
        if device is None and device_map is None and n_devices is None:
            device = "cpu"
        with transformers_progress(progress):
            bridge = TransformerBridge.boot_transformers(
                str(model_dir),
                device=device,
                dtype=torch_dtype,
                tokenizer=bridge_tokenizer,
                device_map=device_map,
                n_devices=n_devices,
                max_memory=max_memory,
            )
        embed_rows = bridge.original_model.get_input_embeddings().weight.shape[0]
        if embed_rows < len(tokenizer):
            raise ValueError(f"{model_dir}: the embedding has {embed_rows} rows, fewer than the "
                             f"tokenizer's {len(tokenizer)} ids")
        files = weight_files(model_dir)
        check_finite(((name.replace("._original_component", ""), p)  # HF names, not the bridge's wrappers
                      for name, p in bridge.original_model.named_parameters()),
                     str(files[0]) if len(files) == 1 else f"{model_dir} (weight shards)")
        bridge.eval()
        if process_weights:
            bridge.enable_compatibility_mode()
        return cls(bridge, tokenizer, vocab, model_dir, speech_tokenizer, layout, family=chosen)

    # ------------------------------------------------------- TransformerLens API
    @property
    def tokenizer(self) -> PromptRuleTokenizer | None:
        """SpiritLM's tokenizer behind transformers' interface
        (:class:`~spiritlens.model.bridge_paths.PromptRuleTokenizer`). Settable as on a bridge:
        ``model.tokenizer = None`` removes it here and from ``model.bridge`` (token ids still work;
        prompts and decoding then need one)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        if value is None:
            self._tokenizer = None
            self.bridge.tokenizer = None
            return
        self._tokenizer = value if isinstance(value, PromptRuleTokenizer) else PromptRuleTokenizer(value, self.family)

    def _require_tokenizer(self, what: str) -> PromptRuleTokenizer:
        if self._tokenizer is None:
            raise ValueError(f"{what} needs a tokenizer, and this model's was removed (model.tokenizer = None)")
        return self._tokenizer

    @property
    def cfg(self):
        return self.bridge.cfg

    @property
    def device(self) -> torch.device:
        return self.bridge.original_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bridge.original_model.get_input_embeddings().weight.dtype

    @property
    def variant(self) -> str:
        return self.model_dir.name

    @property
    def hf_model(self):
        """The wrapped ``transformers.LlamaForCausalLM``."""
        return self.bridge.original_model

    def model_input(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor", *, attention_mask=None,
                    padding_side: str | None = None, prepend_bos: bool | None = None,
                    start_at_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(input, attention_mask)`` for the bridge from what a TransformerLens user passes.

        A prompt (string or ``(modality, content)`` pairs): SpiritLM's path, ``[1, T]``, no mask.
        A list of prompts: each row through SpiritLM's path, padded (``padding_side``, default the
        tokenizer's, ``"left"``) and masked (:func:`~spiritlens.model.batching.encode_batch`). Token
        ids ``[batch, pos]``: range-checked; without ``attention_mask``, rows that start with pad
        ids followed by BOS (left padding as ``to_tokens(list)`` writes it) are masked there. With
        ``start_at_layer``: ``prompt`` is the residual stream ``[batch, pos, d_model]`` entering
        that block, passed on to the bridge, which checks it (a ValueError for a prompt or a layer
        out of range, TransformerLens' messages)."""
        if start_at_layer is not None:
            return prompt, attention_mask
        if is_prompt_batch(prompt):
            batch = self.encode_batch(prompt, padding_side=padding_side, prepend_bos=prepend_bos)
            return batch.tokens, batch.attention_mask if attention_mask is None else attention_mask
        if isinstance(prompt, torch.Tensor) or _is_id_sequence(prompt):
            ids = self.input_ids(prompt)
            if attention_mask is None:
                attention_mask = left_padding_mask(ids, pad_id(self), self.vocab.bos_id)
            return ids, attention_mask
        return self.to_tokens(prompt, prepend_bos=prepend_bos), attention_mask

    def _forward_kwargs(self, prompt, kwargs: dict) -> tuple[torch.Tensor, dict]:
        ids, mask = self.model_input(prompt, attention_mask=kwargs.pop("attention_mask", None),
                                     padding_side=kwargs.pop("padding_side", None),
                                     prepend_bos=kwargs.pop("prepend_bos", None),
                                     start_at_layer=kwargs.get("start_at_layer"))
        if mask is not None:
            if tuple(mask.shape) != tuple(ids.shape[:2]):
                raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the tokens {tuple(ids.shape[:2])}")
            kwargs["attention_mask"] = mask.to(ids.device)
        return ids, kwargs

    def __call__(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor", *args, **kwargs) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]`` (or the bridge's ``return_type``) for a prompt (string or
        ``(modality, content)`` pairs, through SpiritLM's path), a list of prompts (padded and
        masked; ``padding_side=``), token ids ``[batch, pos]`` / ``[pos]`` (``attention_mask=``), or
        a residual stream with ``start_at_layer=`` (see :meth:`model_input`). Other keywords are
        TransformerLens' (``return_type``, ``stop_at_layer``, ...)."""
        ids, kwargs = self._forward_kwargs(prompt, kwargs)
        return self.bridge(ids, *args, **kwargs)

    forward = __call__

    def _check_hook_names(self, hooks: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """The hooks with each named one's function seeing ``hook.name`` as registered (the bridge
        would show its TransformerLens 4 alias, e.g. ``blocks.0.hook_out`` for
        ``blocks.0.hook_resid_post``); unknown names raise."""
        known = self.bridge.hook_dict
        checked = []
        for name, fn in hooks:
            if isinstance(name, str):
                if name not in known:
                    raise ValueError(f"unknown hook name {name!r} (e.g. 'blocks.0.hook_resid_post')")
                fn = named_hook(fn, name)
            checked.append((name, fn))
        return checked

    def run_with_hooks(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor", *, fwd_hooks: Sequence = (),
                       bwd_hooks: Sequence = (), **kwargs):
        """Forward with temporary hooks ``[(name, fn(act, hook))]``; unknown names raise.
        ``prompt`` and keywords as for :meth:`__call__`."""
        fwd, bwd = self._check_hook_names(fwd_hooks), self._check_hook_names(bwd_hooks)
        ids, kwargs = self._forward_kwargs(prompt, kwargs)
        return self.bridge.run_with_hooks(ids, fwd_hooks=fwd, bwd_hooks=bwd, **kwargs)

    def run_with_cache(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor", **kwargs):
        """``(logits, cache)`` as in TransformerLens; ``prompt`` and keywords as for :meth:`__call__`.

        The cache is a :class:`~spiritlens.model.cache.NormGainCache`: its LayerNorm read-outs
        (``apply_ln_to_stack``, ``decompose_resid(apply_ln=True)``, ``logit_attrs``, ...) include
        the RMSNorm gains of these unprocessed weights, so they give the model's true numbers.
        With SAEs spliced (:meth:`saes`) it also holds their ``<hook>.hook_sae_*`` values."""
        ids, kwargs = self._forward_kwargs(prompt, kwargs)
        self._sae_records.clear()
        logits, cache = self.bridge.run_with_cache(ids, **kwargs)
        if self._sae_records.values and hasattr(cache, "cache_dict"):
            names_filter = kwargs.get("names_filter")
            keep = names_filter_of(names_filter)
            for name, value in self._sae_records.values.items():
                if keep(name):
                    cache.cache_dict[name] = value[0] if kwargs.get("remove_batch_dim") else value
            self._sae_records.clear()
        return logits, cache

    def hooks(self, fwd_hooks: Sequence = (), bwd_hooks: Sequence = (), **kwargs):
        return self.bridge.hooks(fwd_hooks=self._check_hook_names(fwd_hooks),
                                 bwd_hooks=self._check_hook_names(bwd_hooks), **kwargs)

    def add_hook(self, name, hook, *args, **kwargs):
        """TransformerLens' ``add_hook`` (permanent with ``is_permanent=True``); a named hook's
        function sees ``hook.name`` as registered. Unknown names raise."""
        (name, hook), = self._check_hook_names([(name, hook)])
        return self.bridge.add_hook(name, hook, *args, **kwargs)

    # ------------------------------------------------------------------- SAEs
    def saes(self, saes, *, use_error_term: bool = False):
        """Context manager splicing SAEs (:func:`spiritlens.model.sae.load_sae`) at their hook
        points: see :func:`spiritlens.model.sae.splice`."""
        return splice(self, saes, use_error_term=use_error_term)

    def run_with_saes(self, prompt, *, saes, use_error_term: bool = False, **kwargs) -> torch.Tensor:
        """Logits with ``saes`` spliced for this forward only (as SAELens' ``run_with_saes``)."""
        with self.saes(saes, use_error_term=use_error_term):
            return self(prompt, **kwargs)

    def run_with_cache_with_saes(self, prompt, *, saes, use_error_term: bool = False, **kwargs):
        """``(logits, cache)`` with ``saes`` spliced for this forward only; the cache holds their
        ``<hook>.hook_sae_*`` values (as SAELens' ``run_with_cache_with_saes``)."""
        with self.saes(saes, use_error_term=use_error_term):
            return self.run_with_cache(prompt, **kwargs)

    def __getattr__(self, name: str):
        # Everything else of the TransformerLens API (add_hook, reset_hooks, hook_dict, W_E, ...).
        if name.startswith("_") or name in ("bridge",):
            raise AttributeError(name)
        attribute = getattr(self.bridge, name)
        if not inspect.ismethod(attribute):
            return attribute

        @functools.wraps(attribute)
        def delegated(*args, **kwargs):
            if name in _BRIDGE_STRING_METHODS and any(_is_text(a) for a in (*args[:1], kwargs.get("input"))):
                raise ValueError(
                    f"{type(self).__name__}.{name} takes token ids here, not text: the bridge would tokenise a string "
                    "without SpiritLM's markers; pass model.to_tokens(prompt) (or model.bridge."
                    f"{name}(...) for the bridge's own tokenizer)")
            if name in ("to", "cuda"):
                check_move(name, args, kwargs)
            out = attribute(*args, **kwargs)
            if out is self.bridge:  # model.to(...), .half(), .eval(): keep the wrapper, and cfg in step
                self._sync_cfg()
                return self
            return out

        return delegated

    def _sync_cfg(self) -> None:
        """``cfg.dtype`` and ``cfg.device`` follow the weights after ``.to``/``.half``/``.cuda``..."""
        self.cfg.dtype = self.dtype
        device = self.device
        if isinstance(self.cfg.device, str):
            self.cfg.device = str(device)
        else:
            self.cfg.device = device

    # ------------------------------------------------------------ token ids
    @property
    def n_token_ids(self) -> int:
        """Ids the tokenizer has a piece for: ``0 .. n_token_ids - 1`` (the embedding may have more rows)."""
        return self._n_token_ids

    def check_token_ids(self, ids: "torch.Tensor | Sequence[int]", where: str = "token ids") -> None:
        """Raise ValueError naming the first id outside ``0 .. n_token_ids - 1`` (negative, at or
        beyond the embedding's ``d_vocab`` rows, or a padding row no piece belongs to)."""
        try:
            tensor = torch.as_tensor(ids)
        except (RuntimeError, OverflowError, TypeError, ValueError):  # "Overflow when unpacking long long"
            raise ValueError(f"{where} must be integers within int64, got {str(ids)[:60]}") from None
        if tensor.numel() == 0:
            raise ValueError(f"{where} are empty")
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(f"{where} must be integers, got dtype {tensor.dtype}")
        limit = self.n_token_ids
        bad = (tensor < 0) | (tensor >= limit)
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            value = int(tensor[index])
            rows = self.cfg.d_vocab
            why = ("negative" if value < 0 else f"beyond the embedding's {rows} rows" if value >= rows
                   else f"an embedding row with no token (the tokenizer has {limit} ids)")
            at = f" at position {index[-1]}" if tensor.numel() > 1 else ""
            raise ValueError(f"{where}: token id {value}{at} is {why}; valid ids are 0..{limit - 1}")

    def input_ids(self, prompt: "Prompt | torch.Tensor | Sequence[int]",
                  output_modality: str = "text") -> torch.Tensor:
        """Token ids ``[batch, pos]`` on the model's device: a prompt through SpiritLM's path
        (:meth:`to_tokens`), or ids (tensor ``[batch, pos]``/``[pos]``, a list of ints, or a list
        of equal-length lists) checked with :meth:`check_token_ids`."""
        if isinstance(prompt, torch.Tensor):
            ids = prompt
        elif _is_id_sequence(prompt):
            ids = torch.tensor(_id_lists(prompt), dtype=torch.long)
        else:
            return self.to_tokens(prompt, output_modality)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise ValueError(f"token ids must be [batch, pos] or [pos], got shape {tuple(ids.shape)}")
        self.check_token_ids(ids)
        return ids.to(self.device)

    def to_single_token(self, string: str) -> int:
        """The id of ``string``: a SpiritLM piece by name (``[Text]``, ``[Speech]``, ``[Hu12]``,
        ``<s>``, ``</s>``, and the expressive ``[Pi…]``/``[St…]``), or text that is one token of
        SpiritLM's tokenizer on its own (``"Seattle"``: ``▁Seattle``) or as a piece after other
        tokens (``to_tokens(string, prepend_bos=False)``, as TransformerLens' ``test_prompt``
        tokenises an answer: ``" Paris"``: ``▁Paris``). ValueError naming the pieces otherwise."""
        if not isinstance(string, str) or not string:
            raise ValueError(f"to_single_token takes a non-empty string, got {string!r}")
        special = self._special_ids().get(string)
        if special is not None:
            return special
        ids = self.tokenizer.encode(string, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
        piece = self.to_tokens(string, prepend_bos=False)[0].tolist()
        if len(piece) == 1:
            return int(piece[0])
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(f"{string!r} is {len(ids)} tokens {pieces}, not one")

    def _special_ids(self) -> dict[str, int]:
        cached = self.__dict__.get("_special")
        if cached is None:
            vocab = self.vocab
            ids = [vocab.bos_id, vocab.eos_id, *vocab.marker_ids, *vocab.hubert_ids, *vocab.pitch_ids,
                   *vocab.style_ids]
            ids = [i for i in ids if 0 <= i < len(self.tokenizer)]
            cached = dict(zip(self.tokenizer.convert_ids_to_tokens(ids), ids))
            self.__dict__["_special"] = cached
        return cached

    def to_string(self, ids: "torch.Tensor | Sequence[int]") -> "str | list[str]":
        """Text of token ids (SpiritLM's decode, special tokens and markers kept,
        ``clean_up_tokenization_spaces=False``): a string for ``[pos]``, a list of strings for
        ``[batch, pos]``, as TransformerLens' ``to_string``. ValueError for other shapes or ids
        outside the vocabulary."""
        tokenizer = self._require_tokenizer("to_string")
        ids = torch.as_tensor(ids)
        if ids.dim() > 2:
            raise ValueError(f"to_string takes token ids [pos] or [batch, pos], got shape {tuple(ids.shape)}")
        self.check_token_ids(ids.reshape(-1))
        if ids.dim() == 2:
            return [tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in ids]
        return tokenizer.decode(ids.reshape(-1).tolist(), clean_up_tokenization_spaces=False)

    def input_to_embed(self, input: "Prompt | Sequence[Prompt] | torch.Tensor", prepend_bos: bool | None = None,
                       padding_side: str | None = None, attention_mask: torch.Tensor | None = None):
        """TransformerLens' ``input_to_embed``: ``(residual, tokens, None, attention_mask)``, the
        residual stream entering block 0 ``[batch, pos, d_model]`` (feed it to ``model(residual,
        start_at_layer=0)``). Prompts go through SpiritLM's path (:meth:`model_input`)."""
        tokens, mask = self.model_input(input, attention_mask=attention_mask, padding_side=padding_side,
                                        prepend_bos=prepend_bos)
        residual = self.bridge.forward(tokens, stop_at_layer=0, attention_mask=mask)
        return residual, tokens, None, mask

    # -------------------------------------------------------------- prompts
    @property
    def speech_tokenizer(self):
        """The speech tokenizer, loaded on first use: audio -> deduplicated ``[Hu…]`` units (Base), or
        HuBERT, pitch and style tokens interleaved as SpiritLM does (Expressive:
        :class:`~spiritlens.units.expressive.ExpressiveTokenizer`)."""
        if self._speech_tokenizer is None:
            self._speech_tokenizer = self.family.speech_tokenizer(self.model_dir, self._speech_tokenizer_source,
                                                                  self.vocab)
        return self._speech_tokenizer

    def segments(self, prompt: Prompt) -> list[Segment]:
        """Normalise a prompt into segments; speech content is turned into units here."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            return [Segment("text", prompt)]
        if isinstance(prompt, (bytes, torch.Tensor)) or not isinstance(prompt, Sequence):
            raise ValueError("prompt must be a string or a sequence of (modality, content) pairs, "
                             f"got {type(prompt).__name__}")
        if len(prompt) == 0:
            raise ValueError("prompt is empty: give at least one (modality, content) pair")
        segments = []
        for index, item in enumerate(prompt):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"prompt item {index} must be a (modality, content) pair, got {item!r:.60}")
            modality, content = item
            if modality not in MODALITIES:
                raise ValueError(f"prompt item {index}: unknown modality {modality!r}; use 'text' or 'speech'")
            if modality == "text":
                if not isinstance(content, str) or not content:
                    raise ValueError(f"prompt item {index}: text content must be a non-empty string")
                segments.append(Segment("text", content))
            else:
                segments.append(Segment("speech", self._speech_units(content, index)))
        return segments

    def _speech_units(self, content: Any, index: int):
        if hasattr(content, "tokens") and hasattr(content, "spans"):
            units = content
        else:
            audio, sample_rate = (content if isinstance(content, tuple) and len(content) == 2
                                  else (content, None))
            units = self.speech_tokenizer.encode(audio, sample_rate=sample_rate)
        if len(units.tokens) == 0:
            raise ValueError(f"prompt item {index}: speech gave no units")
        return units

    def encode(self, prompt: Prompt, output_modality: str = "text", *,
               check_context: bool = True, piece: bool = False) -> tuple[torch.Tensor, TokenMap]:
        """Token ids ``[1, T]`` on the model's device and the prompt's :class:`TokenMap`.
        ``piece=True``: by the family's rules for a piece to go after other tokens
        (:meth:`~spiritlens.models.base.ModelFamily.piece_rules`: no chat template), as
        ``prepend_bos=False`` encodes. ValueError when the prompt is longer than the context (unless
        ``check_context=False``)."""
        check_output_modality(output_modality)
        tokenizer = self._require_tokenizer("a prompt")
        family = self.family.piece_rules() if piece else self.family
        if family is not self.family:  # no template: the wrapper would warn that the string lacks it
            tokenizer = tokenizer.wrapped
        ids, token_map = encode_segments(tokenizer, self.vocab, self.segments(prompt), output_modality,
                                         family=family)
        if check_context and len(ids) > self.cfg.n_ctx:
            raise ValueError(f"prompt has {len(ids)} tokens, more than the model's context of {self.cfg.n_ctx}")
        return torch.tensor([ids], dtype=torch.long, device=self.device), token_map

    def encode_batch(self, prompts: Sequence[Prompt], output_modality: str = "text", *,
                     padding_side: str | None = None, prepend_bos: bool | None = None) -> PromptBatch:
        """Several prompts, each through SpiritLM's path, padded into one batch: ``tokens`` and
        ``attention_mask`` ``[B, T]``, per-row TokenMaps and column offsets
        (:class:`~spiritlens.model.batching.PromptBatch`). ``padding_side``: ``"right"`` (default)
        or ``"left"``."""
        batch = encode_batch(self, prompts, output_modality, padding_side=padding_side, prepend_bos=prepend_bos)
        if batch.tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"the batch has {batch.tokens.shape[1]} columns, more than the model's context of "
                             f"{self.cfg.n_ctx}")
        return batch

    def to_tokens(self, prompt: "Prompt | Sequence[Prompt]", output_modality: str = "text", *,
                  prepend_bos: bool | None = None, padding_side: str | None = None, move_to_device: bool = True,
                  truncate: bool = True) -> torch.Tensor:
        """Token ids ``[1, T]``: BOS, markers where the modality changes, text and ``[Hu…]``
        tokens, and the output-modality marker (``[Text]`` after a speech prompt by default).

        TransformerLens' keywords, with its meaning: a list of prompts gives ``[B, T]``, each row
        through SpiritLM's path, padded with the tokenizer's pad id (EOS) on ``padding_side``
        (default ``model.tokenizer.padding_side``, ``"left"`` as on the bridge; the mask comes with
        :meth:`encode_batch`, and ``model(tokens)`` masks left padding itself);
        ``prepend_bos=False`` tokenises a piece to go after other tokens: no BOS, no SentencePiece
        prefix ``▁`` and, for text, no ``[Text]`` (``" Paris"`` -> ``▁Paris``); ``truncate=True``
        (the default) keeps the first ``n_ctx`` tokens of a longer prompt, with a warning
        (``truncate=False`` keeps them all); with ``cfg.tokenizer_appends_eos`` trailing EOS columns
        are dropped."""
        if prepend_bos is not None and not isinstance(prepend_bos, bool):
            raise ValueError(f"prepend_bos must be True, False or None, got {prepend_bos!r}")
        side = check_padding_side(padding_side, default_padding_side(self))
        if is_prompt_batch(prompt):
            rows = prompt_rows(self, prompt, output_modality, prepend_bos=prepend_bos, check_context=False)[0]
        else:
            piece = prepend_bos is False
            ids, token_map = self.encode(prompt, output_modality, check_context=False, piece=piece)
            rows = [ids[0, continuation_start(token_map) if piece else 0:].tolist()]
        if truncate:
            rows = self._truncated(rows)
        tokens = pad_rows(rows, pad_id(self), side)[0]
        if getattr(self.cfg, "tokenizer_appends_eos", False):  # TransformerLens' rule for such tokenizers
            while tokens.shape[1] > 1 and bool((tokens[:, -1] == self.vocab.eos_id).all()):
                tokens = tokens[:, :-1]
        return tokens.to(self.device) if move_to_device else tokens

    def _truncated(self, rows: list[list[int]]) -> list[list[int]]:
        """TransformerLens' ``truncate=True``: each row's first ``n_ctx`` ids; a warning names what was cut."""
        limit = self.cfg.n_ctx
        for index, row in enumerate(rows):
            if len(row) > limit:
                warnings.warn(f"to_tokens: prompt {index} has {len(row)} tokens; kept the first {limit} (the model's "
                              "context, TransformerLens' truncate=True); pass truncate=False to keep them all",
                              stacklevel=3)
        return [row[:limit] for row in rows]

    def to_str_tokens(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor | Sequence[int]",
                      output_modality: str = "text", *, prepend_bos: bool | None = None,
                      padding_side: str | None = None) -> list:
        """One piece per position (``<s>``, ``[Text]``, ``▁capital``, ``[Hu12]``...) of a prompt
        (as :meth:`to_tokens` encodes it, with its keywords) or of one row of token ids
        (range-checked). As in TransformerLens, a list of prompts gives one list per prompt, each
        tokenised alone (no padding); a ``[B, T]`` tensor gives one list per row."""
        tokenizer = self._require_tokenizer("to_str_tokens")
        if is_prompt_batch(prompt):
            return [self.to_str_tokens(item, output_modality, prepend_bos=prepend_bos) for item in prompt]
        if isinstance(prompt, torch.Tensor) or _is_id_sequence(prompt):
            ids = self.input_ids(prompt)
        else:
            ids = self.to_tokens(prompt, output_modality, prepend_bos=prepend_bos)
        rows = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
        return rows if ids.shape[0] > 1 else rows[0]

    def prompt_string(self, ids: "torch.Tensor | Sequence[int]") -> str:
        """The prompt string whose tokenisation gives ``ids`` ``[pos]`` (BOS first); ValueError if
        none does (ids this tokenizer would not produce)."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        self.check_token_ids(ids)
        if hasattr(self.tokenizer, "prompt_string"):
            return self.tokenizer.prompt_string(ids)
        text = self.tokenizer.decode(ids[1:], clean_up_tokenization_spaces=False)  # the transformers path
        if list(self.tokenizer(text).input_ids) != ids:
            raise ValueError("token ids are not this tokenizer's encoding of any string")
        return text

    # ----------------------------------------------------------- generation
    def forbidden_token_ids(self, output_modality: str = "text") -> list[int]:
        """Ids generation may not produce: SpiritLM's rule (markers; the other modality's tokens),
        plus embedding rows the tokenizer does not use."""
        check_output_modality(output_modality)
        if output_modality == "arbitrary":
            forbidden: set[int] = set()
        else:
            forbidden = set(self.vocab.marker_ids)
            speech = self.vocab.speech_ids
            if output_modality == "text":
                forbidden |= speech
            else:
                forbidden |= {i for i in range(self.n_token_ids) if i not in speech}
        rows = self.cfg.d_vocab
        forbidden |= set(range(self.n_token_ids, rows))
        return sorted(forbidden)

    def allowed_token_mask(self, output_modality: str = "text") -> torch.Tensor:
        """Bool ``[d_vocab]`` on the model's device: True for the ids :meth:`generate` may produce
        in ``output_modality`` (the complement of :meth:`forbidden_token_ids`)."""
        mask = torch.ones(self.cfg.d_vocab, dtype=torch.bool, device=self.device)
        forbidden = self.forbidden_token_ids(output_modality)
        if forbidden:
            mask[torch.tensor(forbidden, device=self.device)] = False
        return mask

    @staticmethod
    def _check_generate_kwargs(kwargs: dict) -> None:
        """SpiritLM's rule (``_overwrite_generation_config``): extra options must be fields of
        ``transformers.GenerationConfig``; a one-line ValueError otherwise."""
        from transformers import GenerationConfig

        fields = {k for k in vars(GenerationConfig()) if not k.startswith("_")} - {"transformers_version"}
        for key in kwargs:
            if key in _GENERATE_RESERVED:
                raise ValueError(f"generate: {key} is set by spiritlens ({_GENERATE_RESERVED[key]}); "
                                 "leave it out")
            if key not in fields and key not in _GENERATE_EXTRA:
                close = sorted(f for f in fields if f.split("_")[0] == key.split("_")[0])[:4]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"generate: unknown option {key!r}{hint}; options are fields of "
                                 "transformers.GenerationConfig (max_new_tokens, temperature, top_p, ...)")

    @torch.no_grad()
    def generate_ids(self, prompt: "Prompt | Sequence[Prompt] | torch.Tensor", output_modality: str = "text", *,
                     max_new_tokens: int = 20, do_sample: bool = False, **generate_kwargs):
        """New token ids ``[n]`` (prompt excluded, up to and including EOS); greedy by default.
        ``prompt``: a prompt or one row of token ids; a list of prompts gives a list of ``[n_i]``,
        generated together (left-padded, masked), each row what it would be alone.
        ``generate_kwargs``: ``transformers.GenerationConfig`` fields."""
        check_output_modality(output_modality)
        self._check_generate_kwargs(generate_kwargs)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        batched = is_prompt_batch(prompt)
        if batched:
            batch = self.encode_batch(prompt, output_modality, padding_side="left")
            ids, mask = batch.tokens, batch.attention_mask
        else:
            ids = self.input_ids(prompt, output_modality)
            if ids.shape[0] != 1:
                raise ValueError(f"generate takes one prompt or a list of prompts, got a tensor batch of "
                                 f"{ids.shape[0]} rows (pass the prompts as a list)")
            mask = torch.ones_like(ids)
        out = self.hf_model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            suppress_tokens=self.forbidden_token_ids(output_modality) or None,
            pad_token_id=self.vocab.eos_id,
            # TransformerLens 4.3's bridge breaks HF's KV cache (tokens after the first diverge
            # from plain LlamaForCausalLM), so every step runs the full prefix.
            use_cache=False,
            **generate_kwargs,
        )
        new = out[:, ids.shape[1]:]
        if not batched:
            return new[0]
        rows = []
        for row in new:
            ends = (row == self.vocab.eos_id).nonzero()
            rows.append(row[: int(ends[0]) + 1] if len(ends) else row)  # a finished row is padded with EOS
        return rows

    # ------------------------------ generation: TransformerLens' contract, SpiritLM's rules inside
    def generate(self, input: "Prompt | Sequence[Prompt] | torch.Tensor" = "", max_new_tokens: int = 10,
                 stop_at_eos: bool = True, eos_token_id: int | None = None, do_sample: bool = True,
                 top_k: int | None = None, top_p: float | None = None, temperature: float = 1.0,
                 freq_penalty: float = 0.0, repetition_penalty: float = 1.0, use_past_kv_cache: bool = True,
                 prepend_bos: bool | None = None, padding_side: str | None = None, return_type: str | None = "input",
                 verbose: bool = True, output_logits: bool = False, return_cache: bool = False,
                 return_input_tokens: bool = False, names_filter=None, device=None, stop_strings=None,
                 stopping_criteria=None, attention_mask: torch.Tensor | None = None, pixel_values=None, *,
                 output_modality: str = "text", **unknown):
        """TransformerLens' ``TransformerBridge.generate`` (same arguments, defaults and return
        types: sampling unless ``do_sample=False``), run by the bridge's own loop with SpiritLM's
        rules inside: prompts go through SpiritLM's path (:meth:`to_tokens`: markers, the
        ``output_modality`` marker) and the tokens SpiritLM forbids in ``output_modality``
        (:meth:`forbidden_token_ids`: markers, the other modality's tokens) are never produced.

        Returns, by input type as TransformerLens does (``return_type="input"``): a string prompt
        gives the prompt plus the continuation (a string); a list of prompts one string per prompt
        (generated together, left-padded and masked; a list of one gives a string); token ids
        ``[batch, pos]`` the ids ``[batch, pos + new]``. A prompt of ``(modality, content)`` pairs
        (SpiritLM's own input) gives the continuation only: its audio has no text to put in front
        (SpiritLM's ``generate`` returns the continuation too). ``return_type="tokens"`` gives the
        prompt's SpiritLM ids plus the new ids (markers included), ``"str"`` text. The text is
        SpiritLM's decode (``skip_special_tokens=True, clean_up_tokenization_spaces=False``).
        ``output_logits=True`` returns the bridge's ``GenerateDecoderOnlyOutput`` (``sequences``,
        and ``logits`` per step as sampled from: forbidden ids at -inf); ``return_cache=True``
        adds the cache of ``run_with_cache`` over prompt plus continuation (one prompt only, as
        on the bridge), ``return_input_tokens=True`` the prompt's ids.

        ``use_past_kv_cache`` is accepted and generation always runs the whole prefix:
        TransformerLens 4.3's bridge neither reads nor writes HF's KV cache in Llama's attention, so
        cached steps after the first give other tokens than ``LlamaForCausalLM`` (tested). Options TransformerLens' generate does not have raise
        ValueError (``transformers.GenerationConfig`` fields go to :meth:`generate_ids`)."""
        self._check_generation_options(unknown, max_new_tokens, return_type, output_modality)
        kind, tokens, mask, prompts = self._generation_input(input, output_modality, prepend_bos, padding_side,
                                                             attention_mask)
        if return_cache and kind == "embeds":  # as on the bridge
            raise NotImplementedError("generate(return_cache=True) requires token input, not inputs_embeds")
        if return_cache and tokens.shape[0] > 1:
            raise NotImplementedError("generate(return_cache=True) is not supported for batched/multi-prompt "
                                      "generation (as on TransformerLens' bridge); run run_with_cache on each output")
        with self._forbidden_tokens_at_sampling(output_modality), torch.no_grad():
            out = self.bridge.generate(
                tokens, max_new_tokens=max_new_tokens, stop_at_eos=stop_at_eos, eos_token_id=eos_token_id,
                do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature, freq_penalty=freq_penalty,
                repetition_penalty=repetition_penalty, use_past_kv_cache=False, return_type="tokens",
                verbose=verbose, output_logits=output_logits, stop_strings=stop_strings,
                stopping_criteria=stopping_criteria, attention_mask=mask, pixel_values=pixel_values)
        sequences = out.sequences if output_logits else out
        result = out if output_logits else self._generation_output(kind, return_type, prompts, tokens, mask, sequences)
        extras = []
        if return_cache:
            full_mask = None if mask is None else torch.cat(
                [mask, mask.new_ones(mask.shape[0], sequences.shape[1] - mask.shape[1])], dim=1)
            extras.append(self.run_with_cache(sequences, names_filter=names_filter, device=device,
                                              attention_mask=full_mask)[1])
        if return_input_tokens:
            extras.append(tokens)
        return (result, *extras) if extras else result

    def generate_stream(self, input: "Prompt | Sequence[Prompt] | torch.Tensor" = "", max_new_tokens: int = 10,
                        max_tokens_per_yield: int = 25, stop_at_eos: bool = True, eos_token_id: int | None = None,
                        do_sample: bool = True, top_k: int | None = None, top_p: float | None = None,
                        temperature: float = 1.0, freq_penalty: float = 0.0, repetition_penalty: float = 1.0,
                        use_past_kv_cache: bool = True, prepend_bos: bool | None = None,
                        padding_side: str | None = None, return_type: str | None = "input", verbose: bool = True,
                        stop_strings=None, stopping_criteria=None, attention_mask: torch.Tensor | None = None, *,
                        output_modality: str = "text", **unknown):
        """TransformerLens' ``generate_stream`` with :meth:`generate`'s rules: yields token chunks
        ``[batch, n]`` (the first with the prompt's ids), or, for text, the text each chunk adds to
        :meth:`generate`'s string (a string per yield for one prompt, a list for several). Errors,
        as on the bridge, come when the stream is read."""
        self._check_generation_options(unknown, max_new_tokens, return_type, output_modality)
        kind, tokens, mask, prompts = self._generation_input(input, output_modality, prepend_bos, padding_side,
                                                             attention_mask)
        as_text = return_type == "str" or (return_type == "input" and kind not in ("tokens", "embeds"))
        with self._forbidden_tokens_at_sampling(output_modality), torch.no_grad():
            stream = self.bridge.generate_stream(
                tokens, max_new_tokens=max_new_tokens, max_tokens_per_yield=max_tokens_per_yield,
                stop_at_eos=stop_at_eos, eos_token_id=eos_token_id, do_sample=do_sample, top_k=top_k, top_p=top_p,
                temperature=temperature, freq_penalty=freq_penalty, repetition_penalty=repetition_penalty,
                use_past_kv_cache=False, return_type="tokens", verbose=verbose, stop_strings=stop_strings,
                stopping_criteria=stopping_criteria, attention_mask=mask)
            if not as_text:
                yield from stream
                return
            history, emitted = None, [0] * tokens.shape[0]

            def delta(final: bool):
                texts = self._generation_texts(kind, prompts, tokens, mask, history)
                if not final:  # hold back a character whose bytes are not all generated yet
                    texts = [text.rstrip("\ufffd") for text in texts]
                parts = [text[emitted[i]:] for i, text in enumerate(texts)]
                for i, text in enumerate(texts):
                    emitted[i] = len(text)
                return parts[0] if len(parts) == 1 else parts

            for chunk in stream:
                history = chunk if history is None else torch.cat([history, chunk], dim=-1)
                yield delta(final=False)
            if history is not None:
                rest = delta(final=True)
                if any(rest) if isinstance(rest, list) else rest:
                    yield rest

    _GENERATE_OPTIONS = ("max_new_tokens", "stop_at_eos", "eos_token_id", "do_sample", "top_k", "top_p",
                         "temperature", "freq_penalty", "repetition_penalty", "use_past_kv_cache", "prepend_bos",
                         "padding_side", "return_type", "verbose", "output_logits", "return_cache",
                         "return_input_tokens", "names_filter", "device", "stop_strings", "stopping_criteria",
                         "attention_mask", "pixel_values", "output_modality")

    def _check_generation_options(self, unknown: dict, max_new_tokens, return_type, output_modality) -> None:
        if unknown:
            key = next(iter(unknown))
            raise ValueError(f"generate: unknown option {key!r}; TransformerLens' options are "
                             f"{', '.join(self._GENERATE_OPTIONS)} (transformers.GenerationConfig fields go to "
                             "model.generate_ids)")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            hint = " (output_modality is a keyword: generate(prompt, output_modality=...))" \
                if isinstance(max_new_tokens, str) else ""
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}{hint}")
        if return_type not in ("input", "str", "tokens", None):
            raise ValueError(f"return_type must be 'input', 'str' or 'tokens', got {return_type!r}")
        check_output_modality(output_modality)

    def _generation_input(self, input, output_modality: str, prepend_bos, padding_side, attention_mask):
        """``(kind, tokens [B, T], attention_mask or None, prompts)`` for :meth:`generate`.

        ``kind``: ``"str"`` (one string), ``"pairs"`` (one prompt of ``(modality, content)``
        pairs), ``"list"`` (a list of prompts: several are left-padded and masked, as the bridge
        pads a batch for generation), ``"tokens"`` (ids; masked by ``attention_mask``, else by the
        pad tokens on ``padding_side`` when it is given (TransformerLens' rule), else where rows
        start with pad ids before BOS), ``"embeds"`` (a float tensor, passed on)."""
        if isinstance(input, torch.Tensor) and input.is_floating_point():
            return "embeds", input.to(self.device), attention_mask, None
        if is_prompt_batch(input):
            if len(input) == 1:
                tokens = self.to_tokens(input[0], output_modality, prepend_bos=prepend_bos, truncate=False)
                return "list", tokens, attention_mask, list(input)
            batch = self.encode_batch(input, output_modality, padding_side="left", prepend_bos=prepend_bos)
            return "list", batch.tokens, batch.attention_mask if attention_mask is None else attention_mask, list(input)
        if not (isinstance(input, torch.Tensor) or _is_id_sequence(input)):
            tokens = self.to_tokens(input, output_modality, prepend_bos=prepend_bos, truncate=False)
            return ("str" if isinstance(input, str) else "pairs"), tokens, attention_mask, [input]
        ids = self.input_ids(input)
        if attention_mask is None and padding_side is not None:
            from transformer_lens.utilities import get_attention_mask

            tokenizer = self._require_tokenizer("generate(padding_side=...)")
            attention_mask = get_attention_mask(tokenizer, ids, True if prepend_bos is None else prepend_bos,
                                                padding_side=check_padding_side(padding_side))
            attention_mask = None if bool(attention_mask.all()) else attention_mask
        elif attention_mask is None:
            attention_mask = left_padding_mask(ids, pad_id(self), self.vocab.bos_id)
        return "tokens", ids, attention_mask, None

    @contextlib.contextmanager
    def _forbidden_tokens_at_sampling(self, output_modality: str):
        """SpiritLM's generation rule (``spiritlm_model.py`` ``_build_forbidden_tokens``, passed to HF
        as ``bad_words_ids``) inside TransformerLens' loop: while active, a temporary hook on the
        bridge's ``unembed.hook_out`` sets the last position's logits of
        :meth:`forbidden_token_ids` to -inf, so greedy or sampled steps never pick them."""
        forbidden = ~self.allowed_token_mask(output_modality)
        if not bool(forbidden.any()):
            yield
            return

        def forbid(logits, hook):
            last = logits[:, -1:, :].masked_fill(forbidden.to(logits.device), float("-inf"))
            return torch.cat([logits[:, :-1, :], last], dim=1)

        with self.bridge.hooks(fwd_hooks=[("unembed.hook_out", forbid)]):
            yield

    def _generation_output(self, kind: str, return_type, prompts, tokens, mask, sequences):
        """What :meth:`generate` returns for ``sequences`` ``[B, T + new]`` (its docstring)."""
        if return_type in ("input", None):
            return_type = "tokens" if kind in ("tokens", "embeds") else "str"
        if return_type == "tokens":
            return sequences
        texts = self._generation_texts(kind, prompts, tokens, mask, sequences)
        return texts[0] if len(texts) == 1 else texts

    def _generation_texts(self, kind: str, prompts, tokens, mask, sequences) -> list[str]:
        """One text per row of ``sequences`` (whose first ``T`` columns are ``tokens``; a stream's
        history may be shorter): a string prompt's row is the prompt plus the text its new ids
        add, a ``(modality, content)`` prompt's row that text alone (:meth:`_continuation_text`);
        ids and embeddings are decoded whole, as TransformerLens decodes them."""
        tokenizer = self._require_tokenizer("text output")
        width = 0 if kind == "embeds" else tokens.shape[1]
        texts = []
        for i, row in enumerate(sequences):
            if kind in ("tokens", "embeds"):
                texts.append(tokenizer.decode(row.tolist(), skip_special_tokens=True))
                continue
            prompt_ids = (tokens[i] if mask is None else tokens[i][mask[i].bool()]).tolist()
            continuation = self._continuation_text(prompt_ids, row[width:].tolist())
            texts.append(prompts[i] + continuation if isinstance(prompts[i], str) else continuation)
        return texts

    def _continuation_text(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """The text ``new_ids`` add after the prompt, with SpiritLM's decode
        (``skip_special_tokens=True, clean_up_tokenization_spaces=False``): the decode of prompt
        plus new ids without the decode of the prompt (SpiritLM's ``generate`` cuts its prompt string
        off the decoded output the same way), so a word's leading space is kept (``" Paris"``)."""
        decode = functools.partial(self._require_tokenizer("text output").decode, skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
        head, whole = decode(prompt_ids), decode(prompt_ids + new_ids)
        return whole[len(head):] if whole.startswith(head) else decode(new_ids)

    def decode_generated(self, ids: "torch.Tensor | Sequence[int]") -> str:
        """Generated ids ``[n]`` as text, with SpiritLM's decode call (``skip_special_tokens=True,
        clean_up_tokenization_spaces=False``)."""
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.variant!r}, family={self.family.name!r}, n_layers={self.cfg.n_layers}, d_model={self.cfg.d_model}, "
                f"dtype={self.dtype}, device={self.device})")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and bool(value)
                                      and all(isinstance(v, (str, tuple, list)) for v in value)
                                      and not _is_id_sequence(value))


def _is_id_sequence(value: Any) -> bool:
    """A list of ints, or a non-empty list of lists of ints (not a prompt)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        return False
    if all(_is_int(v) for v in value):
        return True
    return all(isinstance(v, (list, tuple)) and v and all(_is_int(i) for i in v) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id_lists(value: Sequence) -> list:
    if all(_is_int(v) for v in value):
        return list(value)
    lengths = {len(v) for v in value}
    if len(lengths) != 1:
        raise ValueError(f"a batch of token-id lists must have equal lengths, got {sorted(lengths)}")
    return [list(v) for v in value]


class HookedSpiritLM(HookedSpeechLM):
    """SpiritLM (Base or Expressive) with TransformerLens hooks: :class:`HookedSpeechLM` bound to the
    SpiritLM family (:class:`~spiritlens.models.spiritlm.family.SpiritLM`). ``from_pretrained`` on another
    family's folder is a ValueError naming it (load that one with ``HookedSpeechLM.from_pretrained``)."""

    FAMILY = "spiritlm"
