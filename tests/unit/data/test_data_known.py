"""Known dataset: loading the shared file, per-record validation, offline download error, subsets."""

from __future__ import annotations

import json

import pytest

from spiritlens.data import KnownDataUnavailable, KnownRecord, load_known, select
from spiritlens.data import known as known_module


def test_shared_known_file_loads_all_1209_records(known_path):
    ds = load_known(known_path)
    assert len(ds) == 1209
    assert ds.problems == []
    first = ds[0]
    assert first == KnownRecord(
        known_id=0,
        prompt="Vinson Massif is located in the continent of",
        subject="Vinson Massif",
        attribute="Antarctica",
        relation_id="P30",
        template="{} is located in the continent",
        prediction=" of Antarctica. It is the largest of the three",
    )
    assert first.subject_span == (0, 13)
    assert len(ds.by_id()) == 1209
    assert sorted(r.known_id for r in ds) == list(range(1209))


def test_bad_records_are_reported_and_the_rest_load(tmp_path):
    good = {"known_id": 1, "subject": "Rome", "attribute": "Italy", "prompt": "Rome is the capital of",
            "template": "{} is the capital of", "relation_id": "P1376", "prediction": " Italy"}
    records = [
        good,
        {**good, "known_id": 2, "subject": ""},
        {**good, "known_id": 3, "subject": "Paris"},
        {k: v for k, v in good.items() if k != "attribute"} | {"known_id": 4},
        {**good, "known_id": 1},
        "not a record",
        {**good, "known_id": "x"},
        {**good, "known_id": 7, "subject": "capital", "attribute": "Europe"},
    ]
    path = tmp_path / "known.json"
    path.write_text(json.dumps(records))
    ds = load_known(path)
    assert [r.known_id for r in ds] == [1, 7]
    assert ds.problems == [
        (2, "missing or empty subject"),
        (3, "subject 'Paris' not in prompt 'Rome is the capital of'"),
        (4, "missing or empty attribute"),
        (1, "duplicate known_id"),
        (None, "record #5 is a str, not an object"),
        (None, "record #6 has no integer known_id (got 'x')"),
    ]
    assert ds[1].subject_span == (12, 19)


def test_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"^Known dataset .*bad\.json is not valid JSON"):
        load_known(bad)
    obj = tmp_path / "obj.json"
    obj.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="must be a JSON list of records, got dict"):
        load_known(obj)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_known(tmp_path / "missing.json")


def test_offline_download_gives_a_clear_error_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIRITLENS_KNOWN_PATH", raising=False)
    monkeypatch.setattr(known_module, "SOURCE_CHECKOUT_KNOWN", tmp_path / "no-checkout" / "known_1000.json")
    with pytest.raises(KnownDataUnavailable) as info:
        load_known(cache_dir=tmp_path, url="http://127.0.0.1:9/known_1000.json", timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot download the Known dataset from http://127.0.0.1:9/known_1000.json")
    assert "load_known(path=...)" in message and "SPIRITLENS_KNOWN_PATH" in message
    assert list(tmp_path.iterdir()) == []


def test_cache_and_environment_variable_are_used_before_downloading(tmp_path, monkeypatch, known_path):
    monkeypatch.setenv("SPIRITLENS_KNOWN_PATH", str(known_path))
    assert len(load_known(url="http://127.0.0.1:9/x")) == 1209
    monkeypatch.delenv("SPIRITLENS_KNOWN_PATH")
    (tmp_path / "known_1000.json").write_text(json.dumps([{"known_id": 5, "subject": "A", "attribute": "B", "prompt": "A is"}]))
    ds = load_known(cache_dir=tmp_path, url="http://127.0.0.1:9/x")
    assert [r.known_id for r in ds] == [5]


def test_one_lookup_rule_in_order(tmp_path, monkeypatch, known_path):
    """--known, then $SPIRITLENS_KNOWN_PATH, then the cache, then ../shared/data next to the checkout."""
    monkeypatch.delenv("SPIRITLENS_KNOWN_PATH", raising=False)
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    cache.mkdir()
    (cache / "known_1000.json").write_text("[]")
    explicit = tmp_path / "mine.json"
    explicit.write_text("[]")
    monkeypatch.setattr(known_module, "SOURCE_CHECKOUT_KNOWN", known_path)
    offline = dict(url="http://127.0.0.1:9/x", timeout=5)
    assert known_module.find_known(explicit, cache, **offline) == explicit
    assert known_module.find_known(None, cache, **offline) == cache / "known_1000.json"
    assert known_module.find_known(None, empty, **offline) == known_path  # the source checkout's shared/data
    monkeypatch.setenv("SPIRITLENS_KNOWN_PATH", str(explicit))
    assert known_module.find_known(None, cache, **offline) == explicit
    monkeypatch.setenv("SPIRITLENS_KNOWN_PATH", str(tmp_path / "gone.json"))
    with pytest.raises(FileNotFoundError, match="Known dataset not found: .*gone.json"):
        known_module.find_known(None, cache, **offline)
    # The default location of a source checkout is this worktree's ../shared/data.
    assert str(known_module.SOURCE_CHECKOUT_KNOWN).endswith("shared/data/known_1000.json")


def test_select_is_deterministic_nested_and_ordered(known_path):
    ds = load_known(known_path)
    a = select(ds, 10, seed=3)
    assert [r.known_id for r in a] == [r.known_id for r in select(ds, 10, seed=3)]
    assert [r.known_id for r in a] == sorted(r.known_id for r in a)
    assert len({r.known_id for r in a}) == 10
    assert {r.known_id for r in a} <= {r.known_id for r in select(ds, 20, seed=3)}
    assert [r.known_id for r in a] != [r.known_id for r in select(ds, 10, seed=4)]
    assert select(ds, 0) == [] and len(select(ds, 1209)) == 1209
    with pytest.raises(ValueError, match="n must be an integer between 0 and 1209"):
        select(ds, 1210)
