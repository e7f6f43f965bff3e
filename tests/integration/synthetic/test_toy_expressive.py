"""The toy SpiritLM Expressive: SpiritLM Expressive's layout beside the toy SpiritLM Base, continued from the
same backbone (its text pieces keep the backbone's ids), trained on the speech tokens SpiritLM Expressive's
tokenizer gives for the toy's recordings, answering its facts from speech as its report says, with its
designed mechanisms (attention off in the first layers; pitch and style decorrelated from the facts), and
cached under its own key without touching the Base."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from spiritlens.cli import main
from spiritlens.synthetic.toy import ExpressiveToyConfig, ToyConfig, cached_toy, make_toy, toy_checkpoints
from spiritlens.synthetic.toy.cache import (
    EXPRESSIVE_MANIFEST,
    REPORT,
    backbone_dir,
    expressive_inputs,
    expressive_model_dir,
    expressive_speech_tokenizer_dir,
    inputs_hash,
    model_dir,
    read_expressive_manifest,
    read_manifest,
    toy_facts,
)
from spiritlens.synthetic.toy.expressive import SEQUENCES, with_prosody

pytestmark = pytest.mark.slow

N_TEXT = 1024  # the toy backbone's SentencePiece pieces


@pytest.fixture(scope="module")
def expressive_root(toy_root, known_path, toy_cache_dir):
    """The small toy's tree with the toy SpiritLM Expressive added (default design: decorrelated prosody)."""
    root = toy_checkpoints(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir, expressive=True,
                           progress=False, log=lambda message: None)
    assert root == toy_root
    return root


@pytest.fixture(scope="module")
def expressive_dir(expressive_root):
    return expressive_model_dir(expressive_root)


@pytest.fixture(scope="module")
def hf(expressive_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(expressive_dir, attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def token_ids(expressive_dir) -> dict[str, int]:
    """Added token -> id, read from tokenizer_config.json as written (the brute-force vocabulary)."""
    config = json.loads((expressive_dir / "tokenizer_config.json").read_text())
    return {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}


@pytest.fixture(scope="module")
def spoken(expressive_root):
    """Fresh units of every recording of the toy, by a new ExpressiveTokenizer on the tree's files."""
    from spiritlens.units.expressive import ExpressiveTokenizer

    tokenizer = ExpressiveTokenizer.from_dir(expressive_speech_tokenizer_dir(expressive_root))
    return {path.stem: tokenizer.encode(path) for path in sorted((expressive_root / "speech").glob("*.wav"))}


@pytest.fixture(scope="module")
def trained(expressive_dir) -> list[dict]:
    return json.loads((expressive_dir / SEQUENCES).read_text())["sequences"]


def _greedy(hf, ids: list[int], eos: int, max_new_tokens: int = 8) -> list[int]:
    """A plain greedy loop: text pieces only (every added token and padding row suppressed, SpiritLM's text rule)."""
    ids, new = list(ids), []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0, -1]
        logits[N_TEXT:] = float("-inf")
        token = int(logits.argmax())
        new.append(token)
        ids.append(token)
        if token == eos:
            break
    return new


def _spiritlm_merge(hubert: list[int], pitch: list[int], style: list[int]) -> list[str]:
    """SpiritLM's units_to_string, written out: HuBERT (24.99 Hz) and pitch (12.5 Hz) runs deduplicated, style
    (1 Hz) not, every token at index / rate, a stable sort of style + pitch + HuBERT by time."""
    items = []
    for name, codes, rate, dedup in (("St", style, 1.0, False), ("Pi", pitch, 12.5, True), ("Hu", hubert, 24.99, True)):
        for i, code in enumerate(codes):
            if not (dedup and i and codes[i - 1] == code):
                items.append((i / rate, f"[{name}{code}]"))
    return [token for _, token in sorted(items, key=lambda item: item[0])]


def test_expressive_toy_is_a_spiritlm_expressive_folder_beside_the_base(expressive_root, expressive_dir, hf):
    from spiritlens import HookedSpiritLM

    assert expressive_dir == expressive_root / "spiritlm_model" / "spirit-lm-expressive-7b"
    for name in ("config.json", "generation_config.json", "pytorch_model.bin", "tokenizer.model",
                 "tokenizer_config.json", "special_tokens_map.json", REPORT, SEQUENCES):
        assert (expressive_dir / name).is_file(), name
    speech = expressive_speech_tokenizer_dir(expressive_root)
    for name in ("hubert_25hz/mhubert_base_25hz.pt", "vqvae_f0_quantizer/model.pt", "style_encoder_w2v2/pytorch_model.bin"):
        assert (speech / name).is_file(), name
    assert (model_dir(expressive_root) / REPORT).is_file()  # the Base is still there
    model = HookedSpiritLM.from_pretrained(expressive_dir, speech_tokenizer=speech)
    assert model.family.name == "spiritlm" and model.vocab.is_expressive
    assert (len(model.vocab.pitch_ids), len(model.vocab.style_ids)) == (64, 100)
    fact = toy_facts(expressive_root)[0]
    ids = model.to_tokens([("speech", expressive_root / "speech" / f"{fact.known_id}_prompt.wav")])
    streams = {model.vocab.pitch_ids[0] <= i <= model.vocab.style_ids[-1] for i in ids[0].tolist()}
    assert streams == {False, True}  # pitch and style tokens in the prompt
    with torch.no_grad():
        diff = (hf(ids).logits - model(ids)).abs().max().item()
    assert diff <= 1e-5, diff
    config = json.loads((expressive_dir / "config.json").read_text())
    assert config["vocab_size"] == 1792  # 1024 + 2 + 501 + 64 + 100 = 1691 ids, rounded up to 256 as SpiritLM's
    local = ToyConfig.from_dict(read_manifest(expressive_root)["inputs"]["config"]).local_layers
    for layer in range(config["num_hidden_layers"]):  # the designed mechanism: attention off in the first layers
        weight = hf.model.layers[layer].self_attn.o_proj.weight
        assert (weight.abs().max().item() == 0.0) == (layer < local), layer


def test_text_pieces_keep_the_backbones_ids(expressive_root, expressive_dir, token_ids, trained):
    from transformers import LlamaTokenizer

    backbone = backbone_dir(expressive_root)
    assert (expressive_dir / "tokenizer.model").read_bytes() == (backbone / "tokenizer.model").read_bytes()
    expected = ["[Text]", "[Speech]"] + [f"[Hu{u}]" for u in range(501)] + [f"[Pi{u}]" for u in range(64)] + [
        f"[St{u}]" for u in range(100)]
    assert [t for t, i in sorted(token_ids.items(), key=lambda item: item[1]) if i >= N_TEXT] == expected
    assert token_ids["[Text]"] == N_TEXT and token_ids["[St99]"] == N_TEXT + len(expected) - 1
    llama2 = LlamaTokenizer.from_pretrained(str(backbone))  # the backbone's own ids for <s> + text
    facts = {f.known_id: f for f in toy_facts(expressive_root)}
    texts = [s for s in trained if s["form"] in ("t2t", "t2t_paraphrase")]
    assert len(texts) == sum(1 + len(f.paraphrases) for f in facts.values())
    prompts = {k: [f.prompt, *f.paraphrases] for k, f in facts.items()}
    for sequence in texts:
        prompt = prompts[sequence["known_id"]].pop(0)
        backbone_ids = llama2.encode(f"{prompt} {facts[sequence['known_id']].attribute}")
        assert sequence["ids"] == [1, token_ids["[Text]"]] + backbone_ids[1:] + [2], prompt


def test_training_sequences_hear_what_the_expressive_tokenizer_gives(expressive_root, token_ids, trained, spoken):
    """Brute force: the speech part of every trained speech->text and interleaved sequence is the fresh
    ExpressiveTokenizer's token string of the recording, id by id from tokenizer_config.json."""
    facts = {f.known_id: f for f in toy_facts(expressive_root)}
    speech, text = token_ids["[Speech]"], token_ids["[Text]"]
    forms = {"s2t": 0, "interleaved": 0}
    for sequence in trained:
        if sequence["form"] not in forms:
            continue
        ids, fact = sequence["ids"], facts[sequence["known_id"]]
        part = "prompt" if sequence["form"] == "s2t" else "subject"
        units = spoken[f"{fact.known_id}_{part}"]
        heard = [token_ids[t] for t in units.token_strings()]
        assert units.token_strings() == _spiritlm_merge(units.hubert.units, units.pitch, units.style)
        assert {t[:3] for t in units.token_strings()} == {"[Hu", "[Pi", "[St"}
        begin = ids.index(speech) + 1
        assert ids[begin:begin + len(heard) + 1] == heard + [text], (sequence["form"], fact.prompt)
        if sequence["form"] == "s2t":
            assert ids[:begin] == [1, speech] and sequence["start"] == begin + len(heard)
        forms[sequence["form"]] += 1
    assert forms == {"s2t": len(facts), "interleaved": len(facts)}


def test_expressive_toy_answers_its_facts_as_its_report_says(expressive_root, expressive_dir, hf, trained):
    """A plain greedy loop through transformers on the trained prompts (their ids checked above) gives the
    report's generations, and they are the attributes: from speech (with pitch and style) and from text."""
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_pretrained(str(expressive_dir))
    report = json.loads((expressive_dir / REPORT).read_text())
    facts = {f.known_id: f for f in toy_facts(expressive_root)}
    for modality in ("t2t", "s2t"):
        prompts = {s["known_id"]: s["ids"][:s["start"] + 1] for s in trained if s["form"] == modality}
        generated = {}
        for known_id, ids in prompts.items():
            new = _greedy(hf, ids, eos=2)
            generated[known_id] = tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        reported = {e["known_id"]: e["generated"] for e in report["entries"][modality]}
        assert {k: g.strip() for k, g in generated.items()} == {k: g.strip() for k, g in reported.items()}
        right = sum(generated[k].strip().startswith(facts[k].attribute) for k in facts)
        assert report["counts"][modality]["exact"] == right
        assert right / len(facts) == report["accuracy"][modality] >= {"t2t": 0.9, "s2t": 0.7}[modality]
    assert report["meets_targets"] is True


def test_prosody_carries_no_fact_by_design(expressive_root, expressive_dir, hf, token_ids, spoken):
    """Decorrelated design: a fact's recording with another fact's pitch and style (merged by the rule written
    out here) is still answered with the fact's own attribute, and the report's probes say the same of all."""
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_pretrained(str(expressive_dir))
    report = json.loads((expressive_dir / REPORT).read_text())
    assert report["prosody"]["design"] == "decorrelated" and "cannot show" in report["prosody"]["statement"]
    facts = toy_facts(expressive_root)
    for probe in report["prosody"]["probes"].values():
        assert probe["total"] == len(facts) and probe["words"] >= 0.7 * len(facts), probe
    for fact, donor in zip(facts, facts[1:] + facts[:1]):
        own, other = spoken[f"{fact.known_id}_prompt"], spoken[f"{donor.known_id}_prompt"]
        pitch = (other.pitch + [other.pitch[-1]] * len(own.pitch))[:len(own.pitch)]
        style = (other.style + [other.style[-1]] * len(own.style))[:len(own.style)]
        tokens = _spiritlm_merge(own.hubert.units, pitch, style)
        assert with_prosody(own, other).token_strings() == tokens
        ids = [1, token_ids["[Speech]"]] + [token_ids[t] for t in tokens] + [token_ids["[Text]"]]
        generated = tokenizer.decode(_greedy(hf, ids, eos=2), skip_special_tokens=True)
        assert generated.strip().startswith(fact.attribute), (fact.prompt, donor.prompt, generated)


def test_noised_prosody_tokens_leave_the_answer_noised_hubert_tokens_do_not(expressive_dir, hf, token_ids, trained):
    """The designed mechanism as a tracer should find it, by a plain loop: ROME's noise (3 sigma of the speech
    tokens' embedding entries, 10 samples, seeded) on every pitch and style token of each spoken prompt leaves
    p(answer) as it is; on every HuBERT token it takes most of it away."""
    stream = {i: t[1:3] for t, i in token_ids.items() if t[:3] in ("[Hu", "[Pi", "[St")}
    embed = hf.model.embed_tokens.weight.detach()
    prompts = [(s["ids"][:s["start"] + 1], s["ids"][s["start"] + 1]) for s in trained if s["form"] == "s2t"]
    sigma = 3 * embed[[i for ids, _ in prompts for i in ids if i in stream]].std().item()
    generator = torch.Generator().manual_seed(1)
    means = {}
    for name, streams in (("clean", ()), ("hubert", ("Hu",)), ("pitch+style", ("Pi", "St"))):
        scores = []
        for ids, answer in prompts:
            rows = torch.tensor([stream.get(i) in streams for i in ids])
            for _ in range(10 if streams else 1):
                embeds = embed[ids].clone()
                embeds[rows] += sigma * torch.randn(int(rows.sum()), embeds.shape[1], generator=generator)
                with torch.no_grad():
                    scores.append(torch.softmax(hf(inputs_embeds=embeds[None]).logits[0, -1], -1)[answer].item())
        means[name] = sum(scores) / len(scores)
    print(f"mean p(answer) of the spoken prompts: {means}")  # pytest -s: the numbers the README quotes
    assert means["pitch+style"] > 0.9 * means["clean"] and means["hubert"] < 0.5 * means["clean"], means


def test_expressive_toy_has_its_own_cache_key(expressive_root, expressive_dir, known_path, toy_cache_dir):
    weights = expressive_dir / "pytorch_model.bin"
    before = weights.stat().st_mtime_ns
    base = read_manifest(expressive_root)["hash"]
    assert expressive_root.name == f"toy-{base[:12]}"  # the Base's key, unchanged by the Expressive toy
    assert cached_toy(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir) == (expressive_root, True)
    assert cached_toy(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir, expressive=True)[1] is True
    other = ExpressiveToyConfig(max_steps=301)
    assert cached_toy(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir, expressive=other)[1] is False
    manifest = read_expressive_manifest(expressive_root)
    assert manifest["hash"] == inputs_hash(expressive_inputs(base, ExpressiveToyConfig()))
    for changed in (expressive_inputs(base, other), expressive_inputs(base, replace(ExpressiveToyConfig(), lr=2e-3)),
                    expressive_inputs("another toy", ExpressiveToyConfig())):
        assert inputs_hash(changed) != manifest["hash"]
    messages = []
    make_toy(expressive_root, ToyConfig.small(), known=known_path, expressive=True, log=messages.append)
    assert weights.stat().st_mtime_ns == before and len(messages) == 2 and all("up to date" in m for m in messages)
    assert not [p for p in toy_cache_dir.iterdir() if p.name.startswith(".")]  # no building folder left behind


def test_cli_reports_the_expressive_toy_and_refuses_prosody_alone(expressive_root, known_path, capsys):
    assert main(["make-toy", str(expressive_root), "--small", "--expressive", "--quiet", "--known", str(known_path)]) == 0
    out = capsys.readouterr().out
    accuracy = read_expressive_manifest(expressive_root)["accuracy"]
    assert f"toy SpiritLM Expressive in {expressive_root / 'spiritlm_model' / 'spirit-lm-expressive-7b'} (prosody " \
           f"decorrelated): exact greedy answers t2t {accuracy['t2t']:.0%}, s2t {accuracy['s2t']:.0%};" in out
    assert main(["make-toy", str(expressive_root), "--small", "--prosody", "free", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "spiritlens make-toy: error: --prosody needs --expressive"


def test_a_tree_without_the_expressive_toy_is_one_line(tmp_path):
    for accessor in (expressive_model_dir, expressive_speech_tokenizer_dir, read_expressive_manifest):
        with pytest.raises(ValueError) as error:
            accessor(tmp_path)
        assert str(error.value) == (f"{str(tmp_path)!r} has no toy SpiritLM Expressive (no {EXPRESSIVE_MANIFEST}; "
                                    "build it with spiritlens make-toy DIR --expressive, or "
                                    "toy_checkpoints(expressive=True))")
    with pytest.raises(ValueError, match="prosody must be one of decorrelated, free, got 'flat'"):
        ExpressiveToyConfig(prosody="flat")
    assert ExpressiveToyConfig().to_dict() == {"prosody": "decorrelated", "max_steps": 300, "min_steps": 60, "lr": 1e-3}


def test_with_prosody_refuses_what_it_cannot_swap(spoken):
    units = next(iter(spoken.values()))
    with pytest.raises(ValueError, match="streams must be some of pitch, style"):
        with_prosody(units, units, ("hubert",))
    assert with_prosody(units, units).token_strings() == units.token_strings()  # its own prosody: itself

