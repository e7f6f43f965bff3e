"""pytest plugin for scripts/run_tl_bridge_tests.py: TransformerLens' bridge tests on a SpiritLM checkpoint.

TransformerLens' bridge tests build their model from GPT-2 (``TransformerBridge.boot_transformers("gpt2")``,
the ``gpt2_bridge``/``distilgpt2_bridge`` fixtures, ``HookedTransformer.from_pretrained("solu-2l")`` in
``tests/acceptance/test_activation_cache.py``) and compare with Hugging Face's GPT-2. This plugin, loaded
with ``-p tl_bridge_plugin``, swaps those for one SpiritLM checkpoint folder ($SPIRITLENS_TL_MODEL_DIR):

* the model under test, per $SPIRITLENS_TL_MODE: ``ours`` is ``HookedSpiritLM.from_pretrained(folder)``,
  ``plain`` is ``TransformerBridge.boot_transformers(folder)`` (the bridge TransformerLens would give);
* Hugging Face references (``AutoModelForCausalLM``/``GPT2LMHeadModel.from_pretrained("gpt2")``,
  ``AutoTokenizer``, ``AutoConfig``) become ``LlamaForCausalLM`` (eager attention), transformers'
  tokenizer and config of the same folder, in both modes;
* ``HookedTransformer`` (removed in TransformerLens 4) is the plain bridge with
  ``enable_compatibility_mode()`` (``from_pretrained_no_processing``: ``no_processing=True``) where a test
  compares a bridge against it, and the model under test in ``tests/acceptance/test_activation_cache.py``,
  whose subject it is.

Other model names load as the tests ask (without network they fail in both modes). Every test's outcome
(passed/failed/error/skipped, the failing line) is written as JSON to $SPIRITLENS_TL_REPORT, and whether
the test built a swapped model (``swapped``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GPT2_NAMES = frozenset({"gpt2", "distilgpt2", "gpt2-small", "openai-community/gpt2", "distilbert/distilgpt2",
                        "tl_bridge/gpt2", "solu-2l"})
SUBJECT_OF_HOOKED = "tests/acceptance/test_activation_cache.py"

_state = {"nodeid": None, "swapped": set(), "modules": set()}
_results: dict[str, dict] = {}


def _mode() -> str:
    mode = os.environ.get("SPIRITLENS_TL_MODE", "")
    if mode not in ("ours", "plain"):
        raise pytest.UsageError(f"SPIRITLENS_TL_MODE must be 'ours' or 'plain', got {mode!r}")
    return mode


def _model_dir() -> str:
    folder = os.environ.get("SPIRITLENS_TL_MODEL_DIR", "")
    if not Path(folder, "config.json").is_file():
        raise pytest.UsageError(f"SPIRITLENS_TL_MODEL_DIR={folder!r} is not a model folder with config.json")
    return folder


def _is_swapped(name) -> bool:
    return isinstance(name, (str, os.PathLike)) and str(name) in GPT2_NAMES


def _note_swap() -> None:
    """The running test built a swapped model (tests of its module may reuse it from a module cache)."""
    if _state["nodeid"] is not None:
        _state["swapped"].add(_state["nodeid"])
        _state["modules"].add(_state["nodeid"].split("::")[0])


def _dtype_kwargs(kwargs: dict) -> dict:
    out = {}
    for key in ("device", "dtype"):
        if kwargs.get(key) is not None:
            out[key] = kwargs[key]
    if "dtype" not in out and kwargs.get("torch_dtype") is not None:
        out["dtype"] = kwargs["torch_dtype"]
    return out


def pytest_configure(config):
    import torch
    import transformer_lens
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    mode, folder = _mode(), _model_dir()
    original_boot = TransformerBridge.boot_transformers  # a plain function attached to the class

    def plain_bridge(**kwargs):
        kwargs = _dtype_kwargs(kwargs)
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("dtype", torch.float32)
        return original_boot(folder, **kwargs)

    def model_under_test(**kwargs):
        _note_swap()
        if mode == "plain":
            return plain_bridge(**kwargs)
        from spiritlens import HookedSpiritLM

        kwargs = _dtype_kwargs(kwargs)
        return HookedSpiritLM.from_pretrained(folder, device=kwargs.get("device", "cpu"),
                                              dtype=kwargs.get("dtype", torch.float32))

    def boot_transformers(model_name, *args, **kwargs):
        if _is_swapped(model_name):
            return model_under_test(**kwargs)
        return original_boot(model_name, *args, **kwargs)

    TransformerBridge.boot_transformers = staticmethod(boot_transformers)

    def hf_swap(cls, replacement):
        """``cls.from_pretrained`` (a classmethod, as TransformerLens' retry wrapper expects) with the
        swapped names going to ``replacement``."""
        original = cls.from_pretrained.__func__

        def from_pretrained(klass, name, *args, **kwargs):
            if _is_swapped(name):
                _note_swap()
                return replacement(**kwargs)
            return original(klass, name, *args, **kwargs)

        cls.from_pretrained = classmethod(from_pretrained)

    def hf_model(**kwargs):
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype", torch.float32))
        return transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager",
                                                             dtype=dtype).eval()

    for cls in (transformers.AutoModelForCausalLM, transformers.GPT2LMHeadModel, transformers.AutoModel):
        hf_swap(cls, hf_model)
    hf_swap(transformers.AutoTokenizer, lambda **kwargs: transformers.AutoTokenizer.from_pretrained(folder))
    hf_swap(transformers.AutoConfig, lambda **kwargs: transformers.AutoConfig.from_pretrained(folder))

    class HookedTransformer:
        """TransformerLens 3's HookedTransformer, stood in for (module docstring)."""

        @staticmethod
        def _build(name, processed, kwargs):
            if not _is_swapped(name):
                raise OSError(f"{name!r} is not available offline (HookedTransformer stand-in)")
            if (_state["nodeid"] or "").startswith(SUBJECT_OF_HOOKED):
                model = model_under_test(**kwargs)
                if processed:
                    model.enable_compatibility_mode(disable_warnings=True)
                return model
            _note_swap()
            bridge = plain_bridge(**kwargs)
            bridge.enable_compatibility_mode(no_processing=not processed, disable_warnings=True)
            return bridge

        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            return cls._build(name, True, kwargs)

        @classmethod
        def from_pretrained_no_processing(cls, name, *args, **kwargs):
            return cls._build(name, False, kwargs)

    transformer_lens.HookedTransformer = HookedTransformer


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _state["nodeid"] = item.nodeid
    if any("gpt2" in name for name in getattr(item, "fixturenames", ())):
        _state["swapped"].add(item.nodeid)


def pytest_runtest_teardown(item, nextitem):
    _state["nodeid"] = item.nodeid


def _reason(report) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if crash is not None:
        return " | ".join(line.strip() for line in crash.message.strip().splitlines()[:4])[:400]
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        return str(longrepr[2])[:300]
    return str(longrepr).strip().splitlines()[-1][:300] if longrepr else ""


def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "reason": ""})
    if report.when == "call" and report.passed and entry["outcome"] == "passed":
        return
    if report.skipped and entry["outcome"] == "passed":
        entry.update(outcome="skipped", reason=_reason(report))
    elif report.failed:
        if report.when == "call":
            entry.update(outcome="failed", reason=_reason(report))
        elif entry["outcome"] in ("passed", "skipped"):  # setup/teardown error
            entry.update(outcome="error", reason=_reason(report))


def pytest_collectreport(report):
    if report.failed:
        _results[report.nodeid or "<collection>"] = {"outcome": "error", "reason": _reason(report),
                                                     "collection": True}


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SPIRITLENS_TL_REPORT")
    if not path:
        return
    for nodeid, entry in _results.items():
        entry["swapped"] = nodeid in _state["swapped"] or nodeid.split("::")[0] in _state["modules"]
    Path(path).write_text(json.dumps(_results, indent=1, sort_keys=True))
