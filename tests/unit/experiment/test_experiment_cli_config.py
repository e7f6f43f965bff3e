"""The experiment's command line is generated from ExperimentConfig: the same options, one default each."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from spiritlens.cli import build_parser
from spiritlens.cli.config_args import config_from_args, option_name
from spiritlens.experiment.config import ExperimentConfig


def _experiment_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["experiment"]


def test_cli_options_are_the_config_fields():
    parser = _experiment_parser()
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "quiet")}
    fields = {f.name for f in dataclasses.fields(ExperimentConfig) if f.init and f.metadata.get("cli", True)}
    assert dests == fields
    assert {f.name for f in dataclasses.fields(ExperimentConfig)} - fields == {"embedded", "version"}


def test_defaults_come_from_the_config_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    args = _experiment_parser().parse_args(["--out", str(tmp_path)])
    config = config_from_args(ExperimentConfig, args)
    assert config == ExperimentConfig(out=tmp_path)
    assert config.dtype == "auto" and config.embedded  # resolved on the model directory (test_dtype_rule.py)
    real = ExperimentConfig(out=tmp_path, checkpoints=tmp_path)
    assert not real.embedded and real.dtype == "auto"
    help_text = _experiment_parser().format_help()
    for field in dataclasses.fields(ExperimentConfig):
        if field.init and field.metadata.get("cli", True) and field.default not in (None, False, True,
                                                                                 dataclasses.MISSING):
            shown = ",".join(field.default) if isinstance(field.default, tuple) else str(field.default)
            assert f"(default: {shown})" in " ".join(help_text.split()), (option_name(field), shown)


def test_options_reach_the_config_and_bad_values_name_the_flag(tmp_path):
    parser = _experiment_parser()
    args = parser.parse_args(["--out", str(tmp_path), "--prompts", "4", "--kinds", "mlp,attn", "--no-crossmodal",
                              "--keep-all", "--dtype", "bfloat16"])
    config = config_from_args(ExperimentConfig, args)
    assert (config.n_prompts, config.kinds, config.crossmodal, config.keep_all, config.dtype) == \
        (4, ("mlp", "attn"), False, True, "bfloat16")
    with pytest.raises(ValueError, match="^--kinds must be a comma-separated list of hidden, mlp, attn"):
        config_from_args(ExperimentConfig, parser.parse_args(["--out", str(tmp_path), "--kinds", "mlpp"]))
