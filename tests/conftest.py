"""Shared fixtures: tiny SpiritLM checkpoints written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import REPO_ROOT, SPOKEN_PROMPT



@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A complete tiny ``$SPIRITLM_CHECKPOINTS_DIR`` tree (random weights)."""
    from spiritlens.synthetic.tiny import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), seed=0)


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_root) -> Path:
    return tiny_root / "spiritlm_model" / "spirit-lm-base-7b"


@pytest.fixture(scope="session")
def tiny_model(tiny_base_dir):
    """HookedSpiritLM on the tiny Base checkpoint, float32, CPU (shared: do not leave hooks on it)."""
    from spiritlens import HookedSpiritLM

    return HookedSpiritLM.from_pretrained(tiny_base_dir, dtype="float32")


@pytest.fixture(scope="session")
def hf_tiny_model(tiny_base_dir):
    """The same tiny checkpoint as ``transformers.LlamaForCausalLM`` (eager attention, float32)."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_base_dir, attn_implementation="eager",
                                            dtype="float32").eval()


@pytest.fixture(scope="session")
def known_path() -> Path:
    """ROME's known_1000.json from $SPIRITLENS_KNOWN_PATH or ../shared/data; skip if absent."""
    candidates = [os.environ.get("SPIRITLENS_KNOWN_PATH"), REPO_ROOT.parent / "shared" / "data" / "known_1000.json"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("known_1000.json not found (set SPIRITLENS_KNOWN_PATH or provide ../shared/data)")




@pytest.fixture(scope="session")
def tiny_ctc_dir(tmp_path_factory) -> Path:
    """A tiny random HubertForCTC directory with the ls960-ft character vocabulary."""
    from spiritlens.synthetic.tiny_ctc import write_tiny_ctc_model

    return write_tiny_ctc_model(tmp_path_factory.mktemp("ctc") / "hubert-ctc", seed=0)


@pytest.fixture(scope="session")
def spoken_prompt_wav(tmp_path_factory) -> Path:
    """SPOKEN_PROMPT synthesised with espeak-ng (22.05 kHz WAV)."""
    from spiritlens.data import EspeakTTS

    backend = EspeakTTS()
    if not backend.available():
        pytest.skip("espeak-ng is not installed (the setup command installs it)")
    return backend.synthesize(SPOKEN_PROMPT, tmp_path_factory.mktemp("speech") / "space_needle.wav")


@pytest.fixture(scope="session")
def toy_cache_dir(tmp_path_factory) -> Path:
    """A spiritlens cache folder holding the small toy (notebooks find it via $SPIRITLENS_CACHE_DIR)."""
    return tmp_path_factory.mktemp("spiritlens-cache")


@pytest.fixture(scope="session")
def toy_root(known_path, toy_cache_dir) -> Path:
    """The small toy SpiritLM (``ToyConfig.small()``: 6 Known facts, 8 layers), trained once per session."""
    from spiritlens.synthetic.toy.config import ToyConfig
    from spiritlens.synthetic.toy import toy_checkpoints

    if not espeak_available():
        pytest.skip("espeak-ng is not installed (the setup command installs it)")
    return toy_checkpoints(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir, progress=False,
                           log=lambda message: None)


@pytest.fixture(scope="session")
def toy_model(toy_root):
    """HookedSpiritLM on the small toy (shared: do not leave hooks on it)."""
    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.toy.cache import model_dir

    return HookedSpiritLM.from_pretrained(model_dir(toy_root), speech_tokenizer=toy_root / "speech_tokenizer")


def espeak_available() -> bool:
    from spiritlens.data import EspeakTTS

    return EspeakTTS().available()
