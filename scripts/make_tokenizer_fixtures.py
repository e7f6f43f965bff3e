#!/usr/bin/env python
"""Reference token ids from SpiritLM's own tokenizer call: ``tests/fixtures/tokenizer_reference.json``.

Run by hand (not by CI), from the repository root, with the project's environment::

    .venv/bin/python scripts/make_tokenizer_fixtures.py [--venv /tmp/spiritlens-transformers4]

It
1. writes tiny tokenizer files for every layout with spiritlens' own writer
   (``spiritlens.synthetic.tiny.write_tokenizer_files``): markers and units as SentencePiece user-defined
   pieces, or as added tokens declared in ``tokenizer_config.json``, ``special_tokens_map.json`` or
   ``added_tokens.json``; ``legacy`` true, false or absent;
2. creates (once) a separate virtual environment outside the repository with the last transformers
   4.x release (``transformers<5``, sentencepiece, protobuf; no torch: the slow tokenizer needs none);
3. runs there exactly SpiritLM's call (``spiritlm/model/spiritlm_model.py``):
   ``LlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False)`` then
   ``tokenizer(prompt)``, on prompt strings as SpiritLM's ``_build_prompt`` writes them (text,
   speech, speech->text, interleaved) and on hard cases (digits, a lone "▁", byte-fallback
   characters, leading/trailing/double spaces, text right after a marker, literal special tokens);
   and SpiritLM's decode (``skip_special_tokens=True, clean_up_tokenization_spaces=False``);
4. writes the ids, pieces, decoded text, the transformers/sentencepiece versions and the SHA-256
   of every tokenizer file. The test suite (``tests/unit/test_tokenization_reference.py``) fails
   when spiritlens' writer no longer produces files with these hashes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tokenizer_reference.json"

# name -> keyword arguments of spiritlens.synthetic.tiny.write_tokenizer_files
LAYOUTS: dict[str, dict] = {
    "sentencepiece": {"layout": "sentencepiece", "legacy": True},
    "sentencepiece-legacy-false": {"layout": "sentencepiece", "legacy": False},
    "sentencepiece-legacy-absent": {"layout": "sentencepiece", "legacy": None},
    "sentencepiece-expressive": {"layout": "sentencepiece", "legacy": True, "expressive": True},
    "added-config": {"layout": "added_tokens", "declare": "tokenizer_config", "legacy": True},
    "added-config-legacy-false": {"layout": "added_tokens", "declare": "tokenizer_config", "legacy": False},
    "added-config-legacy-absent": {"layout": "added_tokens", "declare": "tokenizer_config", "legacy": None},
    "added-config-special": {"layout": "added_tokens", "declare": "tokenizer_config", "legacy": True,
                             "special": True},
    "added-config-special-legacy-false": {"layout": "added_tokens", "declare": "tokenizer_config",
                                          "legacy": False, "special": True},
    "added-special-map": {"layout": "added_tokens", "declare": "special_tokens_map", "legacy": True},
    "added-special-map-legacy-false": {"layout": "added_tokens", "declare": "special_tokens_map",
                                       "legacy": False},
    "added-tokens-json": {"layout": "added_tokens", "declare": "added_tokens_json", "legacy": True},
    "added-tokens-json-legacy-false": {"layout": "added_tokens", "declare": "added_tokens_json",
                                       "legacy": False},
    "added-config-strip-flags": {"layout": "added_tokens", "declare": "tokenizer_config", "legacy": True,
                                 "token_flags": {"[Text]": {"rstrip": True}, "[Speech]": {"lstrip": True},
                                                 "[Hu7]": {"single_word": True}}},
    "added-config-strip-flags-legacy-false": {
        "layout": "added_tokens", "declare": "tokenizer_config", "legacy": False,
        "token_flags": {"[Text]": {"rstrip": True}, "[Speech]": {"lstrip": True}, "[Hu7]": {"single_word": True}}},
}

# (shape, prompt string as SpiritLM's _build_prompt writes it, or a hard case)
PROMPTS: list[tuple[str, str]] = [
    ("text", "[Text]The capital of Italy is"),
    ("text", "[Text]Autonomous University of Madrid, which is located in"),
    ("speech", "[Speech][Hu12][Hu7][Hu8][Hu499]"),
    ("speech->text", "[Speech][Hu12][Hu7][Hu8][Text]"),
    ("speech->text", "[Speech][Hu12][Hu7][Hu8][Text] is located in"),
    ("text->speech", "[Text]The capital of Italy is[Speech]"),
    ("interleaved", "[Text]The capital[Speech][Hu7][Text] of Italy"),
    ("interleaved", "[Speech][Hu1][Hu2][Text] and[Speech][Hu3][Text] then[Speech][Hu499][Text]"),
    ("interleaved", "[Text]ab[Speech][Hu4][Hu6][Text]"),
    ("expressive", "[Speech][St71][Pi39][Hu99][Hu49][Pi40][Text]"),
    ("digits", "[Text]The year of 1999"),
    ("digits", "[Text]2005 Australian Open was won by"),
    ("lone ▁", "[Text]a ▁ b"),
    ("lone ▁", "▁"),
    ("lone ▁", "[Text]▁Paris"),
    ("byte fallback", "[Text]Xbox is made by"),
    ("byte fallback", "[Text]Kyōto and 日本 and Zürich"),
    ("byte fallback", "[Text]emoji 🙂 ok"),
    ("spaces", "[Text] leading space"),
    ("spaces", "[Text]trailing space "),
    ("spaces", "[Text]double  space"),
    ("spaces", "[Text]   three"),
    ("spaces", "[Text]tab\there and new\nline"),
    ("after marker", "[Speech][Hu5][Text]Paris is"),
    ("after marker", "[Text]2005[Speech][Hu5][Text]1999"),
    ("after marker", "[Speech][Hu5] [Text] x"),
    ("special literal", "[Text]a <s> b </s> c"),
    ("special literal", "[Text]<unk>x"),
    ("marker-like", "[Text][Hu12 is not a unit] [Hu] [Hu501] [text]"),
    ("empty", "[Text]"),
    ("empty", ""),
    ("no marker", "The Space Needle"),
    ("no marker", "Space Needle"),
    ("no marker", " Seattle"),
    ("no marker", "1999"),
]

REFERENCE = r'''
import json, sys
import transformers, sentencepiece
from transformers import LlamaTokenizer

request = json.load(open(sys.argv[1]))
out = {"transformers": transformers.__version__, "sentencepiece": sentencepiece.__version__, "layouts": {}}
for name, path in request["dirs"].items():
    # exactly SpiritLM's call (spiritlm/model/spiritlm_model.py, Spiritlm.__init__)
    tok = LlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False)
    cases = []
    for shape, prompt in request["prompts"]:
        ids = tok(prompt).input_ids  # Spiritlm.generate: self.tokenizer(prompt, return_tensors="pt")
        cases.append({
            "shape": shape, "prompt": prompt, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
            "ids_no_special": tok(prompt, add_special_tokens=False).input_ids,
            # Spiritlm.generate's decode call, on the whole sequence and on a tail
            "decoded": tok.batch_decode([ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0],
            "decoded_tail": tok.decode(ids[3:], skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "decoded_raw": tok.decode(ids),
        })
    vocab = tok.get_vocab()
    out["layouts"][name] = {
        "length": len(tok), "legacy": tok.legacy, "all_special_tokens": tok.all_special_tokens,
        "ids": {t: vocab.get(t) for t in ("[Text]", "[Speech]", "[Hu0]", "[Hu500]", "[Pi0]", "[St99]")},
        "cases": cases,
    }
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False)
'''


def reference_python(venv: Path) -> Path:
    """A Python with transformers 4.x (created on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "transformers<5", "sentencepiece", "protobuf"],
                       check=True)
    return python


def _dumps(fixture: dict) -> str:
    """JSON with one line per case, so that a diff shows which prompt changed."""
    fixture = json.loads(json.dumps(fixture))
    cases = {name: layout.pop("cases") for name, layout in fixture["layouts"].items()}
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    for name, layout_cases in cases.items():
        lines = ",\n".join("   " + json.dumps(case, ensure_ascii=False) for case in layout_cases)
        marker = json.dumps(name, ensure_ascii=False) + ": {"
        head, tail = text.split(marker, 1)
        text = head + marker + '\n  "cases": [\n' + lines + "\n  ]," + tail
    return text + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "spiritlens-transformers4",
                        help="virtual environment with transformers 4.x (created if missing)")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()

    from spiritlens.synthetic.tiny import write_tokenizer_files
    from spiritlens.tokens.layout import file_hashes

    python = reference_python(args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        dirs, hashes = {}, {}
        for name, kwargs in LAYOUTS.items():
            directory = write_tokenizer_files(Path(tmp) / name, **kwargs)
            dirs[name], hashes[name] = str(directory), file_hashes(directory)
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"dirs": dirs, "prompts": PROMPTS}, ensure_ascii=False))
        script = Path(tmp) / "reference.py"
        script.write_text(REFERENCE)
        subprocess.run([str(python), str(script), str(request), str(result)], check=True)
        reference = json.loads(result.read_text())
    import sentencepiece

    fixture = {
        "made_by": "scripts/make_tokenizer_fixtures.py",
        "reference_call": "LlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False)(prompt)",
        "transformers": reference["transformers"],
        "sentencepiece_reference": reference["sentencepiece"],
        "sentencepiece_writer": sentencepiece.__version__,
        "layouts": {name: {"writer": LAYOUTS[name], "files": hashes[name], **reference["layouts"][name]}
                    for name in LAYOUTS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dumps(fixture))
    cases = sum(len(v["cases"]) for v in fixture["layouts"].values())
    print(f"wrote {args.out}: {len(LAYOUTS)} layouts, {cases} cases, transformers {reference['transformers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
