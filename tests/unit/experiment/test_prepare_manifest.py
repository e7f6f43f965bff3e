"""Hand-edited or foreign run files: prepare.json of the wrong shape and empty/binary JSON files are
one-line errors naming the file and the field (before any stage uses them)."""

from __future__ import annotations

import json

import pytest

from spiritlens._io import read_json
from spiritlens.experiment.prepared import PreparedRun

GOOD = {"config": {}, "model_dir": "/m", "records": {"1": {"prompt": "p", "subject": "s"}}, "kept": {"t2t": [1]},
        "sigma": {"text": 0.5, "speech": None}, "window": 3, "audio": {}, "filter": {}, "answers": {},
        "n_known": 1, "known_source": "k.json"}
BACKBONE = {"model_dir": "/llama", "dtype": "float32", "fingerprint": {}, "n_layers": 8, "window": 3, "kept": [1],
            "answers": {"1": 7}, "filter": {}, "sigma": 0.03}


@pytest.mark.parametrize("change, message", [
    ({"records": [1, 2]}, "field 'records' must be a JSON dict, got list"),
    ({"window": "3"}, "field 'window' must be a JSON integer, got str"),
    ({"window": True}, "field 'window' must be a JSON integer, got bool"),
    ({"n_known": 1.5}, "field 'n_known' must be a JSON integer, got float"),
    ({"model_dir": None}, "field 'model_dir' must be a JSON str, got NoneType"),
    ({"kept": {"t2t": [2]}}, "kept['t2t'] lists Known id 2, which is not one of its records"),
    ({"kept": {"t2t": "1"}}, "kept['t2t'] must be a list of Known ids"),
    ({"sigma": {"text": "0.5"}}, "sigma['text'] must be a finite number > 0 or null, got '0.5'"),
    ({"sigma": {"text": float("nan")}}, "sigma['text'] must be a finite number > 0 or null, got nan"),
    ({"backbone": ["/llama"]}, "field 'backbone' must be a JSON object or null, got list"),
    ({"backbone": {**BACKBONE, "window": "3"}}, "backbone['window'] must be a JSON int, got str"),
    ({"backbone": {**BACKBONE, "kept": [2]}}, "backbone['kept'] must list Known ids of its records"),
    ({"backbone": {**BACKBONE, "answers": {"1": "Paris"}}}, "backbone['answers'] must map Known ids to token ids"),
    ({"backbone": {**BACKBONE, "sigma": -1.0}}, "backbone['sigma'] must be a finite number > 0 or null, got -1.0"),
])
def test_wrong_typed_prepare_json_names_file_and_field(tmp_path, change, message):
    (tmp_path / "prepare.json").write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ValueError) as error:
        PreparedRun.load(tmp_path)
    assert str(error.value) == f"{tmp_path / 'prepare.json'}: {message}"


def test_a_good_manifest_loads(tmp_path):
    (tmp_path / "prepare.json").write_text(json.dumps(GOOD))
    prep = PreparedRun.load(tmp_path)
    assert prep.kept == {"t2t": [1]} and prep.window == 3 and prep.sigma["text"] == 0.5 and prep.backbone is None
    (tmp_path / "prepare.json").write_text(json.dumps({**GOOD, "backbone": BACKBONE}))
    assert PreparedRun.load(tmp_path).backbone == BACKBONE


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty"), (b"  \n", "is empty"),
    (b"\xff\xfe\x00{", "is not UTF-8 text (a binary file?): byte 0 is b'\\xff'"),
    (b"{1: 2}", "is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
])
def test_read_json_names_the_file(tmp_path, content, reason):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_json(path, "Known dataset")
    assert str(error.value) == f"Known dataset {path} {reason}"
    (tmp_path / "prepare.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"^prepare manifest .*prepare\.json "):
        PreparedRun.load(tmp_path)


@pytest.mark.parametrize("audio", ["../victim.wav", "/etc/victim.wav", "speech/../../victim.wav"])
def test_audio_outside_the_run_folder_is_refused(tmp_path, audio):
    run = tmp_path / "run"
    run.mkdir()
    (run / "prepare.json").write_text(json.dumps({**GOOD, "config": {"out": str(run)}, "audio": {"1": audio}}))
    with pytest.raises(ValueError) as error:
        PreparedRun.load(run)
    assert str(error.value).startswith(f"{run / 'prepare.json'}: audio['1'] ") and \
        f"is outside the run folder {run} " in str(error.value)
    (run / "prepare.json").write_text(json.dumps({**GOOD, "config": {"out": str(run)},
                                                  "audio": {"1": str(run / "speech" / "1_prompt.wav")}}))
    assert PreparedRun.load(run).audio == {"1": str(run / "speech" / "1_prompt.wav")}
