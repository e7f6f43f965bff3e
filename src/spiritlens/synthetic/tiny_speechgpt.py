"""Tiny random SpeechGPT checkpoints in SpeechGPT's file layout (:mod:`spiritlens.models.speechgpt`).

:func:`write_tiny_speechgpt` writes, deterministically for a seed::

    root/SpeechGPT-7B-cm/   config.json pytorch_model.bin tokenizer.model added_tokens.json
                            special_tokens_map.json tokenizer_config.json
    root/speech2unit/       mhubert_base_vp_en_es_fr_it3.pt mhubert_base_vp_en_es_fr_it3_L11_km1000.bin

- the model: a 4-layer Llama (hidden 64) with LLaMA-1's ``config.json`` keys (no ``num_key_value_heads``,
  no rope keys, ``torch_dtype`` float16, ``transformers_version`` 4.29.0.dev0), fp32 weights in one
  ``pytorch_model.bin`` with each layer's ``self_attn.rotary_emb.inv_freq`` buffer after its ``o_proj``,
  as transformers before 4.31 saved them; a SentencePiece BPE model of 1024 text pieces (LLaMA's
  settings: byte fallback, dummy prefix, BOS/EOS/UNK = 1/2/0); SpeechGPT's 1006 added tokens in
  ``added_tokens.json`` (``vocab_size`` = 1024 + 1006, no padding rows); BOS/EOS/UNK as ``AddedToken``
  objects and ``pad_token`` ``"<unk>"`` in ``special_tokens_map.json``; transformers 4.29's
  ``tokenizer_config.json`` (``LlamaTokenizer``, ``add_bos_token`` true, ``add_eos_token`` false, no
  ``legacy``, no ``added_tokens_decoder``);
- the speech tokenizer: a raw fairseq HuBERT checkpoint with the 50 Hz conv stack (7 layers, kernels
  10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: 320 samples per frame, receptive field 400) and 12 tiny
  transformer layers (so ``output_layer=11`` applies), and a 1000-cluster ``MiniBatchKMeans`` written in
  joblib's format by :func:`write_kmeans_joblib`, its centres drawn around the tiny mHuBERT's own
  layer-11 features of a test signal, so that audio gives varied units.

:func:`write_kmeans_joblib` writes joblib's byte format (:mod:`spiritlens.checkpoints.pickle_safe`
describes it) with Python's pure-Python pickler, as joblib's ``NumpyPickler`` does, without joblib or
scikit-learn: for joblib >= 1.2 (alignment padding) or joblib <= 1.1 (none).
``scripts/make_speechgpt_fixtures.py`` checked its bytes against ``joblib.dump`` of a real
``MiniBatchKMeans`` holding the same state (joblib 1.6.0 and 1.1.1): identical.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from spiritlens._io import save_torch, write_atomic
from spiritlens.models.speechgpt.speech import HUBERT_FILE, KMEANS_FILE, OUTPUT_LAYER
from spiritlens.models.speechgpt.vocab import N_UNITS, added_tokens
from spiritlens.synthetic.tiny import TEXT_PIECES, tiny_llama_config, train_tokenizer_model
from spiritlens.synthetic.tiny_units import TINY_MODEL_CFG, TINY_TASK_CFG, _save_fairseq, tiny_fairseq_state_dict

MODEL_FOLDER, SPEECH_FOLDER = "SpeechGPT-7B-cm", "speech2unit"
CONV_50HZ = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"  # HuBERT-base's stack, 32 channels wide
JOBLIB_FORMATS = ("1.2", "1.1")  # joblib >= 1.2 (16-byte alignment) and <= 1.1
# fairseq's examples/hubert/simple_kmeans/learn_kmeans.py get_km_model() and its argparse defaults
KMEANS_PARAMS = {"n_clusters": N_UNITS, "init": "k-means++", "max_iter": 100, "batch_size": 10000, "verbose": 1,
                 "compute_labels": False, "tol": 0.0, "max_no_improvement": 100, "init_size": None, "n_init": 20,
                 "reassignment_ratio": 0.0, "random_state": None}


def write_tiny_speechgpt(root: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny SpeechGPT model folder and speech-tokenizer folder under ``root`` (module
    docstring); returns ``(model_dir, speech_tokenizer_dir)``."""
    root = Path(root)
    return (write_tiny_speechgpt_model(root / MODEL_FOLDER, seed=seed),
            write_tiny_speech2unit(root / SPEECH_FOLDER, seed=seed))


def _added_token_object(content: str, *, tagged: bool) -> dict:
    """An ``AddedToken`` as transformers 4.29 saved it (``tagged``: with ``__type``, as in tokenizer_config.json)."""
    entry = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **entry} if tagged else entry


def write_speechgpt_tokenizer_files(directory: str | Path, *, seed: int = 0) -> Path:
    """The tokenizer files of :func:`write_tiny_speechgpt_model` (module docstring); returns ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = train_tokenizer_model(expressive=False, seed=seed, spirit_pieces=False)
    write_atomic(directory / "tokenizer.model", model)
    added = {token: TEXT_PIECES + k for k, token in enumerate(added_tokens())}
    write_atomic(directory / "added_tokens.json", json.dumps(added, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": _added_token_object("<s>", tagged=False),
               "eos_token": _added_token_object("</s>", tagged=False),
               "pad_token": "<unk>", "unk_token": _added_token_object("<unk>", tagged=False)}
    write_atomic(directory / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    tokenizer_config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": _added_token_object("<s>", tagged=True),
        "clean_up_tokenization_spaces": False, "eos_token": _added_token_object("</s>", tagged=True),
        "model_max_length": 1000000000000000019884624838656, "pad_token": None, "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": _added_token_object("<unk>", tagged=True)}
    write_atomic(directory / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
    return directory


def write_tiny_speechgpt_model(directory: str | Path, *, seed: int = 0, **config_overrides) -> Path:
    """The model folder of :func:`write_tiny_speechgpt`; ``config_overrides`` change ``config.json``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = write_speechgpt_tokenizer_files(directory, seed=seed)
    base = tiny_llama_config(TEXT_PIECES + len(added_tokens()))
    config = {key: base[key] for key in ("architectures", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size",
                                         "initializer_range", "intermediate_size")}
    config.update({"max_position_embeddings": 2048, "model_type": "llama",
                   "num_attention_heads": base["num_attention_heads"], "num_hidden_layers": base["num_hidden_layers"],
                   "pad_token_id": 0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "torch_dtype": "float16",
                   "transformers_version": "4.29.0.dev0", "use_cache": True, "vocab_size": base["vocab_size"]})
    config.update(config_overrides)
    write_atomic(directory / "config.json", json.dumps(config, indent=2) + "\n")
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    state = {}
    for name, tensor in llama.state_dict().items():
        state[name] = tensor.detach().float().clone()
        if name.endswith("self_attn.o_proj.weight"):
            state[name.replace("o_proj.weight", "rotary_emb.inv_freq")] = inv_freq.clone()
    save_torch(state, directory / "pytorch_model.bin")
    return directory


def write_tiny_speech2unit(directory: str | Path, *, seed: int = 0) -> Path:
    """The speech-tokenizer folder of :func:`write_tiny_speechgpt`: the fairseq mHuBERT, then a k-means
    whose centres are the mHuBERT's own features of a test signal plus noise (deterministic for ``seed``)."""
    from spiritlens.units.hubert import HubertFeatures

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg = {**TINY_MODEL_CFG, "label_rate": 50.0, "conv_feature_layers": CONV_50HZ}
    task_cfg = {**TINY_TASK_CFG, "label_rate": 50.0}
    generator = torch.Generator().manual_seed(seed)
    weights = tiny_fairseq_state_dict(model_cfg, generator)
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(N_UNITS)]
    _save_fairseq(directory / HUBERT_FILE, model_cfg, task_cfg, weights, symbols)
    hubert = HubertFeatures.from_checkpoint(directory / HUBERT_FILE, output_layer=OUTPUT_LAYER)
    rng = np.random.RandomState(seed)
    seconds = np.arange(3 * 16_000) / 16_000
    signal = 0.3 * np.sin(2 * np.pi * (150 + 400 * seconds) * seconds) + 0.05 * rng.randn(seconds.size)
    features = hubert.features(torch.from_numpy(signal.astype(np.float32))).numpy()
    rows = features[rng.randint(0, features.shape[0], size=N_UNITS)]
    centers = (rows + 0.5 * features.std(axis=0) * rng.randn(*rows.shape)).astype(np.float32)
    write_kmeans_joblib(directory / KMEANS_FILE, centers)
    return directory


# ------------------------------------------------------------------------------------ joblib's format
def _named_class(module: str, name: str) -> type:
    """A class the writer pickles as ``module.name`` without that module existing here."""
    return type(name, (), {"__module__": module, "__qualname__": name, "_pickle_name": (module, name)})


_WRAPPER = _named_class("joblib.numpy_pickle", "NumpyArrayWrapper")


class _JoblibWriter(pickle._Pickler):  # noqa: SLF001 - the pure-Python pickler, as joblib's NumpyPickler
    """joblib's ``NumpyPickler`` byte for byte: an array is pickled as a ``NumpyArrayWrapper``, the frame
    is closed, and its bytes follow (after the alignment padding of joblib >= 1.2)."""

    def __init__(self, handle, *, protocol: int, alignment: int | None):
        super().__init__(handle, protocol=protocol)
        self.handle, self.alignment = handle, alignment

    def save_global(self, obj, name=None):
        named = getattr(obj, "_pickle_name", None) if isinstance(obj, type) else None
        if named is None:
            return super().save_global(obj, name)
        module, qualname = named
        if self.proto >= 4:  # as pickle's save_global writes a module-level class
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)

    def save(self, obj, save_persistent_id=True):
        if type(obj) is not np.ndarray:
            return super().save(obj, save_persistent_id)
        if obj.dtype.hasobject:
            raise ValueError("write_kmeans_joblib writes arrays of numbers only")
        array = np.ascontiguousarray(obj)
        wrapper = _WRAPPER()
        wrapper.__dict__.update(subclass=np.ndarray, shape=array.shape, order="C", dtype=array.dtype, allow_mmap=True)
        if self.alignment is not None:
            wrapper.numpy_array_alignment_bytes = self.alignment
        super().save(wrapper)
        if self.proto >= 4:
            self.framer.commit_frame(force=True)
        if self.alignment is not None:
            padding = self.alignment - (self.handle.tell() + 1) % self.alignment
            self.handle.write(bytes([padding]) + b"\xff" * padding)
        self.handle.write(array.tobytes("C"))


def write_kmeans_joblib(path: str | Path, centers: np.ndarray, *, joblib_format: str = "1.2",
                        estimator: str = "sklearn.cluster._kmeans.MiniBatchKMeans", params: dict | None = None,
                        fitted: dict | None = None, sklearn_version: str = "0.24.2", protocol: int = 4) -> Path:
    """Write a fitted k-means estimator as ``joblib.dump`` writes it (module docstring).

    The estimator's state: ``params`` (default :data:`KMEANS_PARAMS`, fairseq's call, with
    ``n_clusters`` = K), ``cluster_centers_`` = ``centers`` ``[K, d]``, ``fitted`` (more fitted
    attributes, in order) and ``_sklearn_version`` last, as scikit-learn's ``__getstate__`` adds it.
    ``joblib_format``: ``"1.2"`` (joblib >= 1.2: ``numpy_array_alignment_bytes`` 16 and padding) or ``"1.1"``.
    ``estimator``: the class's ``module.name`` (``sklearn.cluster.k_means_.MiniBatchKMeans`` before
    scikit-learn 0.22). ``protocol``: pickle's (joblib's default is ``pickle.DEFAULT_PROTOCOL``, 4 on
    Python 3.8-3.13)."""
    if joblib_format not in JOBLIB_FORMATS:
        raise ValueError(f"joblib_format must be one of {', '.join(JOBLIB_FORMATS)}, got {joblib_format!r}")
    centers = np.asarray(centers)
    if centers.ndim != 2 or centers.dtype.kind != "f":
        raise ValueError(f"centers must be a float array [K, d], got {centers.dtype} of shape {list(centers.shape)}")
    module, _, name = estimator.rpartition(".")
    state = dict(KMEANS_PARAMS if params is None else params)
    state["n_clusters"] = int(centers.shape[0])
    state["cluster_centers_"] = centers
    state.update(fitted or {})
    state["_sklearn_version"] = sklearn_version
    instance = _named_class(module, name)()
    instance.__dict__.update(state)
    buffer = io.BytesIO()
    _JoblibWriter(buffer, protocol=protocol, alignment=16 if joblib_format == "1.2" else None).dump(instance)
    return write_atomic(path, buffer.getvalue())


__all__ = ["write_tiny_speechgpt", "write_tiny_speechgpt_model", "write_speechgpt_tokenizer_files",
           "write_tiny_speech2unit", "write_kmeans_joblib", "MODEL_FOLDER", "SPEECH_FOLDER", "KMEANS_PARAMS"]
