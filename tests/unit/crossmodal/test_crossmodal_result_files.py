"""One schema for the cross-modal files (patching.json, geometry.json, logit_lens.json, summary.json):
each carries its run key and a checksum over everything, and is validated before saving and after
loading. The faults are made here by hand: an edited number, the same edit with the checksum
recomputed (then validation must catch an impossible number), another run key, wrong shapes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from spiritlens.crossmodal import GeometryResult, LogitLensResult, PatchingResult, summarize
from spiritlens.crossmodal.summary import CrossModalSummary
from spiritlens.runkey import UntrustedFile

L = 3
KEY = {"weights": "a" * 64, "dtype": "float32", "device": "cpu", "method": "patching", "samples": 2}


def _patching(cross=(0.2, 0.4, 0.6)) -> PatchingResult:
    receivers = {m: {"modality": m, "answer_id": 7, "answer": "x", "high_score": 0.9, "low_score": 0.1,
                     "noise": 0.3, "sigma": 0.1, "subject_range": [3, 5]} for m in ("text", "speech")}
    curves = [{"direction": "text_to_speech", "mode": "last", "positions": [4], "source_positions": [9],
               "scores": list(cross), "self_scores": [0.3, 0.5, 0.7]}]
    return PatchingResult("a", "p", "s", L, {}, {}, receivers, curves)


def _geometry(cosine=((0.1, 0.2, 0.3), (0.3, 0.4, 0.5))) -> GeometryResult:
    cosine = np.asarray(cosine, dtype=float)
    return GeometryResult("a", "p", "s", L, ["a", "b"], [[2], [3]], [[3], [4]], cosine, 1 - cosine,
                          np.ones_like(cosine), 2 * np.ones_like(cosine), np.full(L, 0.1), np.ones(L))


def _lens(first_rank=1) -> LogitLensResult:
    ranks = np.array([[[first_rank], [2], [4]], [[3], [2], [1]]], dtype=np.int64)  # [P=2, L, K=1]
    return LogitLensResult("a", "p", "s", L, 100, [5], [" S"], [3, 4], ["3", "4"], [0, 0], ranks,
                           -np.ones(ranks.shape), [2], ranks[:1], -np.ones(ranks[:1].shape))


def _restamp(path) -> None:
    """Recompute a file's checksum by the rule (SHA-256 of its canonical JSON without the field)."""
    body = {k: v for k, v in json.loads(path.read_text()).items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.write_text(json.dumps({**body, "checksum": hashlib.sha256(text.encode()).hexdigest()}))


def test_results_carry_their_key_and_checksum_and_round_trip(tmp_path):
    for name, result in (("p", _patching()), ("g", _geometry()), ("l", _lens())):
        path = result.save(tmp_path / f"{name}.json", run_key=KEY)
        data = json.loads(path.read_text())
        assert data["run_key"] == KEY and len(data["checksum"]) == 64
        back = type(result).load(path, run_key=KEY)
        assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(result.to_json(), sort_keys=True)
    with pytest.raises(UntrustedFile) as error:
        PatchingResult.load(tmp_path / "p.json", run_key={**KEY, "samples": 10})
    assert error.value.reason == "samples 2 → 10"


def test_an_edited_number_is_refused_and_an_impossible_one_even_with_its_checksum(tmp_path):
    path = _patching().save(tmp_path / "patching.json", run_key=KEY)
    data = json.loads(path.read_text())
    data["curves"][0]["scores"][1] = 0.45
    path.write_text(json.dumps(data))
    with pytest.raises(UntrustedFile, match=r"patching\.json': content does not match its checksum"):
        PatchingResult.load(path, run_key=KEY)
    data["curves"][0]["scores"][1] = 1.5
    path.write_text(json.dumps(data))
    _restamp(path)
    with pytest.raises(UntrustedFile) as error:
        PatchingResult.load(path, run_key=KEY)
    assert error.value.reason == ("malformed (patching result a: text_to_speech/last scores[1] = 1.5 is not a finite "
                                  "number in [0.0, 1.0])")


@pytest.mark.parametrize("result, message", [
    (lambda: _patching(cross=(0.2, float("nan"), 0.6)), r"scores\[1\] = nan is not a finite number in \[0.0, 1.0\]"),
    (lambda: _patching(cross=(0.2, 0.4)), r"scores has shape \[2\], expected \[3\]"),
    (lambda: _geometry(cosine=((0.1, 0.2, 1.5), (0.3, 0.4, 0.5))), r"cosine\[0, 2\] = 1.5 is not a finite number"),
    (lambda: _lens(first_rank=0), r"ranks\[0, 0, 0\] = 0.0 is not a finite number in \[1, 100\]"),
])
def test_impossible_numbers_are_never_written(tmp_path, result, message):
    with pytest.raises(ValueError, match=message):
        result().save(tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_the_summary_is_validated_too(tmp_path):
    summary = summarize([_patching()], [_geometry()], [_lens()])
    path = summary.save(tmp_path / "summary.json")
    assert CrossModalSummary.load(path).findings() == summary.findings()
    data = json.loads(path.read_text())
    data["logit_lens"]["chance"] = 2.0
    path.write_text(json.dumps(data))
    _restamp(path)
    with pytest.raises(UntrustedFile, match=r"logit_lens chance\[\] = 2.0 is not a finite number in \[0.0, 1.0\]"):
        CrossModalSummary.load(path)
