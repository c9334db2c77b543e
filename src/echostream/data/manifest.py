"""Utterance manifests: one JSON object per line, one utterance per object.

A row names an audio file and what is said in it::

    {"id": "spk1-0001", "audio": "wavs/spk1-0001.wav", "text": "hello there", "duration": 1.52}
    {"id": "rec7-003", "audio": "/data/rec7.flac", "text": "yes", "duration": 0.61,
     "offset": 12.3, "speaker": "rec7", "language": "en"}

Required keys: ``id`` (unique), ``audio`` (a path; a relative one is relative to the manifest's
folder), ``text`` (the transcript), ``duration`` (seconds). Optional keys: ``offset`` (seconds; when
present the row is the segment ``[offset, offset + duration)`` of the file, when absent the row is
the whole file), ``speaker``, ``language``. Any other key is an error naming the line and the key.

In memory an :class:`Utterance`'s ``audio`` is a path usable from the current directory:
:func:`read_manifest` resolves relative paths against the manifest's folder, and
:func:`write_manifest` writes paths relative to the new manifest's folder, so that a manifest and
its audio can move together. "The manifest's folder" is the folder as it lies on disk (symlinks
followed), so a relative path means the same file whichever link the manifest is reached through.

Importers build rows from Kaldi-style data folders (:func:`import_kaldi_dir`) and from folders of
``X.wav`` + ``X.txt`` pairs (:func:`import_paired_dir`). :func:`validate_manifest` checks rows
against their audio before training and sets aside, with a reason each, the rows that would fail
mid-epoch.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from echostream.audio import MAX_CHANNELS, AudioError, audio_duration, load_audio
from echostream.config import ConfigError, from_dict

DURATION_TOLERANCE = 0.1
"""Seconds by which a row's duration may disagree with its audio file."""
PAIRED_AUDIO_SUFFIXES = (".wav", ".flac")
"""Audio files :func:`import_paired_dir` pairs with a ``.txt`` file of the same stem."""


class ManifestError(ValueError):
    """A manifest or data folder that cannot be read; the message is one line naming the file."""


@dataclass(frozen=True, kw_only=True)
class Utterance:
    """One manifest row.

    Attributes:
        id: unique within its manifest.
        audio: path of the audio file.
        text: transcript (not normalised here; see ``echostream.text.normalize``).
        duration: seconds of speech: the whole file, or the segment starting at ``offset``.
        offset: start of the segment in the file (seconds); ``None`` means the row is the whole file.
        speaker: speaker label, if known.
        language: language code (``"en"``, ``"vi"``...), if known.
        channel: the channel that holds the speech (0-based: 0 left, 1 right), e.g. one side of
            a stereo call recording; ``None`` means the average of all channels.
    """

    id: str
    audio: str
    text: str
    duration: float
    offset: float | None = None
    speaker: str | None = None
    language: str | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if not self.id or self.id != self.id.strip():
            raise ValueError(f"id {self.id!r} must be non-empty without surrounding spaces")
        if not self.audio:
            raise ValueError(f"{self.id}: audio path is empty")
        if not math.isfinite(self.duration) or self.duration < 0:
            raise ValueError(f"{self.id}: duration must be >= 0 seconds, got {self.duration!r}")
        if self.channel is not None and not 0 <= self.channel < MAX_CHANNELS:
            raise ValueError(f"{self.id}: channel must be in [0, {MAX_CHANNELS}), got {self.channel!r}")
        if self.offset is not None and (not math.isfinite(self.offset) or self.offset < 0):
            raise ValueError(f"{self.id}: offset must be >= 0 seconds, got {self.offset!r}")

    @property
    def end(self) -> float:
        """End of the speech in the file (seconds)."""
        return (self.offset or 0.0) + self.duration


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """Read a JSONL manifest; relative audio paths are resolved against the manifest's folder.

    Raises:
        ManifestError: missing file, non-UTF-8 text, a line that is not a JSON object, an unknown
            or missing key, a value of the wrong type; the message names ``file:line``.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{file}: manifest not found") from None
    except IsADirectoryError:
        raise ManifestError(f"{file}: is a directory, not a manifest file") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{file}: not UTF-8 text") from None
    base = file.parent
    physical = base.resolve()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            row = from_dict(Utterance, data, where)
        except ConfigError as err:  # "file:3.duration: ..." -> "file:3: duration: ..."
            message = str(err)
            if message.startswith(f"{where}."):
                message = f"{where}: {message[len(where) + 1 :]}"
            raise ManifestError(message) from None
        rows.append(replace(row, audio=_resolve_in_manifest(row.audio, base, physical)))
    return rows


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Utterance]) -> None:
    """Write rows as JSONL, audio paths relative to the manifest's folder; optional keys only when set.

    The file is written whole to a temporary name and then renamed, so a reader never sees half.
    """
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    base = file.parent.resolve()
    temporary = file.with_name(f".{file.name}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(_row_dict(row, base), ensure_ascii=False) + "\n")
    temporary.replace(file)


def _row_dict(row: Utterance, base: Path) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "audio": _relative(row.audio, base),
        "text": row.text,
        "duration": round(row.duration, 4),
    }
    for key in ("offset", "speaker", "language", "channel"):
        value = getattr(row, key)
        if value is not None:
            data[key] = round(value, 4) if key == "offset" else value
    return data


def _resolve(audio: str, base: Path) -> str:
    return os.path.normpath(audio if os.path.isabs(audio) else base / audio)


def _resolve_in_manifest(audio: str, base: Path, physical: Path) -> str:
    """A manifest row's audio path, relative ones against the manifest's folder as it lies on disk
    (``physical``: symlinks followed, so ``../x`` means what the file system means by it), or
    against the folder as named (``base``) where only that one exists: manifests written before
    paths were made relative to the physical folder, reached through a symlinked folder."""
    named = _resolve(audio, base)
    if os.path.isabs(audio) or ".." not in Path(audio).parts:
        return named  # the same file either way
    on_disk = _resolve(audio, physical)
    if on_disk == named or (not os.path.exists(on_disk) and os.path.exists(named)):
        return named
    return on_disk


def _relative(audio: str, base: Path) -> str:
    """``audio`` relative to the folder ``base`` (symlinks resolved), from the folder the audio
    lies in as the file system sees it (its own file name kept: a linked file stays a link)."""
    where = Path(os.path.abspath(audio))
    absolute = where.parent.resolve() / where.name
    try:
        return Path(os.path.relpath(absolute, base)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(absolute)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class ProblemKind(StrEnum):
    """Why a row was set aside."""

    DUPLICATE_ID = "duplicate id"
    MISSING_AUDIO = "missing audio"
    UNREADABLE_AUDIO = "unreadable audio"
    EMPTY_TEXT = "empty text"
    MISSING_TEXT = "missing text"
    DURATION_MISMATCH = "duration mismatch"
    UNSUPPORTED_AUDIO = "unsupported audio"


@dataclass(frozen=True, kw_only=True)
class ManifestProblem:
    """A row (or would-be row) that cannot be used, and why, in one line."""

    id: str
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"{self.id}: {self.kind}: {self.message}"


def problem_counts(problems: Iterable[ManifestProblem]) -> dict[ProblemKind, int]:
    """How many problems of each kind, most frequent first."""
    return dict(Counter(p.kind for p in problems).most_common())


def validate_manifest(
    rows: Sequence[Utterance],
    *,
    tolerance: float = DURATION_TOLERANCE,
    decode: bool = False,
    progress: Callable[[int], None] | None = None,
    allow_empty_text: bool = False,
) -> tuple[list[Utterance], list[ManifestProblem]]:
    """Split rows into those a training epoch can use and those it would fail on.

    A row is set aside when its id repeats an earlier row's, its audio is missing or unreadable,
    its text is empty (after stripping; unless ``allow_empty_text``: audio without speech), or its
    duration disagrees with the file: a whole-file row
    (``offset is None``) must match the file's duration within ``tolerance`` seconds, a segment must
    end no later than ``tolerance`` after the file does. Durations come from the file header; with
    ``decode=True`` every file is also decoded in full (slow; catches corrupt sample data).

    Args:
        rows: manifest rows, audio paths usable from the current directory.
        tolerance: seconds of disagreement allowed between a row's duration and its file.
        decode: decode every audio file completely, not just its header.
        progress: called with 1 after each row is checked.

    Returns:
        ``(good, problems)``: the usable rows in their original order, and one problem per row set
        aside (never raises for a bad row).
    """
    if not 0 <= tolerance < math.inf:  # NaN would turn the duration check off
        raise ValueError(f"the duration tolerance must be a number of seconds >= 0, got {tolerance}")
    good: list[Utterance] = []
    problems: list[ManifestProblem] = []
    seen: set[str] = set()
    file_durations: dict[tuple[str, int | None], float | ManifestProblem] = {}  # a file (and channel) is checked once
    for row in rows:
        problem = _check_row(row, seen, file_durations, tolerance, decode, allow_empty_text)
        seen.add(row.id)
        if problem is None:
            good.append(row)
        else:
            problems.append(problem)
        if progress is not None:
            progress(1)
    return good, problems


def _check_row(
    row: Utterance,
    seen: set[str],
    file_durations: dict[tuple[str, int | None], float | ManifestProblem],
    tolerance: float,
    decode: bool,
    allow_empty_text: bool = False,
) -> ManifestProblem | None:
    if row.id in seen:
        return ManifestProblem(
            id=row.id, kind=ProblemKind.DUPLICATE_ID, message="id repeats an earlier row"
        )
    if not row.text.strip() and not allow_empty_text:
        return ManifestProblem(
            id=row.id, kind=ProblemKind.EMPTY_TEXT, message="transcript is empty"
        )
    key = (row.audio, row.channel)
    if key not in file_durations:
        file_durations[key] = _file_duration(row.id, row.audio, decode, row.channel)
    found = file_durations[key]
    if isinstance(found, ManifestProblem):
        return ManifestProblem(id=row.id, kind=found.kind, message=found.message)
    if row.offset is None and abs(row.duration - found) > tolerance:
        return ManifestProblem(
            id=row.id,
            kind=ProblemKind.DURATION_MISMATCH,
            message=f"duration {row.duration:.3f} s but {row.audio} lasts {found:.3f} s",
        )
    if row.offset is not None and row.end > found + tolerance:
        return ManifestProblem(
            id=row.id,
            kind=ProblemKind.DURATION_MISMATCH,
            message=f"segment ends at {row.end:.3f} s but {row.audio} lasts {found:.3f} s",
        )
    return None


def _file_duration(
    utterance_id: str, audio: str, decode: bool, channel: int | None = None
) -> float | ManifestProblem:
    """The file's duration in seconds, or the problem that prevents reading it (``channel`` of
    it, when given)."""
    if not os.path.exists(audio):
        return ManifestProblem(
            id=utterance_id, kind=ProblemKind.MISSING_AUDIO, message=f"{audio}: file not found"
        )
    try:
        duration = audio_duration(audio, channel=channel)
        if decode:
            load_audio(audio, channel=channel)
    except AudioError as err:
        return ManifestProblem(id=utterance_id, kind=ProblemKind.UNREADABLE_AUDIO, message=str(err))
    return duration


# --------------------------------------------------------------------------------------------
# Importers
# --------------------------------------------------------------------------------------------


def import_kaldi_dir(
    folder: str | os.PathLike[str],
    *,
    audio_root: str | os.PathLike[str] | None = None,
    language: str | None = None,
) -> tuple[list[Utterance], list[ManifestProblem]]:
    """Rows from a Kaldi-style data folder.

    Reads ``wav.scp`` (``recording-id path``) and ``text`` (``utterance-id words...``), and when
    present ``utt2spk`` (``utterance-id speaker``) and ``segments`` (``utterance-id recording-id
    start end``, seconds; ``end`` of -1 means the end of the file). Without ``segments`` an
    utterance is a whole recording (utterance id = recording id). Durations are read from the audio
    headers; segments take theirs from ``segments``.

    Args:
        folder: the data folder.
        audio_root: relative paths in ``wav.scp`` are relative to this folder. Kaldi scripts run
            from the recipe folder, so this defaults to the current directory.
        language: language code written into every row.

    Returns:
        ``(rows, problems)``: rows in the order of ``text``; problems for utterances that cannot be
        made into rows (no recording, piped ``wav.scp`` commands, unreadable audio, missing text).

    Raises:
        ManifestError: a required file is missing or a line is malformed (names ``file:line``).
    """
    data = Path(folder)
    if not data.is_dir():
        raise ManifestError(f"{data}: not a directory")
    root = Path(audio_root) if audio_root is not None else Path.cwd()
    recordings = _read_table(data / "wav.scp", min_fields=2, join_rest=True)
    texts = _read_table(data / "text", min_fields=1)
    speakers = _read_table(data / "utt2spk", min_fields=2, required=False)
    segments = _read_table(data / "segments", min_fields=4, required=False)

    problems: list[ManifestProblem] = []
    durations: dict[str, float | ManifestProblem] = {}  # recording id -> header duration
    rows = []
    for utt, words in texts.items():
        if segments:
            if utt not in segments:
                problems.append(_problem(utt, ProblemKind.MISSING_AUDIO, "not listed in segments"))
                continue
            rec_id, start_s, end_s = segments[utt][:3]
        else:
            rec_id, start_s, end_s = utt, "", ""
        if rec_id not in recordings:
            problems.append(
                _problem(utt, ProblemKind.MISSING_AUDIO, f"recording {rec_id} not in wav.scp")
            )
            continue
        if rec_id not in durations:
            durations[rec_id] = _recording_duration(rec_id, recordings[rec_id], root)
        found = durations[rec_id]
        if isinstance(found, ManifestProblem):
            problems.append(ManifestProblem(id=utt, kind=found.kind, message=found.message))
            continue
        audio = _resolve(recordings[rec_id][0], root)
        offset: float | None = None
        duration = found
        if segments:
            start, end = _segment_times(data / "segments", utt, start_s, end_s)
            if not (0 <= start < math.inf and (end == -1 or 0 <= end < math.inf)):
                problems.append(_problem(utt, ProblemKind.DURATION_MISMATCH,
                                         f"segment {start_s} {end_s}: start and end must be seconds >= 0 "
                                         "(end -1: the file's end)"))  # fmt: skip
                continue
            offset, duration = start, (found if end < 0 else end) - start
            if duration <= 0:
                problems.append(
                    _problem(
                        utt, ProblemKind.DURATION_MISMATCH, f"segment {start}-{end} s is empty"
                    )
                )
                continue
            if offset + duration > found + DURATION_TOLERANCE:
                problems.append(_problem(utt, ProblemKind.DURATION_MISMATCH,
                                         f"segment ends at {offset + duration:.3f} s but {audio} lasts "
                                         f"{found:.3f} s"))  # fmt: skip
                continue
        speaker = speakers[utt][0] if utt in speakers else None
        rows.append(
            Utterance(
                id=utt,
                audio=audio,
                text=" ".join(words),
                duration=duration,
                offset=offset,
                speaker=speaker,
                language=language,
            )
        )
    return rows, problems


def _problem(utterance_id: str, kind: ProblemKind, message: str) -> ManifestProblem:
    return ManifestProblem(id=utterance_id, kind=kind, message=message)


def _read_table(
    path: Path, *, min_fields: int, required: bool = True, join_rest: bool = False
) -> dict[str, list[str]]:
    """``key field...`` lines -> {key: fields}; blank lines are skipped, a repeated key is an error."""
    if not path.is_file():
        if required:
            raise ManifestError(f"{path}: file not found")
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    table: dict[str, list[str]] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_fields:
            raise ManifestError(
                f"{path}:{number}: expected at least {min_fields} fields, got {line!r}"
            )
        if fields[0] in table:
            raise ManifestError(f"{path}:{number}: {fields[0]} appears twice")
        if join_rest:  # the rest of the line is one value (a path with spaces, a command)
            table[fields[0]] = [line.strip()[len(fields[0]) :].strip()]
        else:
            table[fields[0]] = fields[1:]
    return table


def _recording_duration(rec_id: str, entry: list[str], root: Path) -> float | ManifestProblem:
    location = entry[0]
    if location.endswith("|") or location.startswith("-"):
        return _problem(
            rec_id,
            ProblemKind.UNSUPPORTED_AUDIO,
            f"wav.scp entry is a command ({location!r}); convert it to a file",
        )
    return _file_duration(rec_id, _resolve(location, root), decode=False)


def _segment_times(path: Path, utt: str, start_s: str, end_s: str) -> tuple[float, float]:
    try:
        return float(start_s), float(end_s)
    except ValueError:
        raise ManifestError(
            f"{path}: {utt}: start and end must be numbers, got {start_s!r} {end_s!r}"
        ) from None


def import_paired_dir(
    folder: str | os.PathLike[str], *, language: str | None = None
) -> tuple[list[Utterance], list[ManifestProblem]]:
    """Rows from a folder tree of audio files each next to a transcript: ``X.wav`` + ``X.txt``.

    Audio files are those with a suffix in ``PAIRED_AUDIO_SUFFIXES``. An utterance's id is its
    path below ``folder`` without the suffix (``spk1/0003``); its text is the ``.txt`` file's
    content with whitespace runs (newlines included) joined by single spaces.

    Returns:
        ``(rows, problems)``: rows sorted by id; problems for audio without a transcript, a
        transcript without audio, non-UTF-8 transcripts and unreadable audio.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory")
    audio_files: dict[str, Path] = {}
    text_files: dict[str, Path] = {}
    problems: list[ManifestProblem] = []
    for file in sorted(root.rglob("*")):
        if not file.is_file():
            continue
        key = file.relative_to(root).with_suffix("").as_posix()
        if file.suffix.lower() in PAIRED_AUDIO_SUFFIXES:
            if key in audio_files:
                problems.append(
                    _problem(
                        key,
                        ProblemKind.DUPLICATE_ID,
                        f"{file.name} and {audio_files[key].name} share a stem",
                    )
                )
                continue
            audio_files[key] = file
        elif file.suffix == ".txt":
            text_files[key] = file
    rows = []
    for key in sorted(set(audio_files) | set(text_files)):
        if key not in audio_files:
            problems.append(
                _problem(key, ProblemKind.MISSING_AUDIO, f"{text_files[key]} has no audio file")
            )
            continue
        if key not in text_files:
            problems.append(
                _problem(key, ProblemKind.MISSING_TEXT, f"{audio_files[key]} has no .txt file")
            )
            continue
        try:
            text = " ".join(text_files[key].read_text(encoding="utf-8").split())
        except UnicodeDecodeError:
            problems.append(
                _problem(key, ProblemKind.MISSING_TEXT, f"{text_files[key]}: not UTF-8 text")
            )
            continue
        found = _file_duration(key, str(audio_files[key]), decode=False)
        if isinstance(found, ManifestProblem):
            problems.append(found)
            continue
        rows.append(
            Utterance(
                id=key, audio=str(audio_files[key]), text=text, duration=found, language=language
            )
        )
    return rows, problems
