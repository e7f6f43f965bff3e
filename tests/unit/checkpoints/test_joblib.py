"""joblib files (SpeechGPT's k-means) read without joblib or scikit-learn, and written byte for byte.

References: two ``MiniBatchKMeans`` fitted by scikit-learn 1.9.1 and saved by ``joblib.dump`` under joblib
1.6.0 (16-byte array alignment) and 1.1.1 (none), committed in ``tests/fixtures/speechgpt/`` with their
centres' bytes as joblib itself loaded them; and the SHA-256 of ``joblib.dump`` of a real estimator holding
exactly the state spiritlens' writer writes (``scripts/make_speechgpt_fixtures.py`` checked the bytes
equal). Hostile files: globals before and after the first array (where ``pickletools`` cannot reach),
malformed wrappers, truncation, compression; each one line naming the file, nothing run.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib

import numpy as np
import pytest

from helpers import FIXTURES

from spiritlens.checkpoints import pickle_safe
from spiritlens.checkpoints.pickle_safe import UnsafePickleError, load_joblib
from spiritlens.synthetic.tiny_speechgpt import KMEANS_PARAMS, write_kmeans_joblib
from spiritlens.units import load_kmeans_joblib

REFERENCE = json.loads((FIXTURES / "speechgpt" / "reference.json").read_text(encoding="utf-8"))["kmeans"]


def _centers(entry: dict, key: str = "centers_hex", shape: str = "centers_shape") -> np.ndarray:
    return np.frombuffer(bytes.fromhex(entry[key]), dtype=np.float32).reshape(entry[shape])


class _Payload:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("version", sorted(REFERENCE))
def test_real_joblib_files_read_as_joblib_read_them(version):
    entry = REFERENCE[version]
    path = FIXTURES / "speechgpt" / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    estimator = load_joblib(path, "k-means")
    assert type(estimator).__module__ == "sklearn.cluster._kmeans" and type(estimator).__name__ == "MiniBatchKMeans"
    assert estimator.cluster_centers_.dtype == np.float32 and estimator.cluster_centers_.flags.writeable
    assert estimator.cluster_centers_.tobytes() == _centers(entry).tobytes()
    assert estimator.n_clusters == 8 and estimator._sklearn_version == entry["sklearn"]
    assert isinstance(estimator.inertia_, np.floating) and estimator.inertia_ > 0  # a numpy scalar, rebuilt
    quantizer = load_kmeans_joblib(path)
    assert quantizer.vocab_size == 8 and quantizer.dim == 6
    x = np.random.RandomState(3).randn(50, 6).astype(np.float32)
    expected = ((x[:, None, :] - _centers(entry)[None]) ** 2).sum(-1).argmin(1)  # ApplyKmeans's rule
    import torch

    assert quantizer(torch.from_numpy(x)).tolist() == expected.tolist()


@pytest.mark.parametrize("version", sorted(REFERENCE))
def test_the_writer_gives_joblibs_own_bytes(version, tmp_path):
    entry = REFERENCE[version]
    centers = _centers(entry, "centers_hex", "centers_shape") if version == "1.6.0" else _centers(REFERENCE["1.6.0"])
    path = write_kmeans_joblib(tmp_path / "km.bin", centers, joblib_format=entry["writer_format"],
                               params={**KMEANS_PARAMS, "n_clusters": 8}, sklearn_version=entry["sklearn"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["twin_sha256"]
    assert load_joblib(path, "k-means").cluster_centers_.tobytes() == centers.tobytes()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("joblib_format", ["1.2", "1.1"])
def test_variants_read_back(tmp_path, protocol, joblib_format):
    """Older scikit-learn's module name, every pickle protocol, a big-endian array, numpy scalars."""
    centers = np.random.RandomState(0).randn(5, 3).astype(">f8")
    path = write_kmeans_joblib(tmp_path / "km.bin", centers, joblib_format=joblib_format, protocol=protocol,
                               estimator="sklearn.cluster.k_means_.MiniBatchKMeans",
                               fitted={"inertia_": np.float32(2.5), "n_iter_": np.int64(7), "_counts": np.ones(5)})
    estimator = load_joblib(path, "k-means")
    assert type(estimator).__module__ == "sklearn.cluster.k_means_"
    assert estimator.cluster_centers_.dtype == np.dtype("float64") and np.array_equal(estimator.cluster_centers_, centers)
    assert estimator.inertia_ == np.float32(2.5) and estimator.n_iter_ == 7 and estimator._counts.tolist() == [1.0] * 5
    assert load_kmeans_joblib(path).centers.shape == (5, 3)


def test_globals_outside_the_allow_list_are_refused_wherever_they_are(tmp_path):
    marker = tmp_path / "pwned"
    centers = np.zeros((2, 2), np.float32)
    before = write_kmeans_joblib(tmp_path / "before.bin", centers,
                                 params={**KMEANS_PARAMS, "init": _Payload(os.system, f"touch {marker}")})
    after = write_kmeans_joblib(tmp_path / "after.bin", centers,  # past the array: pickletools never gets there
                                fitted={"labels_": np.zeros(3), "x": _Payload(eval, f"open({str(marker)!r}, 'w')")})
    for path, name in ((before, f"{os.system.__module__}.system"), (after, "builtins.eval")):
        with pytest.raises(UnsafePickleError) as error:
            load_joblib(path, "k-means")
        assert str(error.value).startswith(f"{path}: refusing to unpickle global {name!r}")
        assert "\n" not in str(error.value)
    assert not marker.exists()


def test_malformed_files_are_one_line(tmp_path, monkeypatch):
    centers = np.arange(12, dtype=np.float32).reshape(2, 6)
    good = write_kmeans_joblib(tmp_path / "good.bin", centers).read_bytes()

    def refused(name: str, data: bytes, match: str):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match) as error:
            load_kmeans_joblib(path)
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)

    assert good.count(b"\x8c\x02f4") == 1 and good.count(b"K\x02K\x06\x86") == 1
    refused("object.bin", good.replace(b"\x8c\x02f4", b"\x8c\x02O8"), "pickled numpy dtype 'O8' is not a plain number")
    refused("huge.bin", good.replace(b"K\x02K\x06\x86", b"K\xffK\xff\x86"),
            r"malformed joblib file: an array of shape \[255, 255\] of float32 needs 260100 bytes, the file holds \d+ "
            r"more")
    data_at = good.index(centers.tobytes())
    refused("cut_array.bin", good[:data_at + 10], r"an array of shape \[2, 6\] of float32 needs 48 bytes, the file holds 10 more")
    refused("cut_tail.bin", good[:-20], r"cannot read k-means quantizer \(pickle exhausted before end of frame\)")
    refused("trailing.bin", good + b"\x00", r"bytes follow the pickle's STOP opcode")
    refused("zlib.bin", zlib.compress(good), "a compressed joblib file")
    refused("text.bin", b"hello", "not a joblib pickle")
    refused("empty.bin", b"", "the file is empty")
    padding = len(good[:data_at]) - len(good[:data_at].rstrip(b"\xff"))  # joblib >= 1.2: p, then p bytes 0xff
    assert 1 <= padding <= 16 and good[data_at - padding - 1] == padding
    refused("padding.bin", good[:data_at - padding - 1] + bytes([200]) + good[data_at - padding:],
            r"padding length byte b'\\xc8' is not in 0..16")
    # bombs: a megabyte of opcodes building lists, a string claiming 2**40 bytes, a frame claiming 2**50
    refused("lists.bin", b"\x80\x04" + b"]" * (2 << 20) + b".", r"its pickle \(arrays left out\) is longer than 1048576")
    refused("claim.bin", b"\x80\x04\x8d" + (1 << 40).to_bytes(8, "little") + b"x.", "is longer than 1048576 bytes")
    refused("frame.bin", b"\x80\x04\x95" + (1 << 50).to_bytes(8, "little") + b"]", "is longer than 1048576 bytes")
    monkeypatch.setattr(pickle_safe, "MAX_JOBLIB_BYTES", 100)
    refused("big.bin", good, "more than the 0 MiB limit for a joblib k-means file")


def test_an_estimator_without_centres_is_refused(tmp_path):
    path = write_kmeans_joblib(tmp_path / "km.bin", np.zeros((3, 2), np.float32), fitted={})
    data = path.read_bytes().replace(b"cluster_centers_", b"cluster_centerz_")
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a fitted scikit-learn k-means \\(no cluster_centers_ in MiniBatchKMeans\\)"):
        load_kmeans_joblib(path)
    bad = write_kmeans_joblib(tmp_path / "n.bin", np.zeros((3, 2), np.float32), params={**KMEANS_PARAMS})
    bad.write_bytes(bad.read_bytes().replace(b"\x8c\nn_clusters\x94K\x03", b"\x8c\nn_clusters\x94K\x04"))
    with pytest.raises(ValueError, match="n_clusters=4 but cluster_centers has 3 rows"):
        load_kmeans_joblib(bad)
