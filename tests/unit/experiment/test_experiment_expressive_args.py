"""``spiritlens experiment --expressive``: its options fail at once (one line naming them, exit status 2, nothing
written), it picks the Expressive variant, and an Expressive toy tree is accepted where the Base toy is."""

from __future__ import annotations

import pytest

from spiritlens.cli import main
from spiritlens.experiment.config import ExperimentConfig, check_environment
from spiritlens.units.controls import CONTROLS

BAD = [
    (["--expressive", "--modalities", "t2t"], "--expressive traces the spoken prompts: --modalities must include s2t"),
    (["--noise-streams", "tone"], "--noise-streams must be a comma-separated list of hubert, pitch, style, got tone"),
    (["--noise-streams", "pitch,pitch"], "--noise-streams lists a value twice"),
    (["--prosody-controls", "flat_pitch"], "--prosody-controls must include original"),
    (["--prosody-controls", "original,louder"], "--prosody-controls (or all) must be a comma-separated list of "
                                                "original, flat_pitch"),
    (["--expressive", "--variant", "other-7b"], "--variant 'other-7b': the embedded toy is spirit-lm-base-7b or "
                                                "spirit-lm-expressive-7b; pass --random-weights"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_expressive_argument_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    out = tmp_path / "run"
    assert main(["experiment", "--out", str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spiritlens experiment: error: " + message), err
    assert not out.exists()


def test_expressive_picks_the_variant_and_round_trips(tmp_path):
    config = ExperimentConfig(out=tmp_path, expressive=True, random_weights=True, noise_streams=["pitch"])
    assert config.variant == "spirit-lm-expressive-7b" and config.noise_streams == ("pitch",)
    again = ExperimentConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert ExperimentConfig(out=tmp_path).variant == "spirit-lm-base-7b"
    assert config.prosody_controls == CONTROLS  # "all", the default
    assert ExperimentConfig(out=tmp_path, prosody_controls=("original", "flat_pitch")).prosody_controls == \
        ("original", "flat_pitch")


def test_a_toy_tree_with_the_expressive_variant_is_accepted(tmp_path):
    import json

    toy = tmp_path / "toy"
    (toy / "spiritlm_model" / "spirit-lm-base-7b").mkdir(parents=True)
    (toy / "toy_manifest.json").write_text(json.dumps({"hash": "0" * 64, "inputs": {"facts": []}}))
    config = ExperimentConfig(out=tmp_path / "run", expressive=True, toy=toy, modalities=("s2t",), tts="espeak",
                              backbone="none")  # this hand-made tree has no toy backbone
    with pytest.raises(ValueError, match="--toy .* has no spirit-lm-expressive-7b model"):
        check_environment(config)
    (toy / "spiritlm_model" / "spirit-lm-expressive-7b").mkdir(parents=True)
    from spiritlens.data.tts.espeak import EspeakTTS

    if not EspeakTTS().available():
        pytest.skip("espeak-ng is not installed (the setup command installs it)")
    check_environment(config)  # no error: the tree has the variant
