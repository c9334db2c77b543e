"""The user-facing model: load a checkpoint, transcribe files and arrays of any length."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from echostream.audio import AudioError, prepare_waveform
from echostream.encoders.base import ChunkContext
from echostream.models.checkpoint import (
    CheckpointError,
    ModelBundle,
    load_checkpoint,
    load_released_folder,
)
from echostream.streaming.longform import AudioInput, LongFormDecoder, frame_seconds
from echostream.transcript import Transcript, build_transcript

AudioLike = str | os.PathLike | np.ndarray | tuple[np.ndarray, int]

DEFAULT_CHUNK, DEFAULT_LEFT, DEFAULT_RIGHT = 64, 128, 128
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class _InputError(AudioError):
    """An input that cannot be used, with the name it is reported under."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source


class Model:
    """A loaded ASR model.

    >>> model = load_model("path/to/model_dir")                      # doctest: +SKIP
    >>> model.transcribe(["a.wav", "b.wav"])[0].text                  # doctest: +SKIP
    """

    def __init__(self, bundle: ModelBundle, device: torch.device | str = "cpu") -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        bundle.model.to(self.device).eval()

    @property
    def sample_rate(self) -> int:
        return self.bundle.fbank.sample_rate

    def _inputs(self, audio: AudioLike | Sequence[AudioLike], sample_rate: int | None) -> list[AudioInput | _InputError]:
        items: list[AudioLike]
        if isinstance(audio, (str, os.PathLike, np.ndarray)) or (
            isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[0], np.ndarray)
        ):
            items = [audio]  # type: ignore[list-item]
        else:
            items = list(audio)  # type: ignore[arg-type]
        inputs: list[AudioInput | _InputError] = []
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                inputs.append(AudioInput(name=os.fspath(item), path=os.fspath(item)))
                continue
            rate: int | None
            if isinstance(item, tuple) and len(item) == 2:
                samples, rate = item
            elif isinstance(item, np.ndarray):
                samples, rate = item, sample_rate
            else:
                inputs.append(_InputError(f"input {i}", f"expected a path, an array or (array, sample_rate), got {type(item).__name__}"))
                continue
            name = f"array {i}"
            if rate is None:
                inputs.append(_InputError(name, "a numpy array needs its sample rate (sample_rate=...)"))
                continue
            try:
                inputs.append(AudioInput(name=name, samples=prepare_waveform(samples, rate, self.sample_rate)))
            except AudioError as err:
                inputs.append(_InputError(name, str(err)))
        return inputs

    def _decode(
        self,
        audio: AudioLike | Sequence[AudioLike],
        *,
        chunk_size: int,
        left_context: int,
        right_context: int,
        sample_rate: int | None,
        batch_seconds: float,
        block_seconds: float,
        keep_log_probs: bool,
        progress: Callable[[float], None] | None,
    ) -> tuple[list[AudioInput | _InputError], list]:
        context = ChunkContext(chunk=chunk_size, left=left_context, right=right_context)
        inputs = self._inputs(audio, sample_rate)
        decoder = LongFormDecoder(
            self.bundle, context, block_seconds=block_seconds, batch_seconds=batch_seconds,
            keep_log_probs=keep_log_probs, device=self.device,
        )
        good = [x for x in inputs if isinstance(x, AudioInput)]
        results = iter(decoder.run(good, progress))
        return inputs, [next(results) if isinstance(x, AudioInput) else x for x in inputs]

    def transcribe(
        self,
        audio: AudioLike | Sequence[AudioLike],
        *,
        chunk_size: int = DEFAULT_CHUNK,
        left_context: int = DEFAULT_LEFT,
        right_context: int = DEFAULT_RIGHT,
        sample_rate: int | None = None,
        batch_seconds: float = 300.0,
        block_seconds: float = 30.0,
        max_silence: float = 0.5,
        progress: Callable[[float], None] | None = None,
    ) -> list[Transcript]:
        """Transcribe files (any length, any format soundfile or ffmpeg reads) or arrays.

        ``audio`` is a path, an array (with ``sample_rate``), an ``(array, rate)`` pair, or a list of
        them. Chunk and contexts are in encoder frames (80 ms). Up to ``batch_seconds`` of audio are
        encoded per step, ``block_seconds`` per input. An input that cannot be read gets a
        Transcript with ``error`` set; the others are transcribed all the same.
        """
        inputs, results = self._decode(
            audio, chunk_size=chunk_size, left_context=left_context, right_context=right_context,
            sample_rate=sample_rate, batch_seconds=batch_seconds, block_seconds=block_seconds,
            keep_log_probs=False, progress=progress,
        )
        seconds = frame_seconds(self.bundle)
        out = []
        for item, result in zip(inputs, results):
            if isinstance(result, _InputError):
                out.append(Transcript(source=result.source, error=str(result)))
            elif result.error is not None:
                out.append(Transcript(source=result.name, error=result.error))
            else:
                out.append(
                    build_transcript(
                        result.name, result.frame_labels.tolist(), self.bundle.vocab,
                        frame_seconds=seconds, duration=result.num_samples / self.sample_rate,
                        blank_id=self.bundle.model.cfg.blank_id, max_silence=max_silence,
                    )
                )
        return out

    def ctc_log_probs(
        self,
        audio: AudioLike,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        left_context: int = DEFAULT_LEFT,
        right_context: int = DEFAULT_RIGHT,
        sample_rate: int | None = None,
        block_seconds: float = 30.0,
    ) -> np.ndarray:
        """CTC log-probabilities (T', V) of one input; raises AudioError if it cannot be read."""
        if isinstance(audio, (list, tuple)) and not (
            isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[0], np.ndarray)
        ):
            raise TypeError("ctc_log_probs takes one input (a path, an array or (array, sample_rate))")
        _, results = self._decode(
            audio, chunk_size=chunk_size, left_context=left_context, right_context=right_context,
            sample_rate=sample_rate, batch_seconds=block_seconds, block_seconds=block_seconds,
            keep_log_probs=True, progress=None,
        )
        (result,) = results
        if isinstance(result, AudioError):
            raise result
        if result.error is not None:
            raise AudioError(result.error)
        assert result.log_probs is not None
        return result.log_probs


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - it is a dependency
        raise CheckpointError(f"{repo_id}: install huggingface_hub to download models") from None
    try:
        return Path(snapshot_download(repo_id=repo_id))
    except Exception as err:  # noqa: BLE001 - network and hub errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{repo_id}: cannot download from the Hugging Face Hub ({first})") from None


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """Load a model: an echostream checkpoint file, a released ChunkFormer folder, or a Hugging
    Face repository id (downloaded with ``huggingface_hub``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.yaml").is_file():
            return Model(load_released_folder(p), device)
        if (p / "model.pt").is_file():
            return Model(load_checkpoint(p / "model.pt"), device)
        raise CheckpointError(f"{p}: not a model folder (no config.yaml or model.pt)")
    if p.is_file():
        return Model(load_checkpoint(p), device)
    if _REPO_ID.match(os.fspath(path)) and not os.fspath(path).startswith((".", "/")):
        return Model(load_released_folder(_download(os.fspath(path))), device)
    raise CheckpointError(f"{p}: no such model file or folder")
