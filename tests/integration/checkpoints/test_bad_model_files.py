"""Model directories that disagree with their config or are damaged: one line naming the file, before
anything runs; and arguments refused before the model loads.

Every bad directory is a copy of the tiny checkpoint with one thing changed here. Each case runs
``spiritlens trace`` in-process (``spiritlens.cli.main``: the exit status the command returns) and
asserts the exact one-line message, status 2 and that no result file was written. The reference
for "what the weights should be" is independent of spiritlens: the tensors
``LlamaForCausalLM(config)`` itself has.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spiritlens.cli import main

PROMPT = ["--prompt", "The Space Needle is located in", "--subject", "Space Needle"]


@pytest.fixture(scope="module")
def copies(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-models")

    def copy(name: str, edit=None) -> Path:
        target = root / name
        shutil.copytree(tiny_base_dir, target)
        if edit is not None:
            edit(target)
        return target

    return copy


def edit_config(**changes):
    def edit(directory: Path):
        config = json.loads((directory / "config.json").read_text())
        config.update(changes)
        (directory / "config.json").write_text(json.dumps(config))
    return edit


def edit_weights(change):
    def edit(directory: Path):
        state = torch.load(directory / "pytorch_model.bin", weights_only=True)
        change(state)
        torch.save(state, directory / "pytorch_model.bin")
    return edit


def to_safetensors(cut=None, header: bytes | None = None):
    def edit(directory: Path):
        from safetensors.torch import save_file

        state = torch.load(directory / "pytorch_model.bin", weights_only=True)
        (directory / "pytorch_model.bin").unlink()
        path = directory / "model.safetensors"
        save_file(state, str(path))
        data = path.read_bytes()
        if cut is not None:
            data = data[: int(len(data) * cut)]
        if header is not None:
            data = header
        path.write_bytes(data)
    return edit


def trace(model_dir: Path, out: Path, *extra: str) -> int:
    return main(["trace", "--model", str(model_dir), *PROMPT, "--noise", "0.1", "--samples", "2",
                 "--json", str(out), *extra])


def one_line(capsys) -> str:
    """The one line stderr holds besides transformers' "Loading weights" progress bar."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(lines) == 1, lines
    return lines[0]


def test_reference_shapes_are_llamas_own(tiny_base_dir):
    """The check's expectation is transformers' own parameter list for the config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from spiritlens.checkpoints.validate import expected_llama_shapes, read_config, tensor_shapes

    config = read_config(tiny_base_dir)
    reference = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    expected, optional = expected_llama_shapes(config, "config.json")
    assert expected == {k: tuple(v.shape) for k, v in reference.state_dict().items()} and not optional
    assert tensor_shapes(tiny_base_dir / "pytorch_model.bin") == expected  # the good checkpoint matches


CASES = {
    # name: (edit, expected message after "<dir>/")
    "six_layers_for_four": (edit_config(num_hidden_layers=6),
                            "pytorch_model.bin: weights do not match {d}/config.json: 18 missing "
                            "(model.layers.4.self_attn.q_proj.weight, model.layers.4.self_attn.k_proj.weight, "
                            "model.layers.4.self_attn.v_proj.weight, …)"),
    "tensor_missing": (edit_weights(lambda s: s.pop("model.layers.1.mlp.down_proj.weight")),
                       "pytorch_model.bin: weights do not match {d}/config.json: 1 missing "
                       "(model.layers.1.mlp.down_proj.weight)"),
    "tensor_unexpected": (edit_weights(lambda s: s.update({"model.layers.9.mlp.up_proj.weight": torch.zeros(2)})),
                          "pytorch_model.bin: weights do not match {d}/config.json: 1 unexpected "
                          "(model.layers.9.mlp.up_proj.weight)"),
    "hidden_size": (edit_config(hidden_size=128),
                    "pytorch_model.bin: weights do not match {d}/config.json: 39 mis-shaped "
                    "(model.embed_tokens.weight [1536, 64] in the file, [1536, 128] by the config, "
                    "model.layers.0.self_attn.q_proj.weight [64, 64] in the file, [128, 128] by the config, "
                    "model.layers.0.self_attn.k_proj.weight [64, 64] in the file, [128, 128] by the config, …)"),
    "truncated_bin": (lambda d: (d / "pytorch_model.bin").write_bytes((d / "pytorch_model.bin").read_bytes()[:20_000]),
                      "pytorch_model.bin: cannot read model weights (truncated or damaged torch.save archive: "
                      "File is not a zip file)"),
    "random_bin": (lambda d: (d / "pytorch_model.bin").write_bytes(bytes(range(7, 256)) * 40),
                   "pytorch_model.bin: cannot read model weights (neither torch.save's zip format nor a pickle "
                   "(at position 0, opcode b'\\x07' unknown))"),
    "empty_bin": (lambda d: (d / "pytorch_model.bin").write_bytes(b""),
                  "pytorch_model.bin: cannot read model weights (the file is empty)"),
    "truncated_safetensors": (to_safetensors(cut=0.5),
                              "model.safetensors: not a readable safetensors file (Error while deserializing "
                              "header: incomplete metadata, file not fully covered)"),
    "bad_safetensors_header": (to_safetensors(header=(10 ** 9).to_bytes(8, "little") + b'{"x":'),
                               "model.safetensors: not a readable safetensors file (Error while deserializing "
                               "header: header too large)"),
    "empty_tokenizer_model": (lambda d: (d / "tokenizer.model").write_bytes(b""),
                              "tokenizer.model: tokenizer.model is empty (0 bytes), not a SentencePiece model"),
    "json_tokenizer_model": (lambda d: (d / "tokenizer.model").write_text('{"model": "bpe"}'),
                             "tokenizer.model: not a SentencePiece model (INTERNAL: "),
    "malformed_config": (lambda d: (d / "config.json").write_text("{'hidden_size': 64"),
                         "config.json is not valid JSON: Expecting property name enclosed in double quotes: "
                         "line 1 column 2 (char 1)"),
    "config_not_object": (lambda d: (d / "config.json").write_text("[1, 2]"),
                          "config.json is not a JSON object (got list)"),
    "config_string_size": (edit_config(hidden_size="64"),
                           "config.json: hidden_size = '64' is not an integer in 1..16384"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_directory_is_one_line_before_any_run(copies, tmp_path, capsys, case):
    edit, expected = CASES[case]
    directory = copies(case, edit)
    out = tmp_path / "r.json"
    assert trace(directory, out) == 2
    line = one_line(capsys)
    expected = expected.format(d=directory)
    prefix = "spiritlens trace: error: " + ("model config " if "config.json" in expected.split(":")[0] else "")
    assert line.startswith(prefix + f"{directory}/" + expected), line
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_nan_weight_is_refused_after_load(copies, tmp_path, capsys):
    def poison(state):
        state["model.layers.2.mlp.down_proj.weight"][3, 5] = float("nan")
        state["model.layers.2.mlp.down_proj.weight"][0, 0] = float("inf")

    directory = copies("nan_weight", edit_weights(poison))
    out = tmp_path / "r.json"
    assert trace(directory, out) == 2
    assert one_line(capsys) == (f"spiritlens trace: error: {directory}/pytorch_model.bin: weight "
                                "model.layers.2.mlp.down_proj.weight holds 2 NaN/inf value(s) of 10240")
    assert not out.exists()


@pytest.mark.parametrize("sigma", ["inf", "nan", "-0.5", "0"])
def test_bad_sigma_is_refused_before_the_model_loads(tiny_base_dir, tmp_path, capsys, sigma):
    out = tmp_path / "r.json"
    status = main(["trace", "--model", str(tiny_base_dir), *PROMPT, "--noise", "3s", "--sigma", sigma,
                   "--json", str(out)])
    captured = capsys.readouterr()
    assert status == 2 and "tokenizer:" not in captured.out  # the model was never loaded
    assert captured.err.strip() == f"spiritlens trace: error: --sigma must be a finite number > 0, got {float(sigma)!r}"
    assert not out.exists()


def test_the_api_refuses_a_bad_sigma_before_tracing(tiny_model):
    from spiritlens import trace as trace_api

    for sigma in (float("inf"), float("nan"), -0.5):
        with pytest.raises(ValueError, match=r"^sigma must be a finite number > 0, got "):
            trace_api(tiny_model, "The Space Needle is located in", "Space Needle", noise="3s", sigma=sigma,
                      samples=2)


def test_crossmodal_fact_out_on_a_file_is_refused_first(tiny_base_dir, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    status = main(["crossmodal", "fact", "--model", str(tiny_base_dir), "--prompt", "The Space Needle is in",
                   "--subject", "Space Needle", "--audio", str(tmp_path / "never-read.wav"), "--aligner",
                   "pocketsphinx", "--noise", "0.1", "--out", str(blocker)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""  # nothing loaded, nothing computed
    assert captured.err.strip() == (f"spiritlens crossmodal: error: --out {str(blocker)!r} is a file, expected a "
                                    "folder for the results")
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary"])
def test_empty_or_binary_known_file_names_the_file(tiny_base_dir, tmp_path, capsys, content):
    known = tmp_path / "known.json"
    known.write_bytes(content)
    out = tmp_path / "r.json"
    status = main(["trace", "--model", str(tiny_base_dir), *PROMPT, "--noise", "3s", "--known", str(known),
                   "--json", str(out)])
    line = one_line(capsys)  # read before the model loads: no "Loading weights" bar at all
    reason = "is empty" if not content else "is not UTF-8 text (a binary file?): byte 0 is b'\\x89'"
    assert status == 2 and line == f"spiritlens trace: error: Known dataset {known} {reason}"
    assert not out.exists()


def test_trace_says_how_many_known_records_were_dropped(tiny_base_dir, known_path, tmp_path, capsys):
    records = json.loads(known_path.read_text())[:3]
    bad = [dict(records[0], known_id=9001, subject=""), dict(records[1], known_id=9002, subject="Nowhere"), "junk"]
    known = tmp_path / "known.json"
    known.write_text(json.dumps(records + bad))
    out = tmp_path / "r.json"
    status = main(["trace", "--model", str(tiny_base_dir), *PROMPT, "--noise", "3s", "--known", str(known),
                   "--samples", "2", "--json", str(out)])
    err = capsys.readouterr().err
    assert status == 0 and out.exists()
    warning = [line for line in err.splitlines() if "records dropped" in line]
    assert warning == [f"spiritlens: warning: {known}: 3 of 6 records dropped (3 kept): 9001: missing or empty "
                       f"subject; 9002: subject 'Nowhere' not in prompt {records[1]['prompt']!r}; record #5 is a "
                       "str, not an object"]
    # sigma over the 3 kept subjects only: the same number as from a file holding just them
    from spiritlens import HookedSpiritLM
    from spiritlens.traces import subject_sigma

    model = HookedSpiritLM.from_pretrained(tiny_base_dir)
    assert json.loads(out.read_text())["sigma"] == pytest.approx(
        subject_sigma(model, [r["subject"] for r in records]), rel=0, abs=0)


def test_make_tiny_refuses_to_overwrite(tmp_path, capsys):
    root = tmp_path / "ckpt"
    assert main(["make-tiny", str(root)]) == 0
    weights = root / "spiritlm_model" / "spirit-lm-base-7b" / "pytorch_model.bin"
    before = (weights.stat().st_mtime_ns, weights.read_bytes())
    capsys.readouterr()
    assert main(["make-tiny", str(root), "--seed", "3"]) == 2
    assert one_line(capsys) == (f"spiritlens make-tiny: error: {root}/spiritlm_model/spirit-lm-base-7b already "
                                "holds files: refusing to overwrite them (pass force=True, or --force on the "
                                "command line)")
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == before
    assert main(["make-tiny", str(root), "--seed", "3", "--force"]) == 0
    assert weights.read_bytes() != before[1]


@pytest.mark.parametrize("layout", ["legacy_bin", "sharded_bin", "sharded_safetensors"])
def test_good_weight_layouts_pass_the_check(copies, layout):
    """What must not be refused: torch's legacy (non-zip) format and sharded weights with an index."""
    from spiritlens.checkpoints.validate import check_model_dir_weights
    from spiritlens.synthetic.tiny import write_weights

    def edit(directory: Path):
        state = torch.load(directory / "pytorch_model.bin", weights_only=True)
        (directory / "pytorch_model.bin").unlink()
        if layout == "legacy_bin":
            torch.save(state, directory / "pytorch_model.bin", _use_new_zipfile_serialization=False)
        else:
            write_weights(state, directory, fmt=layout.split("_")[1], shards=3)

    directory = copies(f"good_{layout}", edit)
    assert check_model_dir_weights(directory)["num_hidden_layers"] == 4
    edit_config(num_hidden_layers=5)(directory)  # one layer more than the shards hold: 9 tensors
    with pytest.raises(ValueError, match=r"weights do not match .*config\.json: 9 missing "
                                         r"\(model\.layers\.4\.self_attn\.q_proj\.weight, "):
        check_model_dir_weights(directory)
