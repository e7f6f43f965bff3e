"""The run key's parts: file digests (hashed once per file state, checked against hashlib here), the
words for what changed, the checksum-and-key check, and the one temporary-file rule with its sweep."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from spiritlens import runkey
from spiritlens._io import sweep_temporaries, write_atomic
from spiritlens.runkey import UntrustedFile, folder_digest, key_changes, run_key, stamp, verify


def test_folder_digest_hashes_each_file_once_and_sees_a_rewrite(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 1000)
    (tmp_path / "sub" / "tokenizer.model").write_bytes(b"pieces")
    (tmp_path / ".weights.bin.x1-99.tmp").write_bytes(b"a temporary is not part of the model")
    calls = []
    monkeypatch.setattr(runkey, "sha256_file", lambda path: calls.append(path) or hashlib.sha256(
        open(path, "rb").read()).hexdigest())
    expected = hashlib.sha256(json.dumps(
        [["sub/tokenizer.model", hashlib.sha256(b"pieces").hexdigest()],
         ["weights.bin", hashlib.sha256(b"\x00" * 1000).hexdigest()]], sort_keys=True).encode()).hexdigest()
    assert folder_digest(tmp_path) == expected
    assert folder_digest(tmp_path) == expected and len(calls) == 2  # the second time from the cache
    (tmp_path / "weights.bin").write_bytes(b"\x01" * 1000)  # same size, same name, new content
    changed = folder_digest(tmp_path)
    assert changed != expected and len(calls) == 3
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        folder_digest(tmp_path / "missing")


def test_key_changes_say_what_changed_in_words():
    base = {"weights": "a" * 64, "dtype": "float32", "device": "cpu"}
    old = run_key(base, method="exact", samples=10, sigma=0.4912734627723694, rows={"prompt": "p", "subject": "s"})
    assert key_changes(old, old) == []
    new = run_key({**base, "weights": "b" * 64, "dtype": "bfloat16"}, method="exact", samples=10,
                  sigma=0.9825469255447388, rows={"prompt": "p2", "subject": "s"})
    assert key_changes(old, new) == ["model weights changed", "dtype float32 → bfloat16", "sigma 0.491273 → 0.982547",
                                     "rows changed (prompt)"]
    assert key_changes(None, new) == ["no run key recorded (written before run keys, or edited)"]
    with pytest.raises(ValueError, match=r"run key fields \['colour'\] are not among"):
        run_key(base, colour="red")
    assert run_key(base, rows={"ids": (1, 2)}) == json.loads(json.dumps(run_key(base, rows={"ids": [1, 2]})))


def test_verify_refuses_an_edit_a_missing_checksum_and_another_key(tmp_path):
    key = run_key({"weights": "a" * 64}, method="subject sigma")
    document = stamp({"sigma": 0.5}, key)
    assert verify(json.loads(json.dumps(document)), key, what="sigma cache", path=tmp_path / "s.json") == document
    edited = dict(document, sigma=0.25)
    with pytest.raises(UntrustedFile) as error:
        verify(edited, key, what="sigma cache", path=tmp_path / "s.json")
    assert str(error.value) == (f"sigma cache {str(tmp_path / 's.json')!r}: content does not match its checksum "
                                "(edited or damaged after it was written)")
    with pytest.raises(UntrustedFile, match="no checksum recorded"):
        verify({k: v for k, v in document.items() if k != "checksum"}, key, what="x", path="x")
    with pytest.raises(UntrustedFile) as error:
        verify(document, run_key({"weights": "b" * 64}, method="subject sigma"), what="x", path="x")
    assert error.value.reason == "model weights changed"


def _killed_write(folder, name: str) -> None:
    """A process killed between writing its temporary and moving it into place."""
    code = ("import os, sys\nfrom spiritlens._io import write_atomic\nos.replace = lambda *a: os._exit(9)\n"
            "write_atomic(sys.argv[1], b'half')\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder / name)], capture_output=True, text=True,
                          env={**os.environ})
    assert done.returncode == 9, done.stderr


def test_one_temporary_rule_and_one_sweep(tmp_path):
    results = tmp_path / "results" / "t2t"
    results.mkdir(parents=True)
    _killed_write(results, "1_hidden.npz")
    _killed_write(tmp_path, "summary.json")
    left = sorted(p.name for p in tmp_path.rglob(".*"))
    assert len(left) == 2 and all(n.endswith(".tmp") and n.startswith((".1_hidden.npz.", ".summary.json."))
                                  for n in left)
    (results / "2_hidden.npz.tmp.npz").write_bytes(b"PK")  # the name TraceResult.save used before
    (results / f".3_prompt.tmp-{_dead_pid()}.ab12.wav").write_bytes(b"")  # the speech corpus's old name
    live = results / f".4_hidden.json.zz9-{os.getpid()}.tmp"  # a writer still at work
    live.write_bytes(b"")
    kept = write_atomic(results / "5_hidden.json", "{}")
    removed = sweep_temporaries(tmp_path)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [live.name, "5_hidden.json"]
    assert kept.read_text() == "{}"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
