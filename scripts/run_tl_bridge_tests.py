#!/usr/bin/env python
"""TransformerLens' own bridge tests against HookedSpiritLM and a plain TransformerBridge of the same folder.

    .venv/bin/python scripts/run_tl_bridge_tests.py TL_CHECKOUT [--model toy|tiny|DIR] [-k EXPR] [--out FILE]

TL_CHECKOUT is a TransformerLens source tree (its ``tests/`` folder is read; the tests are not part of
spiritlens). The installed ``transformer_lens`` is the one tested: the tests are copied to a temporary
folder and run from there, so the checkout's own ``transformer_lens/`` package is never imported. The
suites: ``tests/integration/model_bridge/``, ``tests/acceptance/model_bridge/`` and
``tests/acceptance/test_activation_cache.py``, the files among them that build GPT-2 (the model this
run swaps; ``--all-files`` adds the other architectures' files, which never touch the swapped model).

Each suite runs twice, in separate pytest processes, with ``scripts/tl_bridge_plugin.py`` swapping
TransformerLens' GPT-2 fixture for one SpiritLM checkpoint folder (the toy SpiritLM by default,
``spiritlens.synthetic.toy.toy_checkpoints()``, trained once into ~/.cache/spiritlens; ``tiny``: random
weights from ``spiritlens make-tiny``): once as a plain ``TransformerBridge.boot_transformers(folder)``,
once as ``HookedSpiritLM.from_pretrained(folder)``; Hugging Face comparisons use ``LlamaForCausalLM`` of
the same folder. The comparison, per test (plain and ours: passed/failed/error/skipped, the failing line,
and the README's forced reason where a test that passes on the plain bridge fails on HookedSpiritLM for
a reason SpiritLM forces), goes to ``benchmarks/results/tl_bridge_tests.json``. The script exits 1 when
a test passes on the plain bridge and fails on HookedSpiritLM without a listed reason.

CPU-heavy: run it with ``nice``; ``-k``/``--files`` run a subset while developing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITES = ("tests/integration/model_bridge", "tests/acceptance/model_bridge", "tests/acceptance/test_activation_cache.py")
SWAPPED_MARK = re.compile(r"gpt2|solu-2l")
PYTEST_INI = """[pytest]
markers =
    slow: slow
    inspect: needs inspect_ai
    multigpu: needs vllm and two GPUs
filterwarnings =
    ignore::DeprecationWarning
"""

# Tests that pass on the plain bridge and fail on HookedSpiritLM for a reason SpiritLM forces, each as the
# README lists it ("For TransformerLens users", "What differs, and why"): (test ids, reason).
MARKERS = ("SpiritLM's prompt path: a string becomes <s> ▁ [Text] + its text (two positions more than the plain "
           "bridge's tokens of the same string, and prepend_bos=False drops three), so shapes and ids differ from "
           "a bridge or tokenizer that tokenises the string without SpiritLM's marker")
FORCED = [
    (r"test_tokenization_methods\.py::test_(to_tokens_without_bos_drops_bos|to_str_tokens_without_bos_skips_bos)$"
     r"|test_bridge_creation_modes\.py::TestBridgeCreationModes::test_bridge_tokenizer_compatibility$"
     r"|test_bridge_cache_behavior\.py::TestCacheEqualityWithHookedTransformer::test_cache_values_match$"
     r"|test_bridge_vs_hooked_comparison\.py::TestBridgeVsHookedComparison::"
     r"test_(attention_output_comparison|hook_v_values_match|logits_comparison)$"
     r"|test_bridge_wiring_integration\.py::TestReshapeBiasIntegration::", MARKERS),
    (r"test_generate_stream\.py::test_stream_matches_generate$",
     "generate(string) returns the string given plus the continuation; decoding SpiritLM's tokens of the same "
     "output shows the [Text] marker in front"),
    (r"test_bridge_generate_stopping_criteria\.py::test_(batched_stopping_criteria|generate_stream_batched)"
     r"_without_pad_token_raises$",
     "token ids are range-checked first: the test's GPT-2 ids (15496) are outside SpiritLM's vocabulary, so a "
     "ValueError naming the id comes before the bridge's pad-token error"),
    (r"test_direct_logit_attribution\.py::TestDirectLogitAttributionBridgeGuards::test_non_compat_bridge_raises$",
     "HookedSpiritLM's cache applies the RMSNorm gains, so TransformerLens' DLA gives the true shares without "
     "compatibility mode; it refuses a plain bridge, whose read-outs would drop the gains"),
]


def forced_reason(nodeid: str) -> str | None:
    for pattern, reason in FORCED:
        if re.search(pattern, nodeid):
            return reason
    return None


def model_folder(choice: str, scratch: Path) -> tuple[Path, str]:
    """The SpiritLM model folder the run swaps in, and its description."""
    if choice == "toy":
        from spiritlens.synthetic.toy import toy_checkpoints
        from spiritlens.synthetic.toy.cache import model_dir

        root = toy_checkpoints()
        return model_dir(root), f"toy SpiritLM ({root.name}, spiritlens.synthetic.toy.toy_checkpoints())"
    if choice == "tiny":
        from spiritlens.synthetic.tiny import make_tiny_checkpoints

        root = make_tiny_checkpoints(scratch / "tiny", seed=0)
        return root / "spiritlm_model" / "spirit-lm-base-7b", "tiny random SpiritLM (spiritlens make-tiny, seed 0)"
    folder = Path(choice)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--model {choice}: not 'toy', 'tiny' or a model folder with config.json")
    return folder, str(folder)


def test_files(checkout: Path, all_files: bool, only: list[str] | None) -> list[str]:
    files = []
    for suite in SUITES:
        path = checkout / suite
        if not path.exists():
            raise SystemExit(f"{checkout}: no {suite} (is it a TransformerLens checkout?)")
        candidates = [path] if path.is_file() else sorted(path.rglob("test_*.py"))
        for file in candidates:
            relative = str(file.relative_to(checkout))
            if only and not any(o in relative for o in only):
                continue
            if all_files or SWAPPED_MARK.search(file.read_text(errors="replace")):
                files.append(relative)
    if not files:
        raise SystemExit("no test file selected")
    return files


def run_mode(mode: str, work: Path, folder: Path, files: list[str], args) -> dict:
    report = work / f"report_{mode}.json"
    env = dict(os.environ)
    env.update(SPIRITLENS_TL_MODE=mode, SPIRITLENS_TL_MODEL_DIR=str(folder), SPIRITLENS_TL_REPORT=str(report),
               PYTHONPATH=os.pathsep.join([str(REPO / "scripts"), str(REPO / "src"), str(work),
                                           env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-p", "tl_bridge_plugin", "-p", "no:cacheprovider", "-q",
               "-c", str(work / "pytest.ini"), "--rootdir", str(work), f"--timeout={args.timeout}", "-rN",
               "--no-header", "--continue-on-collection-errors", *(["-k", args.k] if args.k else []), *files]
    print(f"[{mode}] {len(files)} files", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    print(f"[{mode}] {tail[0]}", file=sys.stderr, flush=True)
    if not report.is_file():
        raise SystemExit(f"[{mode}] pytest wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return json.loads(report.read_text())


def compare(plain: dict, ours: dict) -> tuple[dict, dict]:
    tests, regressions = {}, Counter()
    for nodeid in sorted(set(plain) | set(ours)):
        p, o = plain.get(nodeid, {"outcome": "absent"}), ours.get(nodeid, {"outcome": "absent"})
        entry = {"plain": p["outcome"], "ours": o["outcome"], "swapped": bool(p.get("swapped") or o.get("swapped"))}
        if p["outcome"] != "passed" and p.get("reason"):
            entry["plain_reason"] = p["reason"]
        if o["outcome"] != "passed" and o.get("reason"):
            entry["reason"] = o["reason"]
        if p["outcome"] == "passed" and o["outcome"] != "passed":
            forced = forced_reason(nodeid)
            entry["forced"] = forced
            regressions["forced" if forced else "unexplained"] += 1
        tests[nodeid] = entry
    return tests, dict(regressions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a TransformerLens source tree (its tests/ folder is read)")
    parser.add_argument("--model", default="toy", help="toy (default), tiny, or a SpiritLM model folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tl_bridge_tests.json")
    parser.add_argument("--label", default=None, help="what the checkout is (branch@commit), recorded in the results")
    parser.add_argument("--files", nargs="*", default=None, help="only test files whose path contains one of these")
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("--all-files", action="store_true", help="also the files that never build GPT-2")
    parser.add_argument("--modes", nargs="+", default=["plain", "ours"], choices=["plain", "ours"])
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test (pytest-timeout)")
    args = parser.parse_args(argv)

    checkout = args.checkout.resolve()
    files = test_files(checkout, args.all_files, args.files)
    label = args.label
    if label is None and (checkout / ".git").exists():
        label = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--all", "--long"],
                               capture_output=True, text=True).stdout.strip() or None
    with tempfile.TemporaryDirectory(prefix="tl-bridge-tests-") as scratch:
        work = Path(scratch)
        folder, description = model_folder(args.model, work)
        shutil.copytree(checkout / "tests", work / "tests")
        (work / "pytest.ini").write_text(PYTEST_INI)
        reports = {mode: run_mode(mode, work, folder, files, args) for mode in args.modes}
    if set(args.modes) != {"plain", "ours"}:  # one mode: its outcomes alone, no comparison
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"modes": reports, "model": description, "files": files}, indent=1) + "\n")
        for mode, report in reports.items():
            print(json.dumps({mode: Counter(e["outcome"] for e in report.values())}))
        return 0
    tests, regressions = compare(reports["plain"], reports["ours"])
    import transformer_lens.model_bridge  # noqa: F401  (the version tested)
    from importlib.metadata import version

    result = {
        "what": "TransformerLens' bridge tests, GPT-2 fixture swapped for one SpiritLM folder: a plain "
                "TransformerBridge of it ('plain') and HookedSpiritLM ('ours'); HF comparisons use LlamaForCausalLM",
        "command": "python scripts/run_tl_bridge_tests.py " + " ".join(
            "TL_CHECKOUT" if arg == str(args.checkout) else arg for arg in (argv if argv is not None else sys.argv[1:])),
        "transformer_lens": version("transformer-lens"),
        "tests_from": label or checkout.name,
        "model": description,
        "files": files,
        "summary": {
            "plain": dict(Counter(t["plain"] for t in tests.values())),
            "ours": dict(Counter(t["ours"] for t in tests.values())),
            "passed_plain_not_ours": sum(regressions.values()),
            "of_which_forced": regressions.get("forced", 0),
            "unexplained": regressions.get("unexplained", 0),
            "passed_ours_not_plain": sum(t["ours"] == "passed" and t["plain"] != "passed" for t in tests.values()),
        },
        "tests": tests,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]))
    for nodeid, entry in tests.items():
        if entry.get("forced", 0) is None:
            print(f"unexplained: {nodeid}: {entry.get('reason', '')}", file=sys.stderr)
    return 1 if regressions.get("unexplained") else 0


if __name__ == "__main__":
    sys.exit(main())
