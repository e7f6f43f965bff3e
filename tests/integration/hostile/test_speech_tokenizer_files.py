"""Hostile speech-tokenizer files: the F0 VQ-VAE, the style encoder, mHuBERT and the quantizer.

One parametrised test per file kind; a case is one line of its table: the edit that makes the bad
file (applied to a copy of the tiny speech tokenizer) and the regex of the one-line error. Every
case runs in a child process (conftest.py) and must end in that ValueError (or the named error)
under 1 GB of peak RSS within 10 s: the size bombs (``width: 1000000``, ``depth: 3000000``,
``l_bins: 1e11``, a YAML alias bomb, 100,000-deep JSON and pickles, ``vocab_size: 1e9``, a
``conv_feature_layers`` of 1e11 layers, a zip bomb) included. The reference for "refused" is the
message itself: the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_inputs import (DELETE, alias_bomb, as_dtype, deep_json, deep_list_fragment, dict_pickle,
                            edit_json, edit_torch, edit_yaml, poison, self_containing_fragment, torch_file, write,
                            write_torch_pickle, zip_bomb)

F0, F0_MODEL = "vqvae_f0_quantizer/config.yaml", "vqvae_f0_quantizer/model.pt"
STYLE, STYLE_WEIGHTS = "style_encoder_w2v2/config.json", "style_encoder_w2v2/pytorch_model.bin"
HUBERT, QUANT = "hubert_25hz/mhubert_base_25hz.pt", "hubert_25hz/L11_quantizer_500.pt"
NESTED = r"pickled data nested deeper than 100 levels \(refused\)$"


@pytest.fixture
def copy(speech_dir, tmp_path):
    def make(edit) -> Path:
        target = tmp_path / "speech_tokenizer"
        shutil.copytree(speech_dir, target)
        edit(target)
        return target
    return make


def in_dict(key: str, change):
    """A change of ``data[key]`` of a loaded checkpoint dict."""
    def outer(data):
        result = change(data[key])
        if result is not None:
            data[key] = result
    return outer


def setting(key: str, value):
    def change(cfg):
        if value is DELETE:
            cfg.pop(key)
        else:
            cfg[key] = value
    return change


# ------------------------------------------------------------------------------------- F0 VQ-VAE
F0_CASES = {
    "width_1e6": (edit_yaml(F0, encoder_params__width=1_000_000),
                  r"config\.yaml: encoder_params\.width = 1000000 is not an integer in 1\.\.1024$"),
    "l_bins_1e11": (edit_yaml(F0, vq_params__l_bins=1e11),
                    r"config\.yaml: vq_params\.l_bins = 100000000000\.0 is not an integer in 1\.\.16384$"),
    "l_bins_1e11_text": (write(F0, "encoder_params: {}\nvq_params: {l_bins: 1e11}\n"),
                         r"encoder_params\.input_emb_width is missing \(an integer equal to 2\)$"),
    "depth_3e6": (edit_yaml(F0, encoder_params__depth=3_000_000),
                  r"encoder_params\.depth = 3000000 is not an integer in 1\.\.16$"),
    "alias_bomb": (write(F0, alias_bomb()), r"config\.yaml: line 2: YAML aliases \(\*a0\) are refused"),
    "merge_key_alias": (write(F0, "base: &b {width: 16}\nencoder_params: {<<: *b}\n"), r"YAML aliases \(\*b\) are refused"),
    "deep_yaml": (write(F0, "a: " + "[" * 100_000 + "]" * 100_000 + "\n"), r"nested deeper than 64 levels$"),
    "levels_negative": (edit_yaml(F0, encoder_params__levels=-1), r"encoder_params\.levels = -1 is not an integer in 1\.\.4$"),
    "levels_none": (edit_yaml(F0, encoder_params__levels=None), r"encoder_params\.levels = None is not an integer in"),
    "zero_stride": (edit_yaml(F0, encoder_params__strides_t=[0]),
                    r"encoder_params\.strides_t\[0\] = 0 is not an integer in 1\.\.8 \(or a list of 1\.\.8 of them\)$"),
    "stride_string": (edit_yaml(F0, encoder_params__downs_t=["4"]), r"encoder_params\.downs_t\[0\] = '4' is not an integer"),
    "strides_not_list": (edit_yaml(F0, encoder_params__strides_t=2), r"encoder_params\.strides_t = 2 is not a list of 1\.\.4 integers in 1\.\.8 \(or a list of 1\.\.8 of them\)$"),
    "width_none": (edit_yaml(F0, encoder_params__width=None), r"encoder_params\.width = None is not an integer in 1\.\.1024$"),
    "width_true": (edit_yaml(F0, encoder_params__width=True), r"encoder_params\.width = True is not an integer"),
    "width_inf": (edit_yaml(F0, encoder_params__width=float("inf")), r"encoder_params\.width = inf is not an integer"),
    "width_10e30": (edit_yaml(F0, encoder_params__width=10**30), r"encoder_params\.width = 1000000000000000000000000000000 is"),
    "width_5000_digits": (write(F0, "encoder_params: {width: " + "9" * 5000 + "}\n"), r"config\.yaml is not valid YAML \("),
    "encoder_params_list": (edit_yaml(F0, encoder_params=[1, 2]), r"config\.yaml: encoder_params = \[1, 2\] is not a mapping$"),
    "top_level_list": (write(F0, "- 1\n- 2\n"), r"config\.yaml: expected a YAML mapping, got list$"),
    "vq_params_missing": (edit_yaml(F0, vq_params=DELETE), r"config\.yaml: vq_params is missing \(a mapping\)$"),
    "input_width_3": (edit_yaml(F0, encoder_params__input_emb_width=3), r"input_emb_width = 3 is not an integer equal to 2$"),
    "features_unknown": (edit_yaml(F0, features="f0,energy"), r"features = 'f0,energy' is not one of 'f0_interp,vuv'"),
    "m_conv_negative": (edit_yaml(F0, encoder_params__m_conv=-1.0), r"m_conv = -1\.0 is not a finite number > 0 and <= 8$"),
    "m_conv_tiny": (edit_yaml(F0, encoder_params__m_conv=0.001), r"m_conv = 0\.001 is not at least 1 / width \(1 / 16\)$"),
    "dilation_explodes": (edit_yaml(F0, encoder_params__dilation_growth_rate=8, encoder_params__depth=16),
                          r"dilation_growth_rate \*\* \(depth - 1\) = 35184372088832 is not a dilation of at most 4096"),
    "downsampling_explodes": (edit_yaml(F0, encoder_params__downs_t=[8], encoder_params__strides_t=[8]),
                              r"strides_t\[0\] \*\* downs_t\[0\] = 16777216 is not a downsampling factor of at most 1024"),
    "l_bins_zero": (edit_yaml(F0, vq_params__l_bins=0), r"vq_params\.l_bins = 0 is not an integer in 1\.\.16384$"),
    "levels_mismatch": (edit_yaml(F0, vq_params__levels=2), r"vq_params\.levels = 2 is not equal to encoder_params\.levels \(1\)$"),
    "emb_width_mismatch": (edit_yaml(F0, vq_params__emb_width=5),
                           r"vq_params\.emb_width = 5 is not encoder_params\.output_emb_width \(16\) or half of it$"),
    "not_utf8": (write(F0, b"\x80\x81 width: 3"), r"config\.yaml is not UTF-8 text \(a binary file\?\): byte 0 is b'\\x80'$"),
    "empty": (write(F0, ""), r"config\.yaml: expected a YAML mapping, got NoneType$"),
    "two_megabytes": (write(F0, "# " + "x" * (2 << 20) + "\n"), r"config\.yaml is larger than 1 MiB, the limit for a F0 quantizer"),
    "python_tag": (write(F0, "a: !!python/object/apply:os.system ['true']\n"), r"config\.yaml is not valid YAML \(could not"),
    "model_nan": (edit_torch(F0_MODEL, in_dict("model", poison("encoder.level_blocks.0.model.0.0.weight"))),
                  r"model\.pt: weight encoder\.level_blocks\.0\.model\.0\.0\.weight holds 1 NaN/inf value\(s\) of 128$"),
    "codebook_inf": (edit_torch(F0_MODEL, in_dict("model", poison("vq.level_blocks.0.k", float("inf")))),
                     r"model\.pt: weight vq\.level_blocks\.0\.k holds 1 NaN/inf value\(s\) of 1024$"),
    "model_int64": (edit_torch(F0_MODEL, in_dict("model", as_dtype(torch.int64))),
                    r"model\.pt: F0 VQ-VAE weight encoder\.level_blocks\.0\.model\.0\.0\.weight is int64, expected "
                    r"floating point$"),
    "model_deep_pickle": (write_torch_pickle(F0_MODEL, dict_pickle({"model": deep_list_fragment(100_000)})),
                          r"model\.pt: " + NESTED),
    "model_self_containing": (write_torch_pickle(F0_MODEL, dict_pickle({"model": self_containing_fragment()})),
                              r"model\.pt: expected a dict with a 'model' state dict$"),
    "model_zip_bomb": (zip_bomb(F0_MODEL), r"model\.pt: cannot read F0 VQ-VAE checkpoint \(its pickle archive/data\.pkl "
                                           r"declares 209715200 bytes, more than the 64 MiB limit"),
    "model_int_keys": (edit_torch(F0_MODEL, lambda d: {"model": {1: torch.zeros(2)}}),
                       r"model\.pt: F0 VQ-VAE 'model' is not a state dict of tensor names -> tensors$"),
    "model_missing": (lambda d: (d / F0_MODEL).unlink(), "FileNotFoundError", r"model\.pt: F0 VQ-VAE checkpoint not found$"),
}


@pytest.mark.parametrize("case", list(F0_CASES))
def test_f0_vqvae_files(hostile, copy, case):
    edit, *error, expected = F0_CASES[case]
    directory = copy(edit)
    outcome = hostile.call("spiritlens.units.pitch:load_f0_quantizer", directory)
    outcome.refused(expected, error=error[0] if error else "ValueError")


# ----------------------------------------------------------------------------------- style encoder
STYLE_CASES = {
    "48_layers_x_16384": (edit_json(STYLE, num_hidden_layers=48, hidden_size=16384),
                          r"config\.json: hidden_size = 16384 is not an integer in 1\.\.1280$"),
    "json_list": (write(STYLE, "[1, 2]"), r"style encoder config .*config\.json is a JSON list, expected an object$"),
    "layers_none": (edit_json(STYLE, num_hidden_layers=None), r"num_hidden_layers = None is not an integer in 1\.\.48$"),
    "layers_string": (edit_json(STYLE, num_hidden_layers="2"), r"num_hidden_layers = '2' is not an integer in 1\.\.48$"),
    "layers_missing": (edit_json(STYLE, num_hidden_layers=DELETE), r"num_hidden_layers is missing \(an integer in 1\.\.48\)$"),
    "zero_stride": (edit_json(STYLE, conv_stride=[0, 2, 2, 2, 2, 2, 2]), r"conv_stride\[0\] = 0 is not an integer in 1\.\.16$"),
    "kernels_short": (edit_json(STYLE, conv_kernel=[10]), r"conv_kernel = \[10\] is not a list of one entry per conv_dim layer \(7\)$"),
    "conv_1000_layers": (edit_json(STYLE, conv_dim=[16] * 1000), r"conv_dim = \[16, 16, 16, 16, \.\.\.\] is not a list of 1\.\.16 integers in 1\.\.1024$"),
    "not_utf8": (write(STYLE, b'{"a": "\x80"}'), r"config\.json is not UTF-8 text \(a binary file\?\): byte 7 is b'\\x80'$"),
    "deep_json": (write(STYLE, deep_json(100_000)), r"config\.json is nested deeper than 64 levels \(refused before parsing\)$"),
    "quantization_config": (edit_json(STYLE, quantization_config={"quant_method": "bitsandbytes", "load_in_8bit": True}),
                            r"quantization_config = \{'load_in_8bit': True, 'quant_method': 'bitsandbytes'\} is not absent"),
    "heads_not_dividing": (edit_json(STYLE, num_attention_heads=3), r"num_attention_heads = 3 is not a divisor of hidden_size 32$"),
    "pos_groups_not_dividing": (edit_json(STYLE, num_conv_pos_embedding_groups=5), r"groups = 5 is not a divisor of hidden_size"),
    "labels_1e9": (edit_json(STYLE, num_labels=10**9), r"num_labels = 1000000000 is not an integer in 1\.\.10000$"),
    "hidden_1e400": (write(STYLE, '{"hidden_size": 1e400}'), r"hidden_size = inf is not an integer in 1\.\.1280$"),
    "two_megabytes": (write(STYLE, '{"x": "' + "x" * (2 << 20) + '"}'), r"config\.json is larger than 1 MiB"),
    "model_type_bert": (edit_json(STYLE, model_type="bert"), r"config\.json: model_type 'bert', expected 'wav2vec2'$"),
    "norm_unknown": (edit_json(STYLE, feat_extract_norm="bogus"), r"feat_extract_norm = 'bogus' is not one of 'group', 'layer'$"),
    "stable_norm_string": (edit_json(STYLE, do_stable_layer_norm="yes"), r"do_stable_layer_norm = 'yes' is not true or false$"),
    "weights_nan": (edit_torch(STYLE_WEIGHTS, poison("classifier.weight")),
                    r"pytorch_model\.bin: weight classifier\.weight holds 1 NaN/inf value\(s\) of 1600$"),
    "weights_inf": (edit_torch(STYLE_WEIGHTS, poison("projector.bias", float("-inf"))),
                    r"pytorch_model\.bin: weight projector\.bias holds 1 NaN/inf value\(s\) of 16$"),
    "weights_int64": (edit_torch(STYLE_WEIGHTS, as_dtype(torch.int64, lambda k: k.startswith("classifier"))),
                      r"pytorch_model\.bin: style encoder weight classifier\.weight is int64, expected floating point$"),
    "weights_deep_pickle": (write_torch_pickle(STYLE_WEIGHTS, dict_pickle({"a": deep_list_fragment(100_000)})),
                            r"pytorch_model\.bin: " + NESTED),
    "weights_self_containing": (write_torch_pickle(STYLE_WEIGHTS, b"\x80\x02" + self_containing_fragment() + b"."),
                                r"pytorch_model\.bin: expected a state dict, got list$"),
    "weights_zip_bomb": (zip_bomb(STYLE_WEIGHTS), r"declares 209715200 bytes, more than the 64 MiB limit"),
    "weights_not_tensors": (edit_torch(STYLE_WEIGHTS, lambda s: {"classifier.weight": [1.0]}),
                            r"pytorch_model\.bin: not a state dict of tensor names -> tensors$"),
}


@pytest.mark.parametrize("case", list(STYLE_CASES))
def test_style_encoder_files(hostile, copy, case):
    edit, expected = STYLE_CASES[case]
    outcome = hostile.call("spiritlens.units.style:StyleEncoder.from_dir", copy(edit))
    outcome.refused(expected)


# ----------------------------------------------------------------------------------------- mHuBERT
def model_cfg(relative: str, **changes):
    """An edit of the ``model_cfg`` dict of a converted mHuBERT or quantizer checkpoint."""
    return edit_torch(relative, in_dict("model_cfg", lambda c: c.update(changes)))


def cfg(**changes):
    return model_cfg(HUBERT, **changes)


HUBERT_CASES = {
    "conv_layers_1e11": (cfg(conv_feature_layers="[(512,10,5)] * 100000000000"),
                         r"mhubert_base_25hz\.pt: cannot parse conv_feature_layers '\[\(512,10,5\)\] \* 100000000000' "
                         r"\(a list of 1 x 100000000000 items, more than 16 layers\)$"),
    "conv_layers_sum": (cfg(conv_feature_layers="[(32,2,2)] * 9 + [(32,2,2)] * 9"), r"\(more than 16 layers\)$"),
    "conv_layers_long": (cfg(conv_feature_layers="[(32,2,2)]" + " + [(32,2,2)]" * 200),
                         r"model_cfg\.conv_feature_layers = '\[\(32,2,2\)\] \+ .*' is not a string of at most 1000"),
    "conv_zero_stride": (cfg(conv_feature_layers="[(32,10,0)]"), r"\(not \(dim, kernel, stride\) triples\)$"),
    "conv_huge_kernel": (cfg(conv_feature_layers="[(32,100000,5)]"), r"layer \(32, 100000, 5\) beyond the limits"),
    "conv_nested": (cfg(conv_feature_layers="[" * 300 + "]" * 300), r"cannot parse conv_feature_layers"),
    "conv_pow": (cfg(conv_feature_layers="[(32,10,5)] * 10**12"), r"\(BinOp\)$"),
    "layers_none": (cfg(encoder_layers=None), r"model_cfg\.encoder_layers = None is not an integer in 1\.\.48$"),
    "layers_1e9": (cfg(encoder_layers=10**9), r"model_cfg\.encoder_layers = 1000000000 is not an integer in 1\.\.48$"),
    "layers_1e30": (cfg(encoder_layers=10**30), r"model_cfg\.encoder_layers = 10000000000000000000000000000"),
    "embed_1e6": (cfg(encoder_embed_dim=10**6), r"model_cfg\.encoder_embed_dim = 1000000 is not an integer in 1\.\.1280$"),
    "heads_not_dividing": (cfg(encoder_attention_heads=5), r"encoder_attention_heads = 5 is not a divisor of encoder_embed_dim 48$"),
    "pos_groups_not_dividing": (cfg(conv_pos_groups=5), r"model_cfg\.conv_pos_groups = 5 is not a divisor of encoder_embed_dim"),
    "pos_conv_zero": (cfg(conv_pos=0), r"model_cfg\.conv_pos = 0 is not an integer in 1\.\.256$"),
    "sample_rate_1": (edit_torch(HUBERT, in_dict("task_cfg", setting("sample_rate", 1))),
                      r"task_cfg\.sample_rate = 1 is not an integer in 8000\.\.48000$"),
    "normalize_string": (edit_torch(HUBERT, in_dict("task_cfg", setting("normalize", "no"))),
                         r"task_cfg\.normalize = 'no' is not true or false$"),
    "model_cfg_list": (edit_torch(HUBERT, lambda d: d.update(model_cfg=[1, 2])),
                       r"mhubert_base_25hz\.pt: model_cfg is a list, expected a mapping of fields$"),
    "model_cfg_deep": (write_torch_pickle(HUBERT, dict_pickle({"model_cfg": deep_list_fragment(100_000),
                                                               "model_weight": b"}"})), NESTED),
    "model_cfg_self_containing": (write_torch_pickle(HUBERT, dict_pickle({"model_cfg": self_containing_fragment(),
                                                                          "model_weight": b"}"})),
                                  r"model_cfg is a list, expected a mapping of fields$"),
    "weights_nan": (edit_torch(HUBERT, in_dict("model_weight", poison("encoder.layers.2.fc1.weight"))),
                    r"mhubert_base_25hz\.pt: weight encoder\.layers\.2\.fc1\.weight holds 1 NaN/inf value\(s\) of 4608$"),
    "weights_int64": (edit_torch(HUBERT, in_dict("model_weight", as_dtype(torch.int64, lambda k: "fc1" in k))),
                      r"mHuBERT weight encoder\.layers\.0\.fc1\.weight \(HF encoder\.layers\.0\.feed_forward\."
                      r"intermediate_dense\.weight\) is int64, expected floating point$"),
    "weights_int_key": (edit_torch(HUBERT, in_dict("model_weight", lambda w: w.update({7: torch.zeros(1)}))),
                        r"mhubert_base_25hz\.pt: mHuBERT weight 7 is not a tensor$"),
    "zip_bomb": (zip_bomb(HUBERT), r"declares 209715200 bytes, more than the 64 MiB limit"),
}


@pytest.mark.parametrize("case", list(HUBERT_CASES))
def test_mhubert_files(hostile, copy, case):
    edit, expected = HUBERT_CASES[case]
    outcome = hostile.call("spiritlens.units:SpeechTokenizer.from_dir", copy(edit))
    outcome.refused(expected)


# --------------------------------------------------------------------------------------- quantizer
def qcfg(**changes):
    return model_cfg(QUANT, **changes)


def kmeans(centers, **extra):
    def edit(directory: Path) -> None:
        torch.save({"cluster_centers": centers, **extra}, directory / QUANT)
    return edit


def kmeans_declaring_rows(rows: int):
    """A k-means file whose pickled numpy array declares ``rows`` x 2 (its bytes hold 2 x 2)."""
    def edit(directory: Path) -> None:
        import io
        import zipfile

        buffer = io.BytesIO()
        torch.save({"cluster_centers": np.zeros((2, 2), np.float32)}, buffer)
        data = zipfile.ZipFile(io.BytesIO(buffer.getvalue())).read("archive/data.pkl")
        raw = rows.to_bytes((rows.bit_length() + 8) // 8, "little", signed=True)
        shape = b"K\x02K\x02\x86"
        assert data.count(shape) == 1
        torch_file(directory / QUANT, data.replace(shape, b"\x8a" + struct.pack("<B", len(raw)) + raw + b"K\x02\x86"))
    return edit


QUANTIZER_CASES = {
    "vocab_1e9": (qcfg(vocab_size=1e9), r"model_cfg\.vocab_size = 1000000000\.0 is not an integer in 1\.\.10000$"),
    "vocab_1e9_int": (qcfg(vocab_size=10**9), r"model_cfg\.vocab_size = 1000000000 is not an integer in 1\.\.10000$"),
    "vocab_string": (qcfg(vocab_size="500"), r"model_cfg\.vocab_size = '500' is not an integer"),
    "vocab_missing": (edit_torch(QUANT, in_dict("model_cfg", setting("vocab_size", DELETE))),
                      r"model_cfg\.vocab_size is missing \(an integer in 1\.\.10000\)$"),
    "dim_zero": (qcfg(dim=0), r"model_cfg\.dim = 0 is not an integer in 1\.\.1280$"),
    "dim_negative": (qcfg(dim=-48), r"model_cfg\.dim = -48 is not an integer in 1\.\.1280$"),
    "widths_negative": (qcfg(upstream_dim=1280), r"gives non-positive layer widths"),
    "model_cfg_list": (edit_torch(QUANT, lambda d: d.update(model_cfg=[500])),
                       r"L11_quantizer_500\.pt: model_cfg is a list, expected a mapping of fields$"),
    "weights_int64": (edit_torch(QUANT, in_dict("model_weight", as_dtype(torch.int64))),
                      r"quantizer weight 0\.weight is int64, expected floating point$"),
    "weights_nan": (edit_torch(QUANT, in_dict("model_weight", poison("4.bias"))),
                    r"L11_quantizer_500\.pt: weight 4\.bias holds 1 NaN/inf value\(s\) of 501$"),
    "kmeans_unicode": (kmeans(np.array([["1.0", "2.0"]])),
                       r"L11_quantizer_500\.pt: cluster_centers = dtype\('<U3'\) is not an array of numbers \(float\)$"),
    "kmeans_objects": (kmeans(np.array([[1.0, None]], dtype=object)),
                       r"pickled numpy array holds Python objects, not numbers \(refused\)$"),
    "kmeans_3d": (kmeans(np.zeros((2, 2, 2), np.float32)), r"cluster_centers must be \[K, d\], got shape \[2, 2, 2\]$"),
    "kmeans_declares_1e30_rows": (kmeans_declaring_rows(10**30), r"pickled numpy array of shape \[10{30}, 2\] has 16 bytes"),
    "kmeans_20000_rows": (kmeans(np.zeros((20_000, 2), np.float32)),
                          r"cluster_centers shape = \[20000, 2\] is not \[K, d\] with K in 1\.\.10000 and d in 1\.\.1280$"),
    "kmeans_nan": (kmeans(np.array([[1.0, np.nan]], np.float32)), r"weight cluster_centers holds 1 NaN/inf value\(s\) of 2$"),
    "n_clusters_string": (kmeans(np.zeros((2, 2), np.float32), n_clusters="abc"), r"n_clusters = 'abc' is not an integer"),
}


@pytest.mark.parametrize("case", list(QUANTIZER_CASES))
def test_quantizer_files(hostile, copy, case):
    edit, expected = QUANTIZER_CASES[case]
    outcome = hostile.call("spiritlens.units.quantizer:load_quantizer", copy(edit) / QUANT)
    outcome.refused(expected)


def test_the_good_folder_loads_within_the_budget(hostile, speech_dir):
    """What every case above is a copy of loads (each part), bounded like the bombs."""
    for target in ("spiritlens.units.pitch:load_f0_quantizer", "spiritlens.units.style:StyleEncoder.from_dir",
                   "spiritlens.units:SpeechTokenizer.from_dir"):
        outcome = hostile.call(target, speech_dir)
        assert outcome.kind == "returned", outcome.describe()
        outcome.bounded()
