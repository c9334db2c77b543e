#!/usr/bin/env python3
"""The text of the general English corpus: sentences from openly licensed sources, normalised so
that a text-to-speech engine reads exactly the words of the transcript, split into training and
held-out sentences, with vocabulary coverage measured.

Sources (each optional; a missing one is reported and skipped):
    chitchat   chitchat-dataset (PyPI, MIT): chat messages between crowd workers; contractions
               written without apostrophes are restored ("dont" -> "don't") where unambiguous
    wordnet    example sentences of WordNet (Debian wordnet-base, WordNet licence)
    bible      the World English Bible (Debian sword-text-web + diatheke, public domain)
    synth_en   echostream's own sentences (recipes/synth_en/sentences/train.txt, CC0)
    callbot    echostream's call-centre dialogues, training phrasings (recipes/callbot, CC0)

A sentence is kept when it has 3 to 24 words of letters (and apostrophes), every number is
written out (digits below 1000 are spelled, others drop the sentence), and it has no URL, e-mail,
hashtag or word longer than 18 letters. The Bible's joined words ("Godcreated" in this edition)
are caught by a dictionary check: a Bible sentence whose every word is known to the other sources
or to WordNet's lemmas is kept.

The split is by sentence after normalisation (lower case, no punctuation): ``--heldout`` sentences
per source are held out and never occur in the training text.

    python3 recipes/general_en/text.py --out recipes/general_en/data/text [--seed 1]

writes ``train.txt``, ``heldout.txt`` (one sentence per line, ``source<TAB>sentence``) and
``coverage.txt``: the out-of-vocabulary word rate of the held-out text against the training text's
vocabulary, per source.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "recipes" / "synth_en" / "sentences"))
from generate import number_words

WORDNET = Path("/usr/share/wordnet")
CONTRACTIONS = {
    "dont": "don't", "doesnt": "doesn't", "didnt": "didn't", "isnt": "isn't", "arent": "aren't",
    "wasnt": "wasn't", "werent": "weren't", "cant": "can't", "couldnt": "couldn't", "wouldnt": "wouldn't",
    "shouldnt": "shouldn't", "havent": "haven't", "hasnt": "hasn't", "hadnt": "hadn't", "wont": "won't",
    "im": "I'm", "ive": "I've", "youre": "you're", "youve": "you've", "theyre": "they're",
    "theyve": "they've", "thats": "that's", "whats": "what's", "whos": "who's", "theres": "there's",
    "heres": "here's", "lets": "let's", "hes": "he's", "shes": "she's", "youll": "you'll",
    "theyll": "they'll", "itll": "it'll", "wouldve": "would've", "couldve": "could've", "shouldve": "should've",
    "i": "I", "u": "you", "ur": "your", "idk": "I don't know", "tbh": "to be honest",
}  # fmt: skip
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
BAD = re.compile(r"https?:|www\.|@|#|[<>{}\[\]|\\/_=*~^]")


def spell_numbers(text: str) -> str | None:
    """Digits below 1000 spelled out; None when another number remains."""

    def spell(match: re.Match[str]) -> str:
        value = int(match.group(0))
        return number_words(value) if value < 1000 else match.group(0)

    text = re.sub(r"(?<![\d.,])\d{1,3}(?![\d.,])", spell, text)
    return None if re.search(r"\d", text) else text


def clean(sentence: str) -> str | None:
    """A sentence fit to be read and transcribed, or None."""
    sentence = sentence.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    sentence = " ".join(sentence.split())
    if not sentence or BAD.search(sentence) or not sentence.isascii():
        return None
    spelled = spell_numbers(sentence)
    if spelled is None:
        return None
    words = WORD.findall(spelled)
    if not 3 <= len(words) <= 24 or any(len(w) > 18 for w in words):
        return None
    # only letters, apostrophes, spaces and light punctuation remain
    if re.search(r"[^A-Za-z' ,.?!;:\"()-]", spelled):
        return None
    return spelled.strip(" -")


def normalised(sentence: str) -> str:
    """The transcript form used to compare sentences: lower case, words only."""
    return " ".join(w.lower() for w in WORD.findall(sentence))


def split_sentences(text: str) -> Iterator[str]:
    for piece in re.split(r"(?<=[.?!])\s+", text):
        if piece.strip():
            yield piece.strip()


def chitchat() -> Iterator[str]:
    import chitchat_dataset  # the recipe's environment installs it (run.sh)

    for message in chitchat_dataset.MessageDataset():
        fixed = " ".join(CONTRACTIONS.get(w.lower(), w) if w.isalpha() else w for w in str(message).split())
        for sentence in split_sentences(fixed):
            sentence = sentence[0].upper() + sentence[1:]
            yield sentence if sentence[-1] in ".?!" else sentence + "."


def wordnet() -> Iterator[str]:
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{part}"
        for line in path.read_text(encoding="latin-1").splitlines():
            if "|" not in line:
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                yield example[0].upper() + example[1:] + ("" if example[-1] in ".?!" else ".")


def bible() -> Iterator[str]:
    done = subprocess.run(
        ["diatheke", "-b", "engWEB2015eb", "-f", "plain", "-k", "Gen 1:1-Rev 22:21"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    verse = re.compile(r"^\s*(?:[1-3] )?[A-Z][A-Za-z ]+ \d+:\d+: ")
    current: list[str] = []
    for line in done.stdout.splitlines():
        if verse.match(line):
            if current:
                yield from split_sentences(" ".join(current))
            last = line.lstrip().startswith("Revelation of John 22:21:")
            current = [verse.sub("", line)]
            if last:  # the glossary follows the last verse
                break
        elif line.strip():
            current.append(line.strip())  # poetry: a verse continues over several lines
    if current:
        yield from split_sentences(" ".join(current))


def synth_en() -> Iterator[str]:
    yield from (REPO / "recipes" / "synth_en" / "sentences" / "train.txt").read_text().splitlines()


def callbot() -> Iterator[str]:
    sys.path.insert(0, str(REPO / "recipes" / "callbot"))
    import dialogues

    rng = random.Random(5)
    for i in range(3000):
        for turn in dialogues.call(i, "train", rng)["turns"]:
            yield turn["text"]


SOURCES = {"chitchat": chitchat, "wordnet": wordnet, "bible": bible, "synth_en": synth_en, "callbot": callbot}


def wordnet_lemmas() -> set[str]:
    lemmas: set[str] = set()
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"index.{part}"
        if path.is_file():
            for line in path.read_text(encoding="latin-1").splitlines():
                if not line.startswith(" "):
                    lemmas.update(line.split()[0].split("_"))
    return lemmas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--heldout", type=int, default=400, help="held-out sentences per source")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kept: dict[str, list[str]] = {}
    for name, source in SOURCES.items():
        if name == "bible" and shutil.which("diatheke") is None:
            print("text.py: bible skipped (apt-get install diatheke sword-text-web)", file=sys.stderr)
            continue
        try:
            raw = list(source())
        except (ImportError, OSError, subprocess.CalledProcessError) as err:
            print(f"text.py: {name} skipped ({err})", file=sys.stderr)
            continue
        seen: set[str] = set()
        sentences = []
        for sentence in raw:
            good = clean(sentence)
            if good is not None and normalised(good) not in seen:
                seen.add(normalised(good))
                sentences.append(good)
        kept[name] = sentences
        print(f"text.py: {name}: {len(sentences)} of {len(raw)} sentences kept", file=sys.stderr)
    if "bible" in kept:  # drop verses with joined words: every word must be known elsewhere
        known = wordnet_lemmas() | {w.lower() for n, s in kept.items() if n != "bible" for x in s for w in WORD.findall(x)}
        before = len(kept["bible"])
        kept["bible"] = [s for s in kept["bible"] if all(w.lower() in known for w in WORD.findall(s))]
        print(f"text.py: bible: {len(kept['bible'])} of {before} have only known words", file=sys.stderr)
    train, heldout = [], []
    for name, sentences in kept.items():
        order = sentences[:]
        rng.shuffle(order)
        count = min(args.heldout, len(order) // 10)
        heldout += [(name, s) for s in order[:count]]
        train += [(name, s) for s in order[count:]]
    held = {normalised(s) for _, s in heldout}
    train = [(n, s) for n, s in train if normalised(s) not in held]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train.txt").write_text("".join(f"{n}\t{s}\n" for n, s in train), encoding="utf-8")
    (args.out / "heldout.txt").write_text("".join(f"{n}\t{s}\n" for n, s in heldout), encoding="utf-8")
    vocabulary = Counter(w for _, s in train for w in normalised(s).split())
    lines = ["source       held-out words  OOV words  OOV rate", "------------ --------------  ---------  --------"]
    for name in [*kept, "all"]:
        words = [w for n, s in heldout if name in (n, "all") for w in normalised(s).split()]
        oov = sum(1 for w in words if w not in vocabulary)
        lines.append(f"{name:<12} {len(words):>14}  {oov:>9}  {100 * oov / max(1, len(words)):>7.2f}%")
    lines.append(f"training text: {len(train)} sentences, {sum(vocabulary.values())} words, {len(vocabulary)} distinct")
    (args.out / "coverage.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
