"""Transcript normalisation for training and scoring, safe for Vietnamese diacritics.

:func:`normalize_text` applies, in this order:

1. **Unicode form** (``form``): NFC by default, which composes every base letter with its marks.
   Vietnamese typed with combining marks (``e`` + U+0302 + U+0301) and precomposed (``ế``) become the
   same string; no diacritic is ever dropped. NFKC additionally folds compatibility characters
   (full-width letters and digits, ligatures such as ``ﬁ``) and composes the same way.
2. **Invisible characters** are removed: zero-width space, zero-width no-break space (BOM) and the
   soft hyphen.
3. **Punctuation variants** are unified: curly and prime apostrophes -> ``'``, curly and angle
   quotes -> ``"``, en/em dashes and Unicode hyphens -> ``-``, ``…`` -> ``...``.
4. **Case** (``lowercase``): ``str.lower`` (``ĐẶNG`` -> ``đặng``).
5. **Punctuation** (``punctuation``): ``"keep"`` leaves it; ``"remove"`` replaces every Unicode
   punctuation character (categories P*) by a space, except, with ``keep_apostrophes``, an
   apostrophe between two letters or digits (``don't``, ``o'clock``). Symbols (categories S*:
   ``$ € + =``) and the signs ``% & @``, which Unicode files as punctuation, are spoken words and
   are kept; spelling them out is a verbaliser's job.
6. **Whitespace**: every run of Unicode whitespace becomes one space; ends are stripped.

>>> normalize_text("  Xin CHÀO,   Việt Nam!  ")
'xin chào việt nam'
>>> normalize_text("It\u2019s half-past five\u2026")
"it's half past five"
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

_SPOKEN_SIGNS = frozenset("%&@")  # Unicode punctuation that is read aloud
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\u00ad"), None)
_PUNCTUATION_VARIANTS = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u00ab": '"', "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
    }
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class NormalizerConfig:
    """How :func:`normalize_text` rewrites a transcript (see the module docstring for the steps).

    Attributes:
        form: Unicode normal form, ``"NFC"`` or ``"NFKC"``; both keep diacritics composed.
        lowercase: lower-case the text.
        punctuation: ``"remove"`` (punctuation becomes spaces) or ``"keep"``.
        keep_apostrophes: with ``punctuation="remove"``, keep apostrophes inside words.
    """

    form: Literal["NFC", "NFKC"] = "NFC"
    lowercase: bool = True
    punctuation: Literal["remove", "keep"] = "remove"
    keep_apostrophes: bool = True

    def __post_init__(self) -> None:
        if self.form not in ("NFC", "NFKC"):
            raise ValueError(f"form must be 'NFC' or 'NFKC', got {self.form!r}")
        if self.punctuation not in ("remove", "keep"):
            raise ValueError(f"punctuation must be 'remove' or 'keep', got {self.punctuation!r}")


DEFAULT_NORMALIZER = NormalizerConfig()
"""Every option at its default: NFC, lower case, punctuation removed but for in-word apostrophes."""


def normalize_text(text: str, config: NormalizerConfig = DEFAULT_NORMALIZER) -> str:
    """Normalise one transcript as ``config`` says.

    >>> normalize_text("Anh ấy nói: «Được rồi!»", NormalizerConfig(punctuation="keep"))
    'anh ấy nói: "được rồi!"'
    >>> normalize_text("The A-Team's 2nd try", NormalizerConfig(lowercase=False))
    "The A Team's 2nd try"
    """
    text = unicodedata.normalize(config.form, text)
    text = text.translate(_INVISIBLE).translate(_PUNCTUATION_VARIANTS)
    if config.lowercase:
        text = text.lower()
    if config.punctuation == "remove":
        text = _remove_punctuation(text, config.keep_apostrophes)
    return " ".join(text.split())


def _remove_punctuation(text: str, keep_apostrophes: bool) -> str:
    return "".join(c if _kept(text, i, keep_apostrophes) else " " for i, c in enumerate(text))


def _kept(text: str, i: int, keep_apostrophes: bool) -> bool:
    """Whether ``text[i]`` survives punctuation removal."""
    char = text[i]
    if not unicodedata.category(char).startswith("P") or char in _SPOKEN_SIGNS:
        return True
    return (
        keep_apostrophes
        and char == "'"
        and 0 < i < len(text) - 1
        and _is_word_char(text[i - 1])
        and _is_word_char(text[i + 1])
    )


def _is_word_char(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char).startswith("M")
