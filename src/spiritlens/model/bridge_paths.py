"""How TransformerLens' own entry points reach SpiritLM's prompt rules, for HookedSpiritLM.

TransformerLens users reach a model through more doors than ``HookedSpiritLM``'s methods: the
tokenizer (``model.tokenizer("...")``), the bridge itself (``model.bridge("...")``,
``model.bridge.run_with_cache("...")``, ``to_tokens``/``to_single_token``), hook functions that read
``hook.name``, and ``model.to("cuda")``. This module makes each door take SpiritLM's path or say in
one line that it does not:

* :class:`PromptRuleTokenizer` (``model.tokenizer``) warns (:class:`PromptRuleWarning`) when a string
  without a SpiritLM marker is tokenised as it is;
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


_MARKERS = ("[Text]", "[Speech]")


class PromptRuleTokenizer:
    """``model.tokenizer``: SpiritLM's text tokenizer (every attribute and method is the wrapped
    one's, ``wrapped`` is the tokenizer itself), except that calling it (or ``encode``) with BOS on a
    string that does not start with a SpiritLM marker warns, in one line, that the string is
    tokenised as it is: SpiritLM writes ``[Text]`` before text (``model.to_tokens`` does), and the
    model answers differently without it. Without BOS (``add_special_tokens=False``) the string is a
    piece to append and nothing is said."""

    def __init__(self, tokenizer):
        object.__setattr__(self, "wrapped", tokenizer)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.wrapped, name, value)

    def __len__(self) -> int:
        return len(self.wrapped)

    def _check(self, text, call: str, add_special_tokens: bool) -> None:
        if not add_special_tokens:  # a piece to put after other tokens (no BOS): no prompt rule applies
            return
        texts = [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []
        bare = [t for t in texts if isinstance(t, str) and not t.removeprefix("<s>").lstrip().startswith(_MARKERS)]
        if bare:
            warnings.warn(f"model.tokenizer{call}({bare[0]!r:.40}) tokenises the string as it is, without SpiritLM's "
                          "[Text] marker that the model was trained with; use model.to_tokens(...) for SpiritLM's "
                          "prompt", PromptRuleWarning, stacklevel=3)

    def __call__(self, text, *args, **kwargs):
        self._check(text, "", kwargs.get("add_special_tokens", True))
        return self.wrapped(text, *args, **kwargs)

    def encode(self, text, *args, **kwargs):
        """The wrapped tokenizer's ``encode``; with BOS (``add_special_tokens``, the default) a string
        without a marker warns as a call does."""
        self._check(text, ".encode", args[0] if args and isinstance(args[0], bool) else
                    kwargs.get("add_special_tokens", True))
        return self.wrapped.encode(text, *args, **kwargs)

    def __repr__(self) -> str:
        return f"PromptRuleTokenizer({self.wrapped!r})"


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
