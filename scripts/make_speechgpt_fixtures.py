#!/usr/bin/env python
"""Reference data for the SpeechGPT family (``spiritlens.models.speechgpt``), from SpeechGPT's own libraries:
``tests/fixtures/speechgpt/``.

Run by hand (not by CI), from the repository root, with the project's environment::

    .venv/bin/python scripts/make_speechgpt_fixtures.py [--envs /tmp/spiritlens-speechgpt-envs]

It
1. installs (once) three environments outside the repository with ``pip install --target``:
   ``transformers==4.33.1`` (SpeechGPT's ``requirements.txt``; with ``tokenizers==0.13.3`` and sentencepiece,
   no torch: the slow tokenizer needs none), ``scikit-learn`` + ``joblib==1.6.0``, and ``joblib==1.1.1``
   (the last joblib before the 16-byte array alignment);
2. writes tiny SpeechGPT tokenizer files with spiritlens' own writer
   (``spiritlens.synthetic.tiny_speechgpt.write_speechgpt_tokenizer_files``) and runs there exactly
   SpeechGPT's call (``src/infer/cli_infer.py`` L90-91 and L150): ``LlamaTokenizer.from_pretrained(path)``,
   then ``tokenizer([prompt], padding=True)`` with ``pad_token_id = 0`` and left padding, on prompt strings
   built as ``cli_infer.py`` builds them (``META_INSTRUCTION + "[Human]: {question} <eoh>. [SpeechGPT]: "``),
   on raw strings and on hard cases; and SpeechGPT's decode (``batch_decode(..., skip_special_tokens=True)``);
3. fits a small scikit-learn ``MiniBatchKMeans`` with fairseq's ``learn_kmeans.py`` settings and saves it with
   ``joblib.dump`` under joblib 1.6.0 and 1.1.1: the two ``.bin`` files are the fixtures spiritlens' joblib
   reader must read (their centres recorded as bytes);
4. checks spiritlens' joblib writer (``write_kmeans_joblib``) against ``joblib.dump`` of a real
   ``MiniBatchKMeans`` holding the same state, in both joblib versions (the bytes must be identical, and
   ``joblib.load`` must read the writer's file), and records the SHA-256 of joblib's bytes;
5. writes ``reference.json`` with every result, the library versions and the SHA-256 of every file. The tests
   (``tests/unit/tokens/test_tokenization_433.py``, ``tests/unit/checkpoints/test_joblib.py``) fail when
   spiritlens' writers no longer produce these files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
OUT = REPO / "tests" / "fixtures" / "speechgpt"

ENVIRONMENTS = {
    "transformers433": ["transformers==4.33.1", "tokenizers==0.13.3", "sentencepiece==0.1.99", "huggingface_hub<0.18"],
    "sklearn": ["scikit-learn==1.9.1", "joblib==1.6.0"],
    "joblib11": ["--no-deps", "joblib==1.1.1"],
}

# cli_infer.py L27 and L61, verbatim
META_INSTRUCTION = (
    "You are an AI assistant whose name is SpeechGPT.\n- SpeechGPT is a intrinsic cross-modal conversational "
    "language model that is developed by Fudan University.  SpeechGPT can understand and communicate fluently "
    "with human through speech or text chosen by the user.\n- It can perceive cross-modal inputs and generate "
    "cross-modal outputs.\n")
TEMPLATE = "[Human]: {question} <eoh>. [SpeechGPT]: "


def chat(question: str) -> str:
    """``SpeechGPTInference.preprocess`` (L113-123) for a question whose audio is already units."""
    return META_INSTRUCTION + TEMPLATE.format(question=question)


# (shape, question or raw string, whether it goes through the chat template)
CASES = [
    ("t2t", "The Space Needle is located in the city of", True),
    ("t2t", "Autonomous University of Madrid, which is located in", True),
    ("t2t", "2005 Australian Open was won by", True),
    ("s2t", "<sosp><12><7><7><999><0><eosp>", True),
    ("s2t", "<sosp><42><eosp>", True),
    ("asr", "Recognize this speech, this is input:<sosp><5><6><5><eosp>", True),
    ("tts", "Read this sentence aloud, this is input: Today is a sunny day.", True),
    ("interleaved", "The capital<sosp><7><8><eosp> of Italy is", True),
    ("raw text", "The Space Needle is located in the city of", False),
    ("raw speech", "<sosp><12><7><999><eosp>", False),
    ("raw speech->text", "<sosp><1><2><eosp> is located in", False),
    ("raw text->speech", "Toko Yasuda plays the<sosp>", False),
    ("spaces", "a  <sosp> <1>  <2>\n<eosp>  b", False),
    ("spaces", "   leading and trailing   ", False),
    ("spaces", "[Human]:\n\nHi<eoh>", False),
    ("glued", "x<eoh>y[SpeechGPT]z", False),
    ("digits", "in 1999 <eoh>.", False),
    ("byte fallback", "Zürich 日本 <eoh> ok", False),
    ("not a token", "<1000> <sosp <-1> <eos>", False),
    ("literal special", "<s> text </s> <unk>", False),
    ("answer", "[SpeechGPT]: <sosp><4><4><eosp><eoa>", False),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_environment(root: Path, name: str) -> Path:
    target = root / name
    if not (target / ".complete").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
                        *ENVIRONMENTS[name]], check=True)
        (target / ".complete").write_text("ok\n")
    return target


def run_in(paths: list[Path], code: str, payload: dict) -> dict:
    """Run ``code`` in a child Python whose imports come first from ``paths``; JSON in, JSON out."""
    env = {"PYTHONPATH": ":".join(str(p) for p in paths), "USE_TORCH": "0", "PATH": "/usr/bin:/bin",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path[:0] = "
                           f"{[str(p) for p in paths]!r}\n" + code], input=json.dumps(payload), text=True,
                          capture_output=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


TOKENIZE = r'''
import json, sys
import sentencepiece, transformers
from transformers import LlamaTokenizer
job = json.loads(sys.stdin.read())
tokenizer = LlamaTokenizer.from_pretrained(job["path"])          # cli_infer.py L90-91
tokenizer.pad_token_id = 0
tokenizer.padding_side = "left"
cases = []
for prompt in job["prompts"]:
    ids = tokenizer([prompt], padding=True).input_ids[0]          # L150, one prompt
    cases.append({"ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids),
                  "decoded": tokenizer.batch_decode([ids], skip_special_tokens=True)[0]})   # L175
print(json.dumps({"transformers": transformers.__version__, "sentencepiece": sentencepiece.__version__,
                  "len": len(tokenizer), "legacy": tokenizer.legacy, "cases": cases}))
'''

FIT = r'''
import json, sys
import joblib, numpy as np, sklearn
from sklearn.cluster import MiniBatchKMeans
job = json.loads(sys.stdin.read())
features = np.random.RandomState(0).randn(300, 6).astype(np.float32)
# fairseq examples/hubert/simple_kmeans/learn_kmeans.py get_km_model(), small
km = MiniBatchKMeans(n_clusters=8, init="k-means++", max_iter=100, batch_size=64, verbose=0, compute_labels=False,
                     tol=0.0, max_no_improvement=100, init_size=None, n_init=3, reassignment_ratio=0.0,
                     random_state=0).fit(features)
joblib.dump(km, job["fixture"])
loaded = joblib.load(job["fixture"]).cluster_centers_
print(json.dumps({"joblib": joblib.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__,
                  "centers_dtype": str(loaded.dtype), "centers_shape": list(loaded.shape),
                  "centers_hex": loaded.tobytes().hex(), "n_clusters": int(km.n_clusters)}))
'''

TWIN = r'''
import hashlib, json, sys
import joblib, numpy as np
from sklearn.cluster import MiniBatchKMeans
job = json.loads(sys.stdin.read())
centers = np.frombuffer(bytes.fromhex(job["centers_hex"]), dtype=np.float32).reshape(job["shape"])
twin = MiniBatchKMeans()  # a real estimator holding exactly the writer's state
twin.__dict__.clear()
twin.__dict__.update(job["params"])
twin.__dict__["cluster_centers_"] = centers.copy()
joblib.dump(twin, job["twin"])
real = open(job["twin"], "rb").read()
print(json.dumps({"twin_sha256": hashlib.sha256(real).hexdigest(),
                  "writer_equals_joblib": real == open(job["writer_file"], "rb").read(),
                  "joblib_reads_writer": bool(np.array_equal(joblib.load(job["writer_file"]).cluster_centers_,
                                                              centers))}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=Path, default=Path(tempfile.gettempdir()) / "spiritlens-speechgpt-envs")
    args = parser.parse_args()
    import numpy as np
    import sentencepiece

    from spiritlens.synthetic.tiny_speechgpt import KMEANS_PARAMS, write_kmeans_joblib, write_speechgpt_tokenizer_files
    from spiritlens.tokens.layout import file_hashes

    envs = {name: ensure_environment(args.envs, name) for name in ENVIRONMENTS}
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speechgpt-fixtures-"))
    tokenizer_dir = write_speechgpt_tokenizer_files(work / "tokenizer", seed=0)
    prompts = [chat(text) if templated else text for _, text, templated in CASES]
    tokenized = run_in([envs["transformers433"]], TOKENIZE, {"path": str(tokenizer_dir), "prompts": prompts})
    cases = [{"shape": shape, "text": text, "template": templated, "prompt": prompt, **result}
             for (shape, text, templated), prompt, result in zip(CASES, prompts, tokenized.pop("cases"))]

    kmeans = {}
    versions = (("1.6.0", [envs["sklearn"]], "1.2"), ("1.1.1", [envs["joblib11"], envs["sklearn"]], "1.1"))
    for name, paths, _ in versions:
        fixture = OUT / f"kmeans_joblib-{name}.bin"
        kmeans[name] = {"file": fixture.name, **run_in(paths, FIT, {"fixture": str(fixture)}), "sha256": sha256(fixture)}
    # the writer, given the centres of joblib 1.6.0's fit, against joblib.dump of the same state
    first = kmeans["1.6.0"]
    centers = np.frombuffer(bytes.fromhex(first["centers_hex"]), dtype=np.float32).reshape(first["centers_shape"])
    params = {**KMEANS_PARAMS, "n_clusters": int(centers.shape[0])}
    for name, paths, fmt in versions:
        writer_file = write_kmeans_joblib(work / f"writer-{name}.bin", centers, joblib_format=fmt, params=params,
                                          sklearn_version=kmeans[name]["sklearn"])
        result = run_in(paths, TWIN, {"twin": str(work / f"twin-{name}.bin"), "writer_file": str(writer_file),
                                      "params": params, "centers_hex": centers.tobytes().hex(),
                                      "shape": list(centers.shape)})
        if not (result["writer_equals_joblib"] and result["joblib_reads_writer"]):
            raise SystemExit(f"joblib {name}: spiritlens' writer differs from joblib.dump: {result}")
        kmeans[name].update(result, writer_format=fmt)

    reference = {
        "made_by": "scripts/make_speechgpt_fixtures.py",
        "source": "0nutation/SpeechGPT b290011570431cc559546f841335170a9619fa72: speechgpt/src/infer/cli_infer.py",
        "reference_call": "LlamaTokenizer.from_pretrained(path)([prompt], padding=True); pad_token_id=0, left",
        "transformers": tokenized["transformers"], "sentencepiece_reference": tokenized["sentencepiece"],
        "sentencepiece_writer": sentencepiece.__version__, "len": tokenized["len"], "legacy": tokenized["legacy"],
        "tokenizer_files": file_hashes(tokenizer_dir), "cases": cases, "kmeans": kmeans,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT / 'reference.json'}: {len(cases)} tokenizer cases, joblib {', '.join(kmeans)}")


if __name__ == "__main__":
    main()
