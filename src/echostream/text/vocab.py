"""Token vocabularies in the ``vocab.txt`` format of released ChunkFormer/WeNet models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁", marks the start of a word


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used."""


@dataclass(frozen=True)
class Vocabulary:
    """Id <-> token table. ``<blank>`` is id 0 for CTC."""

    tokens: tuple[str, ...]

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Read ``token id`` lines; ids must be 0..V-1, each once."""
        path = Path(path)
        if not path.is_file():
            raise VocabularyError(f"{path}: vocabulary file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise VocabularyError(f"{path}: not a text file (not UTF-8)") from None
        by_id: dict[int, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise VocabularyError(f"{path}:{number}: expected 'token id', got {line!r}")
            token, index = parts[0], int(parts[1])
            if index in by_id:
                raise VocabularyError(f"{path}:{number}: id {index} appears twice")
            by_id[index] = token
        if not by_id:
            raise VocabularyError(f"{path}: vocabulary is empty")
        if sorted(by_id) != list(range(len(by_id))):
            raise VocabularyError(f"{path}: ids must run from 0 to {len(by_id) - 1} without gaps")
        return cls(tuple(by_id[i] for i in range(len(by_id))))

    def write(self, path: str | Path) -> None:
        """Write ``token id`` lines, the format :meth:`from_file` reads.

        Raises:
            VocabularyError: a token is empty or contains whitespace (the format could not hold it).
        """
        for index, token in enumerate(self.tokens):
            if not token or any(c.isspace() for c in token):
                raise VocabularyError(f"token {index} ({token!r}) is empty or contains whitespace")
        lines = "".join(f"{token} {index}\n" for index, token in enumerate(self.tokens))
        Path(path).write_text(lines, encoding="utf-8")

    def __len__(self) -> int:
        return len(self.tokens)

    def token(self, index: int) -> str:
        return self.tokens[index]

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text, ``▁`` turned into spaces.

        >>> Vocabulary(("<blank>", "\u2581he", "llo", "\u2581world")).decode([1, 2, 3])
        'hello world'
        """
        return "".join(self.tokens[i] for i in ids).replace(WORD_BOUNDARY, " ").strip()
