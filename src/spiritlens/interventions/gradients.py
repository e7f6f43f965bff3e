"""The gradient pass for attribution patching, through the hooked model.

One forward of the corrupted rows through ``model.run_with_hooks`` with autograd (the corruption's
hook at ``hook_embed``; every TransformerLens hook, spliced SAE and plain PyTorch hook attached to
the model acts, as in the exact backends), capturing each layer's ``hook_resid_pre``,
``hook_resid_mid``, ``hook_resid_post``, ``hook_mlp_out``, ``hook_attn_out`` and attention pattern
``attn.hook_pattern``, then one backward of the sum of the rows' scores
(:class:`~spiritlens.interventions.metric.AnswerScore`). The captures are registered after the
user's hooks, so they hold the values that flow on. This is also the run's one corrupted forward
when attribution is asked for: its detached states feed the suffix backend (a screen's
verification) and its score is the corrupted baseline.

Refused in one line (ValueError naming the hooks): backward hooks attached (they would change the
gradient, not the model), and a run in which a hook cuts the gradient (an activation the score does
not depend on differentiably, e.g. a hook that detaches it).
"""

from __future__ import annotations

from typing import Sequence

import torch

from spiritlens.interventions.hooks import describe, user_hooks
from spiritlens.model import hook_names

SITES = ("attn_out", "mlp_out", "resid_post")


class HookedGradients:
    """The corrupted run with autograd and the gradient of ``sum_s p_s`` (module docstring).

    Attributes (lists over the L layers, ``[S, T, d]`` unless said; detached; ``grad_*`` float32):
    ``pre`` (``resid_pre``; ``pre[L]`` = ``resid_post[L-1]``), ``mid``, ``attn``, ``mlp``, ``post``;
    ``pattern`` ``[S, n_heads, T, T]``; ``grad_attn``, ``grad_mlp``, ``grad_post``, ``grad_pattern``;
    ``row_scores`` ``[S]`` (float64) and ``score`` (the run's score, as the metric reduces the rows).
    """

    def __init__(self, run, *, keep_graph: bool = False):
        model = run.model
        backward = user_hooks(model, backward=True)
        if backward:
            raise ValueError(f"attribution patching differentiates the hooked model, but backward hooks are attached "
                             f"({describe(backward)}); they would change its gradient: remove them or use method='exact'")
        L = model.cfg.n_layers
        self.L = L
        captured: dict[str, torch.Tensor] = {}

        def capture(act, hook):
            captured[hook.name] = act
            return act

        names = [hook_names.resid_pre(l) for l in range(L)] + [hook_names.resid_mid(l) for l in range(L)]
        names += [hook_names.BY_SITE[site](l) for site in SITES for l in range(L)]
        names += [pattern_hook(l) for l in range(L)]
        hooks = []
        embed = run.corruption.embed_hook()
        if embed is not None:
            hooks.append((hook_names.EMBED, embed))
        hooks += [(name, capture) for name in names]
        rows = run.corruption.rows(run.ids)
        with torch.enable_grad():
            logits = model.run_with_hooks(rows, fwd_hooks=hooks)
            probs = run.metric.probabilities(run.metric.scored(logits))  # [S, K]
            self.score = float(run.metric.reduce(probs.detach()))
            self.row_scores = probs[:, 0].double() if probs.shape[1] == 1 else probs.double().prod(dim=-1)
            wanted = {site: [captured[hook_names.BY_SITE[site](l)] for l in range(L)] for site in SITES}
            pattern = [captured[pattern_hook(l)] for l in range(L)]
            inputs = wanted["attn_out"] + wanted["mlp_out"] + wanted["resid_post"] + pattern
            cut = [name for name, t in zip(names[2 * L:], inputs) if not t.requires_grad]
            if cut or not self.row_scores.requires_grad:
                hooks_on = user_hooks(model)
                raise ValueError(f"attribution patching needs the score's gradient through the hooked model, but "
                                 f"{cut[0] if cut else 'the score'} has none (hooks attached: "
                                 f"{describe(hooks_on) or 'none'}): a hook detaches it or runs without "
                                 "autograd; use method='exact'")
            grads = torch.autograd.grad(self.row_scores.sum(), inputs, retain_graph=keep_graph, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]
        # GradDrop needs more backward passes through the same graph.
        self._live = (self.row_scores, wanted["attn_out"], wanted["mlp_out"], wanted["resid_post"]) if keep_graph else None
        self.grad_attn = [g.float() for g in grads[:L]]
        self.grad_mlp = [g.float() for g in grads[L:2 * L]]
        self.grad_post = [g.float() for g in grads[2 * L:3 * L]]
        self.grad_pattern = [g.float() for g in grads[3 * L:]]
        self.attn = [t.detach() for t in wanted["attn_out"]]
        self.mlp = [t.detach() for t in wanted["mlp_out"]]
        self.post = [t.detach() for t in wanted["resid_post"]]
        self.pattern = [t.detach() for t in pattern]
        self.pre = [captured[hook_names.resid_pre(l)].detach() for l in range(L)] + [self.post[-1]]
        self.mid = [captured[hook_names.resid_mid(l)].detach() for l in range(L)]
        self.row_scores = self.row_scores.detach() if not keep_graph else self.row_scores
        self.S, self.T = self.pre[0].shape[:2]

    def site(self, site: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The corrupted states and their gradients of one site, two lists of L ``[S, T, d]``."""
        return {"resid_post": (self.post, self.grad_post), "mlp_out": (self.mlp, self.grad_mlp),
                "attn_out": (self.attn, self.grad_attn)}[site]

    def graddrop(self, site: str, clean: Sequence[torch.Tensor], n_positions: int):
        """GradDrop terms (see :func:`spiritlens.traces.attribution.graddrop_magnitudes`): ``[L, L, n]``,
        entry ``[g, l, t]`` the plain AtP term of restoring ``site`` at layer l and position t with the
        gradient through layer g's attention and MLP outputs set to zero. Needs ``keep_graph=True``."""
        import numpy as np

        if self._live is None:
            raise ValueError("GradDrop needs the corrupted run's graph: build HookedGradients with keep_graph=True")
        scores, attn, mlp, post = self._live
        tensors = {"resid_post": post, "mlp_out": mlp, "attn_out": attn}[site]
        out = np.zeros((self.L, self.L, n_positions))
        for drop in range(self.L):
            handles = [attn[drop].register_hook(torch.zeros_like), mlp[drop].register_hook(torch.zeros_like)]
            try:
                grads = torch.autograd.grad(scores.sum(), tensors, retain_graph=True, allow_unused=True)
            finally:
                for handle in handles:
                    handle.remove()
            for layer, grad in enumerate(grads):
                if grad is None or (site != "resid_post" and layer == drop):
                    continue
                delta = clean[layer][None, :n_positions].float() - tensors[layer].detach()[:, :n_positions].float()
                out[drop, layer] = (delta * grad[:, :n_positions].float()).sum(dim=-1).mean(dim=0).cpu().numpy()
        return out


def pattern_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"
