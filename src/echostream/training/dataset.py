"""The training data pipeline: manifest rows -> audio -> speed perturbation -> room, noise and
telephone line (when configured) -> fbank -> SpecAugment -> padded batches of features and token ids.

Rows are checked and tokenised once, up front (:func:`prepare_examples`). A batch is named by a
:class:`BatchKey` (epoch, position in the epoch, utterance indices) and every random draw of its
augmentation comes from that key and the seed, so a batch is the same whichever DataLoader worker
builds it, however many workers there are, and after a resume.

Shape legend: B utterances, T feature frames, F mel bins, S target tokens, N samples.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from echostream.audio import AudioError, load_audio, prepare_waveform, seconds_to_samples
from echostream.data.augment import Augmenter
from echostream.data.manifest import Utterance, problem_counts, validate_manifest
from echostream.frontend.fbank import FbankConfig, compute_fbank
from echostream.frontend.specaugment import spec_augment
from echostream.heads.attention_decoder import IGNORE_ID
from echostream.text.normalize import NormalizerConfig, normalize_text
from echostream.text.tokenizer import Tokenizer
from echostream.training.config import AugmentConfig
from echostream.training.sampler import DurationBucketSampler


@dataclass(frozen=True)
class Example:
    """A manifest row ready for training: its normalised transcript and token ids."""

    row: Utterance
    text: str
    tokens: tuple[int, ...]


def prepare_examples(
    rows: Sequence[Utterance],
    tokenizer: Tokenizer,
    normalizer: NormalizerConfig | None,
    *,
    min_duration: float,
    max_duration: float,
    decode_check: bool = False,
    keep_empty: bool = False,
) -> tuple[list[Example], Counter[str]]:
    """Check rows against their audio and tokenise them.

    Returns the usable examples (in manifest order) and how many rows were left out, by reason
    (``validate_manifest``'s kinds, ``too short``, ``too long``, ``empty after normalisation``).
    With ``keep_empty``, rows whose transcript is empty are kept with no tokens: audio without
    speech (silence, noise, music) that the model learns to give nothing for.
    """
    good, problems = validate_manifest(rows, decode=decode_check, allow_empty_text=keep_empty)
    skipped: Counter[str] = Counter({str(k): n for k, n in problem_counts(problems).items()})
    examples = []
    for row in good:
        if row.duration < min_duration:
            skipped["too short"] += 1
            continue
        if row.duration > max_duration:
            skipped["too long"] += 1
            continue
        text = (
            normalize_text(row.text, normalizer)
            if normalizer is not None
            else " ".join(row.text.split())
        )
        tokens = tuple(tokenizer.encode(text)) if text else ()
        if not tokens and not (keep_empty and not text):
            skipped["empty after normalisation"] += 1
            continue
        examples.append(Example(row=row, text=text, tokens=tokens))
    return examples, skipped


def load_utterance(row: Utterance, sample_rate: int) -> np.ndarray:
    """The row's speech: (N,) float32 mono at ``sample_rate`` (its ``channel`` when set); a
    segment when ``offset`` is set.

    Segments of files libsndfile reads are read alone; other files are decoded whole and cut.

    Raises:
        AudioError: the audio cannot be read (one line naming the file).
    """
    if row.offset is None:
        return load_audio(row.audio, sample_rate, channel=row.channel)
    try:
        info = sf.info(row.audio)
    except (sf.LibsndfileError, RuntimeError):
        info = None
    if info is None:  # a container only ffmpeg decodes: decode all, then cut
        whole = load_audio(row.audio, sample_rate, channel=row.channel)
        start = seconds_to_samples(row.offset, sample_rate)
        piece = whole[start : start + seconds_to_samples(row.duration, sample_rate)]
    else:
        start = seconds_to_samples(row.offset, info.samplerate)
        frames = seconds_to_samples(row.duration, info.samplerate)
        try:
            data, rate = sf.read(
                row.audio, start=start, frames=frames, dtype="float32", always_2d=True
            )
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{row.audio}: cannot decode audio: {err}") from None
        piece = (
            prepare_waveform(data, rate, sample_rate, channel=row.channel)
            if data.shape[0]
            else np.zeros(0, np.float32)
        )
    if piece.size == 0:
        raise AudioError(f"{row.audio}: no samples in [{row.offset}, {row.end}) s")
    return piece


def speed_perturb(samples: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """(N,) -> (about N / factor,): the waveform played ``factor`` times faster (pitch moves too).

    >>> speed_perturb(np.zeros(16000, np.float32), 1.1, 16000).shape
    (14545,)
    """
    if factor == 1.0:
        return samples
    out = soxr.resample(samples, round(sample_rate * factor), sample_rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class BatchKey:
    """Which batch: ``indices`` into the examples, drawn at ``position`` of ``epoch``."""

    epoch: int
    position: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Batch:
    """Padded features and targets of the utterances of one :class:`BatchKey` that could be read.

    feats: (B, T, F) raw fbank (the model applies its CMVN), zeros past ``feat_lens``.
    feat_lens: (B,). tokens: (B, S) padded with ``IGNORE_ID``. token_lens: (B,).
    """

    key: BatchKey
    feats: Tensor
    feat_lens: Tensor
    tokens: Tensor
    token_lens: Tensor
    ids: tuple[str, ...]
    texts: tuple[str, ...]  # normalised transcripts
    seconds: float  # audio seconds in the batch, after speed perturbation
    failed: tuple[str, ...]  # "id: reason" of utterances whose audio could not be read

    @property
    def size(self) -> int:
        return len(self.ids)


def item_rng(seed: int, key: BatchKey, index: int, repeat: int = 0) -> random.Random:
    """The random source of one utterance of one batch (independent of workers and resumes);
    ``repeat`` counts earlier copies of the utterance in the batch (a mix repeats small sources),
    so that each copy is augmented its own way."""
    return random.Random(f"{seed}:{key.epoch}:{key.position}:{index}" + (f":{repeat}" if repeat else ""))


class BatchDataset(torch.utils.data.Dataset[Batch]):
    """Builds the :class:`Batch` of a :class:`BatchKey`; ``augment`` None for validation."""

    def __init__(
        self,
        examples: Sequence[Example],
        fbank: FbankConfig,
        augment: AugmentConfig | None,
        seed: int,
    ) -> None:
        self.examples = list(examples)
        self.fbank = fbank
        self.augment = augment
        self.seed = seed
        self.conditions = (
            Augmenter(
                reverb=augment.reverb,
                noise=augment.noise,
                channel=augment.channel,
                rate=fbank.sample_rate,
                seed=seed,
            )
            if augment is not None
            else None
        )

    def __len__(self) -> int:
        return len(self.examples)

    def features(
        self, index: int, key: BatchKey | None = None, repeat: int = 0
    ) -> tuple[Tensor, float]:
        """(T, F) features of one example and its audio seconds; augmented when the dataset
        augments, a batch ``key`` (the source of the random draws) is given and its epoch is past
        the clean ones; ``repeat``: see :func:`item_rng`."""
        rate = self.fbank.sample_rate
        samples = load_utterance(self.examples[index].row, rate)  # (N,)
        if self.augment is None or key is None or key.epoch < self.augment.clean_epochs:
            return torch.from_numpy(compute_fbank(samples, self.fbank)), samples.size / rate
        rng = item_rng(self.seed, key, index, repeat)
        samples = speed_perturb(samples, rng.choice(self.augment.speed_factors), rate)  # (N',)
        if self.conditions is not None and self.conditions.active:
            samples, _ = self.conditions.apply(samples, rng)  # room, noise, line; (N',) at rate
        feats = torch.from_numpy(compute_fbank(samples, self.fbank))  # (T, F)
        if self.augment.spec_augment is not None:
            generator = torch.Generator().manual_seed(rng.getrandbits(63))
            feats = spec_augment(feats, self.augment.spec_augment, generator)
        return feats, samples.size / rate

    def __getitem__(self, key: BatchKey) -> Batch:  # type: ignore[override]
        feats: list[Tensor] = []
        kept: list[Example] = []
        failed: list[str] = []
        seconds = 0.0
        seen: Counter[int] = Counter()
        for index in key.indices:
            seen[index] += 1
            try:
                x, duration = self.features(index, key, seen[index] - 1)
            except AudioError as err:
                failed.append(f"{self.examples[index].row.id}: {err}")
                continue
            feats.append(x)
            kept.append(self.examples[index])
            seconds += duration
        return collate(key, feats, kept, seconds, tuple(failed), self.fbank.num_mel_bins)


def collate(
    key: BatchKey,
    feats: Sequence[Tensor],
    examples: Sequence[Example],
    seconds: float,
    failed: tuple[str, ...],
    num_mel_bins: int,
) -> Batch:
    """Pad per-utterance features (T_b, F) and token ids into a :class:`Batch`."""
    if feats:
        x = torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True)  # (B, T, F)
        ys = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(e.tokens, dtype=torch.long) for e in examples],
            batch_first=True,
            padding_value=IGNORE_ID,
        )  # (B, S)
    else:
        x = torch.zeros(0, 0, num_mel_bins)
        ys = torch.zeros(0, 0, dtype=torch.long)
    return Batch(
        key=key,
        feats=x,
        feat_lens=torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
        tokens=ys,
        token_lens=torch.tensor([len(e.tokens) for e in examples], dtype=torch.long),
        ids=tuple(e.row.id for e in examples),
        texts=tuple(e.text for e in examples),
        seconds=seconds,
        failed=failed,
    )


class BatchKeys:
    """The keys of the batches a sampler yields from its current (epoch, position) on."""

    def __init__(self, sampler: DurationBucketSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[BatchKey]:
        epoch, position = self.sampler.epoch, self.sampler.position
        for offset, indices in enumerate(self.sampler):
            yield BatchKey(epoch=epoch, position=position + offset, indices=tuple(indices))


def _keep(batch: Batch) -> Batch:
    return batch


def make_loader(
    dataset: BatchDataset, sampler: DurationBucketSampler, num_workers: int
) -> torch.utils.data.DataLoader:
    """A DataLoader of the sampler's batches from its current position on.

    It has its own random generator, so that making it does not draw from torch's global one
    (which dropout uses): a resumed run draws the same dropout masks as an uninterrupted one.
    Workers are started fresh ("spawn"), not forked: a loader is made every epoch and every
    validation, and a worker forked from a training process inherits its whole heap (10 GB in an
    Emformer run), which copy-on-write turns into a second private copy as both processes go on.
    """
    return torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        sampler=BatchKeys(sampler),  # type: ignore[arg-type]
        collate_fn=_keep,  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=2 if num_workers else None,
        worker_init_fn=_ignore_interrupts,
        multiprocessing_context="spawn" if num_workers else None,
    )


def _ignore_interrupts(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops training cleanly (see
    ``trainer.stop_on_signals``); killed by it, they would end the run with a loader error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def cmvn_statistics(
    examples: Sequence[Example], fbank: FbankConfig, count: int
) -> tuple[Tensor, Tensor]:
    """Mean and inverse standard deviation (each (F,)) of the fbank of ``count`` examples spread
    evenly over ``examples`` (unaugmented); unreadable ones are passed over."""
    if not examples:
        raise ValueError("no training examples to compute CMVN statistics from")
    step = max(1, len(examples) // count)
    dataset = BatchDataset(examples, fbank, augment=None, seed=0)
    total = torch.zeros(fbank.num_mel_bins, dtype=torch.float64)
    squares = torch.zeros(fbank.num_mel_bins, dtype=torch.float64)
    frames = 0
    for index in range(0, len(examples), step)[:count]:
        try:
            x, _ = dataset.features(index)
        except AudioError:
            continue
        x64 = x.to(torch.float64)  # (T, F)
        total += x64.sum(0)
        squares += (x64 * x64).sum(0)
        frames += x.shape[0]
    if frames == 0:
        raise ValueError("no readable training audio to compute CMVN statistics from")
    mean = total / frames
    variance = (squares / frames - mean * mean).clamp(min=1e-20)
    return mean.float(), variance.rsqrt().float()
