"""Two-sided calls rendered with text-to-speech: an agent and a customer, each their own voice.

A dialogue file is JSONL, one call per line::

    {"id": "call-0001", "turns": [{"role": "agent", "text": "Thank you for calling ..."},
                                  {"role": "customer", "text": "Hi, I would like to ..."}]}

:func:`render_dialogues` speaks every turn with its side's voice (drawn per call, with a speaking
rate and pitch of its own that the side keeps for the whole call), lays the turns on one timeline
with pauses between them and, now and then, the next turn starting a few hundred milliseconds
before the previous one ends (an overlap), and writes each call as a stereo recording, agent on
the left channel and customer on the right, as call-recording systems store them. The manifest
has one row per turn: the segment of the call (``offset``, ``duration``) on its side's
``channel``, with the turn's text, so training and evaluation read one side of the call.

Shape legend: N samples of the call at 16 kHz.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from echostream.audio import SAMPLE_RATE, load_audio
from echostream.data.manifest import Utterance, write_manifest
from echostream.data.synth import RenderJob, SynthError, SynthFailure, Voice, render_job

ROLES = ("agent", "customer")
"""Sides of a call; the agent is on channel 0 (left), the customer on channel 1 (right)."""


@dataclass(frozen=True)
class Turn:
    role: str  # one of ROLES
    text: str


@dataclass(frozen=True)
class Dialogue:
    id: str
    turns: tuple[Turn, ...]


def read_dialogues(path: str | os.PathLike[str]) -> list[Dialogue]:
    """Dialogues from a JSONL file (module docstring); one-line SynthError naming ``file:line``."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise SynthError(f"{file}: dialogue file not found") from None
    except UnicodeDecodeError:
        raise SynthError(f"{file}: not UTF-8 text") from None
    dialogues, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            data = json.loads(line)
            ident, turns = data["id"], data["turns"]
            parsed = tuple(Turn(t["role"], " ".join(str(t["text"]).split())) for t in turns)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SynthError(f"{where}: expected {{\"id\", \"turns\": [{{\"role\", \"text\"}}]}} ({err})") from None
        if not isinstance(ident, str) or not ident.strip() or "/" in ident or ident in seen:
            raise SynthError(f"{where}: id {ident!r} must be a unique non-empty name without '/'")
        bad = [t.role for t in parsed if t.role not in ROLES]
        if bad:
            raise SynthError(f"{where}: role {bad[0]!r} is not one of {', '.join(ROLES)}")
        if not parsed or any(not t.text for t in parsed):
            raise SynthError(f"{where}: a call needs turns, each with text")
        seen.add(ident)
        dialogues.append(Dialogue(ident, parsed))
    if not dialogues:
        raise SynthError(f"{file}: no dialogues")
    return dialogues


@dataclass(frozen=True, kw_only=True)
class CallConfig:
    """How :func:`render_dialogues` lays out a call: ``pause`` between turns ([min, max] s),
    ``overlap_probability`` that the next turn starts ``overlap`` ([min, max] s) before the
    previous one ends, a speaking ``rate`` factor and ``pitch`` (semitones) drawn per side."""

    pause: tuple[float, float] = (0.2, 0.9)
    overlap_probability: float = 0.2
    overlap: tuple[float, float] = (0.1, 0.4)
    rate: tuple[float, float] = (0.9, 1.15)
    pitch: tuple[float, float] = (-2.0, 2.0)
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        for name in ("pause", "overlap", "rate", "pitch"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be [min, max], got {getattr(self, name)}")
        if not 0 <= self.overlap_probability <= 1 or self.pause[0] < 0 or self.overlap[0] < 0:
            raise ValueError("overlap_probability must be in [0, 1], pause and overlap >= 0")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class RenderedCall:
    rows: tuple[Utterance, ...]  # one per turn
    failure: str | None = None  # why the call could not be rendered


def _side_voices(voices: Sequence[Voice], rng: random.Random) -> tuple[Voice, Voice]:
    """Two different voices (of different engines when there are several)."""
    agent = rng.choice(voices)
    others = [v for v in voices if v.engine != agent.engine] or [v for v in voices if v != agent] or [agent]
    return agent, rng.choice(others)


def _render_call(dialogue: Dialogue, voices: Sequence[Voice], cfg: CallConfig, folder: Path) -> RenderedCall:
    rng = random.Random(f"{cfg.seed}:{dialogue.id}")
    sides = dict(zip(ROLES, _side_voices(voices, rng), strict=True))
    style = {role: (rng.uniform(*cfg.rate), rng.uniform(*cfg.pitch)) for role in ROLES}
    pieces: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="echostream-call-") as tmp:
        for i, turn in enumerate(dialogue.turns):
            voice = sides[turn.role]
            rate, pitch = style[turn.role]
            job = RenderJob(id=f"{dialogue.id}-{i:02d}", text=turn.text, voice=voice, rate=rate, pitch=pitch)
            outcome = render_job(job, Path(tmp) / f"{i}.wav", "en")
            if isinstance(outcome, SynthFailure):
                return RenderedCall((), f"{dialogue.id}: turn {i} ({voice.speaker}): {outcome.message}")
            pieces.append(load_audio(outcome.audio))
    starts, cursor = [], 0.0
    for i, piece in enumerate(pieces):
        if i:
            if rng.random() < cfg.overlap_probability and dialogue.turns[i].role != dialogue.turns[i - 1].role:
                cursor -= min(rng.uniform(*cfg.overlap), 0.5 * len(pieces[i - 1]) / SAMPLE_RATE)
            else:
                cursor += rng.uniform(*cfg.pause)
        starts.append(max(0.0, cursor))
        cursor = starts[-1] + len(piece) / SAMPLE_RATE
    lead = rng.uniform(0.2, 0.6)  # the recording starts before the first word
    total = round((cursor + 2 * lead) * SAMPLE_RATE)
    call = np.zeros((total, 2), np.float32)  # (N, 2) agent | customer
    rows = []
    path = folder / "wav" / f"{dialogue.id}.wav"
    for i, (turn, piece, start) in enumerate(zip(dialogue.turns, pieces, starts, strict=True)):
        channel = ROLES.index(turn.role)
        first = round((start + lead) * SAMPLE_RATE)
        call[first : first + len(piece), channel] += piece
        rows.append(Utterance(
            id=f"{dialogue.id}-{i:02d}", audio=str(path), text=turn.text, duration=round(len(piece) / SAMPLE_RATE, 4),
            offset=round(first / SAMPLE_RATE, 4), speaker=sides[turn.role].speaker, language="en", channel=channel,
        ))  # fmt: skip
    sf.write(path, call, SAMPLE_RATE, subtype="PCM_16")
    return RenderedCall(tuple(rows))


def render_dialogues(
    dialogues: Sequence[Dialogue],
    out: str | os.PathLike[str],
    voices: Sequence[Voice],
    cfg: CallConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Utterance], list[str]]:
    """Render every call into ``out/wav/<id>.wav`` (stereo, 16 kHz) and ``out/manifest.jsonl``
    (one row per turn); returns the rows and one line per call that failed (the others are kept).
    Everything drawn depends on ``cfg.seed`` and the call's id only."""
    if not voices:
        raise SynthError("no TTS voice is available (run .ci/install-tts)")
    folder = Path(out)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows: list[Utterance] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for call in pool.map(lambda d: _render_call(d, voices, cfg, folder), dialogues):
            rows.extend(call.rows)
            if call.failure is not None:
                failures.append(call.failure)
            if progress is not None:
                progress(1)
    write_manifest(folder / "manifest.jsonl", rows)
    return rows, failures
