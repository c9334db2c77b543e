"""The user-facing model: load a checkpoint, transcribe files and arrays of any length."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from echostream.audio import AudioError, parse_channel, prepare_waveform
from echostream.encoders.base import (
    OFFLINE_CONTEXT,
    ChunkContext,
    default_right_context,
    user_context,
)
from echostream.extras import MissingExtraError, require
from echostream.heads.search import (
    AttentionRescoring,
    CTCGreedySearch,
    CTCPrefixBeamSearch,
    RescoringWeights,
    SearchStrategy,
)
from echostream.models.asr import ASRModel
from echostream.models.checkpoint import (
    CheckpointError,
    ModelBundle,
    load_checkpoint,
    load_released_folder,
)
from echostream.models.precision import apply_precision, check_precision
from echostream.runtime import resolve_device
from echostream.streaming.longform import AudioInput, LongFormDecoder, SearchSink, StreamResult
from echostream.transcript import Transcript, build_transcript

AudioLike = str | os.PathLike | np.ndarray | tuple[np.ndarray, int]

DEFAULT_CHUNK, DEFAULT_LEFT = OFFLINE_CONTEXT.chunk, OFFLINE_CONTEXT.left
DECODINGS = ("greedy", "prefix_beam", "attention_rescoring")
MAX_PIECE_SECONDS = 30.0  # longest piece prefix beam search / rescoring decode at once
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, kw_only=True)
class DecodingOptions:
    """How :meth:`Model.transcribe` turns CTC frames into tokens.

    ``greedy``: best label per frame. ``prefix_beam``: CTC prefix beam search of ``beam_size``.
    ``attention_rescoring``: the prefix beam n-best re-ranked by the attention decoder with
    ``(1 - reverse_weight) * l2r + reverse_weight * r2l + ctc_weight * ctc``; ``reverse_weight``
    None takes the model's trained ``reverse_weight`` (0 without a right-to-left decoder).
    """

    decoding: str = "greedy"
    beam_size: int = 10
    ctc_weight: float = 0.3
    reverse_weight: float | None = None

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding {self.decoding!r} is not one of {', '.join(DECODINGS)}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        RescoringWeights(ctc_weight=self.ctc_weight, reverse_weight=self.reverse_weight or 0.0)


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    """Everything :meth:`Model.transcribe` takes besides the audio (see it for each field)."""

    chunk_size: int = DEFAULT_CHUNK
    left_context: int = DEFAULT_LEFT
    right_context: int | None = None  # None: the model's default look-ahead
    sample_rate: int | None = None
    batch_seconds: float = 300.0
    block_seconds: float = 30.0
    max_silence: float = 0.5
    decoding: str = "greedy"
    beam_size: int = 10
    ctc_weight: float = 0.3
    reverse_weight: float | None = None
    channel: int | None = None  # keep this channel of every input (0 left, 1 right; None: average)


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

    def __init__(
        self, bundle: ModelBundle, device: torch.device | str = "cpu", precision: str = "fp32", runtime: str = "torch"
    ) -> None:
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        check_runtime(runtime, self.device)
        self.precision = precision
        self.runtime = runtime
        bundle.model.to(self.device).eval()
        if precision != "fp32" and runtime == "torch":  # onnx: the encoder ran its int8 graphs already
            quantized = cast(ASRModel, apply_precision(bundle.model, precision, self.device))
            bundle = dataclasses.replace(bundle, model=quantized.eval())
        self.bundle = bundle

    @property
    def sample_rate(self) -> int:
        return self.bundle.fbank.sample_rate

    def _inputs(
        self, audio: AudioLike | Sequence[AudioLike], sample_rate: int | None, channel: int | None = None
    ) -> list[AudioInput | _InputError]:
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
                inputs.append(AudioInput(name=os.fspath(item), path=os.fspath(item), channel=channel))
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
                inputs.append(AudioInput(
                    name=name, samples=prepare_waveform(samples, rate, self.sample_rate, channel=channel)))
            except AudioError as err:
                inputs.append(_InputError(name, str(err)))
        return inputs

    def _context(self, chunk_size: int, left_context: int, right_context: int | None) -> ChunkContext:
        """The user's setting; right context ``None``: the encoder's default look-ahead (128
        frames, none for a chunk-causal encoder)."""
        right = default_right_context(self.bundle.model.encoder) if right_context is None else right_context
        return user_context(chunk_size, left_context, right)

    def _decode(
        self,
        audio: AudioLike | Sequence[AudioLike],
        *,
        chunk_size: int,
        left_context: int,
        right_context: int | None,
        sample_rate: int | None,
        batch_seconds: float,
        block_seconds: float,
        keep_log_probs: bool,
        progress: Callable[[float], None] | None,
    ) -> tuple[list[AudioInput | _InputError], list]:
        context = self._context(chunk_size, left_context, right_context)
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
        right_context: int | None = None,
        sample_rate: int | None = None,
        batch_seconds: float = 300.0,
        block_seconds: float = 30.0,
        max_silence: float = 0.5,
        progress: Callable[[float], None] | None = None,
        decoding: str = "greedy",
        beam_size: int = 10,
        ctc_weight: float = 0.3,
        reverse_weight: float | None = None,
        channel: int | str | None = None,
    ) -> list[Transcript]:
        """Transcribe files (any length, any format soundfile or ffmpeg reads) or arrays.

        ``audio`` is a path, an array (with ``sample_rate``), an ``(array, rate)`` pair, or a list of
        them. Chunk and contexts are in the model's encoder frames (80 ms ChunkFormer, 40 ms Emformer
        and Zipformer); ``right_context=None`` is the model's default look-ahead (128 frames, none
        for a chunk-causal encoder such as the Zipformer). Up to ``batch_seconds`` of audio are
        encoded per step, ``block_seconds`` per input. An input that cannot be read gets a
        Transcript with ``error`` set; the others are transcribed all the same. An input whose
        decoding fails part-way keeps the transcript of the audio before the failure, with
        ``error`` saying where and why it stopped.

        ``decoding`` is ``"greedy"`` (the default), ``"prefix_beam"`` (CTC prefix beam search,
        ``beam_size``) or ``"attention_rescoring"`` (the beam's n-best re-ranked by the attention
        decoder; see :class:`DecodingOptions` for ``ctc_weight`` and ``reverse_weight``). The beam
        decodings run input by input and decode each input piece by piece: the CTC frames are cut
        where the best path has ``max_silence`` of blanks after a token, and at most every
        30 s, so memory stays bounded for any duration; a piece whose best path is all blank
        gives no tokens without being searched. Tokens, their times and the segments come from the
        best CTC path of each piece's chosen sequence, as greedy ones come from the best path.

        ``channel`` keeps one channel of every input instead of averaging them (``"left"``,
        ``"right"`` or a 0-based number), e.g. one side of stereo call recordings.
        """
        options = TranscribeOptions(
            channel=parse_channel(channel),
            chunk_size=chunk_size, left_context=left_context, right_context=right_context,
            sample_rate=sample_rate, batch_seconds=batch_seconds, block_seconds=block_seconds,
            max_silence=max_silence, decoding=decoding, beam_size=beam_size, ctc_weight=ctc_weight,
            reverse_weight=reverse_weight,
        )
        out = dict(self.transcribe_iter(audio, options, progress=progress))
        return [out[i] for i in range(len(out))]

    def transcribe_iter(
        self,
        audio: AudioLike | Sequence[AudioLike],
        options: TranscribeOptions | None = None,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[tuple[int, Transcript]]:
        """As :meth:`transcribe`, but yields ``(index, transcript)`` as each input finishes, so
        that a caller can keep every result the moment it is made."""
        for finished in self.transcription_steps(audio, options, progress=progress):
            yield from finished

    def transcription_steps(
        self,
        audio: AudioLike | Sequence[AudioLike],
        options: TranscribeOptions | None = None,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[list[tuple[int, Transcript]]]:
        """:meth:`transcribe` one encoder step at a time: after each step, the ``(index,
        transcript)`` of the inputs that finished in it (often none). Each step decodes at most
        ``block_seconds`` of every active input, so a caller can interleave other work."""
        opts = options if options is not None else TranscribeOptions()
        decoding = DecodingOptions(
            decoding=opts.decoding, beam_size=opts.beam_size, ctc_weight=opts.ctc_weight,
            reverse_weight=opts.reverse_weight,
        )
        context = self._context(opts.chunk_size, opts.left_context, opts.right_context)
        max_silence, block_seconds = opts.max_silence, opts.block_seconds
        seconds = self.bundle.frame_seconds
        if max_silence < seconds:
            raise ValueError(f"max_silence must be at least one frame ({seconds} s), got {max_silence}")
        inputs = self._inputs(audio, opts.sample_rate, opts.channel)
        failed = [(i, Transcript(source=x.source, error=str(x))) for i, x in enumerate(inputs) if isinstance(x, _InputError)]
        good = [(i, x) for i, x in enumerate(inputs) if isinstance(x, AudioInput)]
        if failed:
            yield failed
        sink = None
        if decoding.decoding != "greedy":
            strategy = self.search_strategy(decoding)
            silence_frames = math.floor(max_silence / seconds + 1e-6)
            max_frames = max(1, round(MAX_PIECE_SECONDS / seconds))
            blank = self.bundle.model.cfg.blank_id

            def sink() -> SearchSink:
                return SearchSink(strategy, blank_id=blank, silence_frames=silence_frames, max_frames=max_frames)

        decoder = LongFormDecoder(
            self.bundle, context, block_seconds=block_seconds, batch_seconds=opts.batch_seconds,
            keep_log_probs=False, device=self.device, sink=sink,
        )
        for finished in decoder.steps([x for _, x in good], progress):
            yield [(good[j][0], self._transcript(result, max_silence)) for j, result in finished]

    def _transcript(self, result: StreamResult, max_silence: float) -> Transcript:
        return build_transcript(
            result.name, result.frame_labels.tolist(), self.bundle.vocab,
            frame_seconds=self.bundle.frame_seconds, duration=result.num_samples / self.sample_rate,
            blank_id=self.bundle.model.cfg.blank_id, max_silence=max_silence, error=result.error,
            time_offset=self.bundle.token_time_offset,
        )

    def search_strategy(self, options: DecodingOptions) -> SearchStrategy:
        """The strategy that decodes one utterance (or piece) as ``options`` say.

        (``transcribe`` decodes ``greedy`` frame by frame in its batched long-form path instead;
        the result is the same.)
        """
        cfg = self.bundle.model.cfg
        if options.decoding == "prefix_beam":
            return CTCPrefixBeamSearch(beam_size=options.beam_size, blank_id=cfg.blank_id)
        if options.decoding == "attention_rescoring":
            decoder = self.bundle.model.decoder
            if decoder is None:
                raise ValueError("attention_rescoring needs an attention decoder; this model has none")
            reverse = cfg.loss.reverse_weight if options.reverse_weight is None else options.reverse_weight
            if reverse > 0.0 and decoder.r2l is None:
                raise ValueError("reverse_weight > 0 needs a right-to-left decoder; this model has none")
            if decoder.r2l is None:
                reverse = 0.0
            return AttentionRescoring(
                decoder,
                RescoringWeights(ctc_weight=options.ctc_weight, reverse_weight=reverse),
                beam_size=options.beam_size,
                blank_id=cfg.blank_id,
            )
        return CTCGreedySearch(blank_id=cfg.blank_id)

    def ctc_log_probs(
        self,
        audio: AudioLike,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        left_context: int = DEFAULT_LEFT,
        right_context: int | None = None,
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
        require("hub", "downloading a model")
    except MissingExtraError as err:
        raise CheckpointError(f"{repo_id}: not a local file or folder, and {err}") from None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id))
    except Exception as err:  # noqa: BLE001 - network and hub errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{repo_id}: not a local file or folder, and not downloadable from the Hugging Face Hub ({first})"
        ) from None


BUNDLED_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED_MODELS = {"default": "general_en", "general_en": "general_en", "small_en": "small_en"}
"""Models that ship inside the package: name -> folder under ``assets/``."""


def bundled_models() -> dict[str, Path]:
    """The bundled models of this build, by name (``load_model(name)`` loads them)."""
    out = {}
    for name, folder in BUNDLED_MODELS.items():
        path = BUNDLED_DIR / folder
        if (path / "model.pt").is_file() or (path / "config.yaml").is_file():
            out[name] = path
    return out


def _is_repo_id(text: str) -> bool:
    """``owner/name`` that is not a local path: neither it nor its first component exists here,
    and it is not spelled as a path (``./x``, ``/x``, ``~``, ``x.pt``)."""
    if text.startswith("hf:"):
        return True
    if not _REPO_ID.match(text) or text.startswith((".", "/", "~")) or text.endswith((".pt", ".bin")):
        return False
    return not Path(text.split("/")[0]).exists()


RUNTIMES = ("torch", "onnx")


def check_runtime(runtime: str, device: torch.device) -> None:
    """Raise a one-line ValueError unless ``runtime`` is known and can run on ``device``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (use {' or '.join(RUNTIMES)})")
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(f"runtime onnx runs on cpu here (onnxruntime's CPU provider), not on {device}")


def _load_onnx(folder: Path, device: torch.device, precision: str) -> Model:
    """An export folder (``echostream export --format onnx``) with onnxruntime as its encoder."""
    require("onnx", "runtime onnx")
    from echostream.export.onnx import read_export_info
    from echostream.export.onnx_runtime import OnnxEncoder

    info = read_export_info(folder)
    bundle = load_checkpoint(folder / "model.pt")
    if bundle.model.encoder.cfg.TYPE != info.encoder_type:
        raise CheckpointError(f"{folder}: model.pt holds a {bundle.model.encoder.cfg.TYPE} encoder, "
                              f"the graphs a {info.encoder_type}")
    bundle.model.encoder = OnnxEncoder(folder, info, precision)  # the torch encoder is dropped
    return Model(bundle, device, precision, runtime="onnx")


def load_model(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    runtime: str = "torch",
) -> Model:
    """Load a model: a bundled model by name (``"default"``, also when ``path`` is None), an
    echostream checkpoint file, a released ChunkFormer/WeNet folder, or a Hugging Face repository
    id (``owner/name`` or ``hf:owner/name``, downloaded with ``huggingface_hub``).

    ``precision``: ``fp32`` (exact) or ``int8`` (linear layers dynamically quantised, CPU only;
    see ``echostream.models.precision``).

    ``runtime``: ``torch``, or ``onnx`` for a folder written by ``echostream export --format onnx``
    (its encoder runs in onnxruntime on the CPU; see ``echostream.export``).

    A local path wins over a bundled name; a missing local path is reported as missing, never
    tried on the Hub (a name is a repo id only if its first component is not a local folder).
    """
    device = resolve_device(device)
    check_precision(precision, device)  # before any loading or download
    check_runtime(runtime, device)
    if path is None:
        path = "default"
    text = os.fspath(path)
    p = Path(text).expanduser()
    if not p.exists():
        bundled = bundled_models()
        if text in bundled:
            p = bundled[text]
        elif _is_repo_id(text):
            return Model(load_released_folder(_download(text.removeprefix("hf:"))), device, precision)
        else:
            names = ", ".join(sorted(bundled)) or "none in this build"
            raise CheckpointError(f"{text}: no such model file or folder (bundled models: {names})")
    if runtime == "onnx":
        if not p.is_dir():
            raise CheckpointError(f"{p}: runtime onnx loads an export folder (echostream export --format onnx)")
        return _load_onnx(p, device, precision)
    if p.is_dir():
        if (p / "config.yaml").is_file():
            return Model(load_released_folder(p), device, precision)
        if (p / "model.pt").is_file():
            return Model(load_checkpoint(p / "model.pt"), device, precision)
        raise CheckpointError(f"{p}: not a model folder (no config.yaml or model.pt)")
    return Model(load_checkpoint(p), device, precision)
