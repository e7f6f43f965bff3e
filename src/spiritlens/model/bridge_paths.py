"""How TransformerLens' own entry points reach SpiritLM's prompt rules, for HookedSpiritLM.

TransformerLens users reach a model through more doors than ``HookedSpiritLM``'s methods: the
tokenizer (``model.tokenizer("...")``), the bridge itself (``model.bridge("...")``,
``model.bridge.run_with_cache("...")``, ``to_tokens``/``to_single_token``), hook functions that read
``hook.name``, and ``model.to("cuda")``. This module makes each door take SpiritLM's path or say in
one line that it does not:

* :class:`PromptRuleTokenizer` (``model.tokenizer``) is SpiritLM's tokenizer behind transformers'
  tokenizer interface (lists, padding, ``return_tensors``, a settable ``pad_token``,
  ``padding_side``), and warns (:class:`PromptRuleWarning`) when a string without a SpiritLM marker
  is tokenised as it is;
* :func:`route_bridge_strings` points the bridge's string methods at ``HookedSpiritLM.to_tokens`` and
  makes its ``run_with_cache`` return the gain-aware cache (:mod:`spiritlens.model.cache`);
* :func:`named_hook` lets a hook function see ``hook.name`` as registered, not TransformerLens 4's
  alias (``blocks.0.hook_out`` for ``blocks.0.hook_resid_post``);
* :func:`check_move` turns a CUDA move on a machine without CUDA into one line.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch

from spiritlens.checkpoints.tree import check_device
from spiritlens.model.cache import NormGainCache


class PromptRuleWarning(UserWarning):
    """A string reached SpiritLM's tokenizer without SpiritLM's prompt rules (no ``[Text]`` marker)."""




class PromptRuleTokenizer:
    """``model.tokenizer``: SpiritLM's text tokenizer behind transformers' tokenizer interface.

    Every attribute and method is the wrapped tokenizer's (``wrapped``: SpiritLM's slow tokenizer,
    :class:`~spiritlens.tokens.llama.SlowLlamaTokenizer`, or transformers' ``LlamaTokenizer`` with
    ``tokenization="transformers"``), settable as in transformers (``pad_token``, ``pad_token_id``,
    ``padding_side``, default ``"left"`` as transformers' ``LlamaTokenizer``), with transformers' calling
    conventions on top of the slow tokenizer: a string or a list of strings, ``padding``
    (``True``/``"longest"``/``"max_length"``, on ``padding_side``, with ``pad_token_id``),
    ``truncation`` with ``max_length``, ``return_tensors="pt"``, ``add_special_tokens``, a
    ``transformers.BatchEncoding`` back; ``encode(..., return_tensors="pt")``, ``batch_decode``.

    SpiritLM's rule: calling it (or ``encode``) with BOS on a string that does not start with a
    SpiritLM marker warns (:class:`PromptRuleWarning`, one line) that the string is tokenised as it
    is: SpiritLM writes ``[Text]`` before text (``model.to_tokens`` does), and the model answers
    differently without it. Without BOS (``add_special_tokens=False``) the string is a piece to
    append and nothing is said."""

    def __init__(self, tokenizer, family=None):
        object.__setattr__(self, "wrapped", tokenizer)
        object.__setattr__(self, "family", family)  # whose prompt rule applies (none: no warning)
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # TransformerLens' rule for the bridge's tokenizer

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.wrapped, name, value)

    def __len__(self) -> int:
        return len(self.wrapped)

    def _check(self, text, call: str, add_special_tokens: bool) -> None:
        if not add_special_tokens:  # a piece to put after other tokens (no BOS): no prompt rule applies
            return
        markers = tuple(getattr(self.family, "prompt_markers", ()))
        if not markers:  # a family whose prompts are the text as it is (the Llama-2 backbone)
            return
        texts = [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []
        bare = [t for t in texts if isinstance(t, str) and not t.removeprefix("<s>").lstrip().startswith(markers)]
        if bare:
            label = self.family.label
            warnings.warn(f"model.tokenizer{call}({bare[0]!r:.40}) tokenises the string as it is, without {label}'s "
                          f"{markers[0]} marker that the model was trained with; use model.to_tokens(...) for "
                          f"{label}'s prompt", PromptRuleWarning, stacklevel=3)

    @property
    def _is_transformers(self) -> bool:
        from transformers import PreTrainedTokenizerBase

        return isinstance(self.wrapped, PreTrainedTokenizerBase)

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: int | None = None, return_tensors=None, padding_side: str | None = None,
                 return_attention_mask: bool | None = None, return_offsets_mapping: bool = False, **kwargs):
        """transformers' tokenizer call (class docstring); ValueError for options the slow path lacks
        (``text_pair``, ``stride``, ...), for padding without a pad token and for ragged tensors."""
        self._check(text, "", add_special_tokens)
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                       max_length=max_length, return_tensors=return_tensors,
                       return_attention_mask=return_attention_mask, return_offsets_mapping=return_offsets_mapping)
        if self._is_transformers:
            if padding_side is not None:
                options["padding_side"] = padding_side
            return self.wrapped(text, text_pair, **options, **kwargs)
        unsupported = sorted(k for k, v in {"text_pair": text_pair, **kwargs}.items() if v not in (None, False))
        if unsupported:
            raise ValueError(f"model.tokenizer: unsupported options {unsupported} (SpiritLM's slow tokenizer)")
        return _encode_batch(self.wrapped, text, padding_side=padding_side or self.padding_side, **options)

    def encode(self, text, *args, add_special_tokens: bool = True, return_tensors=None, **kwargs):
        """Ids of one string (``[T]``, or ``[1, T]`` with ``return_tensors="pt"``); with BOS (the
        default) a string without a marker warns as a call does."""
        if args and isinstance(args[0], bool):  # encode(text, False): transformers' positional add_special_tokens
            add_special_tokens, args = args[0], args[1:]
        self._check(text, ".encode", add_special_tokens)
        if self._is_transformers:
            return self.wrapped.encode(text, *args, add_special_tokens=add_special_tokens,
                                       return_tensors=return_tensors, **kwargs)
        if args:
            raise ValueError("model.tokenizer.encode: pass options by keyword")
        ids = _encode_batch(self.wrapped, text, add_special_tokens=add_special_tokens, return_tensors=return_tensors,
                            padding_side=self.padding_side, **kwargs)["input_ids"]
        return ids

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """``decode`` of each row of ``sequences`` (a ``[B, T]`` tensor or a list of id lists)."""
        if self._is_transformers:
            return self.wrapped.batch_decode(sequences, **kwargs)
        return [self.wrapped.decode(row, **kwargs) for row in sequences]

    def __repr__(self) -> str:
        return f"PromptRuleTokenizer({self.wrapped!r})"


def _encode_batch(tokenizer, text, *, add_special_tokens: bool = True, padding=False, truncation=None,
                  max_length: int | None = None, return_tensors=None, padding_side: str = "left",
                  return_attention_mask: bool | None = None, return_offsets_mapping: bool = False):
    """transformers' ``PreTrainedTokenizerBase.__call__`` semantics over a tokenizer that encodes one
    string (SpiritLM's slow tokenizer): truncate each row to ``max_length`` (on the right), pad to the
    longest row (``padding=True``/``"longest"``) or to ``max_length`` (``"max_length"``) with
    ``pad_token_id`` on ``padding_side``, and return a ``BatchEncoding`` (tensors with
    ``return_tensors``). Source: transformers' ``_batch_encode_plus``/``pad``."""
    from transformers import BatchEncoding

    single = isinstance(text, str)
    texts = [text] if single else list(text) if isinstance(text, (list, tuple)) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"model.tokenizer takes a string or a list of strings, got {type(text).__name__}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if return_tensors not in (None, "pt"):
        raise ValueError(f"model.tokenizer: return_tensors={return_tensors!r} is not supported; use 'pt' or None")
    rows = [tokenizer(t, add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping)
            for t in texts]
    ids = [list(r["input_ids"]) for r in rows]
    offsets = [list(r["offset_mapping"]) for r in rows] if return_offsets_mapping else None
    if truncation not in (None, False, "do_not_truncate") and max_length is not None:
        ids = [r[:max_length] for r in ids]
        offsets = offsets and [o[:max_length] for o in offsets]
    masks = [[1] * len(r) for r in ids]
    pad_to = None
    if padding in (True, "longest"):
        pad_to = max(map(len, ids))
    elif padding == "max_length":
        if max_length is None:
            raise ValueError("model.tokenizer: padding='max_length' needs max_length")
        pad_to = max_length
    elif padding not in (False, None, "do_not_pad"):
        raise ValueError(f"model.tokenizer: padding={padding!r}; use True, 'longest', 'max_length' or False")
    if pad_to is not None:
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("model.tokenizer: asking to pad but the tokenizer has no pad token; set "
                             "model.tokenizer.pad_token = model.tokenizer.eos_token")
        for i, row in enumerate(ids):
            extra = max(pad_to - len(row), 0)
            before, after = (extra, 0) if padding_side == "left" else (0, extra)
            ids[i] = [pad_id] * before + row + [pad_id] * after
            masks[i] = [0] * before + masks[i] + [0] * after
            if offsets is not None:
                offsets[i] = [(0, 0)] * before + offsets[i] + [(0, 0)] * after
    if return_tensors == "pt" and len({len(r) for r in ids}) > 1:
        raise ValueError("model.tokenizer: rows of different lengths cannot be one tensor; pass padding=True")
    data = {"input_ids": ids}
    if return_attention_mask is None or return_attention_mask:
        data["attention_mask"] = masks
    if offsets is not None:
        data["offset_mapping"] = offsets
    if single and return_tensors is None:
        data = {key: value[0] for key, value in data.items()}
    return BatchEncoding(data, tensor_type=return_tensors)


def route_bridge_strings(bridge, model) -> None:
    """Make the bridge's own string paths SpiritLM's: ``bridge(str)``, ``bridge.run_with_cache(str)``,
    ``bridge.generate(str)``, ``bridge.to_tokens/to_str_tokens/to_single_token`` and
    ``tokens_to_residual_directions(str)`` tokenise with :meth:`~spiritlens.model.hooked.HookedSpiritLM.to_tokens` (markers,
    SpiritLM's tokenizer); ``bridge.run_with_cache`` returns a
    :class:`~spiritlens.model.cache.NormGainCache`. Instance attributes; the class is untouched."""
    cls = type(bridge)

    def to_tokens(input, prepend_bos=None, padding_side=None, move_to_device=True, truncate=True):
        if isinstance(input, torch.Tensor):
            return input
        return model.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side,
                               move_to_device=move_to_device)

    def to_str_tokens(input, prepend_bos=None, padding_side=None):
        return model.to_str_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)

    def run_with_cache(*args, **kwargs):
        out = cls.run_with_cache(bridge, *args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and hasattr(out[1], "apply_ln_to_stack"):
            return out[0], NormGainCache.wrap(out[1])
        return out

    for name, function in (("to_tokens", to_tokens), ("to_str_tokens", to_str_tokens),
                           ("to_single_token", model.to_single_token), ("run_with_cache", run_with_cache)):
        object.__setattr__(bridge, name, function)


class NamedHookPoint:
    """A HookPoint seen through the name its hook was registered under: ``name`` is that name,
    ``point`` the bridge's HookPoint (``point.name`` its TransformerLens 4 alias); every other
    attribute is the HookPoint's."""

    def __init__(self, point, name: str):
        self.point, self.name = point, name

    def __getattr__(self, attribute: str):
        return getattr(self.point, attribute)

    def __repr__(self) -> str:
        return f"HookPoint(name={self.name!r}, bridge name={self.point.name!r})"


def named_hook(fn, name: str):
    if getattr(fn, "_spiritlens_name", None) == name:
        return fn

    @functools.wraps(fn)
    def named(act, *args, hook=None, **kwargs):
        if args:  # called positionally
            hook, args = args[0], args[1:]
        point = hook if getattr(hook, "name", name) == name else NamedHookPoint(hook, name)
        return fn(act, *args, hook=point, **kwargs)

    named._spiritlens_name = name
    return named


def names_filter_of(names_filter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if callable(names_filter):
        return names_filter
    wanted = set(names_filter)
    return lambda name: name in wanted


def check_move(name: str, args: tuple, kwargs: dict) -> None:
    """``model.to("cuda")``/``model.cuda()`` on a machine without CUDA: one line, not torch's assertion."""
    targets = [kwargs.get("device")] + [a for a in args if isinstance(a, (str, torch.device))]
    if name == "cuda":
        targets.append("cuda" if not args or args[0] is None else
                       (f"cuda:{args[0]}" if isinstance(args[0], int) else args[0]))
    for target in targets:
        if target is None:
            continue
        try:
            check_device(target)
        except ValueError as error:
            raise ValueError(f"model.{name}({str(target)!r}): {error}") from None
