"""SpiritLM's text tokenisation: transformers 4.x's slow ``LlamaTokenizer``, rebuilt on sentencepiece.

SpiritLM (``spiritlm/model/spiritlm_model.py``) tokenises its prompt string with
``LlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False)`` as that class
was in transformers 4.x: the SentencePiece ("slow") tokenizer on the checkpoint's
``tokenizer.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``. transformers 5 kept
the class name for a tokenizers-backed class that splits differently around SpiritLM's markers
when they are SentencePiece pieces (no lone ``▁`` before the first marker; ``▁The`` instead of
``T he`` after it), so every position shifts. :class:`SlowLlamaTokenizer` reproduces the 4.x
path (checked against fixture ids written by transformers 4.57, see
``scripts/make_tokenizer_fixtures.py``) and adds what the slow class never had: the character
offsets of every token.

The 4.x path, in order (transformers 4.57 ``tokenization_utils_base._from_pretrained``,
``tokenization_utils.PreTrainedTokenizer.tokenize`` and ``_add_tokens``,
``models/llama/tokenization_llama.py``):

1. **Added tokens** come from ``tokenizer_config.json``'s ``added_tokens_decoder``; only when it
   has none, from ``special_tokens_map.json`` (special tokens, ``additional_special_tokens``),
   ``added_tokens.json`` and ``tokenizer.json``'s ``added_tokens``. Every special token (BOS, EOS,
   UNK, PAD, additional) then becomes an added token too, at the id of its SentencePiece piece or
   at a new id after the vocabulary.
2. **legacy** is read from ``tokenizer_config.json`` (True when absent: 4.x's default).
   ``legacy: false`` replaces ``▁`` by a space, puts one ``▁`` in front (``add_prefix_space``,
   default True) and turns SentencePiece's own dummy prefix off.
3. The text is **split on added tokens** (leftmost, longest first), honouring each token's
   ``rstrip`` (eat the spaces after it), ``lstrip`` (before it) and ``single_word`` flags. Each
   stretch of text in between is encoded by SentencePiece on its own: legacy as is (so each
   stretch gets SentencePiece's dummy-prefix ``▁``); non-legacy, a stretch starting with ``▁`` or a
   space is encoded after the UNK string, whose pieces are then cut off. Non-legacy finally drops a
   leading lone ``▁`` when the next token is a special token.
4. Pieces become ids (the added-token table first, then SentencePiece), with BOS in front
   (``add_bos_token``) and EOS at the end if ``add_eos_token``.

**transformers 4.33** (``rules="4.33"``, opt-in; SpeechGPT's ``requirements.txt`` pins
``transformers==4.33.1``). Before 4.34 an added token was an ``AddedToken`` only when it was a special
token given as one (``LlamaTokenizer.__init__`` makes BOS, EOS, UNK and PAD ``AddedToken(lstrip=False,
rstrip=False)``; ``special_tokens_map.json`` may give more as objects); every other no-split token
(``added_tokens.json``'s, additional special tokens given as strings) **strips the whitespace on both
of its sides** (4.33.1 ``tokenization_utils.PreTrainedTokenizer.tokenize``: "We strip left and right by
default"), and each stretch left between such tokens is SentencePiece-encoded on its own, with its own
dummy-prefix ``▁``: ``[Human]: Hi <eoh>`` is ``[Human]`` ``▁:`` ``▁Hi`` ``<eoh>``, where 4.57 gives
``[Human]`` ``:`` ``▁Hi`` ``▁`` ``<eoh>``. 4.33 read ``added_tokens.json`` (ids consecutive after the
SentencePiece pieces, or it raised "Non-consecutive added token"), never ``tokenizer_config.json``'s
``added_tokens_decoder`` (from 4.34) nor, for the slow class, ``tokenizer.json``: a folder with the
former, or with ``legacy: false``, is refused in this mode. Checked against fixture ids written by
transformers 4.33.1 itself (``scripts/make_speechgpt_fixtures.py``).

**Offsets** (``return_offsets_mapping=True``): ``[start, end)`` characters of the input per token.
A SentencePiece piece covers the characters it was made from, so ``▁capital`` made from
`` capital`` covers the space, while the ``▁`` SentencePiece adds in front of a stretch (its dummy
prefix) covers nothing: ``▁The`` made from ``The`` covers ``The``, and a lone dummy-prefix ``▁``
is empty. Byte-fallback pieces (``<0xE6>`` ``<0x97>`` ``<0xA5>`` for ``日``) each cover the whole
character. Added tokens cover their match; BOS and EOS cover nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from spiritlens.tokens.added_tokens import (
    SPECIAL_TOKEN_KEYS,
    AddedToken,
    as_added,
    declaring_files,
    read_added_tokens,
    read_json_file,
)

SPIECE_UNDERLINE = "▁"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.json")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
TOKENIZER_RULES = ("4.57", "4.33")  # transformers 4.x releases whose slow tokenisation this module reproduces


@dataclass(frozen=True)
class Token:
    """One token of :meth:`SlowLlamaTokenizer.tokenize_with_offsets`: piece and ``[start, end)`` characters."""

    piece: str
    start: int
    end: int


class Encoding(dict):
    """The result of calling the tokenizer: ``input_ids``, ``attention_mask`` (and ``offset_mapping``),
    readable as keys or attributes, like transformers' ``BatchEncoding``."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _proto(sp, text: str):
    """SentencePiece's encoding with piece offsets (``SentencePieceText``), across sentencepiece versions."""
    encode = getattr(sp, "encode_as_proto", None) or getattr(sp, "encode_as_immutable_proto")
    return encode(text)



def read_sentencepiece_model(path: Path) -> bytes:
    """The bytes of a SentencePiece ``tokenizer.model``, checked by loading them: ValueError (one line
    naming the file) for an empty file or one SentencePiece cannot parse (a JSON or random file)."""
    import sentencepiece as spm

    data = Path(path).read_bytes()
    if not data:
        raise ValueError(f"{path}: tokenizer.model is empty (0 bytes), not a SentencePiece model")
    try:
        spm.SentencePieceProcessor().LoadFromSerializedProto(data)
    except Exception as error:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError/TypeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a SentencePiece model ({reason})") from None
    return data

class SlowLlamaTokenizer:
    """transformers 4.x's slow ``LlamaTokenizer`` on the checkpoint's files, with character offsets.

    Build it with :meth:`from_pretrained` (the call SpiritLM makes). The methods used by spiritlens
    follow transformers' names and results: ``__call__`` (``input_ids``, ``attention_mask``,
    ``offset_mapping``), ``tokenize``, ``encode``, ``decode``, ``convert_ids_to_tokens``,
    ``convert_tokens_to_ids``, ``get_vocab``, ``len()``, ``bos_token_id``/``eos_token_id``.
    Ids outside the vocabulary raise ``ValueError`` naming the id and the valid range (the 4.x
    class raised sentencepiece's IndexError).
    """

    def __init__(self, model_proto: bytes, *, added_tokens: dict[int, AddedToken] | None = None,
                 special_tokens: dict[str, Any] | None = None, legacy: bool | None = None,
                 add_prefix_space: bool | None = True, add_bos_token: bool = True, add_eos_token: bool = False,
                 clean_up_tokenization_spaces: bool = False, from_slow: bool = False,
                 legacy_source: str = "argument"):
        import sentencepiece as spm

        self.legacy_source = "default" if legacy is None else legacy_source
        self.rules = "4.57"  # from_pretrained(..., rules="4.33") switches to transformers 4.33's stripping
        self.legacy = True if legacy is None else bool(legacy)  # 4.x: legacy defaults to True
        self.add_prefix_space = add_prefix_space
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.sp_model = spm.SentencePieceProcessor()
        if self.legacy or from_slow:
            self.sp_model.LoadFromSerializedProto(model_proto)
        else:  # non-legacy: SentencePiece's dummy prefix off (4.x get_spm_processor)
            from sentencepiece import sentencepiece_model_pb2 as model_pb2

            proto = model_pb2.ModelProto.FromString(model_proto)
            proto.normalizer_spec.add_dummy_prefix = False
            self.sp_model.LoadFromSerializedProto(proto.SerializeToString())
        self.model_proto = model_proto
        special_tokens = dict(special_tokens or {})
        self._special: dict[str, Any] = {key: None for key in SPECIAL_TOKEN_KEYS}
        self._special["additional_special_tokens"] = []
        for key, value in special_tokens.items():
            if key in SPECIAL_TOKEN_KEYS and value is not None:
                self._special[key] = list(value) if key == "additional_special_tokens" else value
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):  # LlamaTokenizer.__init__
            if isinstance(self._special[key], str):
                self._special[key] = AddedToken(self._special[key], normalized=False, special=True)
        self._added: dict[int, AddedToken] = dict(added_tokens or {})
        self._encoder: dict[str, int] = {t.content: i for i, t in self._added.items()}
        # 4.x PreTrainedTokenizer.__init__: special tokens not yet in the table are added to it.
        self._add_tokens([t for t in self._all_special_extended() if not (isinstance(t, str) and t in self._encoder)])
        self.unk_token_length = len(self.sp_model.encode(str(self._special["unk_token"] or "<unk>")))
        self._rebuild()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory: str | Path, *, add_bos_token: bool = True,
                        add_eos_token: bool = False, rules: str = "4.57") -> "SlowLlamaTokenizer":
        """Read ``tokenizer.model`` and the JSON files of ``directory`` as transformers 4.x did.

        ``rules``: ``"4.57"`` (default; SpiritLM's call, transformers 4.34 to 4.57) or ``"4.33"``
        (transformers 4.33's whitespace stripping around added tokens, module docstring).
        Raises FileNotFoundError without ``tokenizer.model`` and ValueError for malformed files or
        options the slow path cannot reproduce (SentencePiece sampling in ``sp_model_kwargs``; with
        ``rules="4.33"``, files 4.33 did not read and non-consecutive ``added_tokens.json`` ids).
        """
        if rules not in TOKENIZER_RULES:
            raise ValueError(f"unknown tokenizer rules {rules!r}; use one of {', '.join(TOKENIZER_RULES)}")
        directory = Path(directory)
        model_file = directory / "tokenizer.model"
        if not model_file.is_file():
            raise FileNotFoundError(f"{directory} has no tokenizer.model: SpiritLM's tokenizer (the slow "
                                    "LlamaTokenizer) needs the SentencePiece model file")
        config = read_json_file(directory / "tokenizer_config.json") or {}
        if not isinstance(config, dict):
            raise ValueError(f"{directory / 'tokenizer_config.json'} must hold a JSON object")
        config = dict(config)
        sp_kwargs = config.get("sp_model_kwargs") or {}
        if any(sp_kwargs.get(k) for k in ("enable_sampling", "nbest_size", "alpha")):
            raise ValueError(f"{directory}/tokenizer_config.json sets sp_model_kwargs={sp_kwargs!r}: sampled "
                             "tokenisation is not supported")
        if rules == "4.33":
            _check_433_files(directory, config)
        overrides = {"add_bos_token": add_bos_token, "add_eos_token": add_eos_token}
        config.update(overrides)
        added, declared_map = read_added_tokens(directory, config, overrides)
        config = as_added(config)
        for key in SPECIAL_TOKEN_KEYS[:-1]:  # the declared AddedToken objects stand for their strings
            if declared_map and config.get(key) is not None:
                config[key] = declared_map.get(str(config[key]), config[key])
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}  # LlamaTokenizer defaults
        special.update({k: config[k] for k in SPECIAL_TOKEN_KEYS if k in config})
        tokenizer = cls(
            read_sentencepiece_model(model_file), added_tokens=added, special_tokens=special,
            legacy=config.get("legacy"), add_prefix_space=config.get("add_prefix_space", True),
            from_slow=bool(config.get("from_slow", False)),
            add_bos_token=config["add_bos_token"], add_eos_token=config["add_eos_token"],
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
            legacy_source="tokenizer_config.json",
        )
        tokenizer.name_or_path = str(directory)
        tokenizer.declared_in = tuple(declaring_files(directory, config))
        tokenizer.rules = rules
        if rules == "4.33":
            tokenizer._strip_around_added_tokens()
        return tokenizer

    def _strip_around_added_tokens(self) -> None:
        """transformers 4.33: every added token that is not an ``AddedToken`` special token (BOS, EOS,
        UNK, PAD, or an additional special token given as an object) strips whitespace on both sides."""
        kept = {str(self._special[key]) for key in ("bos_token", "eos_token", "unk_token", "pad_token")
                if self._special[key] is not None}
        kept |= {t.content for t in self._special["additional_special_tokens"] if isinstance(t, AddedToken)}
        for index, token in list(self._added.items()):
            if token.content not in kept:
                self._added[index] = AddedToken(token.content, single_word=False, lstrip=True, rstrip=True,
                                                normalized=token.normalized, special=token.special)
        self._rebuild()


    # ---------------------------------------------------------- added tokens
    def _all_special_extended(self) -> list:
        """Special tokens in transformers' attribute order, each string once."""
        out, seen = [], set()
        for key in SPECIAL_TOKEN_KEYS:
            value = self._special[key]
            if not value:
                continue
            for token in (value if isinstance(value, list) else [value]):
                if str(token) not in seen:
                    seen.add(str(token))
                    out.append(token)
        return out

    def _add_tokens(self, tokens: Sequence) -> None:
        """4.x ``_add_tokens(..., special_tokens=True)``: each token takes the id of its string in the
        vocabulary, or the next new id; the last one added for an id wins."""
        vocab = self.get_vocab()
        new_index = len(vocab)
        added = 0
        for token in tokens:
            if not str(token):
                continue
            if isinstance(token, str):
                token = AddedToken(token, normalized=False, special=True)
            else:
                token.special = True
            if token.content not in vocab:
                index = new_index + added
                vocab[token.content] = index
                added += 1
            else:
                index = vocab[token.content]
            if str(token) not in self.all_special_tokens:
                self._special["additional_special_tokens"].append(token)
            self._added[index] = token
            self._encoder[token.content] = index

    def _rebuild(self) -> None:
        contents = sorted(self._encoder, key=len, reverse=True)
        self._split_pattern = re.compile("|".join(re.escape(c) for c in contents)) if contents else None
        self._specials = set(self.all_special_tokens)
        self._vocab = self.get_vocab()
        self._length = len(self._vocab)

    # ---------------------------------------------------------- attributes
    @property
    def vocab_size(self) -> int:
        """Pieces of the SentencePiece model (added tokens not counted), as in transformers."""
        return self.sp_model.get_piece_size()

    def __len__(self) -> int:
        return self._length

    def get_vocab(self) -> dict[str, int]:
        vocab = {(self._added[i].content if i in self._added else self._id_to_piece(i)): i
                 for i in range(self.vocab_size)}
        vocab.update({t.content: i for i, t in sorted(self._added.items())})
        return vocab

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._added.items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t.content: i for i, t in sorted(self._added.items())}

    @property
    def all_special_tokens(self) -> list[str]:
        return [str(t) for t in self._all_special_extended()]

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    @property
    def additional_special_tokens(self) -> list[str]:
        return [str(t) for t in self._special["additional_special_tokens"]]

    def _special_str(self, key: str) -> str | None:
        value = self._special[key]
        return None if value is None else str(value)

    def _special_id(self, key: str) -> int | None:
        value = self._special_str(key)
        return None if value is None else self._token_to_id(value)

    def _set_special(self, key: str, value) -> None:
        """transformers 4.x's special-token setter (``tokenizer.pad_token = "</s>"``): the string (or
        None) becomes that special token, without adding it to the vocabulary; decoding with
        ``skip_special_tokens`` then skips it."""
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise ValueError(f"{key} must be a string or None, got {type(value).__name__}")
        self._special[key] = (AddedToken(value, normalized=False, special=True) if isinstance(value, str)
                              else value)
        self._specials = set(self.all_special_tokens)

    def _set_special_id(self, key: str, value) -> None:
        self._set_special(key, None if value is None else self.convert_ids_to_tokens(int(value)))

    # The special tokens' strings and ids, as transformers names them (None when unset); settable
    # as in transformers (``tokenizer.pad_token = tokenizer.eos_token``, ``tokenizer.pad_token_id = 2``).
    bos_token = property(lambda self: self._special_str("bos_token"), lambda self, v: self._set_special("bos_token", v))
    eos_token = property(lambda self: self._special_str("eos_token"), lambda self, v: self._set_special("eos_token", v))
    unk_token = property(lambda self: self._special_str("unk_token"), lambda self, v: self._set_special("unk_token", v))
    pad_token = property(lambda self: self._special_str("pad_token"), lambda self, v: self._set_special("pad_token", v))
    bos_token_id = property(lambda self: self._special_id("bos_token"),
                            lambda self, v: self._set_special_id("bos_token", v))
    eos_token_id = property(lambda self: self._special_id("eos_token"),
                            lambda self, v: self._set_special_id("eos_token", v))
    unk_token_id = property(lambda self: self._special_id("unk_token"),
                            lambda self, v: self._set_special_id("unk_token", v))
    pad_token_id = property(lambda self: self._special_id("pad_token"),
                            lambda self, v: self._set_special_id("pad_token", v))
    # transformers' LlamaTokenizer pads on the left (its class attribute); batches and TransformerLens read it.
    padding_side = "left"
    truncation_side = "right"

    # ------------------------------------------------------------ encoding
    def tokenize_with_offsets(self, text: str) -> list[Token]:
        """Pieces of ``text`` (no BOS/EOS) with their ``[start, end)`` characters in ``text``."""
        if not isinstance(text, str):
            raise ValueError(f"text to tokenise must be a string, got {type(text).__name__}")
        if self.legacy or not text:
            return self._split_and_encode(text, list(range(len(text))))
        body = text.replace(SPIECE_UNDERLINE, " ")
        index: list[int | None] = list(range(len(text)))
        if self.add_prefix_space:
            body, index = SPIECE_UNDERLINE + body, [None] + index
        tokens = self._split_and_encode(body, index)
        if len(tokens) > 1 and tokens[0].piece == SPIECE_UNDERLINE and tokens[1].piece in self._specials:
            tokens = tokens[1:]
        return tokens

    def tokenize(self, text: str) -> list[str]:
        """Pieces of ``text`` (no BOS/EOS), as transformers 4.x's ``tokenize``."""
        return [t.piece for t in self.tokenize_with_offsets(text)]

    def _split(self, text: str) -> list[str]:
        if self._split_pattern is None or not text:
            return [text]
        parts, last = [], 0
        for match in self._split_pattern.finditer(text):
            if match.start() > last:
                parts.append(text[last:match.start()])
            parts.append(match.group())
            last = match.end()
        if last < len(text):
            parts.append(text[last:])
        return parts

    def _split_and_encode(self, text: str, index: list[int | None]) -> list[Token]:
        """Split on added tokens (with their strip flags), SentencePiece on the stretches between."""
        pieces = self._split(text)
        parts: list[tuple[str, list[int | None]]] = []
        cursor = 0
        for piece in pieces:
            parts.append((piece, index[cursor:cursor + len(piece)]))
            cursor += len(piece)
        for i, (piece, _) in enumerate(parts):
            if piece not in self._encoder:
                continue
            token = self._added[self._encoder[piece]]
            # As in 4.x: the single_word tests look at the neighbours as they were before stripping.
            left = parts[i - 1][0] if i > 0 else None
            right = parts[i + 1][0] if i < len(parts) - 1 else None
            if token.rstrip and right:
                stripped = right.lstrip()
                parts[i + 1] = (stripped, parts[i + 1][1][len(right) - len(stripped):])
            if token.lstrip and left:
                stripped = left.rstrip()
                parts[i - 1] = (stripped, parts[i - 1][1][:len(stripped)])
            if token.single_word and left and left[-1] != " ":
                parts[i - 1] = (parts[i - 1][0] + piece, parts[i - 1][1] + parts[i][1])
                parts[i] = ("", [])
            elif token.single_word and right and right[0] != " ":
                parts[i + 1] = (piece + parts[i + 1][0], parts[i][1] + parts[i + 1][1])
                parts[i] = ("", [])
        tokens: list[Token] = []
        for piece, piece_index in parts:
            if not piece:
                continue
            if piece in self._encoder:
                start, end = _span(piece_index, 0, len(piece))
                tokens.append(Token(piece, start, end))
            else:
                tokens.extend(self._encode_stretch(piece, piece_index))
        return tokens

    def _encode_stretch(self, text: str, index: list[int | None]) -> list[Token]:
        """SentencePiece on one stretch between added tokens (4.x ``LlamaTokenizer._tokenize``)."""
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self._sp_tokens(text, index)
        unk = self.unk_token or "<unk>"
        tokens = self._sp_tokens(unk + text, [None] * len(unk) + index)
        return tokens[self.unk_token_length:] if len(tokens) >= self.unk_token_length else tokens

    def _sp_tokens(self, text: str, index: list[int | None]) -> list[Token]:
        encoded = text.encode("utf-8")
        char_at = [0] * (len(encoded) + 1)  # byte offset -> index of the character holding it
        position = 0
        for k, char in enumerate(text):
            width = len(char.encode("utf-8"))
            for b in range(position, position + width):
                char_at[b] = k
            position += width
        char_at[len(encoded)] = len(text)
        out = []
        for piece in _proto(self.sp_model, text).pieces:
            start = char_at[piece.begin]
            end = char_at[piece.end] if piece.end > piece.begin else start
            if _BYTE_PIECE.match(piece.piece) and self.sp_model.IsByte(piece.id):
                end = start + 1  # every byte of a character covers the character
            out.append(Token(piece.piece, *_span(index, start, end)))
        return out

    def _token_to_id(self, token: str) -> int:
        if token in self._encoder:
            return self._encoder[token]
        return int(self.sp_model.PieceToId(token))

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        """Ids of pieces: added tokens first, then SentencePiece (unknown pieces give UNK's id)."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _with_special(self, ids: list[int]) -> list[int]:
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        return bos + ids + eos

    def __call__(self, text: str, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 return_attention_mask: bool = True, **kwargs) -> Encoding:
        """``Encoding`` with ``input_ids`` (BOS first unless ``add_special_tokens=False``),
        ``attention_mask`` and, on request, ``offset_mapping`` (characters of ``text`` per token)."""
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, False)}
        if unsupported:
            raise ValueError(f"SpiritLM's tokenizer takes one string; unsupported options {sorted(unsupported)}")
        tokens = self.tokenize_with_offsets(text)
        ids = [self._token_to_id(t.piece) for t in tokens]
        spans = [(t.start, t.end) for t in tokens]
        if add_special_tokens:
            ids = self._with_special(ids)
            spans = ([(0, 0)] if self.add_bos_token else []) + spans + ([(len(text), len(text))]
                                                                         if self.add_eos_token else [])
        out = Encoding(input_ids=ids)
        if return_attention_mask:
            out["attention_mask"] = [1] * len(ids)
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self(text, add_special_tokens=add_special_tokens, return_attention_mask=False)["input_ids"]

    # ------------------------------------------------------------ decoding
    def check_ids(self, ids: Iterable[int], where: str = "token ids") -> list[int]:
        """The ids as ints; ValueError naming the first id this tokenizer has no piece for."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not (0 <= i < self.vocab_size or i in self._added):
                raise ValueError(f"{where}: token id {i} has no piece in this tokenizer (valid ids 0..{len(self) - 1})")
        return ids

    def _id_to_piece(self, index: int) -> str:
        return self.sp_model.IdToPiece(index)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        """Piece strings of ids (added tokens by their content); unknown ids raise ValueError."""
        if isinstance(ids, int) or (hasattr(ids, "ndim") and getattr(ids, "ndim") == 0):
            index = self.check_ids([int(ids)])[0]
            return self._added[index].content if index in self._added else self._id_to_piece(index)
        ids = self.check_ids(_as_list(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._added[i].content if i in self._added else self._id_to_piece(i) for i in ids if i not in special]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """4.x ``LlamaTokenizer.convert_tokens_to_string``: special tokens literally, the rest by
        SentencePiece; the first piece's ``▁`` is dropped (``add_prefix_space``)."""
        tokens = list(tokens)
        if tokens and tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens[0] = tokens[0][1:]
        current: list[str] = []
        out = ""
        previous_special = False
        for i, token in enumerate(tokens):
            if token in self._specials:
                if not previous_special and i != 0 and self.legacy:
                    out += " "
                out += self.sp_model.decode(current) + token
                previous_special = True
                current = []
            else:
                if previous_special and i == 1 and self.add_prefix_space and not token.startswith(SPIECE_UNDERLINE):
                    out += " "
                current.append(token)
                previous_special = False
        return out + self.sp_model.decode(current)

    def decode(self, token_ids: int | Sequence[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, spaces_between_special_tokens: bool = True) -> str:
        """Text of ids, as transformers 4.x's slow ``decode`` (added tokens that are not special are
        joined with spaces, as 4.x's ``spaces_between_special_tokens=True`` default does)."""
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        if isinstance(tokens, str):
            tokens = [tokens]
        specials = self._specials
        legacy_added = (set(self._encoder) - specials) | {
            t for t in self.additional_special_tokens if self._token_to_id(t) >= self.vocab_size}
        parts: list[str] = []
        current: list[str] = []
        for token in tokens:
            if skip_special_tokens and token in specials:
                continue
            if token in legacy_added:
                if current:
                    text = self.convert_tokens_to_string(current)
                    if text:
                        parts.append(text)
                    current = []
                parts.append(token)
            else:
                current.append(token)
        if current:
            parts.append(self.convert_tokens_to_string(current))
        text = (" " if spaces_between_special_tokens else "").join(parts)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean else text

    def prompt_string(self, ids: Sequence[int]) -> str:
        """The string whose tokenisation (with BOS) gives ``ids``: the inverse of ``__call__``.

        Each stretch of SentencePiece pieces is written back as text (``▁`` as a space, byte
        pieces as their character) without the ``▁`` SentencePiece or ``add_prefix_space`` put in
        front of it; added tokens as their content. Raises ValueError when no string gives exactly
        these ids (ids this tokenizer would not produce), naming the first position that differs.
        """
        ids = self.check_ids(ids)
        body = ids[1:] if self.add_bos_token and ids[:1] == [self.bos_token_id] else ids
        dummy_prefix = self.sp_model_has_dummy_prefix
        parts: list[str] = []
        stretch: list[str] = []
        pending = b""

        def flush_bytes() -> None:
            nonlocal pending
            if pending:
                stretch.append(pending.decode("utf-8", errors="replace"))
                pending = b""

        def flush_stretch() -> None:
            flush_bytes()
            text = "".join(stretch)
            first_stretch = not parts
            if text.startswith(" ") and ((self.legacy and dummy_prefix)
                                         or (not self.legacy and first_stretch and self.add_prefix_space)):
                text = text[1:]
            parts.append(text)
            stretch.clear()

        for i in body:
            if i in self._added:
                flush_stretch()
                parts.append(self._added[i].content)
                continue
            piece = self._id_to_piece(i)
            match = _BYTE_PIECE.match(piece)
            if match and self.sp_model.IsByte(i):
                pending += bytes([int(match.group(1), 16)])
                continue
            flush_bytes()
            stretch.append(piece.replace(SPIECE_UNDERLINE, " "))
        flush_stretch()
        text = "".join(parts)
        got = self.encode(text)
        if got != ids:
            at = next((k for k, (a, b) in enumerate(zip(got, ids)) if a != b), min(len(got), len(ids)))
            raise ValueError(f"token ids are not this tokenizer's encoding of any string (they differ from "
                             f"the encoding of {text!r} at position {at})")
        return text

    @property
    def sp_model_has_dummy_prefix(self) -> bool:
        """Whether the loaded SentencePiece model puts a ``▁`` in front of each text it encodes."""
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        return model_pb2.ModelProto.FromString(self.sp_model.serialized_model_proto()).normalizer_spec.add_dummy_prefix

    def __repr__(self) -> str:
        return (f"SlowLlamaTokenizer({getattr(self, 'name_or_path', '')!r}, pieces={self.vocab_size}, "
                f"ids={len(self)}, legacy={self.legacy})")


def _check_433_files(directory: Path, config: dict) -> None:
    """What transformers 4.33's slow ``LlamaTokenizer`` could read of ``directory`` (``rules="4.33"``)."""
    if "added_tokens_decoder" in config:
        raise ValueError(f"{directory}/tokenizer_config.json has added_tokens_decoder, which transformers 4.33 did "
                         "not read (saved by transformers >= 4.34): tokenizer rules '4.33' do not apply")
    if config.get("legacy") is False:
        raise ValueError(f"{directory}/tokenizer_config.json sets legacy=false: tokenizer rules '4.33' reproduce "
                         "the legacy path only")
    added = read_json_file(directory / "added_tokens.json") or {}
    if not isinstance(added, dict):
        raise ValueError(f"{directory}/added_tokens.json must hold a JSON object of token -> id")
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_proto=read_sentencepiece_model(directory / "tokenizer.model"))
    ids = sorted(int(i) for i in added.values())
    expected = list(range(pieces.get_piece_size(), pieces.get_piece_size() + len(ids)))
    if ids != expected:
        at = next(k for k, (a, b) in enumerate(zip(ids, expected + [None])) if a != b)
        raise ValueError(f"{directory}/added_tokens.json: ids must follow tokenizer.model's {pieces.get_piece_size()} "
                         f"pieces without gaps, as transformers 4.33 requires (\"Non-consecutive added token\"); "
                         f"id {ids[at]} should be {expected[at]}")


def _as_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    flat = []
    for item in ids:
        if isinstance(item, (list, tuple)):
            raise ValueError("token ids must be one sequence of ints, not a batch")
        flat.append(int(item))
    return flat


def _span(index: list[int | None], start: int, end: int) -> tuple[int, int]:
    """Characters of the original text covered by characters [start, end) of a modified text."""
    real = [i for i in index[start:end] if i is not None]
    if real:
        return real[0], real[-1] + 1
    later = next((i for i in index[start:] if i is not None), None)
    if later is not None:
        return later, later
    earlier = next((i for i in reversed(index[:start]) if i is not None), None)
    return (earlier + 1, earlier + 1) if earlier is not None else (0, 0)


def _clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before . ? ! , and English clitics."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


