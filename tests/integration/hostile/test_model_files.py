"""Hostile model directories and arguments through ``spiritlens trace``: one line, exit 2, before the model loads.

Each case edits a copy of the tiny Base model directory (``config.json``, the tokenizer and
generation JSONs, the weights) or passes one bad argument, runs the command line in a child
process (conftest.py) and asserts exit status 2, the one stderr line, no result written, under
1 GB of peak RSS within 10 s: ``num_hidden_layers: 10000000``, a 100,000-deep JSON, a vocabulary
of 1e12 rows and ``--samples 200000`` included. The reference is the message: the file (or
argument), the field, the value and what is allowed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hostile_inputs import (DELETE, as_dtype, deep_json, deep_list_fragment, dict_pickle, edit_json, edit_torch,
                            poison, write, write_torch_pickle)

PROMPT = ["--prompt", "The Space Needle is located in", "--subject", "Space Needle", "--noise", "0.1", "--samples", "2"]
WEIGHTS = "pytorch_model.bin"


def config(**changes):
    return edit_json("config.json", **changes)


MODEL_CASES = {
    # name: (edit, extra arguments, expected regex of the line after "spiritlens trace: error: ")
    "quantization_config": (config(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}), [],
                            r"config\.json: quantization_config \('bitsandbytes'\) is not supported: spiritlens loads "
                            r"unquantized float weights"),
    "hidden_1e6": (config(hidden_size=10**6), [], r"config\.json: hidden_size = 1000000 is not an integer in 1\.\.16384$"),
    "layers_1e7": (config(num_hidden_layers=10**7), [], r"num_hidden_layers = 10000000 is not an integer in 1\.\.126$"),
    "layers_none": (config(num_hidden_layers=None), [], r"num_hidden_layers = None is not an integer in 1\.\.126$"),
    "layers_missing": (config(num_hidden_layers=DELETE), [], r"num_hidden_layers is missing \(an integer in 1\.\.126\)$"),
    "vocab_1e12": (config(vocab_size=10**12), [], r"vocab_size = 1000000000000 is not an integer in 1\.\.262144$"),
    "layers_1e30": (config(num_hidden_layers=10**30), [], r"num_hidden_layers = 1000000000000000000000000000000 is"),
    "heads_not_dividing": (config(num_attention_heads=3), [], r"num_attention_heads = 3 is not a divisor of hidden_size 64$"),
    "kv_heads_not_dividing": (config(num_key_value_heads=3), [], r"num_key_value_heads = 3 is not a divisor of "
                                                                 r"num_attention_heads 4$"),
    "eps_string": (config(rms_norm_eps="1e-5"), [], r"rms_norm_eps = '1e-5' is not a finite number > 0 and <= 1$"),
    "dtype_int8": (config(torch_dtype="int8"), [], r"torch_dtype = 'int8' is not one of 'float32', 'float16', 'bfloat16'"),
    "model_type_gpt2": (config(model_type="gpt2"), [], r"model_type = 'gpt2' is not one of 'llama'$"),
    "positions_1e12": (config(max_position_embeddings=10**12), [], r"max_position_embeddings = 1000000000000 is not"),
    "rope_scaling_string": (config(rope_scaling="linear"), [], r"rope_scaling = 'linear' is not a mapping or null$"),
    "tie_string": (config(tie_word_embeddings="no"), [], r"tie_word_embeddings = 'no' is not true or false$"),
    "head_dim_zero": (config(head_dim=0), [], r"head_dim = 0 is not an integer in 1\.\.1024 or null$"),
    "config_list": (write("config.json", "[1, 2]"), [], r"config\.json is not a JSON object \(got list\)$"),
    "config_deep": (write("config.json", deep_json(100_000)), [], r"config\.json is nested deeper than 64 levels"),
    "config_2mb": (write("config.json", '{"pad": "' + "x" * (2 << 20) + '"}'), [], r"config\.json is larger than 1 MiB"),
    "config_digits": (write("config.json", '{"hidden_size": ' + "9" * 5000 + "}"), [], r"config\.json is not valid JSON: "
                                                                                     r"Exceeds the limit"),
    "config_not_utf8": (write("config.json", b"\xff\xfe{}"), [], r"config\.json is not UTF-8 text"),
    "tokenizer_config_list": (write("tokenizer_config.json", "[1]"), [],
                              r"tokenizer_config\.json: the file is a list, expected a mapping of fields$"),
    "added_tokens_decoder_list": (edit_json("tokenizer_config.json", added_tokens_decoder=[1, 2]), [],
                                  r"tokenizer_config\.json: added_tokens_decoder = \[1, 2\] is not a mapping or null$"),
    "added_token_not_object": (edit_json("tokenizer_config.json", added_tokens_decoder={"5": "x"}), [],
                               r"added_tokens_decoder\[5\] = 'x' is not a mapping with a string 'content'$"),
    "added_token_id_huge": (edit_json("tokenizer_config.json", added_tokens_decoder={"9" * 260: {"content": "x"}}), [],
                            r"added_tokens_decoder key = '9999.*' is not a token id in 0\.\.999999"),
    "bos_token_int": (edit_json("tokenizer_config.json", bos_token=5), [], r"bos_token = 5 is not a token \(a string"),
    "add_bos_string": (edit_json("tokenizer_config.json", add_bos_token="yes"), [], r"add_bos_token = 'yes' is not true"),
    "special_map_deep": (write("special_tokens_map.json", deep_json(100_000)), [], r"special_tokens_map\.json is nested"),
    "special_map_tokens_dict": (edit_json("special_tokens_map.json", additional_special_tokens={"a": 1}), [],
                                r"additional_special_tokens = \{'a': 1\} is not a list of at most 100000 items or null$"),
    "added_tokens_json_list": (write("added_tokens.json", "[1]"), [],
                               r"added_tokens\.json: the file is a list, expected a mapping of token -> id$"),
    "added_tokens_json_id_string": (write("added_tokens.json", '{"[X]": "7"}'), [],
                                    r"added_tokens\.json: \['\[X\]'\] = '7' is not an integer in 0\.\.262144$"),
    "generation_config_list": (write("generation_config.json", "[]"), [], r"generation_config\.json: the file is a list"),
    "generation_eos_string": (edit_json("generation_config.json", eos_token_id="2"), [],
                              r"eos_token_id = '2' is not a token id in 0\.\.262144, a list of 1\.\.16 of them"),
    "weights_int64": (edit_torch(WEIGHTS, as_dtype(torch.int64, lambda k: "mlp" in k)), [],
                      r"pytorch_model\.bin: weight model\.layers\.0\.mlp\.gate_proj\.weight is int64, expected floating"),
    "weights_deep_pickle": (write_torch_pickle(WEIGHTS, dict_pickle({"a": deep_list_fragment(100_000)})), [],
                            r"pytorch_model\.bin: pickled data nested deeper than 100 levels"),
    "weights_nan": (edit_torch(WEIGHTS, poison("model.layers.1.self_attn.o_proj.weight")), [],
                    r"pytorch_model\.bin: weight model\.layers\.1\.self_attn\.o_proj\.weight holds 1 NaN/inf value"),
    "device_meta": (None, ["--device", "meta"], r"device 'meta': spiritlens runs on cpu, cuda or mps, not meta$"),
    "device_cuda_huge_index": (None, ["--device", "cuda:" + "9" * 30], r"device 'cuda:9+'"),
    "samples_200000": (None, ["--samples", "200000"], r"--samples must be at most 1000 \(ROME uses 10\), got 200000$"),
}


@pytest.fixture
def model_copy(tiny_base_dir, tmp_path):
    def make(edit) -> Path:
        target = tmp_path / "model"
        shutil.copytree(tiny_base_dir, target)
        if edit is not None:
            edit(target)
        return target
    return make


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_directories_and_arguments(hostile, model_copy, tmp_path, case):
    edit, extra, expected = MODEL_CASES[case]
    out = tmp_path / "r.json"
    outcome = hostile.cli("trace", "--model", model_copy(edit), *PROMPT, "--json", out, *extra)
    line = outcome.refused(expected)
    assert "tokenizer:" not in outcome.stdout, line  # refused before the model was built
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_experiment_samples_bound(hostile, tmp_path):
    outcome = hostile.cli("experiment", "--random-weights", "--out", tmp_path / "run", "--samples", "200000")
    outcome.refused(r"experiment: error: --samples must be at most 1000 \(ROME uses 10\), got 200000$")
    assert not (tmp_path / "run").exists()
