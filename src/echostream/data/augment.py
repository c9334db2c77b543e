"""The acoustic conditions of a call, applied to clean speech: room, noise, telephone line.

:class:`Augmenter` applies, in the order they happen on a real call, a room's reverberation
(:mod:`echostream.data.reverb`), the noise around the talker (:mod:`echostream.data.noise`) and
the telephone line (:mod:`echostream.data.channel`), each drawn per utterance from its config, and
returns the waveform at the rate it came in (a line's 8 kHz audio is resampled back, band-limited
as a real call's audio is when a 16 kHz model hears it). The training data loader uses it
(``augment.reverb``, ``augment.noise``, ``augment.channel``), and ``echostream augment`` writes
augmented copies of a manifest.

Shape legend: N samples of a mono float32 waveform.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from echostream.audio import SAMPLE_RATE, AudioError
from echostream.data.channel import ChannelConfig, ChannelError, Resample, check_tools, draw_line
from echostream.data.manifest import Utterance, write_manifest
from echostream.data.noise import NoiseConfig, NoiseSource
from echostream.data.reverb import Reverb, ReverbConfig
from echostream.extras import require


class Augmenter:
    """Room, noise and line drawn per utterance at ``rate``; a config left None is skipped.

    Building one checks what it will need (pyroomacoustics for rooms, sox/ffmpeg/opus-tools for
    the codecs with weight, the noise folders and manifests) and raises a one-line error if
    something is missing, so a training run fails at its start and not per utterance.
    """

    def __init__(
        self,
        *,
        reverb: ReverbConfig | None,
        noise: NoiseConfig | None,
        channel: ChannelConfig | None,
        rate: int,
        seed: int = 0,
    ) -> None:
        if reverb is not None or channel is not None:
            require("augment", "room and telephone-line augmentation")
        self.rate = rate
        self.reverb = Reverb(reverb, rate, seed=seed) if reverb is not None else None
        self.noise = NoiseSource(noise, rate, seed=seed) if noise is not None else None
        if channel is not None:
            check_tools(channel)
        self.channel = channel

    @property
    def active(self) -> bool:
        return self.reverb is not None or self.noise is not None or self.channel is not None

    def apply(self, x: np.ndarray, rng: random.Random) -> tuple[np.ndarray, tuple[str, ...]]:
        """x (N,) at ``rate`` -> (N',) at ``rate`` and what was done to it, e.g.
        ``("rt60=0.08s", "pink@9.1dB", "8k bp300-3400 -3dB gsm")``."""
        y, line_rate, done = self.apply_at_line_rate(x, rng)
        if line_rate != self.rate:
            y, _ = Resample(self.rate).apply(y, line_rate)
        return _in_range(y), done

    def apply_at_line_rate(
        self, x: np.ndarray, rng: random.Random
    ) -> tuple[np.ndarray, int, tuple[str, ...]]:
        """As :meth:`apply`, but audio that went through a line stays at the line's rate:
        (N',), its rate, and what was done."""
        done: list[str] = []
        if self.reverb is not None:
            x, what = self.reverb.apply(x, rng)
            done += [what] if what else []
        if self.noise is not None:
            x, what = self.noise.apply(x, rng)
            done += [what] if what else []
        rate = self.rate
        if self.channel is not None:
            line = draw_line(self.channel, rng)
            if line is not None:
                x, rate = line.apply(x, self.rate)
                done.append(line.describe())
        return _in_range(x), rate, tuple(done)


def _in_range(x: np.ndarray) -> np.ndarray:
    """x scaled down into [-1, 1] if it peaks above (as a recording's level would be set)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / np.float32(peak)).astype(np.float32) if peak > 1.0 else x


@dataclass(frozen=True, kw_only=True)
class ConditionsConfig:
    """What ``echostream augment --config`` reads: the room, noise and line (each optional)."""

    reverb: ReverbConfig | None = None
    noise: NoiseConfig | None = None
    channel: ChannelConfig | None = None

    def __post_init__(self) -> None:
        if self.reverb is None and self.noise is None and self.channel is None:
            raise ValueError("give at least one of reverb, noise and channel")


@dataclass(frozen=True)
class AugmentedRow:
    """One written copy: its manifest row and what was done to it."""

    row: Utterance
    conditions: tuple[str, ...]


_WORKER: dict[str, Any] = {}


def _start_worker(conditions: ConditionsConfig, seed: int, folder: str) -> None:
    _WORKER["augmenter"] = Augmenter(
        reverb=conditions.reverb, noise=conditions.noise, channel=conditions.channel,
        rate=SAMPLE_RATE, seed=seed,
    )  # fmt: skip
    _WORKER["seed"], _WORKER["folder"] = seed, Path(folder)


def _augment_row(job: tuple[Utterance, str]) -> AugmentedRow | str:
    """Write one augmented copy of ``row``; a one-line reason when it cannot be read or coded."""
    from echostream.training.dataset import load_utterance

    row, stem = job
    augmenter: Augmenter = _WORKER["augmenter"]
    try:
        samples = load_utterance(row, SAMPLE_RATE)
        y, rate, done = augmenter.apply_at_line_rate(samples, random.Random(f"{_WORKER['seed']}:{row.id}"))
    except (AudioError, ChannelError) as err:
        return f"{row.id}: {err}"
    path = _WORKER["folder"] / "wav" / (stem + ".wav")
    try:
        sf.write(path, y, rate, subtype="PCM_16")
    except (OSError, sf.SoundFileError) as err:
        return f"{row.id}: cannot write {path}: {err}"
    written = Utterance(
        id=row.id, audio=str(path), text=row.text, duration=y.size / rate,
        speaker=row.speaker, language=row.language,
    )  # fmt: skip
    return AugmentedRow(written, done)


def _file_stem(row_id: str) -> str:
    """A file name for a row: its id with path separators and control characters replaced, and
    an id too long for a file name cut and told apart by a hash of the whole id."""
    stem = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in row_id)
    if len(stem.encode("utf-8")) > 160:
        digest = hashlib.sha1(row_id.encode("utf-8")).hexdigest()[:16]
        stem = stem.encode("utf-8")[:120].decode("utf-8", "ignore") + "-" + digest
    return stem


def augment_manifest(
    rows: Sequence[Utterance],
    out: str | os.PathLike[str],
    conditions: ConditionsConfig,
    *,
    seed: int = 0,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[AugmentedRow], list[str]]:
    """Write an augmented copy of every row to ``out/wav`` (16-bit WAV at the line's rate when a
    line was drawn, else 16 kHz), ``out/manifest.jsonl`` and ``out/conditions.jsonl`` (each id
    and what was done to it, for error rates per codec or SNR). Each row's draws come from
    ``seed`` and its id, so the output does not depend on ``jobs`` (processes). Rows that cannot
    be read or written are left out and returned as one-line reasons, as are rows whose id an
    earlier row has; the others are written. A run stopped part-way (Ctrl-C, a
    crash) still writes the manifest of the rows it finished."""
    folder = Path(out)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    results: list[AugmentedRow | str] = []
    ids: set[str] = set()
    stems: set[str] = set()
    work: list[tuple[Utterance, str]] = []
    for row in rows:  # one file per row: a second row of the same id would overwrite the first's audio
        if row.id in ids:
            results.append(f"{row.id}: duplicate id (an earlier row has it)")
            continue
        ids.add(row.id)
        stem = _file_stem(row.id)
        if stem.casefold() in stems:  # ids that differ in case or in replaced characters only
            stem += "-" + hashlib.sha1(row.id.encode("utf-8")).hexdigest()[:8]
        stems.add(stem.casefold())
        work.append((row, stem))
    try:
        if jobs <= 1:
            _start_worker(conditions, seed, str(folder))
            for job in work:
                results.append(_augment_row(job))
                if progress is not None:
                    progress(1)
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # torch's threads do not survive fork
            with context.Pool(jobs, _start_worker, (conditions, seed, str(folder))) as pool:
                for result in pool.imap(_augment_row, work, chunksize=8):
                    results.append(result)
                    if progress is not None:
                        progress(1)
    finally:
        written = [r for r in results if isinstance(r, AugmentedRow)]
        write_manifest(folder / "manifest.jsonl", [r.row for r in written])
        lines = [json.dumps({"id": r.row.id, "conditions": list(r.conditions)}) for r in written]
        (folder / "conditions.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return written, [r for r in results if isinstance(r, str)]
