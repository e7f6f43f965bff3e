"""Hostile-input cases run in a child process each, with memory, time and file-size limits.

One server process per test session imports torch, transformers and spiritlens once (``SERVER``),
then runs every case in a fresh ``os.fork()`` of itself, so a case costs what it costs and nothing
else: the child sets ``RLIMIT_AS`` (a runaway case dies instead of swapping the machine) and
optionally ``RLIMIT_FSIZE`` (a "full disk": writes past it fail with EFBIG, as root too), runs one
API call or one ``spiritlens`` command line, and reports what happened. The server kills a child
still running after the case's timeout (10 s) and reads the child's peak RSS from ``os.wait4``
(``ru_maxrss``, the RUSAGE_CHILDREN figure of that one child). A case's bad input is built in the
test process, before the call.

:class:`Outcome.refused` is the assertion every hostile case ends in: one line, the expected text,
a ValueError (API) or exit status 2 (CLI), under 1 GB of peak RSS, within the timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import REPO_ROOT

TIMEOUT_S = 10.0
MAX_RSS_MB = 1024  # every bomb must stay under 1 GB of peak resident memory
ADDRESS_SPACE = 6 << 30  # RLIMIT_AS of each case: a bomb fails here instead of exhausting the machine

SERVER = r'''
import contextlib, importlib, io, json, os, resource, select, signal, sys, time, traceback
protocol = sys.stdout
sys.stdout = sys.stderr  # stray prints of imported libraries never reach the protocol channel
for name in ("torch", "numpy", "yaml", "soundfile", "soxr", "transformers",
             "transformers.models.llama.modeling_llama", "transformers.models.wav2vec2.modeling_wav2vec2",
             "transformers.models.hubert.modeling_hubert", "spiritlens.cli", "spiritlens.units",
             "spiritlens.units.pitch", "spiritlens.units.style", "spiritlens.model.hooked", "spiritlens.data.known"):
    importlib.import_module(name)
importlib.import_module("spiritlens.cli").build_parser()  # imports every subcommand module


def run_case(request):
    limits = request.get("limits", {})
    resource.setrlimit(resource.RLIMIT_AS, (limits["as"], limits["as"]))
    if limits.get("fsize") is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
    for key, value in request.get("env", {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if request.get("cwd"):
        os.chdir(request["cwd"])
    import torch
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()
    result = {}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if request["kind"] == "cli":
                from spiritlens.cli import main
                try:
                    status = main(request["argv"])
                except SystemExit as stop:
                    status = stop.code
                result = {"kind": "exit", "status": status}
            else:
                module, _, attr = request["target"].partition(":")
                function = importlib.import_module(module)
                for part in attr.split("."):
                    function = getattr(function, part)
                value = function(*request.get("args", []), **request.get("kwargs", {}))
                result = {"kind": "returned", "value": repr(value)[:2000]}
    except BaseException as error:  # what escapes is the finding
        result = {"kind": "raised", "type": type(error).__name__, "message": str(error)[:4000],
                  "types": [cls.__name__ for cls in type(error).__mro__],
                  "traceback": "".join(traceback.format_exception(error))[-6000:]}
    result["stdout"], result["stderr"] = out.getvalue()[-20000:], err.getvalue()[-20000:]
    return result


for line in sys.stdin:
    request = json.loads(line)
    read_end, write_end = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            payload = json.dumps(run_case(request)).encode()
        except BaseException as error:
            payload = json.dumps({"kind": "raised", "type": type(error).__name__, "message": str(error)}).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(write_end, view):]
        os._exit(0)
    os.close(write_end)
    chunks, timed_out = [], False
    deadline = start + request["timeout"]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([read_end], [], [], left)
        if ready:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    if timed_out:
        result = {"kind": "timeout"}
    else:
        try:
            result = json.loads(b"".join(chunks))
        except ValueError:
            result = {"kind": "crashed", "message": f"child exit status {status}"}
    result.update(maxrss_mb=usage.ru_maxrss / 1024, seconds=seconds)
    protocol.write(json.dumps(result) + "\n")
    protocol.flush()
'''


@dataclass
class Outcome:
    """What one case did: ``kind`` ``returned`` / ``raised`` / ``exit`` (CLI) / ``timeout`` / ``crashed``."""

    kind: str
    type: str = ""
    message: str = ""
    status: int | None = None
    value: str = ""
    stdout: str = ""
    stderr: str = ""
    traceback: str = ""
    maxrss_mb: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{self.kind} {self.type} status={self.status} {self.maxrss_mb:.0f} MB {self.seconds:.1f} s\n"
                f"message: {self.message[:1500]}\nstderr: {self.stderr[-1500:]}\n{self.traceback[-3000:]}")

    def bounded(self) -> None:
        """Within the time and memory budget."""
        assert self.kind != "timeout", f"ran past {TIMEOUT_S} s"
        assert self.maxrss_mb < MAX_RSS_MB, f"peak RSS {self.maxrss_mb:.0f} MB\n{self.describe()}"

    def refused(self, expected: str, *, error: str = "ValueError") -> str:
        """A clear refusal: for an API call, one ``error`` (or a subclass) whose one-line message matches the regex
        ``expected``; for a command line, exit status 2 and one stderr line ``spiritlens <cmd>:
        error: …`` matching it. Bounded in time and memory. Returns the line."""
        self.bounded()
        if self.kind == "exit":  # progress bars and "[prepare]" lines may come before the one error line
            lines = [line for line in self.stderr.splitlines() if re.match(r"spiritlens [\w-]+: error: ", line)]
            assert self.status == 2 and len(lines) == 1 and "Traceback" not in self.stderr, self.describe()
            line = lines[0]
        else:
            assert self.kind == "raised" and error in self.extra.get("types", [self.type]), self.describe()
            line = self.message
            assert "\n" not in line, line
        assert re.search(expected, line), f"{expected!r} not in\n{line}"
        assert len(line) < 600, line
        return line


class Runner:
    """The session's case server (module docstring)."""

    def __init__(self, log: Path):
        paths = [str(REPO_ROOT / "src"), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths),
               "OMP_NUM_THREADS": "1"}
        env.pop("SPIRITLM_CHECKPOINTS_DIR", None)
        self._log = open(log, "w")
        self._process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, text=True, env=env)

    def _run(self, request: dict, timeout: float, fsize: int | None) -> Outcome:
        request.update(timeout=timeout, limits={"as": ADDRESS_SPACE, "fsize": fsize})
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the case server died (see {self._log.name})")
        data = json.loads(line)
        known = {k: data.pop(k) for k in list(data) if k in Outcome.__dataclass_fields__}
        return Outcome(**known, extra=data)

    def call(self, target: str, *args, timeout: float = TIMEOUT_S, fsize: int | None = None, env: dict | None = None,
             cwd: str | None = None, **kwargs) -> Outcome:
        """``module:function`` (or ``module:Class.method``) called with JSON-able arguments in a child."""
        return self._run({"kind": "call", "target": target, "args": [str(a) if isinstance(a, Path) else a for a in args],
                          "kwargs": kwargs, "env": env or {}, "cwd": cwd}, timeout, fsize)

    def cli(self, *argv, timeout: float = TIMEOUT_S, fsize: int | None = None, env: dict | None = None,
            cwd: str | None = None) -> Outcome:
        """``spiritlens ARGV`` (``spiritlens.cli.main``) in a child: its status, stdout and stderr."""
        return self._run({"kind": "cli", "argv": [str(a) for a in argv], "env": env or {}, "cwd": cwd}, timeout, fsize)

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("hostile-server") / "server.log")
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def speech_dir(tiny_root) -> Path:
    """The tiny speech-tokenizer folder (mHuBERT, quantizer, F0 VQ-VAE, style encoder): copied, never edited."""
    return tiny_root / "speech_tokenizer"
