"""Which hooks a user has attached to the model: every intervention's runs must honour them.

Two kinds act in a TransformerBridge forward:

- **TransformerLens hooks** on hook points (``model.add_hook``, an open ``model.hooks(...)``, a spliced
  SAE): listed by hook name; each hook point keeps them in its ``fwd_hooks`` / ``bwd_hooks``.
- **plain PyTorch hooks** (``register_forward_hook``, ``register_forward_pre_hook``, backward hooks)
  on any module of the bridge, its components or the wrapped HF modules, and PyTorch's global module
  hooks: listed by module path. The bridge and transformers register their own hooks (the bridge's
  capture hooks, transformers' output capturing); a hook counts as the user's when its function
  was not defined in ``transformer_lens`` or ``transformers``, or it sits on a hook point without
  being one of that point's TransformerLens hooks (those are registered by ``transformer_lens``).

The suffix backend computes blocks from the weights, where neither kind would act, so
:func:`user_hooks` decides which backend runs (:mod:`spiritlens.interventions.run`).
"""

from __future__ import annotations

import functools

from spiritlens.model import hook_names

_LIBRARIES = ("transformer_lens.", "transformers.")
_TORCH_HOOKS = (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook"),
                ("_backward_pre_hooks", "backward pre-hook"), ("_backward_hooks", "backward hook"))


def _library_function(fn) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    return module.startswith(_LIBRARIES)


def user_hooks(model, *, backward: bool = False) -> list[str]:
    """The user's hooks on ``model`` (a HookedSpiritLM or a TransformerBridge), one readable entry
    each, sorted: ``"blocks.1.attn.hook_z (TransformerLens hook)"``, ``"…o_proj (PyTorch forward
    pre-hook)"``. ``backward``: only backward hooks (TransformerLens ``bwd_hooks`` and PyTorch
    backward hooks)."""
    bridge = getattr(model, "bridge", model)
    found = []
    for name in _hooked_points(bridge, backward):
        found.append(f"{name} (TransformerLens hook)")
    for path, module in _readable_modules(bridge):
        for attribute, label in _TORCH_HOOKS:
            if backward and "backward" not in label:
                continue
            table = getattr(module, attribute, None) or {}
            if any(not _library_function(fn) for fn in table.values()):
                found.append(f"{path or type(module).__name__} (PyTorch {label})")
    from torch.nn.modules import module as torch_module

    for attribute, label in (("_global_forward_pre_hooks", "forward pre-hook"),
                             ("_global_forward_hooks", "forward hook"),
                             ("_global_backward_pre_hooks", "backward pre-hook"),
                             ("_global_backward_hooks", "backward hook")):
        if backward and "backward" not in label:
            continue
        if getattr(torch_module, attribute, None):
            found.append(f"all modules (PyTorch global {label})")
    return sorted(set(found))


WRAPPED = "_original_component"  # where a TransformerBridge component keeps the module it wraps


def _readable_modules(bridge) -> list[tuple[str, object]]:
    """Every module of ``bridge`` once, under the path a TransformerLens user would type: of all its paths
    the one through the fewest wrapped originals, with a trailing ``._original_component`` dropped (a hook
    on ``blocks.1.attn.o`` lands on the wrapped ``o_proj`` and is named ``blocks.1.attn.o``)."""
    best: dict[int, tuple[tuple[int, int], str, object]] = {}
    for path, module in bridge.named_modules(remove_duplicate=False):
        shown = path[: -len(WRAPPED) - 1] if path.endswith("." + WRAPPED) else path
        rank = (shown.split(".").count(WRAPPED), len(shown))
        if id(module) not in best or rank < best[id(module)][0]:
            best[id(module)] = (rank, shown, module)
    return [(shown, module) for _, shown, module in best.values()]


def _hooked_points(bridge, backward: bool) -> list[str]:
    """One name per hook point with hooks (the bridge lists a point under several aliases, e.g.
    ``blocks.1.hook_mlp_out`` and ``blocks.1.mlp.hook_out``: the TransformerLens 3 style name wins)."""
    names: dict[int, list[str]] = {}
    for name, point in bridge.hook_dict.items():
        hooks = list(point.bwd_hooks) if backward else list(point.fwd_hooks) + list(point.bwd_hooks)
        if hooks:
            names.setdefault(id(point), []).append(name)
    return [min(aliases, key=lambda n: (n.endswith(("hook_out", "hook_in")), len(n), n)) for aliases in names.values()]


def blocks_hooks(model) -> list[str]:
    """:func:`user_hooks` that act where the suffix backend computes from the weights: every one
    except TransformerLens hooks at ``hook_embed`` (the clean and corrupted runs, where those act, go
    through the bridge)."""
    embed = f"{hook_names.EMBED} (TransformerLens hook)"
    return [h for h in user_hooks(model) if h != embed]


def describe(hooks: list[str], limit: int = 3) -> str:
    """``"a, b, c and 2 more"``."""
    shown = ", ".join(hooks[:limit])
    return shown + (f" and {len(hooks) - limit} more" if len(hooks) > limit else "")


