"""Tests for echostream.text.normalize: Vietnamese diacritics survive, English is tidied."""

from __future__ import annotations

import unicodedata

import pytest

from echostream.config import ConfigError, from_dict
from echostream.text.normalize import NormalizerConfig, normalize_text

# Every Vietnamese vowel with every tone, upper and lower case, plus đ/Đ.
VIETNAMESE_LOWER = "aàáảãạăằắẳẵặâầấẩẫậeèéẻẽẹêềếểễệiìíỉĩịoòóỏõọôồốổỗộơờớởỡợuùúủũụưừứửữựyỳýỷỹỵđ"


def test_nfc_composes_decomposed_vietnamese() -> None:
    composed = "tiếng việt rất đẹp"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert normalize_text(decomposed) == composed
    assert normalize_text(composed) == composed


def test_every_vietnamese_letter_survives_lowercasing() -> None:
    upper = VIETNAMESE_LOWER.upper()
    assert normalize_text(upper) == VIETNAMESE_LOWER
    assert normalize_text(unicodedata.normalize("NFD", upper)) == VIETNAMESE_LOWER
    nfkc = NormalizerConfig(form="NFKC")
    assert normalize_text(unicodedata.normalize("NFD", upper), nfkc) == VIETNAMESE_LOWER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Xin chào! Bạn khỏe không?", "xin chào bạn khỏe không"),
        ("Hôm nay, trời   đẹp…\tphải không?", "hôm nay trời đẹp phải không"),
        ("Anh ấy nói: «Được rồi»", "anh ấy nói được rồi"),
        ("Hello, World!", "hello world"),
        ("It\u2019s five o\u2019clock.", "it's five o'clock"),
        ("'Quoted' words, 'end'", "quoted words end"),
        ("A well\u2011known call-centre \u2014 yes", "a well known call centre yes"),
        ("Price: $5 + 10% & more @ home #1", "price $5 + 10% & more @ home 1"),
        ("zero\u200bwidth\u00a0space\ufeff", "zerowidth space"),
        ("Line one\nline two\r\n", "line one line two"),
        ("...", ""),
    ],
)
def test_default_normalisation(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_options() -> None:
    text = "Don\u2019t say \u201cGOOD-BYE\u201d, Đức!"
    assert (
        normalize_text(text, NormalizerConfig(punctuation="keep")) == 'don\'t say "good-bye", đức!'
    )
    assert normalize_text(text, NormalizerConfig(lowercase=False)) == "Don't say GOOD BYE Đức"
    assert (
        normalize_text(text, NormalizerConfig(keep_apostrophes=False)) == "don t say good bye đức"
    )
    assert normalize_text("ＡＢＣ １２３", NormalizerConfig(form="NFKC")) == "abc 123"
    assert normalize_text("ＡＢＣ", NormalizerConfig()) == "ａｂｃ"  # NFC leaves full-width alone


@pytest.mark.parametrize(
    "text",
    [
        "Xin CHÀO, Việt Nam!",
        "It's 5 o'clock…",
        "a  b\u00a0c",
        unicodedata.normalize("NFD", "Đà Nẵng"),
    ],
)
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_config_is_strict() -> None:
    assert from_dict(NormalizerConfig, {"form": "NFKC"}) == NormalizerConfig(form="NFKC")
    with pytest.raises(ConfigError, match="form must be"):
        from_dict(NormalizerConfig, {"form": "NFD"})
    with pytest.raises(ConfigError, match="punctuation must be"):
        from_dict(NormalizerConfig, {"punctuation": "strip"})
    with pytest.raises(ConfigError, match="config.lower: unknown key"):
        from_dict(NormalizerConfig, {"lower": True})
