"""What ``echostream train`` reads: the :class:`TrainConfig` tree, loaded strictly from YAML.

A config either describes a new model (``model``: encoder, decoder, loss weights, front end; the
vocabulary size comes from ``tokenizer``) or starts from a trained one (``init``: a released
ChunkFormer folder or an echostream checkpoint, whose weights, vocabulary, CMVN and front end are
kept). A new model may take its encoder from a trained one (``encoder_init``: any model
``load_model`` reads, with the same encoder config): the encoder's weights and the CMVN statistics
it was trained with are copied, while the heads start afresh for the new tokenizer, as WeNet's
``enc_init``. Relative paths in the file (``init``, ``encoder_init``, ``tokenizer``,
``data.train``, ``data.valid``) are relative to the file's folder.

Sizes of chunks and contexts are in the encoder's frames (80 ms ChunkFormer, 40 ms Emformer); durations in seconds.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echostream.config import ConfigError, from_dict, load_yaml, to_dict
from echostream.data.channel import ChannelConfig
from echostream.data.noise import NoiseConfig
from echostream.data.reverb import ReverbConfig
from echostream.encoders.base import OFFLINE_CONTEXT, ChunkContext, EncoderConfig, user_context
from echostream.frontend.fbank import FbankConfig
from echostream.frontend.specaugment import SpecAugmentConfig
from echostream.heads.attention_decoder import AttentionDecoderConfig
from echostream.heads.losses import LossConfig
from echostream.models import build as _encoders  # noqa: F401 - registers every encoder's config type
from echostream.training.context import ContextSampler
from echostream.training.sampler import SamplerConfig
from echostream.training.schedule import ScheduleConfig

METRICS = ("wer", "loss")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """A new model: its network, loss weights and front end. The vocabulary (size, ``<blank>`` = 0,
    ``<sos/eos>`` last) comes from the tokenizer; the CMVN statistics from the training data."""

    encoder: EncoderConfig  # any registered encoder, named by its ``type``
    decoder: AttentionDecoderConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    fbank: FbankConfig = field(default_factory=FbankConfig)

    def __post_init__(self) -> None:
        input_dim = self.encoder.input_dim  # type: ignore[attr-defined]
        if self.fbank.num_mel_bins != input_dim:
            raise ValueError(
                f"model.fbank.num_mel_bins {self.fbank.num_mel_bins} != model.encoder.input_dim {input_dim}"
            )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Manifests (JSONL, see ``echostream.data.manifest``) and how rows are filtered and read.

    Rows outside ``[min_duration, max_duration]`` seconds (validation rows: shorter than
    ``min_duration``; 0.165 s give no encoder frame at all), rows whose audio is missing or
    unreadable (checked up front; ``decode_check`` decodes every file in full) and rows whose
    normalised transcript is empty are left out with a count. ``cmvn_utterances`` training rows
    (evenly spaced) give a new model's CMVN statistics. ``num_workers`` DataLoader processes
    prepare batches (0: in the training process); results do not depend on it.

    ``train_weights`` (one per ``train`` manifest) mixes the manifests by sampling weight instead
    of concatenating them: each epoch holds as many utterances as they all do, a manifest giving
    its weight's share (``[0.8, 0.2]``: 80 % of every epoch from the first), so a small source is
    repeated and a large one subsampled. Empty: every row once per epoch.

    ``empty_transcripts``: rows whose transcript is empty are trained on as audio without speech
    (silence, noise, hold music): the model learns to output nothing for them. Otherwise they are
    left out with a count.
    """

    train: tuple[str, ...]
    valid: tuple[str, ...]
    train_weights: tuple[float, ...] = ()
    empty_transcripts: bool = False
    min_duration: float = 0.2
    max_duration: float = 30.0
    decode_check: bool = False
    cmvn_utterances: int = 1000
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not self.train or not self.valid:
            raise ValueError("data.train and data.valid must each name at least one manifest")
        if not 0 <= self.min_duration < self.max_duration:
            raise ValueError("data.min_duration must be >= 0 and below data.max_duration")
        if self.train_weights and len(self.train_weights) != len(self.train):
            raise ValueError(
                f"data.train_weights gives {len(self.train_weights)} weights for {len(self.train)} manifests"
            )
        if self.train_weights and (min(self.train_weights) < 0 or sum(self.train_weights) <= 0):
            raise ValueError("data.train_weights must be >= 0 and not all 0")
        if self.cmvn_utterances < 1 or self.num_workers < 0:
            raise ValueError("data.cmvn_utterances must be >= 1 and data.num_workers >= 0")


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Training-only augmentation, drawn per utterance.

    ``speed_factors``: each utterance is played at one factor drawn from the list (1.1 = 10 %
    faster and higher, as ``sox speed``), by resampling the waveform with soxr; ``[1.0]`` turns
    it off. Then, in this order and each only when given: ``reverb`` (a room), ``noise``
    (additive, at a drawn SNR) and ``channel`` (a telephone line); see
    :mod:`echostream.data.augment`. ``spec_augment``: frequency and time masks on the fbank
    (null: off). ``clean_epochs``: epochs trained on the audio as it is before any of this
    starts (a new model trained from scratch with augmentation from its first step can stay on
    CTC's token prior; see ``recipes/general_en/README.md``).
    """

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    reverb: ReverbConfig | None = None
    noise: NoiseConfig | None = None
    channel: ChannelConfig | None = None
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    clean_epochs: int = 0

    def __post_init__(self) -> None:
        if self.clean_epochs < 0:
            raise ValueError(f"augment.clean_epochs must be >= 0, got {self.clean_epochs}")
        if not self.speed_factors or any(not 0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(
                f"augment.speed_factors must be in [0.5, 2.0], got {self.speed_factors}"
            )


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Adam or AdamW (decoupled weight decay); the learning rate comes from ``schedule``."""

    kind: str = "adamw"
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in ("adam", "adamw"):
            raise ValueError(f"optimizer.kind {self.kind!r} is not adam or adamw")
        if not (
            0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0 and self.weight_decay >= 0
        ):
            raise ValueError("optimizer: betas must be in [0, 1), eps > 0, weight_decay >= 0")


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Validation loss, WER and CER every ``every_steps`` optimizer steps (and at the end; with
    ``at_start`` also before the first step), computed with the inference computation (the
    masked batch) at ``chunk_size``/``left_context``/``right_context``. ``metric`` picks the best
    checkpoints and drives early stopping (lower is better). Batches hold up to
    ``max_batch_seconds`` of padded audio."""

    every_steps: int = 1000
    at_start: bool = False
    chunk_size: int = OFFLINE_CONTEXT.chunk
    left_context: int = OFFLINE_CONTEXT.left
    right_context: int = OFFLINE_CONTEXT.right
    metric: str = "wer"
    max_batch_seconds: float = 200.0

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"validation.every_steps must be >= 1, got {self.every_steps}")
        if self.metric not in METRICS:
            raise ValueError(
                f"validation.metric {self.metric!r} is not one of {', '.join(METRICS)}"
            )
        if self.max_batch_seconds <= 0:
            raise ValueError("validation.max_batch_seconds must be positive")
        user_context(self.chunk_size, self.left_context, self.right_context)  # checks

    @property
    def context(self) -> ChunkContext:
        return user_context(self.chunk_size, self.left_context, self.right_context)


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """A checkpoint is written at every validation. Model files are kept for the ``keep_last``
    newest and the ``keep_best`` best (by ``validation.metric``); the training state that
    ``--resume`` needs is kept for the ``keep_last`` newest."""

    keep_last: int = 5
    keep_best: int = 5

    def __post_init__(self) -> None:
        if self.keep_last < 1 or self.keep_best < 0:
            raise ValueError("checkpoints.keep_last must be >= 1 and keep_best >= 0")


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    """Stop after ``patience`` validations in a row that do not improve the best
    ``validation.metric`` by more than ``min_delta`` (patience 0: never stop early)."""

    patience: int = 0
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError("early_stopping.patience and min_delta must be >= 0")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything one training run needs (see the module docstring).

    ``max_steps`` (optimizer steps, 0: no limit) and ``max_epochs`` bound the run. Gradients of
    ``accum_grad`` batches are summed per optimizer step and clipped to norm ``grad_clip``
    (0: no clipping). ``precision``: ``fp32``, ``bf16`` (autocast; CPU or a GPU that has it) or
    ``fp16`` (autocast with loss scaling, GPU only). ``device``: ``auto`` (the local GPU under
    torchrun, else ``cuda`` if present, else ``cpu``), ``cpu`` or ``cuda``. Every random draw
    derives from ``seed``.
    """

    init: str | None = None
    model: ModelShape | None = None
    tokenizer: str | None = None
    encoder_init: str | None = None
    data: DataConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    context: ContextSampler = field(default_factory=ContextSampler)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    max_epochs: int = 100
    max_steps: int = 0
    accum_grad: int = 1
    grad_clip: float = 5.0
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        if (self.init is None) == (self.model is None):
            raise ValueError(
                "give either model (a new model) or init (a trained one), not both or neither"
            )
        if self.init is None and self.tokenizer is None:
            raise ValueError(
                "a new model needs a tokenizer (a folder from `echostream tokenizer train`)"
            )
        if self.encoder_init is not None and self.model is None:
            raise ValueError("encoder_init starts a new model's encoder: it needs model, not init")
        if self.max_epochs < 1 or self.max_steps < 0:
            raise ValueError("max_epochs must be >= 1 and max_steps >= 0")
        if self.accum_grad < 1 or self.grad_clip < 0 or self.log_every < 1:
            raise ValueError("accum_grad and log_every must be >= 1, grad_clip >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not auto, cpu or cuda")


def load_train_config(path: str | os.PathLike[str], *, init: str | None = None) -> TrainConfig:
    """Read a YAML training config strictly; relative paths are taken from the file's folder.

    ``init`` (a path usable from the current directory, or a Hugging Face repo id) replaces the
    file's ``init``. A relative ``init`` in the file that names nothing on disk is kept as written
    (a repo id).

    Raises:
        ConfigError: unknown, missing or mistyped keys (named), or inconsistent values.
    """
    file = Path(path)
    data: Any
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({str(err).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    if init is not None:
        data = {**data, "init": os.path.abspath(init) if os.path.exists(init) else init}
    return resolve_paths(from_dict(TrainConfig, data, str(file)), file.parent)


def resolve_paths(cfg: TrainConfig, base: str | os.PathLike[str]) -> TrainConfig:
    """``cfg`` with its relative paths made absolute against ``base``."""

    def absolute(p: str) -> str:
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(os.path.abspath(base), p))

    data = dataclasses.replace(
        cfg.data,
        train=tuple(absolute(p) for p in cfg.data.train),
        valid=tuple(absolute(p) for p in cfg.data.valid),
    )
    def model_path(name: str | None) -> str | None:  # else a bundled name or a Hugging Face repo id
        return absolute(name) if name is not None and os.path.exists(absolute(name)) else name

    return dataclasses.replace(
        cfg,
        init=model_path(cfg.init),
        encoder_init=model_path(cfg.encoder_init),
        tokenizer=absolute(cfg.tokenizer) if cfg.tokenizer is not None else None,
        data=data,
    )


def config_to_yaml(cfg: TrainConfig) -> str:
    """The config as YAML that :func:`load_train_config` reads back to an equal config."""
    return yaml.safe_dump(_plain(to_dict(cfg)), sort_keys=False, allow_unicode=True)


def read_saved_config(path: str | os.PathLike[str]) -> TrainConfig:
    """A config written by :func:`config_to_yaml` (paths already absolute)."""
    return load_yaml(TrainConfig, Path(path))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML's safe dumper writes only plain types)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
