"""Training material that real use needs and single read sentences lack: several sentences joined
by pauses (long-form speech), and audio without speech (silence, noise, tones) labelled empty.

:func:`join_utterances` draws groups of rows and writes each group as one file: the sentences in
order, a pause of drawn length between them (digital silence or low noise), the transcripts joined
with spaces. :func:`speechless` writes clips of digital silence, white/pink/brown noise at drawn
levels and hold-music-like tone sequences, each with an empty transcript, for training with
``data.empty_transcripts`` and for testing that a model outputs nothing for them.

Shape legend: N samples at 16 kHz.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from echostream.audio import SAMPLE_RATE, AudioError
from echostream.data.manifest import Utterance, write_manifest
from echostream.data.noise import colored_noise

SPEECHLESS_KINDS = ("silence", "white", "pink", "brown", "tones")


@dataclass(frozen=True, kw_only=True)
class JoinConfig:
    """Groups of ``sentences`` ([min, max]) rows, ``pause`` ([min, max] s) between them, the
    pause filled with noise ``noise_db`` ([min, max] dBFS, None: digital silence)."""

    sentences: tuple[int, int] = (2, 5)
    pause: tuple[float, float] = (0.3, 1.5)
    noise_db: tuple[float, float] | None = (-70.0, -50.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.sentences[0] <= self.sentences[1] <= 1000:
            raise ValueError(f"sentences must be [min, max] within [1, 1000], got {self.sentences}")
        if not 0 <= self.pause[0] <= self.pause[1] <= 60:
            raise ValueError(f"pause must be [min, max] within [0, 60] s, got {self.pause}")
        if self.noise_db is not None and not -120 <= self.noise_db[0] <= self.noise_db[1] <= 0:
            raise ValueError(f"noise_db must be [min, max] within [-120, 0] dBFS, got {self.noise_db}")


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """x scaled to an RMS of ``dbfs`` decibels relative to full scale."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
    return (x * np.float32(10 ** (dbfs / 20) / rms)).astype(np.float32)


def join_utterances(
    rows: Sequence[Utterance],
    out: str | os.PathLike[str],
    count: int,
    cfg: JoinConfig,
    *,
    id_prefix: str = "joined",
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Utterance], list[str]]:
    """Write ``count`` joined files to ``out/wav``, their rows to ``out/manifest.jsonl`` and the
    ids of the rows each joins to ``out/parts.jsonl`` (to score the same sentences one by one);
    a file's rows are distinct when there are enough. Returns the rows and one line per row that
    could not be read: such a row is left out and the file drawn again from the others."""
    from echostream.training.dataset import load_utterance

    if not rows:
        raise ValueError("no rows to join")
    folder = Path(out)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    written, failures, parts = [], [], []
    pool = list(rows)  # an unreadable row leaves the pool and its group is drawn again without it
    i = 0
    while i < count and pool:
        dropped = len(rows) - len(pool)
        rng = random.Random(f"{cfg.seed}:join:{i}" + (f":{dropped}" if dropped else ""))
        size = rng.randint(*cfg.sentences)
        group = rng.sample(pool, size) if size <= len(pool) else [rng.choice(pool) for _ in range(size)]
        pieces: list[np.ndarray] = []
        try:
            for j, row in enumerate(group):
                if j:
                    gap = np.zeros(round(rng.uniform(*cfg.pause) * SAMPLE_RATE), np.float32)
                    if cfg.noise_db is not None and gap.size:
                        noise = colored_noise("pink", gap.size, np.random.default_rng(rng.getrandbits(63)))
                        gap = _level(noise, rng.uniform(*cfg.noise_db))
                    pieces.append(gap)
                pieces.append(load_utterance(row, SAMPLE_RATE))
        except AudioError as err:
            failures.append(f"{row.id}: {err} (left out of the joined files)")
            pool.remove(row)
            continue
        name = f"{id_prefix}-{i:05d}"
        i += 1
        audio = np.concatenate(pieces)
        path = folder / "wav" / f"{name}.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        speakers = sorted({r.speaker for r in group if r.speaker})
        written.append(Utterance(
            id=name, audio=str(path), text=" ".join(r.text for r in group),
            duration=audio.size / SAMPLE_RATE, speaker=speakers[0] if len(speakers) == 1 else None,
            language=group[0].language,
        ))  # fmt: skip
        parts.append(json.dumps({"id": written[-1].id, "parts": [r.id for r in group]}))
        if progress is not None:
            progress(1)
    write_manifest(folder / "manifest.jsonl", written)
    (folder / "parts.jsonl").write_text("".join(line + "\n" for line in parts), encoding="utf-8")
    return written, failures


def _tones(n: int, rng: random.Random) -> np.ndarray:
    """(n,) a melody of sine chords, notes of 0.2-0.6 s with short fades: hold music's shape."""
    out = np.zeros(n, np.float32)
    start = 0
    while start < n:
        length = min(n - start, round(rng.uniform(0.2, 0.6) * SAMPLE_RATE))
        t = np.arange(length) / SAMPLE_RATE
        base = 220 * 2 ** (rng.randrange(24) / 12)
        note = sum(np.sin(2 * np.pi * base * ratio * t) for ratio in (1.0, 1.25, 1.5))
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
        out[start : start + length] = (note * fade / 3).astype(np.float32)
        start += length
    return out


MAX_SPEECHLESS_SECONDS = 600.0  # a clip longer than this is a mistyped option, not a test clip


def speechless(
    out: str | os.PathLike[str],
    count: int,
    *,
    kinds: Sequence[str] = SPEECHLESS_KINDS,
    duration: tuple[float, float] = (1.0, 8.0),
    level_db: tuple[float, float] = (-50.0, -15.0),
    seed: int = 0,
    id_prefix: str = "speechless",
) -> list[Utterance]:
    """Write ``count`` clips without speech (kinds drawn in turn, durations and RMS levels in
    dBFS drawn uniformly; silence is digital zero) with empty transcripts; returns their rows."""
    unknown = [k for k in kinds if k not in SPEECHLESS_KINDS]
    if unknown or not kinds:
        raise ValueError(f"speechless kinds must be some of {', '.join(SPEECHLESS_KINDS)}, got {list(kinds)}")
    if not 0 < duration[0] <= duration[1] <= MAX_SPEECHLESS_SECONDS:  # NaN too
        raise ValueError(f"speechless duration must be a range LOW:HIGH with 0 < LOW <= HIGH <= "
                         f"{MAX_SPEECHLESS_SECONDS:g} seconds, got {duration[0]:g}:{duration[1]:g}")
    if not -120 <= level_db[0] <= level_db[1] <= 0:
        raise ValueError(f"speechless level must be a range LOW:HIGH in dBFS with -120 <= LOW <= HIGH <= 0, "
                         f"got {level_db[0]:g}:{level_db[1]:g}")
    folder = Path(out)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        rng = random.Random(f"{seed}:speechless:{i}")
        kind = kinds[i % len(kinds)]
        n = round(rng.uniform(*duration) * SAMPLE_RATE)
        if kind == "silence":
            audio = np.zeros(n, np.float32)
        elif kind == "tones":
            audio = _level(_tones(n, rng), rng.uniform(*level_db))
        else:
            audio = _level(colored_noise(kind, n, np.random.default_rng(rng.getrandbits(63))), rng.uniform(*level_db))
        path = folder / "wav" / f"{id_prefix}-{i:05d}.wav"
        sf.write(path, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        rows.append(Utterance(id=f"{id_prefix}-{i:05d}", audio=str(path), text="", duration=n / SAMPLE_RATE,
                              speaker=f"speechless:{kind}"))  # fmt: skip
    write_manifest(folder / "manifest.jsonl", rows)
    return rows
