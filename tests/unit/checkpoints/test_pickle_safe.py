"""Pickles with payloads: every way spiritlens reads a speech-tokenizer file refuses them, runs nothing.

Each hostile file is built here: a checkpoint whose pickle, if unpickled by ``pickle``/``torch.load
(weights_only=False)``, would create a file through ``os.system``, ``builtins.exec``,
``subprocess.Popen``, ``builtins.eval`` or ``os.system`` hidden behind protocol 4's
``STACK_GLOBAL``; in the zip format torch writes and in its legacy format. The test asserts the
one-line message (file and global named), exit status 2 for the CLI, and that the file the payload
would create does not exist. The allow-list is also checked from the other side: SpiritLM's converted
files, a raw fairseq checkpoint (``Dictionary``, ``argparse.Namespace``, an omegaconf ``DictConfig``),
a k-means quantizer with numpy arrays, load and give the same units as before.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import os
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from spiritlens.checkpoints.pickle_safe import UnsafePickleError, load_checkpoint, load_weights, loads, to_plain
from spiritlens.cli import main
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer
from spiritlens.units import SpeechTokenizer, load_quantizer, read_hubert_checkpoint

HUBERT = "hubert_25hz/mhubert_base_25hz.pt"
QUANT = "hubert_25hz/L11_quantizer_500.pt"


class _Payload:
    """Unpickling this calls ``function(argument)``: what an attacker puts in a checkpoint."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """name -> (object whose unpickling would create ``marker``, the global the message must name)."""
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "exec": (_Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        "eval": (_Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "subprocess": (_Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    }


def hostile_checkpoint(path: Path, payload: object, *, base: Path | None = None, fmt: str = "zip") -> Path:
    """A real checkpoint (``base``'s content when given) with ``payload`` added under one more key."""
    # a bare pickle of tensors would name torch's storage loader first: keep that one tensor-free
    content = torch.load(base, weights_only=True) if base is not None and fmt != "pickle4" else {"model_cfg": {}}
    content["extra"] = payload
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        torch.save(content, path)
    elif fmt == "legacy":
        torch.save(content, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, protocol 4: STACK_GLOBAL instead of GLOBAL
        path.write_bytes(pickle.dumps(content, protocol=4))
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_speech_tokenizer(tmp_path_factory.mktemp("st"), seed=0)


def refusal(path: Path, name: str) -> str:
    return (f"{path}: refusing to unpickle global {name!r}: not on the allow-list of what a SpiritLM or "
            "fairseq checkpoint holds (spiritlens never runs code from a file)")


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle4"])
@pytest.mark.parametrize("kind", ["os.system", "exec", "eval", "subprocess"])
def test_hostile_mhubert_is_refused_and_runs_nothing(tiny_dir, tmp_path, kind, fmt):
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)[kind]
    path = hostile_checkpoint(tmp_path / "m.pt", payload, base=tiny_dir / HUBERT, fmt=fmt)
    with pytest.raises(UnsafePickleError) as error:
        read_hubert_checkpoint(path)
    assert str(error.value) == refusal(path, name)
    assert not marker.exists()


def test_hostile_quantizer_is_refused(tiny_dir, tmp_path):
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["os.system"]
    path = hostile_checkpoint(tmp_path / "q.pt", payload, base=tiny_dir / QUANT)
    with pytest.raises(ValueError) as error:
        load_quantizer(path)
    assert str(error.value) == refusal(path, name)
    assert not marker.exists()


def test_model_weights_load_refuses_payloads_too(tiny_dir, tmp_path):
    """pytorch_model.bin's loader allows torch's tensor globals only: not even fairseq's stubs."""
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["exec"]
    path = hostile_checkpoint(tmp_path / "pytorch_model.bin", payload, base=tiny_dir / QUANT)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global 'builtins\.exec'"):
        load_weights(path)
    with pytest.raises(UnsafePickleError, match=r"'fairseq\.data\.dictionary\.Dictionary'"):
        load_weights(_fairseq_dir(tmp_path) / HUBERT)
    assert not marker.exists()


def _fairseq_dir(tmp_path: Path) -> Path:
    return write_tiny_speech_tokenizer(tmp_path / "fairseq", seed=0, layout="fairseq")


def speech_tokenizer_with(tmp_path: Path, which: str, payload: object, tiny_dir: Path) -> Path:
    """A ``speech_tokenizer/`` folder: the tiny one with ``which`` (HUBERT or QUANT) made hostile."""
    folder = tmp_path / "speech_tokenizer"
    (folder / "hubert_25hz").mkdir(parents=True)
    for name in (HUBERT, QUANT):
        if name == which:
            hostile_checkpoint(folder / name, payload, base=tiny_dir / name)
        else:
            (folder / name).write_bytes((tiny_dir / name).read_bytes())
    return folder


@pytest.mark.parametrize("which", [HUBERT, QUANT])
def test_units_cli_refuses_in_a_real_process(tiny_dir, tmp_path, which):
    """``spiritlens units`` as a user runs it: one line on stderr, exit 2, no file created."""
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["os.system"]
    folder = speech_tokenizer_with(tmp_path, which, payload, tiny_dir)
    audio = tmp_path / "a.wav"
    soundfile.write(audio, np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1, 16_000)
    out = tmp_path / "units.json"
    done = subprocess.run([sys.executable, "-m", "spiritlens", "units", str(audio), "--json", str(out),
                           "--speech-tokenizer", str(folder)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"spiritlens units: error: {refusal(folder / which, name)}"]
    assert not marker.exists() and not out.exists()


def test_speech_tokenizer_load_and_trace_audio_refuse(tiny_root, tiny_ctc_dir, tmp_path, capsys):
    """The speech tokenizer as HookedSpiritLM loads it, and ``spiritlens trace --audio``."""
    tiny_dir = tiny_root / "speech_tokenizer"
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["exec"]
    folder = speech_tokenizer_with(tmp_path, HUBERT, payload, tiny_dir)
    with pytest.raises(ValueError) as error:
        SpeechTokenizer.from_dir(folder)
    assert str(error.value) == refusal(folder / HUBERT, name)
    audio = tmp_path / "q.wav"
    soundfile.write(audio, np.random.default_rng(1).standard_normal(32_000).astype(np.float32) * 0.1, 16_000)
    out = tmp_path / "s2t.json"
    status = main(["trace", "--model", str(tiny_root / "spiritlm_model" / "spirit-lm-base-7b"),
                   "--audio", str(audio), "--transcript", "The Space Needle is in", "--subject", "Space Needle",
                   "--aligner", str(tiny_ctc_dir), "--speech-tokenizer", str(folder), "--noise", "0.1",
                   "--samples", "2", "--json", str(out)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert status == 2 and err == [f"spiritlens trace: error: {refusal(folder / HUBERT, name)}"]
    assert not marker.exists() and not out.exists()


# ------------------------------------------------------------------ what the allow-list keeps
def test_spiritlm_and_fairseq_files_still_load(tiny_dir, tmp_path):
    fairseq = _fairseq_dir(tmp_path)
    a, b = read_hubert_checkpoint(tiny_dir / HUBERT), read_hubert_checkpoint(fairseq / HUBERT)
    assert b.layout == "fairseq" and a.model_cfg == b.model_cfg
    assert b.dictionaries_symbols[0][:5] == ["<s>", "<pad>", "</s>", "<unk>", "0"]
    wave = np.random.default_rng(2).standard_normal(24_000).astype(np.float32) * 0.1
    units_a = SpeechTokenizer.from_dir(tiny_dir).encode(wave).units
    units_b = SpeechTokenizer.from_dir(fairseq).encode(wave).units
    assert units_a == units_b and len(units_a) == (24_000 - 720) // 640 + 1


@contextlib.contextmanager
def _importable_as(classes: dict[str, type]):
    """Make each class picklable under a foreign ``module.name`` (fairseq/omegaconf are not installed)."""
    added, old = [], {}
    for full, cls in classes.items():
        module, _, name = full.rpartition(".")
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            key = ".".join(parts[:i])
            if key not in sys.modules:
                sys.modules[key] = types.ModuleType(key)
                added.append(key)
        old[cls] = (cls.__module__, cls.__qualname__)
        cls.__module__, cls.__qualname__ = module, name
        setattr(sys.modules[module], name, cls)
    try:
        yield
    finally:
        for cls, (module, name) in old.items():
            cls.__module__, cls.__qualname__ = module, name
        for key in reversed(added):
            del sys.modules[key]


def test_namespace_and_omegaconf_configs_read_as_plain_dicts(tiny_dir, tmp_path):
    """Older fairseq files keep ``args`` as an argparse.Namespace; a DictConfig keeps ``_content`` of
    nodes with ``_val``: both become the same plain config."""

    class DictConfig:
        pass

    class AnyNode:
        pass

    class ContainerMetadata:
        pass

    weights = torch.load(tiny_dir / HUBERT, weights_only=True)
    cfg = weights["model_cfg"]
    namespace = argparse.Namespace(**cfg, sample_rate=16_000, normalize=False)
    torch.save({"args": namespace, "model": weights["model_weight"]}, tmp_path / "ns.pt")
    nodes = {}
    for key, value in cfg.items():
        node = AnyNode()
        node.__dict__.update(_val=value, _metadata=None, _parent=None)
        nodes[key] = node
    config = DictConfig()
    meta = ContainerMetadata()
    meta.__dict__.update(ref_type=typing_any(), object_type=dict, optional=True, key=None, flags={})
    config.__dict__.update(_content=nodes, _metadata=meta, _parent=None)
    with _importable_as({"omegaconf.dictconfig.DictConfig": DictConfig, "omegaconf.nodes.AnyNode": AnyNode,
                         "omegaconf.base.ContainerMetadata": ContainerMetadata}):
        torch.save({"cfg": {"model": config, "task": {"sample_rate": 16_000}}, "model": weights["model_weight"]},
                   tmp_path / "oc.pt")
    for name in ("ns.pt", "oc.pt"):
        checkpoint = read_hubert_checkpoint(tmp_path / name)
        assert checkpoint.layout == "fairseq"
        assert {k: checkpoint.model_cfg[k] for k in cfg} == cfg


def typing_any():
    import typing

    return typing.Any


def test_kmeans_numpy_arrays_are_rebuilt_not_unpickled(tmp_path):
    centers = np.arange(12, dtype=np.float32).reshape(3, 4)
    torch.save({"cluster_centers": centers, "n_clusters": np.int64(3), "inertia": np.float64(2.5)}, tmp_path / "km.pt")
    loaded = load_checkpoint(tmp_path / "km.pt", "quantizer")
    assert loaded["cluster_centers"].dtype == np.float32 and np.array_equal(loaded["cluster_centers"], centers)
    assert loaded["n_clusters"] == 3 and loaded["inertia"] == 2.5
    assert torch.equal(load_quantizer(tmp_path / "km.pt").centers, torch.from_numpy(centers))
    torch.save({"cluster_centers": np.array([{"a": 1}], dtype=object), "n_clusters": 1}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match=r"obj\.pt: .*numpy (array holds Python objects|dtype 'O')"):
        load_checkpoint(tmp_path / "obj.pt", "quantizer")


def test_raw_pickles_go_through_the_same_rule(tmp_path):
    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["os.system"]
    with pytest.raises(UnsafePickleError) as error:
        loads(pickle.dumps({"x": payload}), "espeak-ng child", {})
    assert str(error.value).startswith(f"espeak-ng child: refusing to unpickle global {name!r}")
    assert not marker.exists()
    assert loads(pickle.dumps({"a": [1, 2.5, "x", (3, None)]}), "ipc", {}) == {"a": [1, 2.5, "x", (3, None)]}


def test_the_tree_has_no_unsafe_load():
    """No ``weights_only=False``, ``pickle.load(s)`` or bare ``torch.load`` outside pickle_safe.py."""
    root = Path(__file__).resolve().parents[3] / "src" / "spiritlens"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "pickle_safe.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("weights_only=False", "torch.load(", "pickle.load", "pickle.Unpickler", "joblib.load",
                       "allow_pickle=True"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []
    assert "weights_only=False" not in (root / "checkpoints" / "pickle_safe.py").read_text(encoding="utf-8")


def test_to_plain_enum_stub():
    from spiritlens.checkpoints.pickle_safe import PickledStub

    assert to_plain(PickledStub("layer_norm")) == "layer_norm"


def test_experiment_refuses_a_hostile_speech_tokenizer_before_any_work(tiny_root, known_path, tmp_path):
    """``spiritlens experiment --checkpoints`` (S->T): one line, exit 2, nothing written, nothing run."""
    from helpers import run_cli

    marker = tmp_path / "pwned"
    payload, name = payloads(marker)["os.system"]
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_root / "spiritlm_model", root / "spiritlm_model")
    folder = speech_tokenizer_with(root, QUANT, payload, tiny_root / "speech_tokenizer")
    out = tmp_path / "run"
    done = run_cli("experiment", "--out", out, "--checkpoints", root, "--known", known_path, "--aligner",
                   "pocketsphinx", "--prompts", "2", "--modalities", "s2t", "--kinds", "hidden", "--samples", "2",
                   "--keep-all", "--asr", "none", "--quiet")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("spiritlens")]
    assert errors == [f"spiritlens experiment: error: {refusal(folder / QUANT, name)}"]
    assert not marker.exists() and not (out / "prepare.json").exists() and not (out / "speech").exists()
