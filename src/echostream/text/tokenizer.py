"""Tokenizers: text <-> token ids in the id layout of released ChunkFormer models.

Every tokenizer here has the ``vocab.txt`` layout of released ChunkFormer/WeNet models::

    <blank> 0        CTC blank
    <unk> 1          anything the vocabulary cannot spell
    ...              the pieces
    <sos/eos> V-1    start/end of sentence for an attention decoder

Three implementations share the :class:`Tokenizer` protocol:

- :class:`SentencePieceTokenizer`: a SentencePiece BPE or unigram model (``tokenizer.model``),
  trained by :func:`train_tokenizer`; our id = SentencePiece id + 1.
- :class:`CharTokenizer`: one token per character, ``▁`` for the space between words.
- :class:`VocabTokenizer`: a released ``vocab.txt`` alone, so that fine-tuning keeps a released
  vocabulary: greedy longest match over the text with ``▁`` marking the start of every word, as
  SentencePiece vocabularies spell it.

Tokenizers do not normalise: text is normalised first (``echostream.text.normalize``), with the
configuration a trained tokenizer folder records in ``tokenizer.yaml``. Decoding drops ``<blank>``
and ``<sos/eos>``, writes ``<unk>`` for the unknown id, and turns ``▁`` into spaces.

A folder written by :func:`train_tokenizer` holds ``vocab.txt``, ``tokenizer.yaml`` and, for BPE
and unigram, ``tokenizer.model``; :func:`load_tokenizer` reads it, or a released model folder that
has only ``vocab.txt``.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import yaml

from echostream.config import ConfigError, load_yaml
from echostream.text.normalize import DEFAULT_NORMALIZER, NormalizerConfig, normalize_text
from echostream.text.vocab import WORD_BOUNDARY, Vocabulary, VocabularyError

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
BLANK_ID = 0
UNK_ID = 1

MODEL_FILE = "tokenizer.model"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer.yaml"

TokenizerKind = Literal["bpe", "unigram", "char"]
KINDS: tuple[TokenizerKind, ...] = ("bpe", "unigram", "char")


class TokenizerError(ValueError):
    """A tokenizer that cannot be built, loaded or trained; the message is one line."""


class Tokenizer(Protocol):
    """Text <-> ids with ``<blank>`` = 0, ``<unk>`` = 1 and ``<sos/eos>`` = ``vocab_size - 1``."""

    @property
    def vocabulary(self) -> Vocabulary:
        """The id -> token table, as written to ``vocab.txt``."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (the CTC output size)."""
        ...

    @property
    def blank_id(self) -> int: ...

    @property
    def unk_id(self) -> int: ...

    @property
    def sos_eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Text (already normalised) -> ids; never produces blank or sos/eos."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; blank and sos/eos are dropped, unk is written ``<unk>``."""
        ...


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """What ``tokenizer.yaml`` records about a trained tokenizer folder.

    Attributes:
        kind: ``"bpe"``, ``"unigram"`` (SentencePiece) or ``"char"``.
        vocab_size: ids in ``vocab.txt``, specials included.
        normalizer: how training text was normalised (apply the same before :meth:`encode`), or
            ``None`` when it was used as written.
    """

    kind: TokenizerKind
    vocab_size: int
    normalizer: NormalizerConfig | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be at least 3, got {self.vocab_size}")


# --------------------------------------------------------------------------------------------
# The shared id layout
# --------------------------------------------------------------------------------------------


def _check_layout(vocabulary: Vocabulary, name: str) -> None:
    tokens = vocabulary.tokens
    if len(tokens) < 3 or tokens[0] != BLANK or tokens[1] != UNK or tokens[-1] != SOS_EOS:
        raise TokenizerError(
            f"{name}: expected {BLANK} at id 0, {UNK} at id 1 and {SOS_EOS} last "
            f"(got {', '.join(tokens[:2])} ... {tokens[-1]})"
        )


def _decode(vocabulary: Vocabulary, ids: Sequence[int]) -> str:
    """Ids -> text: specials other than unk dropped, ``▁`` -> space, whitespace runs joined."""
    last = len(vocabulary) - 1
    pieces = []
    for i in ids:
        if not 0 <= i <= last:
            raise TokenizerError(f"token id {i} is outside 0..{last}")
        if i != BLANK_ID and i != last:
            pieces.append(vocabulary.tokens[i])
    return " ".join("".join(pieces).replace(WORD_BOUNDARY, " ").split())


class _Layout:
    """The ids every tokenizer here shares; subclasses set ``_vocabulary``."""

    _vocabulary: Vocabulary

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self._vocabulary)

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def sos_eos_id(self) -> int:
        return len(self._vocabulary) - 1

    def decode(self, ids: Sequence[int]) -> str:
        return _decode(self._vocabulary, ids)


# --------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------


class SentencePieceTokenizer(_Layout):
    """A SentencePiece model trained with ``unk_id=0`` and no bos/eos/pad: our id = its id + 1."""

    def __init__(self, model: bytes, name: str = "SentencePiece model") -> None:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(model)
        except (RuntimeError, OSError) as err:
            raise TokenizerError(
                f"{name}: not a SentencePiece model ({_first_line(err)})"
            ) from None
        if processor.unk_id() != 0 or any(
            i >= 0 for i in (processor.bos_id(), processor.eos_id(), processor.pad_id())
        ):
            raise TokenizerError(
                f"{name}: expected unk at id 0 and no bos/eos/pad pieces (train with "
                "`echostream tokenizer train`)"
            )
        pieces = [processor.id_to_piece(i) for i in range(1, processor.get_piece_size())]
        self._processor = processor
        self._vocabulary = Vocabulary((BLANK, UNK, *pieces, SOS_EOS))

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceTokenizer:
        file = Path(path)
        try:
            return cls(file.read_bytes(), str(file))
        except FileNotFoundError:
            raise TokenizerError(f"{file}: SentencePiece model not found") from None

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._processor.encode(text, out_type=int)]


class CharTokenizer(_Layout):
    """One id per character; the space between words is ``▁`` (runs of whitespace count as one)
    and each unknown character is one ``<unk>``.

    >>> tok = CharTokenizer(Vocabulary(("<blank>", "<unk>", "▁", "a", "b", "<sos/eos>")))
    >>> tok.encode("ab  ba c"), tok.decode(tok.encode("ab  ba c"))
    ([3, 4, 2, 4, 3, 2, 1], 'ab ba <unk>')
    """

    def __init__(self, vocabulary: Vocabulary, name: str = "character vocabulary") -> None:
        _check_layout(vocabulary, name)
        long = [t for t in vocabulary.tokens[2:-1] if len(t) != 1]
        if long:
            raise TokenizerError(f"{name}: character tokens must be one character, got {long[0]!r}")
        self._vocabulary = vocabulary
        self._ids = {
            t: i for i, t in enumerate(vocabulary.tokens) if i not in (0, 1, len(vocabulary) - 1)
        }

    def encode(self, text: str) -> list[int]:
        spelled = WORD_BOUNDARY.join(text.split())
        return [self._ids.get(c, UNK_ID) for c in spelled]


class VocabTokenizer(_Layout):
    """A released ``vocab.txt``: greedy longest match, ``▁`` starting every word.

    Each word is spelled ``▁word`` and the longest token matching at the current position is taken.
    Characters no token covers become one ``<unk>`` per run (as SentencePiece does). Tokens of the
    form ``<...>`` are never matched. A vocabulary with no ``▁`` in any token (a character
    vocabulary of a language written without spaces) gets no word boundaries: words are joined.

    >>> tok = VocabTokenizer(Vocabulary(("<blank>", "<unk>", "▁he", "llo", "l", "o", "<sos/eos>")))
    >>> tok.encode("hello helo"), tok.decode(tok.encode("hello helo"))
    ([2, 3, 2, 4, 5], 'hello helo')
    >>> tok.encode("hello xhello")
    [2, 3, 1, 3]
    """

    def __init__(self, vocabulary: Vocabulary, name: str = "vocabulary") -> None:
        _check_layout(vocabulary, name)
        self._vocabulary = vocabulary
        self._ids: dict[str, int] = {}
        for i, token in enumerate(vocabulary.tokens):
            if not (token.startswith("<") and token.endswith(">") and len(token) > 2):
                self._ids.setdefault(token, i)
        self._longest = max((len(t) for t in self._ids), default=1)
        self._boundary = WORD_BOUNDARY if any(WORD_BOUNDARY in t for t in self._ids) else ""

    @classmethod
    def from_file(cls, path: str | Path) -> VocabTokenizer:
        try:
            return cls(Vocabulary.from_file(path), str(path))
        except VocabularyError as err:
            raise TokenizerError(str(err)) from None

    def encode(self, text: str) -> list[int]:
        spelled = "".join(self._boundary + word for word in text.split())
        ids: list[int] = []
        position = 0
        while position < len(spelled):
            for length in range(min(self._longest, len(spelled) - position), 0, -1):
                index = self._ids.get(spelled[position : position + length])
                if index is not None:
                    ids.append(index)
                    position += length
                    break
            else:
                if not ids or ids[-1] != UNK_ID:
                    ids.append(UNK_ID)
                position += 1
        return ids


# --------------------------------------------------------------------------------------------
# Folders: load and train
# --------------------------------------------------------------------------------------------


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer of a folder from :func:`train_tokenizer`, or of a released model folder.

    With ``tokenizer.yaml`` the folder's kind decides; without it ``vocab.txt`` is used as a released
    vocabulary (:class:`VocabTokenizer`).
    """
    root = Path(folder)
    if not root.is_dir():
        raise TokenizerError(f"{root}: not a directory")
    if not (root / CONFIG_FILE).is_file():
        if not (root / VOCAB_FILE).is_file():
            raise TokenizerError(f"{root}: neither {CONFIG_FILE} nor {VOCAB_FILE} found")
        return VocabTokenizer.from_file(root / VOCAB_FILE)
    config = read_tokenizer_config(root)
    tokenizer: Tokenizer
    if config.kind == "char":
        try:
            tokenizer = CharTokenizer(
                Vocabulary.from_file(root / VOCAB_FILE), str(root / VOCAB_FILE)
            )
        except VocabularyError as err:
            raise TokenizerError(str(err)) from None
    else:
        tokenizer = SentencePieceTokenizer.from_file(root / MODEL_FILE)
    if tokenizer.vocab_size != config.vocab_size:
        raise TokenizerError(
            f"{root}: {CONFIG_FILE} says {config.vocab_size} tokens, the tokenizer has {tokenizer.vocab_size}"
        )
    return tokenizer


def read_tokenizer_config(folder: str | Path) -> TokenizerConfig:
    """``tokenizer.yaml`` of a trained tokenizer folder, read strictly."""
    try:
        return load_yaml(TokenizerConfig, Path(folder) / CONFIG_FILE)
    except ConfigError as err:
        raise TokenizerError(str(err)) from None


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    *,
    kind: TokenizerKind,
    vocab_size: int | None,
    normalizer: NormalizerConfig | None = DEFAULT_NORMALIZER,
) -> Tokenizer:
    """Train a tokenizer on transcripts and write its folder.

    Args:
        texts: training transcripts (empty ones are ignored).
        out_dir: created if needed; receives ``vocab.txt``, ``tokenizer.yaml`` and, for ``bpe`` and
            ``unigram``, ``tokenizer.model``.
        kind: ``"bpe"`` or ``"unigram"`` (SentencePiece, character coverage 1.0, no normalisation of
            its own) or ``"char"``.
        vocab_size: ids in ``vocab.txt`` including ``<blank>``, ``<unk>`` and ``<sos/eos>``.
            Required for SentencePiece; for ``char`` an upper bound (the most frequent characters
            are kept), ``None`` for every character seen.
        normalizer: applied to every transcript first and recorded in ``tokenizer.yaml``; ``None``
            to use the text as written.

    Raises:
        TokenizerError: no text, an unknown kind, a vocabulary size the text cannot fill.
    """
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r} (choose {', '.join(KINDS)})")
    if vocab_size is not None and vocab_size < 4:
        raise TokenizerError(f"vocabulary size must be at least 4, got {vocab_size}")
    lines = [
        normalize_text(t, normalizer) if normalizer is not None else " ".join(t.split())
        for t in texts
    ]
    lines = [line for line in lines if line]
    if not lines:
        raise TokenizerError("no training text (every transcript is empty)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer: Tokenizer
    if kind == "char":
        tokenizer = CharTokenizer(_char_vocabulary(lines, vocab_size))
    else:
        if vocab_size is None:
            raise TokenizerError(f"a {kind} tokenizer needs a vocabulary size")
        model = _train_sentencepiece(lines, kind, vocab_size)
        (out / MODEL_FILE).write_bytes(model)
        tokenizer = SentencePieceTokenizer(model, str(out / MODEL_FILE))
    tokenizer.vocabulary.write(out / VOCAB_FILE)
    config = TokenizerConfig(kind=kind, vocab_size=tokenizer.vocab_size, normalizer=normalizer)
    (out / CONFIG_FILE).write_text(
        yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return tokenizer


def _char_vocabulary(lines: list[str], vocab_size: int | None) -> Vocabulary:
    counts = Counter(c for line in lines for c in WORD_BOUNDARY.join(line.split()))
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    if vocab_size is not None:
        ranked = ranked[: vocab_size - 3]
    return Vocabulary((BLANK, UNK, *sorted(ranked), SOS_EOS))


def _train_sentencepiece(lines: list[str], kind: str, vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=kind,
            vocab_size=vocab_size - 2,  # + <blank> and <sos/eos>; its <unk> becomes our id 1
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            character_coverage=1.0,
            normalization_rule_name="identity",
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as err:
        reason = _first_line(err)
        limit = re.search(r"<= (\d+)", reason)
        if limit is not None:
            reason = f"the text supports at most {int(limit.group(1)) + 2}"
        raise TokenizerError(
            f"cannot train a {kind} tokenizer of {vocab_size} tokens: {reason}"
        ) from None
    return model.getvalue()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
