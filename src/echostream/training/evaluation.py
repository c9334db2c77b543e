"""Scoring transcripts: word and character error rates (jiwer), per utterance, per group and in
total; the validation of a model during training (:func:`validate`); and the evaluation of a model
on a manifest (``echostream eval``).

References and hypotheses are normalised the same way before scoring (``echostream.text.normalize``,
the default normaliser unless told otherwise), so case and punctuation are not counted as errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import torch

from echostream.audio import AudioError
from echostream.data.manifest import Utterance
from echostream.encoders.base import ChunkContext
from echostream.heads.ctc import collapse_ctc, greedy_labels
from echostream.model import AudioLike, Model
from echostream.models.asr import ASRModel
from echostream.text.normalize import NormalizerConfig, normalize_text
from echostream.text.tokenizer import Tokenizer
from echostream.training.dataset import Batch, load_utterance

GROUP_FIELDS = ("speaker", "language")
ROWS_PER_CALL = 128  # manifest rows transcribed per Model.transcribe call (bounds memory)


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations turning a reference into a hypothesis, and the reference's length."""

    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    @property
    def rate(self) -> float:
        """Errors per reference unit (word or character); inf for an empty reference with errors.

        >>> ErrorCounts(substitutions=1, deletions=1, reference_length=4).rate
        0.5
        """
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            substitutions=self.substitutions + other.substitutions,
            insertions=self.insertions + other.insertions,
            deletions=self.deletions + other.deletions,
            reference_length=self.reference_length + other.reference_length,
        )


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word-level edit operations (words are split at whitespace).

    >>> word_errors("the cat sat", "the bat sat down")
    ErrorCounts(substitutions=1, insertions=1, deletions=0, reference_length=3)
    """
    out = jiwer.process_words(reference, hypothesis)
    return ErrorCounts(
        substitutions=out.substitutions,
        insertions=out.insertions,
        deletions=out.deletions,
        reference_length=len(reference.split()),
    )


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character-level edit operations (spaces count as characters).

    >>> char_errors("abc", "abd").rate
    0.3333333333333333
    """
    out = jiwer.process_characters(reference, hypothesis)
    return ErrorCounts(
        substitutions=out.substitutions,
        insertions=out.insertions,
        deletions=out.deletions,
        reference_length=len(reference),
    )


def total(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    out = ErrorCounts()
    for c in counts:
        out = out + c
    return out


@dataclass(frozen=True)
class UtteranceResult:
    """One scored utterance (texts normalised)."""

    id: str
    reference: str
    hypothesis: str
    words: ErrorCounts
    chars: ErrorCounts
    duration: float
    group: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "word_errors": self.words.errors,
            "substitutions": self.words.substitutions,
            "insertions": self.words.insertions,
            "deletions": self.words.deletions,
            "words": self.words.reference_length,
            "char_errors": self.chars.errors,
            "chars": self.chars.reference_length,
            "duration": round(self.duration, 4),
            **({"group": self.group} if self.group is not None else {}),
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> UtteranceResult:
        """The inverse of :meth:`as_dict` (character errors come back as one count)."""
        return cls(
            id=row["id"], reference=row["reference"], hypothesis=row["hypothesis"],
            words=ErrorCounts(row["substitutions"], row["insertions"], row["deletions"], row["words"]),
            chars=ErrorCounts(substitutions=row["char_errors"], reference_length=row["chars"]),
            duration=row["duration"], group=row.get("group"),
        )  # fmt: skip


@dataclass(frozen=True)
class EvalReport:
    """What evaluating a model on a manifest found."""

    utterances: list[UtteranceResult]
    audio_seconds: float
    wall_seconds: float
    failed: list[str] = field(default_factory=list)  # "id: reason" of rows not transcribed
    skipped_empty: int = 0  # rows whose normalised reference is empty

    @property
    def words(self) -> ErrorCounts:
        return total(u.words for u in self.utterances)

    @property
    def chars(self) -> ErrorCounts:
        return total(u.chars for u in self.utterances)

    @property
    def real_time_factor(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")

    def groups(self) -> dict[str, tuple[int, ErrorCounts, ErrorCounts]]:
        """Group -> (utterances, word errors, character errors), groups sorted by name."""
        out: dict[str, tuple[int, ErrorCounts, ErrorCounts]] = {}
        for u in self.utterances:
            if u.group is None:
                continue
            n, w, c = out.get(u.group, (0, ErrorCounts(), ErrorCounts()))
            out[u.group] = (n + 1, w + u.words, c + u.chars)
        return dict(sorted(out.items()))

    def worst(self, count: int) -> list[UtteranceResult]:
        """The ``count`` utterances with the most word errors (ties: higher error rate first)."""
        ranked = sorted(self.utterances, key=lambda u: (-u.words.errors, -u.words.rate, u.id))
        return [u for u in ranked[:count] if u.words.errors > 0]


@dataclass(frozen=True)
class ValidationResult:
    """Validation of the current weights: mean loss per utterance, WER, CER."""

    loss: float
    words: ErrorCounts
    chars: ErrorCounts
    utterances: int

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate


def validate(
    model: ASRModel,
    batches: Iterator[Batch],
    context: ChunkContext,
    tokenizer: Tokenizer,
    normalizer: NormalizerConfig | None,
    device: torch.device,
    precision: str = "fp32",
) -> ValidationResult:
    """Loss and greedy-CTC error rates of ``model`` over ``batches`` under ``context``.

    The encoder runs the masked batch: the computation of batch and long-form inference. The
    mode of ``model`` (train/eval) is restored afterwards. Hypotheses are normalised like the
    references (``batch.texts``) before scoring.
    """
    was_training = model.training
    model.eval()
    loss_sum, count = 0.0, 0
    words: list[ErrorCounts] = []
    chars: list[ErrorCounts] = []
    try:
        with torch.no_grad(), autocast(device, precision):
            for batch in batches:
                if batch.size == 0:
                    continue
                x, x_lens = batch.feats.to(device), batch.feat_lens.to(device)
                out = model.loss(
                    x, x_lens, batch.tokens.to(device), batch.token_lens.to(device), context
                )
                loss_sum += float(out.total) * batch.size
                count += batch.size
                log_probs, lens = model(x, x_lens, context)  # (B, T', V), (B,)
                for labels, reference in zip(greedy_labels(log_probs, lens), batch.texts):
                    text = tokenizer.decode(collapse_ctc(labels, model.cfg.blank_id).tokens)
                    hypothesis = (
                        normalize_text(text, normalizer) if normalizer is not None else text
                    )
                    words.append(word_errors(reference, hypothesis))
                    chars.append(char_errors(reference, hypothesis))
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no validation utterance could be read")
    return ValidationResult(
        loss=loss_sum / count, words=total(words), chars=total(chars), utterances=count
    )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a training ``precision`` (fp32: none), for training and validation."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def group_of(row: Utterance, field_name: str | None) -> str | None:
    """The group of a row by a manifest field: the part before the first ``:``
    (``espeak:en-us+f2`` -> ``espeak``), ``?`` when the field is not set."""
    if field_name is None:
        return None
    if field_name not in GROUP_FIELDS:
        raise ValueError(f"cannot group by {field_name!r} (choose {', '.join(GROUP_FIELDS)})")
    value = getattr(row, field_name)
    return "?" if value is None else value.split(":", 1)[0]


def evaluate(
    model: Model,
    rows: Sequence[Utterance],
    *,
    chunk_size: int,
    left_context: int,
    right_context: int | None,
    decoding: str = "greedy",
    beam_size: int = 10,
    normalizer: NormalizerConfig | None,
    group_by: str | None = None,
    progress: Callable[[float], None] | None = None,
    score_empty: bool = False,
) -> EvalReport:
    """Transcribe every row with ``model`` and score it against the row's transcript.

    Whole-file rows are decoded from their files (any length); segment rows (with ``offset``)
    are read and decoded as arrays. A row whose audio cannot be read is listed in ``failed``;
    a row whose normalised transcript is empty is counted in ``skipped_empty``, unless
    ``score_empty``: then it is decoded as audio without speech (silence, noise), and every word
    output for it is an insertion. ``progress`` is
    called with the audio seconds of each decoded piece.
    """
    if group_by is not None and group_by not in GROUP_FIELDS:  # before any decoding
        raise ValueError(f"cannot group by {group_by!r} (choose {', '.join(GROUP_FIELDS)})")

    def norm(text: str) -> str:
        return (
            normalize_text(text, normalizer) if normalizer is not None else " ".join(text.split())
        )

    usable = [row for row in rows if score_empty or norm(row.text)]
    results: list[UtteranceResult] = []
    failed: list[str] = []
    audio_seconds = 0.0
    started = time.perf_counter()
    for first in range(0, len(usable), ROWS_PER_CALL):
        lot = usable[first : first + ROWS_PER_CALL]
        inputs: list[AudioLike] = []
        readable: list[Utterance] = []
        for row in lot:
            if row.offset is None and row.channel is None:
                inputs.append(row.audio)
            else:
                try:
                    inputs.append((load_utterance(row, model.sample_rate), model.sample_rate))
                except AudioError as err:
                    failed.append(f"{row.id}: {err}")
                    continue
            readable.append(row)
        if not inputs:
            continue
        transcripts = model.transcribe(
            inputs,
            chunk_size=chunk_size,
            left_context=left_context,
            right_context=right_context,
            decoding=decoding,
            beam_size=beam_size,
            progress=progress,
        )
        for row, transcript in zip(readable, transcripts):
            if transcript.error is not None:
                failed.append(f"{row.id}: {transcript.error}")
                continue
            reference, hypothesis = norm(row.text), norm(transcript.text)
            audio_seconds += transcript.duration
            results.append(
                UtteranceResult(
                    id=row.id,
                    reference=reference,
                    hypothesis=hypothesis,
                    words=word_errors(reference, hypothesis),
                    chars=char_errors(reference, hypothesis),
                    duration=transcript.duration,
                    group=group_of(row, group_by),
                )
            )
    return EvalReport(
        utterances=results,
        audio_seconds=audio_seconds,
        wall_seconds=time.perf_counter() - started,
        failed=failed,
        skipped_empty=len(rows) - len(usable),
    )


def _percent(counts: ErrorCounts) -> str:
    return f"{100 * counts.rate:.2f}%"


def format_report(report: EvalReport, *, worst: int = 10, group_by: str | None = None) -> str:
    """The report as text: totals, real-time factor, per-group rates, worst utterances."""
    w, c = report.words, report.chars
    if not report.utterances:
        return (
            f"no utterance could be scored ({len(report.failed)} unreadable, "
            f"{report.skipped_empty} with an empty transcript): WER and CER undefined"
        )
    speechless = [u for u in report.utterances if u.words.reference_length == 0]
    lines = (
        [
            (
                f"WER {_percent(w)} ({w.errors} errors in {w.reference_length} words: "
                f"{w.substitutions} substitutions, {w.insertions} insertions, {w.deletions} deletions)"
            ),
            f"CER {_percent(c)} ({c.errors} errors in {c.reference_length} characters)",
        ]
        if w.reference_length
        else []
    )
    if speechless:
        output = [u for u in speechless if u.hypothesis]
        lines.append(
            f"without speech: {len(speechless)} utterances, {len(output)} with output, "
            f"{sum(u.words.insertions for u in speechless)} words output"
        )
    lines += [
        (
            f"{len(report.utterances)} utterances, {report.audio_seconds:.1f} s of audio in "
            f"{report.wall_seconds:.1f} s (real-time factor {report.real_time_factor:.3f})"
        ),
    ]
    if report.failed or report.skipped_empty:
        lines.append(
            f"left out: {len(report.failed)} unreadable, {report.skipped_empty} with an empty transcript"
        )
    groups = report.groups()
    if groups:
        lines.append(f"by {group_by or 'group'} (up to the first ':'):")
        width = max(len(name) for name in groups)
        for name, (n, gw, gc) in groups.items():
            lines.append(
                f"  {name:<{width}}  WER {_percent(gw):>7}  CER {_percent(gc):>7}  ({n} utterances)"
            )
    bad = report.worst(worst)
    if bad:
        lines.append(f"worst {len(bad)} utterances:")
        for u in bad:
            lines.append(f"  {u.id}  {u.words.errors}/{u.words.reference_length} word errors")
            lines.append(f"    ref: {u.reference}")
            lines.append(f"    hyp: {u.hypothesis}")
    return "\n".join(lines)


def read_report(path: str | os.PathLike[str]) -> EvalReport:
    """The scored utterances of a :func:`write_results` file as a report (its wall time is not
    kept: 0). Raises ValueError naming the file and line for a malformed one."""
    utterances = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                utterances.append(UtteranceResult.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a scored utterance ({err})") from None
    return EvalReport(utterances, sum(u.duration for u in utterances), 0.0)


def write_results(path: str | os.PathLike[str], report: EvalReport) -> None:
    """One JSON object per scored utterance (see :meth:`UtteranceResult.as_dict`)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", encoding="utf-8") as out:
        for u in report.utterances:
            out.write(json.dumps(u.as_dict(), ensure_ascii=False) + "\n")
