"""The training loop behind ``echostream train``.

One optimizer step sums the gradients of ``accum_grad`` batches (each rank's own under torchrun,
averaged across ranks), clips them and steps the schedule. Each batch is encoded under a
``ChunkContext`` drawn by the config's ``ContextSampler`` (limited-context training). Every
``validation.every_steps`` steps rank 0 measures validation loss, WER and CER with the inference
computation and writes a checkpoint (model + training state, see ``experiment``); ``--resume``
continues from the newest one exactly: the same batches, augmentation, dropout masks and
learning rates as an uninterrupted run.

Shape legend: B utterances, T feature frames, F mel bins, T' encoder frames, V vocabulary.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echostream.atomic import save_atomically
from echostream.config import ConfigError, to_dict
from echostream.data.manifest import Utterance, read_manifest
from echostream.encoders.base import ChunkContext
from echostream.frontend.fbank import FbankConfig
from echostream.model import load_model
from echostream.models.asr import ASRModel, ASRModelConfig
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle, load_checkpoint, save_checkpoint
from echostream.text.normalize import DEFAULT_NORMALIZER, NormalizerConfig
from echostream.text.tokenizer import (
    Tokenizer,
    TokenizerError,
    VocabTokenizer,
    load_tokenizer,
    read_tokenizer_config,
)
from echostream.training import experiment as ex
from echostream.training.config import TrainConfig, config_to_yaml, read_saved_config
from echostream.training.dataset import (
    Batch,
    BatchDataset,
    Example,
    cmvn_statistics,
    make_loader,
    prepare_examples,
)
from echostream.training.distributed import (
    DistributedEnv,
    broadcast_object,
    close_process_group,
    environment,
    gather_objects,
    init_process_group,
    sum_over_ranks,
    training_device,
    wrap,
)
from echostream.training.evaluation import autocast, validate
from echostream.training.sampler import DurationBucketSampler, SamplerConfig
from echostream.training.schedule import make_scheduler


class TrainingError(ValueError):
    """A training run that cannot start or go on; the message is one line."""


@dataclass(frozen=True)
class StepReport:
    """Progress after one optimizer step (rank 0)."""

    step: int
    epoch: int
    loss: float  # this step's loss (rank 0's batches)
    lr: float
    audio_seconds: float  # audio seconds trained in this run so far, all ranks (rank 0's x ranks)
    audio_per_second: float  # audio_seconds per wall second since the run (or resume) started
    planned_steps: int = 0  # where the run stops without early stopping: max_steps, or max_epochs' steps


@dataclass(frozen=True)
class TrainResult:
    """How a run ended."""

    step: int
    epoch: int
    stopped_early: bool
    validations: list[ex.Validation]
    best_step: int | None
    interrupted: bool = False  # stopped by SIGINT/SIGTERM after saving a resumable checkpoint


@dataclass(frozen=True)
class _Setup:
    model: ASRModel
    tokenizer: Tokenizer
    normalizer: NormalizerConfig | None
    fbank: FbankConfig
    new_model: bool  # True: CMVN statistics still to be computed


# ---------------------------------------------------------------------------------------------
# Model, tokenizer and data


def _tokenizer_and_normalizer(path: str) -> tuple[Tokenizer, NormalizerConfig | None]:
    """A tokenizer folder's tokenizer and the normaliser it was trained with (the default one for
    a folder without ``tokenizer.yaml``, e.g. a released model folder)."""
    tokenizer = load_tokenizer(path)
    try:
        normalizer = read_tokenizer_config(path).normalizer
    except TokenizerError:
        normalizer = DEFAULT_NORMALIZER
    return tokenizer, normalizer


def _setup(cfg: TrainConfig, resume_from: Path | None) -> _Setup:
    """The model to train (from scratch, from ``init``, or from the checkpoint resumed) and the
    tokenizer whose ids it predicts."""
    tokenizer: Tokenizer | None = None
    normalizer: NormalizerConfig | None = DEFAULT_NORMALIZER
    if cfg.tokenizer is not None:
        tokenizer, normalizer = _tokenizer_and_normalizer(cfg.tokenizer)
    if resume_from is not None:
        bundle: ModelBundle | None = load_checkpoint(resume_from)
    elif cfg.init is not None:
        bundle = load_model(cfg.init).bundle
    else:
        bundle = None
    if bundle is None:
        assert cfg.model is not None and tokenizer is not None
        model_cfg = ASRModelConfig(
            encoder=cfg.model.encoder,
            vocab_size=tokenizer.vocab_size,
            blank_id=tokenizer.blank_id,
            decoder=cfg.model.decoder,
            loss=cfg.model.loss,
        )
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        if cfg.encoder_init is not None:
            _copy_encoder(cfg.encoder_init, model, cfg.model.fbank)
        return _Setup(
            model, tokenizer, normalizer, cfg.model.fbank, new_model=cfg.encoder_init is None
        )
    if cfg.model is not None:
        shape = bundle.model.cfg
        if (shape.encoder, shape.decoder, shape.loss) != (
            cfg.model.encoder,
            cfg.model.decoder,
            cfg.model.loss,
        ):
            raise TrainingError(
                f"{resume_from}: the checkpoint's model differs from the config's model"
            )
    if tokenizer is None:
        tokenizer = VocabTokenizer(bundle.vocab, "the model's vocabulary")
    elif tokenizer.vocabulary != bundle.vocab:
        raise TrainingError(f"{cfg.tokenizer}: the tokenizer's vocabulary differs from the model's")
    return _Setup(bundle.model, tokenizer, normalizer, bundle.fbank, new_model=False)


def _copy_encoder(source: str, model: ASRModel, fbank: FbankConfig) -> None:
    """Copy the encoder and its CMVN statistics of the trained model ``source`` into the new
    ``model``, whose encoder config and front end must be the same."""
    trained = load_model(source).bundle
    if trained.model.cfg.encoder != model.cfg.encoder:
        raise TrainingError(f"encoder_init {source}: its encoder differs from the config's model.encoder "
                            f"({trained.model.cfg.encoder} vs {model.cfg.encoder})")
    if trained.fbank != fbank:
        raise TrainingError(f"encoder_init {source}: its front end differs from the config's model.fbank")
    model.encoder.load_state_dict(trained.model.encoder.state_dict())
    model.cmvn.load_state_dict(trained.model.cmvn.state_dict())


def _read_rows(paths: tuple[str, ...]) -> list[Utterance]:
    return [row for path in paths for row in read_manifest(path)]


def _describe(name: str, examples: list[Example], skipped: Counter[str]) -> str:
    hours = sum(e.row.duration for e in examples) / 3600
    left_out = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    return f"{name}: {len(examples)} utterances ({hours:.2f} h)" + (
        f"; left out {left_out}" if left_out else ""
    )


# ---------------------------------------------------------------------------------------------
# The loop


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    kind = torch.optim.AdamW if o.kind == "adamw" else torch.optim.Adam
    return kind(
        model.parameters(),
        lr=cfg.schedule.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay,
    )


def _check_contexts(encoder: Any, cfg: TrainConfig) -> None:
    """Every chunk/context training may draw, and validation's, suit the encoder (a chunk-causal
    Zipformer takes no right context): found before the first step, not at the batch that draws it."""
    settings = [("context", c) for c in cfg.context.settings()] + [("validation", cfg.validation.context)]
    for where, context in settings:
        try:
            encoder.check_context(context)
        except ValueError as err:
            raise TrainingError(f"{where} setting chunk {context.chunk} / left {context.left} / right "
                                f"{context.right}: {err}") from None


def _rank_seed(seed: int, rank: int) -> int:
    return random.Random(f"{seed}:dropout:{rank}").getrandbits(63)


class _Run:
    """The state of one training process; see :func:`train`."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        env: DistributedEnv,
        device: torch.device,
        setup: _Setup,
        train_examples: list[Example],
        sources: list[int],
        valid_examples: list[Example],
        on_step: Callable[[StepReport], None] | None,
        on_message: Callable[[str], None],
    ) -> None:
        self.cfg, self.out, self.env, self.device = cfg, out_dir, env, device
        self.model = setup.model.to(device).train()
        _check_contexts(self.model.encoder, cfg)
        self.tokenizer, self.normalizer, self.fbank = setup.tokenizer, setup.normalizer, setup.fbank
        self.module = wrap(self.model, env, device)
        self.optimizer = _optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.train_data = BatchDataset(train_examples, setup.fbank, cfg.augment, cfg.seed)
        mixed = bool(cfg.data.train_weights)
        self.sampler = DurationBucketSampler(
            [e.row.duration for e in train_examples],
            cfg.sampler,
            env.rank,
            env.world_size,
            sources=sources if mixed else None,
            weights=cfg.data.train_weights if mixed else None,
        )
        by_epochs = cfg.max_epochs * max(1, len(self.sampler) // cfg.accum_grad)
        self.planned_steps = min(cfg.max_steps, by_epochs) if cfg.max_steps else by_epochs
        self.valid_data = BatchDataset(valid_examples, setup.fbank, None, cfg.seed)
        self.valid_sampler_cfg = SamplerConfig(
            max_batch_seconds=cfg.validation.max_batch_seconds,
            max_batch_size=cfg.sampler.max_batch_size,
            bucket_boundaries=cfg.sampler.bucket_boundaries,
            shuffle=False,
        )
        self.on_step, self.on_message = on_step, on_message
        self.step = self.epoch = self.position = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.last_validated = -1
        self.audio_seconds = 0.0
        self.started = time.perf_counter()
        self.logged = False  # whether this run (or resume) has written a train-log record yet
        self.writer: Any = None
        self.stop_signal: int | None = None  # set by the handler of SIGINT/SIGTERM (see stop_on_signals)
        self.interrupted = False
        torch.manual_seed(_rank_seed(cfg.seed, env.rank))

    # -- state --------------------------------------------------------------------------------

    def state(self, rng_states: list[dict[str, torch.Tensor | None]]) -> dict[str, Any]:
        return {
            "version": ex.STATE_VERSION,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "world_size": self.env.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
            "early_stopping": {
                "best": self.best,
                "best_step": self.best_step,
                "bad": self.bad_validations,
            },
            "last_validated": self.last_validated,
        }

    def load(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self.env.world_size:
            raise TrainingError(
                f"the checkpoint was written by {state['world_size']} processes; resume with as many "
                f"(this run has {self.env.world_size})"
            )
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"][self.env.rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        stopping = state["early_stopping"]
        self.best, self.best_step, self.bad_validations = (
            stopping["best"],
            stopping["best_step"],
            stopping["bad"],
        )
        self.last_validated = state["last_validated"]

    def _rng_state(self) -> dict[str, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    # -- training -----------------------------------------------------------------------------

    def context(self, batch: Batch) -> ChunkContext:
        """The batch's chunk/context, drawn from its key (the same on every rank and on resume)."""
        frames = self.model.encoder.output_lengths(batch.feat_lens)
        longest = int(frames.max()) if len(frames) else 1
        rng = random.Random(f"{self.cfg.seed}:context:{batch.key.epoch}:{batch.key.position}")
        return self.cfg.context.draw(rng, max(1, longest))

    def forward_backward(self, batch: Batch, sync: bool) -> dict[str, float]:
        """Loss of one batch, its gradients added to the parameters' (all-reduced when ``sync``)."""
        no_sync = getattr(self.module, "no_sync", None)
        quiet = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with quiet:
            with autocast(self.device, self.cfg.precision):
                parts = self.module(
                    batch.feats.to(self.device),
                    batch.feat_lens.to(self.device),
                    batch.tokens.to(self.device),
                    batch.token_lens.to(self.device),
                    self.context(batch),
                )
            loss = parts["total"] / self.cfg.accum_grad
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {name: float(value.detach()) for name, value in parts.items()}

    def optimizer_step(self) -> float:
        """Clip, step (unless the gradient is not finite), advance the schedule; the grad norm."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        limit = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif torch.isfinite(torch.tensor(norm)):
            self.optimizer.step()
        else:
            self.on_message(f"step {self.step + 1}: gradient norm is {norm}; update skipped")
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def log_step(self, parts: Counter[str], batches: int, seconds: float, norm: float) -> None:
        self.audio_seconds += seconds
        wall = time.perf_counter() - self.started
        lr = self.optimizer.param_groups[0]["lr"]
        loss = parts["total"] / max(1, batches)
        rate = self.audio_seconds * self.env.world_size / max(wall, 1e-9)
        if self.step % self.cfg.log_every == 0:
            world_loss = sum_over_ranks(loss, self.env) / self.env.world_size
            if self.env.is_main:
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": world_loss,
                    "lr": lr,
                    "grad_norm": norm,
                    "audio_per_second": rate,
                    "wall_seconds": wall,  # since this run (or resume) started
                    **{f"loss_{k}": v / max(1, batches) for k, v in parts.items() if k != "total"},
                }
                if not self.logged:  # the first record of this run (or resume): its clock starts again
                    record["run_start"] = True
                    self.logged = True
                ex.append_record(self.out / ex.TRAIN_LOG, record)
                for name, value in record.items():
                    if name not in ("step", "epoch"):
                        self.writer.add_scalar(f"train/{name}", value, self.step)
        if self.env.is_main and self.on_step is not None:
            self.on_step(
                StepReport(
                    step=self.step,
                    epoch=self.epoch,
                    loss=loss,
                    lr=lr,
                    audio_seconds=self.audio_seconds * self.env.world_size,
                    audio_per_second=rate,
                    planned_steps=self.planned_steps,
                )
            )

    def validate_and_save(self) -> bool:
        """Validate, write a checkpoint, update early stopping; True when training should stop."""
        rng_states = gather_objects(self._rng_state(), self.env)
        stop = False
        if self.env.is_main:
            sampler = DurationBucketSampler(
                [e.row.duration for e in self.valid_data.examples], self.valid_sampler_cfg
            )
            loader = make_loader(self.valid_data, sampler, self.cfg.data.num_workers)
            result = validate(
                self.model,
                iter(loader),
                self.cfg.validation.context,
                self.tokenizer,
                self.normalizer,
                self.device,
                self.cfg.precision,
            )
            record = ex.Validation(
                step=self.step,
                epoch=self.epoch,
                loss=result.loss,
                wer=result.wer,
                cer=result.cer,
                utterances=result.utterances,
            )
            stop = self.early_stopping(record.metric(self.cfg.validation.metric))
            self.last_validated = self.step
            self.save(rng_states, record)
            for name in ("loss", "wer", "cer"):
                self.writer.add_scalar(f"valid/{name}", getattr(record, name), self.step)
            self.writer.flush()
            self.on_message(
                f"step {self.step} (epoch {self.epoch}): valid loss {result.loss:.3f}, "
                f"WER {100 * result.wer:.2f}%, CER {100 * result.cer:.2f}% ({result.utterances} utterances)"
            )
        self.last_validated = self.step
        return bool(broadcast_object(stop, self.env))

    def early_stopping(self, value: float) -> bool:
        cfg = self.cfg.early_stopping
        if self.best is None or value < self.best - cfg.min_delta:
            self.best, self.best_step, self.bad_validations = value, self.step, 0
            return False
        self.bad_validations += 1
        return self.stopped_early()

    def save(self, rng_states: list[dict[str, torch.Tensor | None]], record: ex.Validation) -> None:
        save_atomically(self.state(rng_states), ex.state_path(self.out, self.step))
        bundle = ModelBundle(model=self.model, vocab=self.tokenizer.vocabulary, fbank=self.fbank)
        save_checkpoint(
            ex.model_path(self.out, self.step),
            bundle,
            training={"step": self.step, "epoch": self.epoch, "valid": to_dict(record)},
        )
        ex.record_validation(self.out, record)
        checkpoints = self.cfg.checkpoints
        ex.prune(self.out, checkpoints.keep_last, checkpoints.keep_best, self.cfg.validation.metric)

    def stopped_early(self) -> bool:
        patience = self.cfg.early_stopping.patience
        return patience > 0 and self.bad_validations >= patience

    def stop_requested(self) -> bool:
        """Whether any rank received SIGINT/SIGTERM (all ranks agree, so they stop at one step)."""
        return sum_over_ranks(float(self.stop_signal is not None), self.env) > 0

    def finished(self) -> bool:
        return (
            self.cfg.max_steps > 0 and self.step >= self.cfg.max_steps
        ) or self.epoch >= self.cfg.max_epochs

    def run(self, validate_first: bool) -> bool:
        """Train until a limit or early stopping; True when stopped early."""
        if validate_first and self.validate_and_save():
            return True
        if self.stopped_early():  # resumed after early stopping: nothing left to do
            return True
        accum = self.cfg.accum_grad
        while not self.finished():
            self.sampler.load_state_dict({"epoch": self.epoch, "position": self.position})
            batches_in_epoch = len(self.sampler)
            if min(gather_objects(batches_in_epoch, self.env)) == 0:
                raise TrainingError(
                    "an epoch has no batches for some rank: too little training data"
                )
            parts: Counter[str] = Counter()
            pending, seconds = 0, 0.0
            for batch in make_loader(self.train_data, self.sampler, self.cfg.data.num_workers):
                for failure in batch.failed:
                    self.on_message(f"warning: left out {failure}")
                last_of_epoch = batch.key.position + 1 == batches_in_epoch
                parts.update(
                    self.forward_backward(batch, sync=pending + 1 == accum or last_of_epoch)
                )
                pending += 1
                seconds += batch.seconds
                self.position = batch.key.position + 1
                if pending < accum and not last_of_epoch:
                    continue
                norm = self.optimizer_step()
                self.step += 1
                if last_of_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                self.log_step(parts, pending, seconds, norm)
                parts, pending, seconds = Counter(), 0, 0.0
                if self.step % self.cfg.validation.every_steps == 0 and self.validate_and_save():
                    return True
                if self.stop_requested():
                    self.interrupted = True
                    if self.last_validated != self.step:
                        self.validate_and_save()
                    return False
                if self.finished():
                    break
        if self.last_validated != self.step:
            return self.validate_and_save()
        return False


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train as ``cfg`` says, writing the experiment folder ``out_dir`` (see ``experiment``).

    Under torchrun (``WORLD_SIZE`` > 1) this joins the other ranks; only rank 0 writes files and
    calls ``on_step`` / ``on_message``. With ``resume`` the newest complete checkpoint in
    ``out_dir`` is continued (a folder without one starts afresh); without it, a folder that
    holds checkpoints already is an error.

    Raises:
        TrainingError, ConfigError, ManifestError, CheckpointError, TokenizerError: one line each.
    """
    env = environment()
    device = training_device(cfg.device, env)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    out = Path(out_dir)
    say = on_message if (on_message is not None and env.is_main) else (lambda _: None)
    joined = init_process_group(env, device)
    try:
        return _train(cfg, out, env, device, resume, on_step, say)
    finally:
        if joined:
            close_process_group()


def _train(
    cfg: TrainConfig,
    out: Path,
    env: DistributedEnv,
    device: torch.device,
    resume: bool,
    on_step: Callable[[StepReport], None] | None,
    say: Callable[[str], None],
) -> TrainResult:
    steps = ex.resumable_steps(out)
    if steps and not resume:
        raise TrainingError(
            f"{out} holds checkpoints already: pass --resume, or choose another --out"
        )
    if resume and not steps:
        say(f"no checkpoint to resume in {out}; starting afresh")
    if resume and steps:
        changed = config_changes(cfg, out)
        if changed:
            say(
                f"note: the config differs from the one this run started with in: {', '.join(changed)}"
            )
    resume_step = steps[-1] if resume and steps else None
    setup = _setup(cfg, ex.model_path(out, resume_step) if resume_step is not None else None)

    train_examples: list[Example] = []
    sources: list[int] = []
    skipped = Counter[str]()
    for source, path in enumerate(cfg.data.train):
        examples, left_out = prepare_examples(
            read_manifest(path),
            setup.tokenizer,
            setup.normalizer,
            min_duration=cfg.data.min_duration,
            max_duration=cfg.data.max_duration,
            decode_check=cfg.data.decode_check,
            keep_empty=cfg.data.empty_transcripts,
        )
        if cfg.data.train_weights:
            say(_describe(f"  {Path(path).name} (weight {cfg.data.train_weights[source]:g})", examples, left_out))
        train_examples += examples
        sources += [source] * len(examples)
        skipped += left_out
    say(_describe("train", train_examples, skipped))
    valid_examples, skipped = prepare_examples(
        _read_rows(cfg.data.valid),
        setup.tokenizer,
        setup.normalizer,
        min_duration=cfg.data.min_duration,  # shorter rows give no encoder frame
        max_duration=float("inf"),
        decode_check=cfg.data.decode_check,
        keep_empty=cfg.data.empty_transcripts,
    )
    say(_describe("valid", valid_examples, skipped))
    if not train_examples or not valid_examples:
        raise TrainingError("no usable training or validation utterances (see the counts above)")
    if setup.new_model:
        mean, istd = cmvn_statistics(train_examples, setup.fbank, cfg.data.cmvn_utterances)
        with torch.no_grad():
            setup.model.cmvn.mean.copy_(mean)
            setup.model.cmvn.istd.copy_(istd)
    parameters = sum(p.numel() for p in setup.model.parameters())
    say(
        f"model: {parameters / 1e6:.2f} M parameters, vocabulary {setup.tokenizer.vocab_size}; "
        f"{env.world_size} process(es) on {device}"
    )

    run = _Run(cfg, out, env, device, setup, train_examples, sources, valid_examples, on_step, say)
    if resume_step is not None:
        run.load(ex.load_state(ex.state_path(out, resume_step)))
        say(f"resuming from step {run.step} (epoch {run.epoch})")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / ex.CONFIG_FILE).write_text(config_to_yaml(cfg), encoding="utf-8")
        if resume_step is not None:
            ex.truncate_records(out / ex.TRAIN_LOG, resume_step)
            ex.truncate_records(out / ex.VALID_LOG, resume_step)
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(
            str(out / ex.TENSORBOARD_DIR),
            purge_step=resume_step + 1 if resume_step is not None else None,
        )
    try:
        with stop_on_signals(run, say):
            stopped = run.run(validate_first=cfg.validation.at_start and resume_step is None)
    finally:
        if run.writer is not None:
            run.writer.close()
    if stopped:
        say(
            f"early stopping at step {run.step}: no improvement in {run.bad_validations} validations"
        )
    if run.interrupted:
        say(f"stopped by a signal at step {run.step}, checkpoint saved: --resume continues from it")
    return TrainResult(
        step=run.step,
        epoch=run.epoch,
        stopped_early=stopped,
        validations=ex.validations(out) if env.is_main else [],
        best_step=run.best_step,
        interrupted=run.interrupted,
    )


@contextlib.contextmanager
def stop_on_signals(run: _Run, say: Callable[[str], None]) -> Iterator[None]:
    """While training: SIGINT (Ctrl-C) or SIGTERM asks ``run`` to stop after its current step,
    validate and save a checkpoint that ``--resume`` continues exactly; a second signal stops at
    once (KeyboardInterrupt), losing the steps since the last checkpoint. Outside the main
    thread (where Python cannot set handlers) signals keep their default behaviour."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(number: int, frame: object) -> None:
        if run.stop_signal is not None:
            raise KeyboardInterrupt
        run.stop_signal = number
        say(f"{signal.Signals(number).name}: stopping after this step (send it again to stop at once)")

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def config_changes(cfg: TrainConfig, out: Path) -> list[str]:
    """Top-level keys in which ``cfg`` differs from the config ``out`` was last run with (empty
    when they match or ``out`` has none)."""
    saved = out / ex.CONFIG_FILE
    if not saved.is_file():
        return []
    try:
        before = to_dict(read_saved_config(saved))
    except ConfigError:
        return [ex.CONFIG_FILE]
    now = to_dict(cfg)
    return [name for name in now if now[name] != before.get(name)]
