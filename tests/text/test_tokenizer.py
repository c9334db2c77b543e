"""Tests for echostream.text.tokenizer: id layout, round trips, the released vocab.txt, training."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from echostream.cli.main import main
from echostream.data.manifest import Utterance, write_manifest
from echostream.text.normalize import NormalizerConfig, normalize_text
from echostream.text.tokenizer import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    VocabTokenizer,
    load_tokenizer,
    read_tokenizer_config,
    train_tokenizer,
)
from echostream.text.vocab import Vocabulary, VocabularyError
from model_folders import FIXTURE_MODEL

PHRASES = (
    "hello world good morning please call me back at half past three my account number is four "
    "five two one seven the weather is sunny today can i change my delivery address thank you "
    "xin chào việt nam tiếng việt rất đẹp cảm ơn bạn nhiều đồng hồ"
)
WORDS = PHRASES.split()


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


def _check_layout(tok: Tokenizer) -> None:
    tokens = tok.vocabulary.tokens
    assert (tok.blank_id, tok.unk_id, tok.sos_eos_id) == (0, 1, tok.vocab_size - 1)
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == "<sos/eos>"
    assert len(set(tokens)) == len(tokens) == tok.vocab_size


# --------------------------------------------------------------------------------------------
# The released vocab.txt
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released() -> VocabTokenizer:
    if not (FIXTURE_MODEL / "vocab.txt").is_file():
        pytest.skip(f"fixture vocabulary missing: {FIXTURE_MODEL / 'vocab.txt'}")
    tok = load_tokenizer(FIXTURE_MODEL)  # a released folder: vocab.txt, no tokenizer.yaml
    assert isinstance(tok, VocabTokenizer)
    return tok


def test_released_vocab_layout(released: VocabTokenizer) -> None:
    _check_layout(released)
    assert released.vocab_size == 64 and released.sos_eos_id == 63


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("a", ["▁a"]),
        ("abc d", ["▁a", "bc", "▁d"]),  # "bc" is one token
        ("ae", ["▁a", "e"]),
        ("dab", ["▁d", "ab"]),  # longest match: "ab" beats "a"
        ("bb cc", ["▁bb", "▁cc"]),
        ("ic fc", ["▁ic", "▁fc"]),
        ("  a\t d ", ["▁a", "▁d"]),
        ("ba", ["<unk>", "b", "<unk>"]),  # no "▁b" nor "▁": unknown runs become one <unk>
        ("A", ["<unk>"]),
        ("", []),
    ],
)
def test_released_vocab_greedy_longest_match(
    released: VocabTokenizer, text: str, pieces: list[str]
) -> None:
    ids = released.encode(text)
    assert [released.vocabulary.token(i) for i in ids] == pieces


def test_released_vocab_round_trip(released: VocabTokenizer) -> None:
    for text in ["abc dab", "gh jk", "mno pqr", "stu vwx", "yz bb cc"]:
        ids = released.encode(text)
        assert 1 not in ids and 0 not in ids and 63 not in ids
        assert released.decode(ids) == text


def test_decode_drops_blank_and_sos_eos(released: VocabTokenizer) -> None:
    assert released.decode([0, 2, 0, 3, 63]) == "ab"
    assert released.decode([2, 1, 5]) == "a<unk> d"
    with pytest.raises(TokenizerError, match="token id 64 is outside 0..63"):
        released.decode([64])


def test_vocab_tokenizer_without_boundaries_joins_words() -> None:
    tok = VocabTokenizer(Vocabulary(("<blank>", "<unk>", "你", "好", "你好", "<sos/eos>")))
    assert tok.encode("你好 你") == [4, 2]


def test_layout_is_checked(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="expected <blank> at id 0"):
        VocabTokenizer(Vocabulary(("<unk>", "<blank>", "a", "<sos/eos>")))
    with pytest.raises(TokenizerError, match="<sos/eos> last"):
        VocabTokenizer(Vocabulary(("<blank>", "<unk>", "a")))
    (tmp_path / "vocab.txt").write_text("<blank> 0\n<unk> 2\n")
    with pytest.raises(TokenizerError, match="ids must run from 0 to 1"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="neither tokenizer.yaml nor vocab.txt"):
        load_tokenizer(tmp_path / "..")


def test_vocabulary_write_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary(("<blank>", "<unk>", "▁xin", "chào", "ệ", "<sos/eos>"))
    vocab.write(tmp_path / "vocab.txt")
    assert Vocabulary.from_file(tmp_path / "vocab.txt") == vocab
    with pytest.raises(VocabularyError, match="token 1"):
        Vocabulary(("<blank>", "a b")).write(tmp_path / "bad.txt")


# --------------------------------------------------------------------------------------------
# Character level
# --------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trip(tmp_path: Path) -> None:
    corpus = _corpus()
    tok = train_tokenizer(corpus, tmp_path, kind="char", vocab_size=None)
    assert isinstance(tok, CharTokenizer)
    _check_layout(tok)
    assert "▁" in tok.vocabulary.tokens and "ệ" in tok.vocabulary.tokens
    for text in corpus[:50]:
        ids = tok.encode(text)
        assert len(ids) == len(text)  # one id per character, the space included
        assert tok.decode(ids) == text
    reloaded = load_tokenizer(tmp_path)
    assert isinstance(reloaded, CharTokenizer) and reloaded.encode(corpus[0]) == tok.encode(
        corpus[0]
    )
    # The same vocab.txt used as a released vocabulary spells the text back too.
    released_style = VocabTokenizer(tok.vocabulary)
    assert released_style.decode(released_style.encode(corpus[1])) == corpus[1]


def test_char_vocab_size_keeps_the_most_frequent(tmp_path: Path) -> None:
    tok = train_tokenizer(["aaaa bbb cc d"], tmp_path, kind="char", vocab_size=6)
    assert tok.vocabulary.tokens == ("<blank>", "<unk>", "a", "b", "▁", "<sos/eos>")
    assert tok.decode(tok.encode("ab cd")) == "ab <unk><unk>"  # one <unk> per character


# --------------------------------------------------------------------------------------------
# SentencePiece
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "vocab_size"), [("bpe", 60), ("unigram", 60)])
def test_sentencepiece_round_trip(tmp_path: Path, kind: str, vocab_size: int) -> None:
    corpus = _corpus()
    tok = train_tokenizer(corpus, tmp_path, kind=kind, vocab_size=vocab_size)  # type: ignore[arg-type]
    assert isinstance(tok, SentencePieceTokenizer)
    _check_layout(tok)
    assert tok.vocab_size == vocab_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tokenizer.model",
        "tokenizer.yaml",
        "vocab.txt",
    ]
    assert Vocabulary.from_file(tmp_path / "vocab.txt") == tok.vocabulary
    for text in corpus[:100]:
        ids = tok.encode(text)
        assert ids and all(2 <= i < vocab_size - 1 for i in ids)
        assert tok.decode(ids) == text
    # Our ids are SentencePiece's plus one, and the pieces agree.
    ids = tok.encode("xin chào việt nam")
    assert "".join(tok.vocabulary.token(i) for i in ids) == "▁xin▁chào▁việt▁nam"
    assert tok.decode(tok.encode("hello Ω world")) == "hello <unk> world"
    reloaded = load_tokenizer(tmp_path)
    assert [reloaded.encode(t) for t in corpus[:20]] == [tok.encode(t) for t in corpus[:20]]
    # The same vocab.txt without the model still spells every training text back.
    released_style = VocabTokenizer.from_file(tmp_path / "vocab.txt")
    for text in corpus[:100]:
        assert released_style.decode(released_style.encode(text)) == text


def test_training_normalises_and_records_it(tmp_path: Path) -> None:
    shouted = [t.upper() + "!" for t in _corpus(200)]
    tok = train_tokenizer(shouted, tmp_path, kind="bpe", vocab_size=50)
    assert all(t == t.lower() for t in tok.vocabulary.tokens[2:-1])
    config = read_tokenizer_config(tmp_path)
    assert (
        config.kind == "bpe" and config.vocab_size == 50 and config.normalizer == NormalizerConfig()
    )
    text = normalize_text(shouted[0], config.normalizer)
    assert tok.decode(tok.encode(text)) == text
    raw = train_tokenizer(shouted, tmp_path / "raw", kind="char", vocab_size=None, normalizer=None)
    assert (
        "!" in raw.vocabulary.tokens and read_tokenizer_config(tmp_path / "raw").normalizer is None
    )


def test_training_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="at most"):
        train_tokenizer(_corpus(20), tmp_path, kind="unigram", vocab_size=5000)
    with pytest.raises(TokenizerError, match="no training text"):
        train_tokenizer(["", "  ", "?!"], tmp_path, kind="bpe", vocab_size=50)
    with pytest.raises(TokenizerError, match="needs a vocabulary size"):
        train_tokenizer(_corpus(20), tmp_path, kind="bpe", vocab_size=None)
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        train_tokenizer(_corpus(20), tmp_path, kind="wordpiece", vocab_size=50)  # type: ignore[arg-type]


def test_config_and_model_must_agree(tmp_path: Path) -> None:
    train_tokenizer(_corpus(), tmp_path, kind="bpe", vocab_size=40)
    config = yaml.safe_load((tmp_path / "tokenizer.yaml").read_text())
    config["vocab_size"] = 41
    (tmp_path / "tokenizer.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(TokenizerError, match="says 41 tokens, the tokenizer has 40"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.yaml").write_text(
        "kind: bpe\nvocab_size: 40\nnormalizer: null\nextra: 1\n"
    )
    with pytest.raises(TokenizerError, match="extra: unknown key"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        SentencePieceTokenizer.from_file(tmp_path / "tokenizer.model")


def test_cli_tokenizer_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        Utterance(id=f"u{i}", audio="a.wav", text=t, duration=1.0) for i, t in enumerate(_corpus())
    ]
    write_manifest(tmp_path / "m.jsonl", rows)
    code = main(
        [
            "tokenizer",
            "train",
            "--manifest",
            str(tmp_path / "m.jsonl"),
            "--kind",
            "unigram",
            "--vocab-size",
            "48",
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    assert code == 0
    assert "unigram tokenizer of 48 tokens" in capsys.readouterr().err
    assert load_tokenizer(tmp_path / "tok").vocab_size == 48
    code = main(
        [
            "tokenizer",
            "train",
            "--manifest",
            str(tmp_path / "m.jsonl"),
            "--kind",
            "bpe",
            "--vocab-size",
            "9000",
            "--out",
            str(tmp_path / "big"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "at most" in err
