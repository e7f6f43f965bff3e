"""SpeechGPT (fnlp/SpeechGPT-7B-cm) as a model family: a LLaMA-7B whose vocabulary adds 1000 mHuBERT
units and chat tokens (``vocab.py``), prompted through a chat template (``prompt.py``), with its
tokenizer read as transformers 4.33 read it (:mod:`spiritlens.tokens.llama`, ``rules="4.33"``) and its
speech tokenizer (``speech.py``: 50 Hz mHuBERT + joblib k-means).

The checkpoint folder (a ``LlamaForCausalLM``, TransformerLens' Llama adapter boots it)::

    config.json               LLaMA-1 config (no num_key_value_heads, no rope keys), vocab_size = n + 1006
    pytorch_model.bin         weights, plus each layer's rotary ``inv_freq`` buffer (transformers < 4.31
                              saved it): :attr:`SpeechGPT.ignorable_weights`
    tokenizer.model           LLaMA's SentencePiece model (n = 32000 pieces)
    added_tokens.json         <0>..<999>, <sosp>, <eosp>, [Human], [SpeechGPT], <eoh>, <eos> = n .. n + 1005
    special_tokens_map.json   BOS/EOS/UNK as AddedToken objects, pad "<unk>"
    tokenizer_config.json     LlamaTokenizer, add_bos_token true, add_eos_token false, no legacy key

(the layout of the Hugging Face folder as a researcher read it; the training code that makes the
vocabulary is cited in ``vocab.py``). :func:`spiritlens.synthetic.tiny_speechgpt.write_tiny_speechgpt`
writes tiny random folders in this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from spiritlens.models.base import ModelFamily
from spiritlens.models.speechgpt.prompt import META_INSTRUCTION, build_prompt_string
from spiritlens.models.speechgpt.speech import load_speech_tokenizer
from spiritlens.models.speechgpt.vocab import ASSISTANT, SPEECH_START, speechgpt_vocabulary, unit_token
from spiritlens.tokens.vocab import Vocabulary


class SpeechGPT(ModelFamily):
    """SpeechGPT-7B-cm: LLaMA-7B with SpeechGPT's unit and chat tokens (module docstring).

    ``template``: True (the default) writes prompts in SpeechGPT's chat template, as its inference
    code does and as the cm model was instruction-tuned; False writes the segments alone (a completion,
    as ROME prompts; :mod:`spiritlens.models.speechgpt.prompt`). Choose it with
    ``HookedSpeechLM.from_pretrained(path, family=SpeechGPT(template=False))``."""

    name = "speechgpt"
    label = "SpeechGPT"
    ignorable_weights = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

    def __init__(self, template: bool = True):
        if not isinstance(template, bool):
            raise ValueError(f"SpeechGPT(template=...) takes True or False, got {template!r}")
        self.template = template
        self.has_template = template
        self.prompt_markers = (META_INSTRUCTION.split("\n")[0],) if template else ()

    def owns(self, model_dir: Path, config: dict, tokenizer) -> bool:
        vocab = tokenizer.get_vocab()
        return SPEECH_START in vocab and ASSISTANT in vocab

    def describe(self, model_dir: Path) -> str:
        return f"SpeechGPT checkpoint {model_dir} ({'chat template' if self.template else 'raw prompts'})"

    def load_tokenizer(self, model_dir: Path, tokenization: str):
        """SpeechGPT's own call (``LlamaTokenizer.from_pretrained(path)``, ``cli_infer.py`` L90-91) as
        transformers 4.33.1's slow class (``requirements.txt``): :class:`~spiritlens.tokens.llama.SlowLlamaTokenizer`
        with ``rules="4.33"``; with ``tokenization="transformers"`` the installed transformers' class."""
        from transformers import LlamaTokenizer

        from spiritlens.tokens.layout import detect_layout
        from spiritlens.tokens.llama import SlowLlamaTokenizer

        slow = SlowLlamaTokenizer.from_pretrained(model_dir, add_bos_token=True, add_eos_token=False, rules="4.33")
        bridge = LlamaTokenizer.from_pretrained(str(model_dir), add_bos_token=True, add_eos_token=False)
        layout = detect_layout(slow, model_dir, tokenization=tokenization, marker=SPEECH_START)
        return (slow if tokenization == "spiritlm" else bridge), bridge, layout

    def vocabulary(self, tokenizer, *, source: str) -> Vocabulary:
        return speechgpt_vocabulary(tokenizer, source=source)

    def unit_string(self, stream: str, unit: int) -> str:
        if stream != "hubert":
            raise ValueError(f"SpeechGPT has no {stream} tokens (its units are mHuBERT k-means units only)")
        return unit_token(unit)

    def prompt_string(self, segments: Sequence, output_modality: str = "text") -> tuple[str, list[int]]:
        return build_prompt_string(segments, self.segment_text, output_modality, template=self.template)

    def piece_rules(self) -> "SpeechGPT":
        return SpeechGPT(template=False) if self.template else self

    def speech_tokenizer(self, model_dir: Path, source: Any, vocab: Vocabulary):
        return load_speech_tokenizer(source, model_dir)
