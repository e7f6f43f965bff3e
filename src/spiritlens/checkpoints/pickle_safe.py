"""The one place spiritlens reads pickles: torch checkpoints and raw pickles, through an allow-list.

A pickle is a program: each ``GLOBAL`` it names is imported and may be called, so a ``.pt`` file
from the web can run ``os.system`` the moment it is unpickled. spiritlens therefore never unpickles
with torch's ``weights_only`` switched off and never imports a global a file names. Every read goes through:

- :func:`load_checkpoint` (``torch.load(weights_only=True)``, torch's restricted unpickler) with
  :data:`CHECKPOINT_GLOBALS` added for the call: the few globals SpiritLM's speech-tokenizer files
  and raw fairseq HuBERT checkpoints really contain, each replaced by an inert stand-in
  (:class:`PickledStub`) that only stores what the pickle gives it. fairseq, omegaconf, argparse and
  numpy's pickle helpers are never imported or called;
- :func:`load_weights`: a plain ``torch.load(weights_only=True)`` for model weights
  (``pytorch_model.bin``), nothing added: tensors, ``OrderedDict`` and torch's own rebuild functions;
- :func:`loads`: a raw pickle (bytes) with the same allow-list rule, for spiritlens' own
  inter-process results (``spiritlens.spoken.espeak``);
- :func:`load_joblib`: a k-means quantizer saved with ``joblib.dump`` (scikit-learn's ``MiniBatchKMeans``,
  e.g. SpeechGPT's ``mhubert_base_vp_en_es_fr_it3_L11_km1000.bin``), read by a restricted pure-Python
  unpickler with :data:`JOBLIB_GLOBALS` as its whole allow-list (joblib's format below).

Before unpickling, :func:`scan_globals` lists the globals the file names (``pickletools``, nothing
executed); the first one not allowed ends the load with one line: ``<file>: refusing to unpickle
global 'posix.system' ...``. torch's unpickler is the second wall (it refuses any other global and
any opcode outside protocol 2's safe subset).

What the allowed globals are, and why (read from the files' formats):

- SpiritLM's converted mHuBERT (``model_cfg``, ``task_cfg``, ``model_weight``,
  ``dictionaries_symbols``) and its linear quantizer ``L11_quantizer_500.pt`` (``model_cfg``,
  ``model_weight``): plain dicts, lists, numbers and tensors: torch's own globals only;
- raw fairseq HuBERT checkpoints: ``task_state.dictionaries`` holds
  ``fairseq.data.dictionary.Dictionary`` objects; older ones keep their config as an
  ``argparse.Namespace`` (``args``), newer ones as a dict or an omegaconf ``DictConfig``
  (``omegaconf.dictconfig.DictConfig`` / ``listconfig.ListConfig`` with ``base.ContainerMetadata``,
  ``base.Metadata``, ``nodes.*Node`` leaves, ``typing.Any`` and builtin types as the metadata's
  type fields, an empty ``collections.defaultdict`` as omegaconf 2.0's resolver cache);
  ``extra_state`` and the optimizer history can hold numpy scalars (``numpy.dtype`` +
  ``numpy.core.multiarray.scalar``);
- k-means quantizers keep ``cluster_centers`` as a numpy array (``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``): rebuilt here from the raw bytes with ``numpy.frombuffer``,
  object arrays refused;
- joblib files (:data:`JOBLIB_GLOBALS`): the estimator's class (``sklearn.cluster._kmeans.MiniBatchKMeans``,
  ``sklearn.cluster.k_means_.MiniBatchKMeans`` before scikit-learn 0.22, or ``KMeans``), one
  ``joblib.numpy_pickle.NumpyArrayWrapper`` per array, ``numpy.ndarray`` (the wrapper's ``subclass``),
  ``numpy.dtype`` and numpy scalars.

**joblib's format** (joblib ``numpy_pickle.py``: ``NumpyPickler.save``, ``NumpyArrayWrapper.write_array``
and ``read_array``; 1.1.1 and 1.6.0 read): a pickle (joblib's default protocol, ``pickle.DEFAULT_PROTOCOL``)
in which every numpy array is replaced by a ``NumpyArrayWrapper`` object whose state is ``subclass``,
``shape``, ``order`` (``"C"``/``"F"``), ``dtype``, ``allow_mmap`` and, from joblib 1.2 on,
``numpy_array_alignment_bytes`` (16). The array's raw bytes are written **into the stream right after
the wrapper's BUILD opcode** (protocol 4 frames are closed first): with an alignment, first one byte
giving a padding length ``p`` (1..16) and ``p`` bytes ``0xff``, so that the data starts on a 16-byte
boundary; then ``prod(shape) * itemsize`` bytes in ``order``. So ``pickletools`` cannot scan such a file
past its first array: :func:`load_joblib` unpickles with ``pickle._Unpickler`` (pure Python), whose
``find_class`` answers from the allow-list alone (the first other global ends the load with one line
naming it) and whose BUILD, for a wrapper, reads exactly the declared bytes after checking that the
file still holds them; the file is at most :data:`MAX_JOBLIB_BYTES`, its pickle (arrays left out) at most
:data:`MAX_JOBLIB_PICKLE_BYTES`, each read checked before it is made. Object arrays (a nested pickle
in joblib), compressed joblib files and joblib's pre-0.10 format (``NDArrayWrapper``, arrays in side
files) are refused.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import codecs
import dataclasses
import io
import math
import pickle
import pickletools
import re
import types
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from spiritlens.checkpoints.schema import short


class UnsafePickleError(ValueError):
    """A pickle names a global outside the allow-list (``source``, ``name``: ``module.qualname``)."""

    def __init__(self, source: str, name: str):
        self.source, self.name = source, name
        super().__init__(f"{source}: refusing to unpickle global {name!r}: not on the allow-list of what a "
                         "SpiritLM or fairseq checkpoint holds (spiritlens never runs code from a file)")


class PickledStub:
    """Inert stand-in for a pickled class that is never imported: keeps constructor args and state."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            self.__dict__.update(state[0] or {})  # (dict state, slot state), as pickle's BUILD
            self.__dict__.update(state[1] or {})
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<stub {type(self).__module__}.{type(self).__qualname__}>"


def _stub(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    return type(name, (PickledStub,), {"__module__": module, "__qualname__": name})


class _DtypeSpec(PickledStub):
    """``numpy.dtype(spec, align, copy)`` as pickled, with its state (byte order at index 1)."""

    def dtype(self, source: str) -> np.dtype:
        spec = self.args[0] if self.args else None
        if not isinstance(spec, str) or not re.fullmatch(r"[biufcSUV]\d+|\?|b1", spec):
            raise ValueError(f"{source}: pickled numpy dtype {spec!r} is not a plain number type")
        order = self.state[1] if isinstance(getattr(self, "state", None), tuple) and len(self.state) > 1 else "|"
        dtype = np.dtype(spec)
        return dtype.newbyteorder(order) if order in ("<", ">") else dtype


class _ArraySpec(PickledStub):
    """A pickled ``numpy.ndarray``: ``(version, shape, dtype, fortran, raw bytes)`` kept, never a real
    numpy unpickling; :func:`_materialise` turns it into an array with ``numpy.frombuffer``."""

    def array(self, source: str) -> np.ndarray:
        state = getattr(self, "state", None)
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _DtypeSpec)):
            raise ValueError(f"{source}: malformed pickled numpy array")
        _, shape, dtype_spec, fortran, raw = state
        if not isinstance(raw, (bytes, bytearray)):
            raise ValueError(f"{source}: pickled numpy array holds Python objects, not numbers (refused)")
        dtype = dtype_spec.dtype(source)
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"{source}: malformed pickled numpy array shape {str(shape)[:80]}")
        if math.prod(shape) * dtype.itemsize != len(raw):  # Python ints: a declared 10**30 rows cannot overflow
            raise ValueError(f"{source}: pickled numpy array of shape {list(shape)} has {len(raw)} bytes")
        flat = np.frombuffer(bytes(raw), dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C").copy()


def _reconstruct(cls, shape=None, typecode=None):
    if cls is not _ArraySpec:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than an ndarray")
    return _ArraySpec()


class _NumpyScalar:
    """A pickled numpy scalar: ``scalar(dtype, raw bytes)``; :func:`_materialise` decodes it."""

    def __init__(self, dtype, raw=b""):
        self.dtype_spec, self.raw = dtype, raw


def _empty_dict(*_args):
    """``collections.defaultdict(factory)`` as a plain (empty) dict: omegaconf's resolver cache."""
    return {}


#: Bounds on what a pickle may describe (a torch.save file's ``data.pkl`` holds the structure, not the
#: tensors: a 7B model's is ~30 KB, a fairseq checkpoint's with its optimizer state a few MB; no
#: real checkpoint nests deeper than ~20 levels, omegaconf configs included).
MAX_PICKLE_BYTES = 64 << 20
MAX_PICKLE_DEPTH = 100


_STUBBED = (
    "fairseq.data.dictionary.Dictionary",
    "argparse.Namespace",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode",
    "typing.Any",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
)
#: Extra globals a speech-tokenizer checkpoint may name, each mapped to an inert stand-in.
CHECKPOINT_GLOBALS: dict[str, Any] = {name: _stub(name) for name in _STUBBED}
CHECKPOINT_GLOBALS["collections.defaultdict"] = _empty_dict
for _numpy in ("numpy.core", "numpy._core"):
    CHECKPOINT_GLOBALS[f"{_numpy}.multiarray._reconstruct"] = _reconstruct
    CHECKPOINT_GLOBALS[f"{_numpy}.multiarray.scalar"] = _NumpyScalar
CHECKPOINT_GLOBALS["numpy.ndarray"] = _ArraySpec
CHECKPOINT_GLOBALS["numpy.dtype"] = _DtypeSpec




class _JoblibArray(PickledStub):
    """joblib's ``NumpyArrayWrapper`` as pickled (module docstring); the unpickler replaces it by the array."""


#: Everything a joblib-saved k-means quantizer may name (module docstring), each an inert stand-in.
JOBLIB_GLOBALS: dict[str, Any] = {
    **{f"sklearn.cluster.{module}.{cls}": _stub(f"sklearn.cluster.{module}.{cls}")
       for module in ("_kmeans", "k_means_") for cls in ("MiniBatchKMeans", "KMeans")},
    "joblib.numpy_pickle.NumpyArrayWrapper": _JoblibArray,
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper": _JoblibArray,  # scikit-learn's copy of joblib (< 0.23)
    **{k: v for k, v in CHECKPOINT_GLOBALS.items() if k.startswith("numpy") and not k.endswith("_reconstruct")},
    "_codecs.encode": codecs.encode,  # protocol 2's spelling of a numpy scalar's bytes
}
#: A joblib file is read whole: its arrays included, at most this many bytes (SpeechGPT's k-means,
#: 1000 centres of 768 float32, is ~3 MB; the largest k-means spiritlens reads, 10000 x 1280 float64, ~100 MB).
MAX_JOBLIB_BYTES = 256 << 20
#: ... of which the pickle itself, its arrays left out, at most this many (scikit-learn's MiniBatchKMeans
#: pickles in ~2 KB; a megabyte of opcodes builds at most ~60 MB of Python objects).
MAX_JOBLIB_PICKLE_BYTES = 1 << 20
_JOBLIB_ALIGNMENT_LIMIT = 64  # joblib aligns to 16 bytes; a larger claim is not a joblib file


def torch_globals() -> frozenset[str]:
    """Globals torch's ``weights_only`` unpickler allows by itself (tensors, storages, OrderedDict...)."""
    from torch import _weights_only_unpickler

    return frozenset(_weights_only_unpickler._get_allowed_globals())


# ----------------------------------------------------------------------------- scanning
def scan_globals(data: bytes) -> Iterator[str]:
    """The globals one pickle names, in order (``module.qualname``), read with ``pickletools``
    (nothing is executed). ``STACK_GLOBAL`` takes its names from the two strings before it."""
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            # Python 2 names, mapped as pickle (and torch) map them: __builtin__.exec is builtins.exec
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            yield f"{module}.{name}"
        elif opcode.name == "STACK_GLOBAL":
            yield ".".join(strings[-2:]) if len(strings) >= 2 else "<STACK_GLOBAL>"
        elif isinstance(arg, str):
            strings.append(arg)


def _pickles_of(path: Path) -> list[bytes]:
    """The pickles a ``torch.save`` file holds: ``data.pkl`` of the zip format, or the leading pickles
    (magic, version, system info, object) of the legacy format. ValueError for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
                for info in names:  # declared sizes first: a deflated data.pkl can expand 1000-fold
                    if info.file_size > MAX_PICKLE_BYTES:
                        raise ValueError(f"its pickle {info.filename} declares {info.file_size} bytes, more than the "
                                         f"{MAX_PICKLE_BYTES >> 20} MiB limit (tensors are stored beside it, "
                                         "not in it)")
                return [archive.read(info) for info in names]
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ValueError(f"truncated or damaged torch.save archive: {_first_line(error)}") from None
    pickles: list[bytes] = []
    with open(path, "rb") as handle:  # read pickle by pickle: never the storages that follow them
        for _ in range(4):  # magic number, protocol version, sys info, the object
            start = handle.tell()
            if not handle.read(1):
                break
            handle.seek(start)
            try:
                for opcode, _, _ in pickletools.genops(handle):
                    if opcode.name == "STOP":
                        break
            except ValueError as error:
                if not pickles:
                    raise ValueError(f"neither torch.save's zip format nor a pickle ({_first_line(error)})") from None
                raise
            end = handle.tell()
            handle.seek(start)
            pickles.append(handle.read(end - start))
    return pickles


def _check_globals(pickles: list[bytes], allowed: frozenset[str], source: str) -> None:
    for data in pickles:
        for name in scan_globals(data):
            if name not in allowed:
                raise UnsafePickleError(source, name)


# ----------------------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, what: str) -> Any:
    """A speech-tokenizer ``.pt`` (converted SpiritLM layout or raw fairseq checkpoint), allow-listed.

    Returns the checkpoint with fairseq/omegaconf/argparse objects as :class:`PickledStub` (see
    :func:`to_plain`) and numpy arrays/scalars rebuilt from their bytes. Raises
    :class:`UnsafePickleError` (a ValueError) naming the file and the first global outside
    :data:`CHECKPOINT_GLOBALS` and torch's own; ValueError/FileNotFoundError (one line naming the
    file) for a missing, truncated or malformed file.
    """
    return _load(Path(path), f"{what} checkpoint", CHECKPOINT_GLOBALS)


def load_weights(path: str | Path, what: str = "model weights", *, mmap: bool = False) -> Any:
    """Model weights (``pytorch_model.bin``): ``torch.load(weights_only=True)``, nothing added to
    torch's own allow-list; ``mmap=True`` maps the storages instead of reading them."""
    return _load(Path(path), what, {}, mmap=mmap)


def _load(path: Path, what: str, extra: dict[str, Any], *, mmap: bool = False) -> Any:
    _check_file(path, what)
    allowed = torch_globals() | frozenset(extra)
    try:
        _check_globals(_pickles_of(path), allowed, str(path))
    except UnsafePickleError:
        raise
    except Exception as error:  # noqa: BLE001 - a file pickletools cannot even read
        raise ValueError(f"{path}: cannot read {what} ({_first_line(error)})") from None
    try:
        with torch.serialization.safe_globals([(value, name) for name, value in extra.items()]):
            # torch can memory-map only its zip format; a legacy-format file is read whole
            loaded = torch.load(str(path), map_location="cpu", weights_only=True,
                                mmap=(mmap and zipfile.is_zipfile(path)) or None)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL (\S+) (?:was not an allowed|whose module)", str(error))
        if match:
            raise UnsafePickleError(str(path), match.group(1)) from None
        raise ValueError(f"{path}: cannot read {what} ({_wo_reason(error)})") from None
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... on bad files
        raise ValueError(f"{path}: cannot read {what} ({_first_line(error)})") from None
    return _materialise(loaded, str(path))


def loads(data: bytes, source: str, allowed: dict[str, Any]) -> Any:
    """A raw pickle (bytes) whose globals must all be keys of ``allowed`` (mapped to the objects
    given there); numpy arrays/scalars as in :func:`load_checkpoint` when their globals are allowed.
    For spiritlens' own inter-process results; raises :class:`UnsafePickleError` otherwise."""
    table = dict(allowed)

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            full = f"{module}.{name}"
            if full not in table:
                raise UnsafePickleError(source, full)
            return table[full]

    return _materialise(_Unpickler(io.BytesIO(data)).load(), source)


class _BoundedReader:
    """The file as the unpickler reads it: at most :data:`MAX_JOBLIB_PICKLE_BYTES` of opcodes, each read's
    size checked before it is made (a length field claiming gigabytes reads nothing); arrays are read
    from the file itself, beside it."""

    def __init__(self, handle, fail):
        self.handle, self.fail, self.used = handle, fail, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or self.used + n > MAX_JOBLIB_PICKLE_BYTES:
            self.fail(f"its pickle (arrays left out) is longer than {MAX_JOBLIB_PICKLE_BYTES} bytes")
        data = self.handle.read(n)
        self.used += len(data)
        return data

    def readline(self) -> bytes:
        data = self.handle.readline(MAX_JOBLIB_PICKLE_BYTES - self.used + 1)
        self.used += len(data)
        if self.used > MAX_JOBLIB_PICKLE_BYTES:
            self.fail(f"its pickle (arrays left out) is longer than {MAX_JOBLIB_PICKLE_BYTES} bytes")
        return data


def load_joblib(path: str | Path, what: str) -> Any:
    """An object saved with ``joblib.dump`` (uncompressed), read through :data:`JOBLIB_GLOBALS`
    (module docstring): the estimator as a :class:`PickledStub` holding its state, arrays as numpy
    arrays (native byte order), numpy scalars as numpy scalars. Never imports scikit-learn or joblib.

    Raises :class:`UnsafePickleError` naming the file and the first global outside the allow-list;
    FileNotFoundError or ValueError (one line naming the file) for a missing, empty, compressed,
    truncated or malformed file, an object array, or a file over :data:`MAX_JOBLIB_BYTES`."""
    path = Path(path)
    _check_file(path, what)
    size = path.stat().st_size
    if size > MAX_JOBLIB_BYTES:
        raise ValueError(f"{path}: {what} file has {size} bytes, more than the {MAX_JOBLIB_BYTES >> 20} MiB limit "
                         "for a joblib k-means file")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] != pickle.PROTO:
        kind = "a compressed joblib file" if head in (b"ZF", b"\x1f\x8b", b"BZ", b"\xfd7", b"\x04\x22") or \
            head[:1] == b"\x78" else "not a joblib pickle"
        raise ValueError(f"{path}: cannot read {what}: {kind} (expected an uncompressed joblib.dump file, which "
                         f"starts with pickle's PROTO opcode; got {head!r})")
    source = str(path)
    with open(path, "rb") as handle:
        try:
            loaded = _JoblibUnpickler(handle, source, size).load()
        except (UnsafePickleError, _JoblibError):
            raise
        except Exception as error:  # noqa: BLE001 - pickle raises UnpicklingError/EOFError/struct.error/...
            raise ValueError(f"{path}: cannot read {what} ({_first_line(error)})") from None
        if handle.read(1):
            raise ValueError(f"{path}: cannot read {what} (bytes follow the pickle's STOP opcode)")
    return _materialise(loaded, source)


class _JoblibError(ValueError):
    """A malformed joblib array (its message names the file)."""


class _JoblibUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python unpickler, as joblib's own reader
    """``pickle._Unpickler`` whose globals come from :data:`JOBLIB_GLOBALS` only and whose BUILD reads a
    ``NumpyArrayWrapper``'s array bytes from the file (module docstring)."""

    dispatch = pickle._Unpickler.dispatch.copy()  # noqa: SLF001

    def __init__(self, handle, source: str, size: int):
        super().__init__(_BoundedReader(handle, self._fail))
        self._handle, self._source, self._size = handle, source, size

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, mapped as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full not in JOBLIB_GLOBALS:
            raise UnsafePickleError(self._source, full)
        return JOBLIB_GLOBALS[full]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of a joblib file")

    def load_build(self):
        super().load_build()
        if isinstance(self.stack[-1], _JoblibArray):
            self.stack[-1] = self._read_array(self.stack[-1])

    dispatch[pickle.BUILD[0]] = load_build

    def _fail(self, message: str):
        raise _JoblibError(f"{self._source}: malformed joblib file: {message}")

    def _read_array(self, wrapper: _JoblibArray) -> np.ndarray:
        state = vars(wrapper)
        if state.get("subclass") is not _ArraySpec:
            self._fail(f"subclass {state.get('subclass')!r} is not numpy.ndarray")
        shape, order, dtype_spec = state.get("shape"), state.get("order"), state.get("dtype")
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            self._fail(f"shape {short(shape)} is not a tuple of sizes")
        if order not in ("C", "F"):
            self._fail(f"order {short(order)} is not 'C' or 'F'")
        if not isinstance(dtype_spec, _DtypeSpec):
            self._fail("its dtype is not a pickled numpy dtype")
        dtype = dtype_spec.dtype(self._source)  # plain number types only: object arrays are refused here
        frame = getattr(getattr(self, "_unframer", None), "current_frame", None)
        if frame is not None and frame.tell() != len(frame.getbuffer()):
            self._fail("the array's bytes are not after the end of a pickle frame")
        alignment = state.get("numpy_array_alignment_bytes")  # absent before joblib 1.2
        if alignment is not None:
            if not (isinstance(alignment, int) and 1 <= alignment <= _JOBLIB_ALIGNMENT_LIMIT):
                self._fail(f"numpy_array_alignment_bytes {short(alignment)} is not in 1..{_JOBLIB_ALIGNMENT_LIMIT}")
            padding = self._handle.read(1)
            if len(padding) != 1 or padding[0] > alignment:
                self._fail(f"padding length byte {padding!r} is not in 0..{alignment}")
            if len(self._handle.read(padding[0])) != padding[0]:
                self._fail("the file ends inside the padding")
        count = math.prod(shape)  # Python ints: no overflow
        nbytes = count * dtype.itemsize
        left = self._size - self._handle.tell()
        if nbytes > left:
            self._fail(f"an array of shape {list(shape)} of {dtype} needs {nbytes} bytes, the file holds {left} more")
        data = self._handle.read(nbytes)
        if len(data) != nbytes:
            self._fail(f"the file ends inside the array ({len(data)} of {nbytes} bytes)")
        flat = np.frombuffer(data, dtype=dtype)
        array = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
        return np.array(array, dtype=dtype.newbyteorder("="), order="C")  # a writable copy in native byte order


#: What a numpy array or scalar pickled at protocol 2 names, mapped to the stand-ins above
#: (``_codecs.encode`` turns the pickled text back into the array's bytes).
NUMPY_GLOBALS = {"_codecs.encode": codecs.encode,
                 **{k: v for k, v in CHECKPOINT_GLOBALS.items() if k.startswith("numpy")}}


def _materialise(value: Any, source: str, _depth: int = 0, _done: dict | None = None) -> Any:
    """Numpy stand-ins -> arrays and scalars, through dicts, lists, tuples and stubs.

    Each container is visited once (a pickle may share objects, or hold a list that contains itself:
    omegaconf nodes point back at their parent); nesting deeper than :data:`MAX_PICKLE_DEPTH` is a
    one-line ValueError naming ``source`` (Python would end in RecursionError)."""
    if _done is None:
        _done = {}
    if isinstance(value, _ArraySpec):
        return value.array(source)
    if isinstance(value, _NumpyScalar):
        if not isinstance(value.dtype_spec, _DtypeSpec) or not isinstance(value.raw, (bytes, bytearray)):
            raise ValueError(f"{source}: malformed pickled numpy scalar")
        dtype = value.dtype_spec.dtype(source)
        if len(value.raw) != dtype.itemsize:
            raise ValueError(f"{source}: pickled numpy scalar has {len(value.raw)} bytes for {dtype}")
        return np.frombuffer(bytes(value.raw), dtype=dtype)[0]
    container = isinstance(value, (dict, list, tuple, PickledStub)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type))
    if not container:
        return value
    if id(value) in _done:
        return _done[id(value)][1]
    if _depth >= MAX_PICKLE_DEPTH:
        raise ValueError(f"{source}: pickled data nested deeper than {MAX_PICKLE_DEPTH} levels (refused)")
    _done[id(value)] = (value, value)  # the original is kept alive, so that its id is not reused
    deeper = _depth + 1
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _materialise(value[key], source, deeper, _done)
    elif isinstance(value, list):
        value[:] = [_materialise(v, source, deeper, _done) for v in value]
    elif isinstance(value, tuple):
        if type(value) is tuple:
            rebuilt = tuple(_materialise(v, source, deeper, _done) for v in value)
            _done[id(value)] = (value, rebuilt)
            return rebuilt
    else:
        for key, item in list(vars(value).items()):
            object.__setattr__(value, key, _materialise(item, source, deeper, _done))  # frozen dataclasses too
    return value


def to_plain(value: Any, *, source: str = "checkpoint", _path: tuple = ()) -> Any:
    """Config values as plain Python: Namespaces and stubs become dicts, enum stubs their value,
    omegaconf containers their content, omegaconf nodes their value. A value that contains itself
    (through the parts kept) or nests deeper than :data:`MAX_PICKLE_DEPTH` is a ValueError naming ``source``."""
    if isinstance(value, (PickledStub, types.SimpleNamespace, argparse.Namespace, dict, list, tuple)):
        if id(value) in _path:
            raise ValueError(f"{source}: a pickled config value contains itself (refused)")
        if len(_path) >= MAX_PICKLE_DEPTH:
            raise ValueError(f"{source}: pickled data nested deeper than {MAX_PICKLE_DEPTH} levels (refused)")
        _path = _path + (id(value),)
    if isinstance(value, PickledStub):
        state = {k: v for k, v in vars(value).items() if k not in ("args", "kwargs")}
        if "_content" in state:  # omegaconf DictConfig / ListConfig
            return to_plain(state["_content"], source=source, _path=_path)
        if "_val" in state:  # omegaconf value node
            return to_plain(state["_val"], source=source, _path=_path)
        if not state and len(value.args) == 1 and not value.kwargs:
            return to_plain(value.args[0], source=source, _path=_path)  # an enum member pickled as Cls(value)
        return {k: to_plain(v, source=source, _path=_path) for k, v in state.items()}
    if isinstance(value, (types.SimpleNamespace, argparse.Namespace)):
        return {k: to_plain(v, source=source, _path=_path) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: to_plain(v, source=source, _path=_path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v, source=source, _path=_path) for v in value)
    return value


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a {what} file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: cannot read {what} (the file is empty)")


def _wo_reason(error: Exception) -> str:
    """The reason inside torch's long ``Weights only load failed`` message."""
    text = str(error)
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    return match.group(1).strip() if match else _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


