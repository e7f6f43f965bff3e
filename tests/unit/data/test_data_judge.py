"""Judging continuations against Known attributes, and the Known-t2t / Known-s2t filter."""

from __future__ import annotations

import json

import pytest

from spiritlens.data import KnownRecord, filter_prompts, judge

CASES = [
    # generated, attribute, label, reason
    (" Rome, the capital of the empire", "Rome", "exact", "starts with the attribute"),
    (" Antarctica. It is the largest", "Antarctica", "exact", "starts with the attribute"),
    (" the United States.", "United States", "exact", "starts with the attribute"),
    (" Microsoft Corporation", "Microsoft", "exact", "starts with the attribute"),
    ("CBS on September 22.", "CBS", "exact", "starts with the attribute"),
    (" FRENCH, but", "French", "exact", "starts with the attribute"),
    (" Kyōto, Japan", "Kyoto", "exact", "starts with the attribute"),
    (" Amazon.com, Inc.", "Amazon", "exact", "starts with the attribute"),
    (" nineteen ninety-nine", "1999", "exact", "starts with the attribute"),
    ("\n\nParis", "Paris", "exact", "starts with the attribute"),
    (" the city of Rome", "Rome", "partial", "attribute at word 3 of the first 5"),
    (" Rome, Italy", "Italy", "partial", "attribute at word 2 of the first 5"),
    (" of Antarctica.", "Antarctica", "partial", "attribute at word 2 of the first 5"),
    (" a city in the north of Italy", "Italy", "partial", "attribute at word 5 of the first 5"),
    (" U.S. citizens", "United States", "partial", "alias 'us' at word 1"),
    (" America", "United States", "partial", "alias 'america' at word 1"),
    (" the British Broadcasting Corporation", "BBC", "partial", "alias 'british broadcasting corporation' at word 1"),
    (" the UK", "United Kingdom", "partial", "alias 'uk' at word 1"),
    (" Japanese", "Japan", "partial", "first words 'japanese' are a variant of the attribute"),
    (" Antarctic Peninsula", "Antarctica", "partial", "first words 'antarctic' are a variant of the attribute"),
    (" Microsoft", "Microsoft Corporation", "partial", "first words 'microsoft' are a variant of the attribute"),
    (" Romeo", "Rome", "partial", "first words 'romeo' are a variant of the attribute"),  # documented false positive
    (" Italy", "Italian", "wrong", "attribute not in the first 5 words"),
    (" France", "French", "wrong", "attribute not in the first 5 words"),
    (" Paris", "London", "wrong", "attribute not in the first 5 words"),
    (" Rom", "Rome", "wrong", "attribute not in the first 5 words"),
    (" Microsoft Windows", "Microsoft Corporation", "wrong", "attribute not in the first 5 words"),
    (" Romania", "Rome", "wrong", "attribute not in the first 5 words"),
    (" the same as the Latin of", "Latin", "partial", "attribute at word 3 of the first 5"),  # articles not counted
    (" the same as the one used by the Latin", "Latin", "wrong", "attribute not in the first 5 words"),
    (" a bit different from the language used by Spanish", "Spanish", "wrong", "attribute not in the first 5 words"),
    (" Apple Apple", "Google", "wrong", "attribute not in the first 5 words"),
    ("", "Paris", "wrong", "empty output"),
    (" ... !", "Paris", "wrong", "empty output"),
]


@pytest.mark.parametrize(("generated", "attribute", "label", "reason"), CASES)
def test_judge_table(generated, attribute, label, reason):
    verdict = judge(generated, attribute)
    assert (verdict.label, verdict.reason) == (label, reason)


def test_judge_input_errors():
    with pytest.raises(ValueError, match=r"attribute '\?\?' is empty after normalisation"):
        judge("Paris", "??")
    with pytest.raises(TypeError, match="generated must be a str, got NoneType"):
        judge(None, "Paris")


def _record(known_id, subject, prompt, attribute):
    return KnownRecord(known_id=known_id, prompt=prompt, subject=subject, attribute=attribute)


RECORDS = [
    _record(0, "Vinson Massif", "Vinson Massif is located in the continent of", "Antarctica"),
    _record(1, "Beats Music", "Beats Music is owned by", "Apple"),
    _record(2, "Giuseppe Angeli", "Giuseppe Angeli, who has a citizenship of", "Italy"),
    _record(3, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French"),
    _record(4, "Toko Yasuda", "Toko Yasuda, the", "guitar"),
]
ANSWERS = {0: " Antarctica, the coldest", 1: " Steve Jobs' company, Apple", 2: " Rome", 3: " French.", 4: None}


def fake_generate(record):
    """Deterministic stand-in for greedy generation; fails on record 4."""
    if ANSWERS[record.known_id] is None:
        raise RuntimeError("CUDA out of memory")
    return ANSWERS[record.known_id]


def test_filter_keeps_exact_answers_and_records_failures(tmp_path):
    out = tmp_path / "known-t2t.json"
    result = filter_prompts(RECORDS, fake_generate, "t2t", out_path=out)
    assert [r.known_id for r in result.kept] == [0, 3]
    assert [e.label for e in result.entries] == ["exact", "partial", "wrong", "exact", None]
    assert result.counts == {"total": 5, "exact": 2, "partial": 1, "wrong": 1, "error": 1, "kept": 2}
    failed = result.entries[4]
    assert (failed.error, failed.generated, failed.kept) == ("RuntimeError: CUDA out of memory", None, False)

    manifest = json.loads(out.read_text())
    assert manifest["dataset"] == "Known-t2t" and manifest["modality"] == "t2t"
    assert manifest["counts"] == result.counts and manifest["kept_ids"] == [0, 3]
    assert manifest["entries"][1] == {
        "known_id": 1, "prompt": "Beats Music is owned by", "subject": "Beats Music", "attribute": "Apple",
        "generated": " Steve Jobs' company, Apple", "label": "partial", "reason": "attribute at word 4 of the first 5",
        "kept": False, "error": None,
    }


def test_filter_accept_keep_all_and_resume(tmp_path):
    out = tmp_path / "known-s2t.json"
    calls = []

    def generate(record):
        calls.append(record.known_id)
        return fake_generate(record)

    loose = filter_prompts(RECORDS, generate, "s2t", accept=("exact", "partial"), out_path=out)
    assert loose.dataset == "Known-s2t"
    assert [r.known_id for r in loose.kept] == [0, 1, 3]
    assert calls == [0, 1, 2, 3, 4]

    calls.clear()
    everything = filter_prompts(RECORDS, generate, "s2t", keep_all=True, out_path=out)
    assert calls == [4]  # only the failed record is generated again; the others are reused and re-judged
    assert everything.reused == 4
    assert [r.known_id for r in everything.kept] == [0, 1, 2, 3]  # keep_all never keeps a failed generation
    assert [e.label for e in everything.entries[:4]] == ["exact", "partial", "wrong", "exact"]
    assert everything.counts["kept"] == 4 and json.loads(out.read_text())["keep_all"] is True

    calls.clear()
    filter_prompts(RECORDS[:2], generate, "s2t", out_path=out, resume=False)
    assert calls == [0, 1]


def test_filter_bad_arguments_and_non_string_output():
    with pytest.raises(ValueError, match="modality must be one of t2t, s2t, got 'text'"):
        filter_prompts(RECORDS, fake_generate, "text")
    with pytest.raises(ValueError, match=r"accept has unknown labels \['close'\]"):
        filter_prompts(RECORDS, fake_generate, "t2t", accept=("exact", "close"))
    result = filter_prompts(RECORDS[:1], lambda r: 42, "t2t")
    assert result.entries[0].error == "TypeError: generate_fn returned int, expected str"
    assert result.manifest_path is None and result.counts["error"] == 1
