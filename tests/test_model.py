"""Tests for echostream.model: the Python API ``load_model(folder).transcribe(...)``.

Runs the chunkformer-tiny fixture (random weights, so the texts mean nothing; what matters is that
they are stable, batch-independent and equal across input kinds).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import echostream
from echostream import (
    AudioError,
    CheckpointError,
    ChunkContext,
    Model,
    Segment,
    Token,
    Transcript,
    load_model,
)
from echostream.audio import load_audio, num_frames
from echostream.frontend.fbank import compute_fbank
from echostream.heads.ctc import collapse_ctc

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "chunkformer-tiny"
MODEL_DIR = FIXTURE / "model"
AUDIO_DIR = FIXTURE / "audio"
FSDD_DIR = SHARED / "data" / "fsdd"
SHORT = ("utt0.wav", "utt1.wav", "utt2.wav", "utt3.wav")  # long.wav (30 s) only where needed
FRAME_S = 0.08
OFFSET_S = 0.0825  # a token sits at the centre of its frame's 165 ms receptive field

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "config.yaml").is_file(), reason=f"fixture model missing: {MODEL_DIR}"
)


def _audio(name: str) -> Path:
    return AUDIO_DIR / name


def _read(path: Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype=dtype)
    return samples, rate


def _same(a: Transcript, b: Transcript) -> bool:
    return (a.text, a.segments, a.tokens) == (b.text, b.segments, b.tokens)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def alone(model: Model) -> dict[str, Transcript]:
    """Each short fixture file transcribed on its own, with the defaults."""
    return {name: model.transcribe(_audio(name))[0] for name in SHORT}


# ------------------------------------------------------------------------------ result types


def test_result_types(model: Model) -> None:
    path = _audio("utt0.wav")
    results = model.transcribe(path)
    assert isinstance(results, list) and len(results) == 1
    r = results[0]
    assert isinstance(r, Transcript)
    assert r.ok and r.error is None
    assert r.source == str(path)
    assert isinstance(r.text, str) and r.text
    assert r.duration == pytest.approx(sf.info(path).duration)

    assert isinstance(r.segments, list) and r.segments
    for seg in r.segments:
        assert isinstance(seg, tuple) and isinstance(seg, Segment) and len(seg) == 3
        start, end, text = seg
        assert isinstance(start, float) and isinstance(end, float) and isinstance(text, str)
        assert 0.0 <= start <= end <= r.duration
    assert " ".join(s.text for s in r.segments) == r.text

    assert isinstance(r.tokens, list) and r.tokens
    times = []
    for tok in r.tokens:
        assert isinstance(tok, tuple) and isinstance(tok, Token) and len(tok) == 2
        token, time = tok
        assert isinstance(token, str) and isinstance(time, float)
        frames = (time - OFFSET_S) / FRAME_S
        assert frames == pytest.approx(round(frames))  # on the 80 ms grid, 82.5 ms into the frame
        times.append(time)
    assert times == sorted(times)
    assert "".join(t.token for t in r.tokens).replace("\u2581", " ").strip() == r.text


def test_defaults_are_chunk_64_left_128_right_128(model: Model) -> None:
    """The default call decodes as the masked batch at 64/128/128 does (an independent path),
    and not as another setting does. The right context defaults to the encoder's own (None):
    128 for a ChunkFormer."""
    params = inspect.signature(Model.transcribe).parameters
    assert (params["chunk_size"].default, params["left_context"].default) == (64, 128)
    assert params["right_context"].default is None
    path = _audio("long.wav")
    default = model.transcribe(path)[0]
    assert default.ok

    def masked(chunk: int, left: int, right: int) -> str:
        samples = load_audio(path)
        feats = compute_fbank(samples, model.bundle.fbank)
        x = torch.from_numpy(feats).unsqueeze(0)
        with torch.inference_mode():
            log_probs, lens = model.bundle.model(x, torch.tensor([x.shape[1]]), ChunkContext(chunk=chunk, left=left, right=right))
        labels = log_probs[0, : int(lens[0])].argmax(-1).tolist()
        return model.bundle.vocab.decode(collapse_ctc(labels).tokens)

    assert default.text == masked(64, 128, 128)
    assert default.text != masked(4, 8, 4)


def test_results_come_back_in_input_order(model: Model, alone: dict[str, Transcript]) -> None:
    # A small batch makes the short utt2 finish first and later inputs take its place.
    order = ["utt3.wav", "utt2.wav", "utt0.wav", "utt1.wav", "utt2.wav"]
    results = model.transcribe([_audio(n) for n in order], batch_seconds=1.0, block_seconds=0.5)
    assert [r.source for r in results] == [str(_audio(n)) for n in order]
    for name, r in zip(order, results):
        assert r.ok and _same(r, alone[name]), name


def test_progress_reports_all_audio(model: Model) -> None:
    seen: list[float] = []
    paths = [_audio("utt1.wav"), _audio("utt2.wav")]
    results = model.transcribe(paths, block_seconds=0.5, progress=seen.append)
    assert seen and all(s >= 0 for s in seen)
    assert sum(seen) == pytest.approx(sum(r.duration for r in results), abs=1e-6)


# ------------------------------------------------------------------------------- bad inputs


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """kind -> (path, what the error must say)."""
    wav = _audio("utt2.wav").read_bytes()
    rng = np.random.default_rng(0)
    garbage = bytes(rng.integers(0, 256, 2000, dtype=np.uint8))
    files = {
        "missing": (tmp / "missing.wav", "not found"),
        "empty": (tmp / "empty.wav", "empty"),
        "garbage_after_riff": (tmp / "garbage.wav", "cannot decode"),
        "truncated_header": (tmp / "truncated.wav", "cannot decode"),
        "header_only": (tmp / "header_only.wav", "no audio samples"),
        "text_as_wav": (tmp / "notes.wav", "not an audio file"),
        "rate_4k": (tmp / "phone_4k.wav", "4000 Hz is below the 8000 Hz minimum"),
    }
    files["empty"][0].write_bytes(b"")
    files["garbage_after_riff"][0].write_bytes(wav[:12] + garbage)  # RIFF....WAVE, then junk
    files["truncated_header"][0].write_bytes(wav[:30])  # cut inside the fmt chunk
    files["header_only"][0].write_bytes(wav[:44])  # a complete header, no samples
    files["text_as_wav"][0].write_text("these are meeting notes, not audio\n" * 20)
    sf.write(files["rate_4k"][0], _read(_audio("utt2.wav"))[0][::4], 4000)
    return files


def _assert_one_line_error(r: Transcript, name: str, problem: str) -> None:
    assert not r.ok
    assert isinstance(r.error, str) and r.error
    assert "\n" not in r.error and "\r" not in r.error, r.error
    assert name in r.error, r.error
    assert problem.lower() in r.error.lower(), r.error
    assert r.text == "" and r.segments == [] and r.tokens == []


BAD_FILE_KINDS = (
    "missing",
    "empty",
    "garbage_after_riff",
    "truncated_header",
    "header_only",
    "text_as_wav",
    "rate_4k",
)


def test_bad_inputs_fail_alone_and_good_ones_are_unaffected(
    model: Model, alone: dict[str, Transcript], tmp_path: Path
) -> None:
    files = _bad_files(tmp_path)
    x, rate = _read(_audio("utt1.wav"))
    nan = x.copy()
    nan[len(nan) // 2] = np.nan
    bad_arrays = [
        (x, "sample rate"),  # an array without its rate
        ((x[::4].copy(), 4000), "below the 8000 Hz minimum"),
        ((np.zeros(0, np.float32), 16000), "no audio samples"),
        ((np.stack([x, x]), rate), "(channels, frames)"),  # (channels, frames) orientation
        ((nan, rate), "non-finite"),
    ]
    # (input, the fixture file it equals, or (name, problem) that its error must mention)
    cases: list[tuple[object, str | tuple[str, str]]] = [
        (_audio("utt0.wav"), "utt0.wav"),
        (str(_audio("utt3.wav")), "utt3.wav"),
    ]
    for kind in BAD_FILE_KINDS:
        path, problem = files[kind]
        cases.append((path, (str(path), problem)))
        if kind == "empty":
            cases.append(((x, rate), "utt1.wav"))  # good ones in between, too
    for array, problem in bad_arrays:
        cases.append((array, (f"array {len(cases)}", problem)))
    cases.append((_audio("utt2.wav"), "utt2.wav"))

    results = model.transcribe([item for item, _ in cases])  # type: ignore[misc]
    assert len(results) == len(cases)
    for (_, expected), r in zip(cases, results):
        if isinstance(expected, tuple):
            _assert_one_line_error(r, *expected)
            assert r.source == expected[0]
        else:
            assert r.ok, r.error
            assert _same(r, alone[expected]), expected


@pytest.mark.parametrize("kind", BAD_FILE_KINDS)
def test_bad_file_alone_gives_one_line_error(model: Model, tmp_path: Path, kind: str) -> None:
    path, problem = _bad_files(tmp_path)[kind]
    (r,) = model.transcribe(path)
    _assert_one_line_error(r, str(path), problem)
    assert r.source == str(path)


def test_unsupported_input_type_is_an_error_not_a_crash(model: Model) -> None:
    results = model.transcribe([_audio("utt2.wav"), 42])  # type: ignore[list-item]
    assert results[0].ok
    _assert_one_line_error(results[1], "input 1", "expected a path")


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": -4}, "chunk_size"),
        ({"left_context": -1}, "left_context"),
        ({"right_context": -1}, "right_context"),
        ({"batch_seconds": 0}, "batch_seconds"),
        ({"block_seconds": 0}, "block_seconds"),
        ({"batch_seconds": float("nan")}, "batch_seconds"),
        ({"block_seconds": float("inf")}, "block_seconds"),
        ({"block_seconds": 1e-9}, "block_seconds"),
    ],
)
def test_invalid_settings_raise_value_error(model: Model, kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        model.transcribe(_audio("utt2.wav"), **kwargs)


def test_missing_model_is_a_one_line_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "no-such-model")
    assert "no-such-model" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not a model folder"):
        load_model(tmp_path)


def _model_with(folder: Path, name: str, content: bytes) -> Path:
    """The fixture model with one file replaced (the others linked, not copied)."""
    folder.mkdir()
    for f in MODEL_DIR.iterdir():
        if f.name != name:
            (folder / f.name).symlink_to(f)
    (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("config.yaml", b"{{{ : : not yaml\n\t- ["),
        ("config.yaml", b"- a list\n- not a mapping\n"),
        ("vocab.txt", b"<blank> 0\n<unk>\n"),
        pytest.param(
            "config.yaml",
            b"\xff\xfe\x00 not utf-8 \x80\x81\n",
        ),
        pytest.param(
            "vocab.txt",
            b"\xff\xfe\x00 0\n",
        ),
    ],
)
def test_malformed_model_folder_is_a_one_line_checkpoint_error(
    tmp_path: Path, name: str, content: bytes
) -> None:
    folder = _model_with(tmp_path / "model", name, content)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert name in message and "\n" not in message, message


def test_a_checkpoint_with_nan_weights_is_refused_by_name(tmp_path: Path) -> None:
    import io

    state = torch.load(MODEL_DIR / "pytorch_model.bin", map_location="cpu", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[name] = state[name].clone()
    state[name][0, 0] = float("nan")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    folder = _model_with(tmp_path / "model", "pytorch_model.bin", buffer.getvalue())
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert "NaN or infinite" in message and name in message and "\n" not in message, message


# ------------------------------------------------------------------------------ numpy input


def test_numpy_input_matches_the_file(model: Model, alone: dict[str, Transcript]) -> None:
    path = _audio("utt0.wav")
    x, rate = _read(path)
    xi, _ = _read(path, dtype="int16")
    assert rate == 16000 and xi.dtype == np.int16
    pair, keyword, int16, mono_2d = model.transcribe(
        [(x, 16000), (x, 16000), (xi, 16000), (x[:, None], 16000)]
    )
    (keyword,) = model.transcribe(x, sample_rate=16000)
    (single_pair,) = model.transcribe((x, 16000))
    for r in (pair, keyword, int16, mono_2d, single_pair):
        assert r.ok, r.error
        assert _same(r, alone["utt0.wav"])
    assert single_pair.source == "array 0" and single_pair.duration == pytest.approx(len(x) / 16000)


def test_float64_array_is_accepted(model: Model, alone: dict[str, Transcript]) -> None:
    x, _ = _read(_audio("utt2.wav"), dtype="float64")
    (r,) = model.transcribe(x, sample_rate=16000)
    assert r.ok and _same(r, alone["utt2.wav"])


def test_8khz_array_and_file_agree(model: Model, tmp_path: Path) -> None:
    x, _ = _read(_audio("utt0.wav"))
    x8 = soxr.resample(x, 16000, 8000).astype(np.float32)
    path = tmp_path / "utt0_8k.wav"
    sf.write(path, x8, 8000, subtype="FLOAT")
    from_file, from_array = model.transcribe([path, (x8, 8000)])
    assert from_file.ok and from_array.ok, (from_file.error, from_array.error)
    assert isinstance(from_file.text, str)
    assert from_file.duration == pytest.approx(len(x8) / 8000, abs=1e-3)
    assert from_file.text == from_array.text


def test_8khz_real_speech(model: Model) -> None:
    files = sorted(FSDD_DIR.glob("*.wav"))[:3]
    if not files:
        pytest.skip(f"no FSDD recordings in {FSDD_DIR}")
    assert all(sf.info(f).samplerate == 8000 for f in files)
    arrays = [(_read(f)[0], 8000) for f in files]
    results = model.transcribe([*files, *arrays])
    assert all(r.ok for r in results), [r.error for r in results]
    for f, by_file, by_array in zip(files, results[: len(files)], results[len(files) :]):
        assert isinstance(by_file.text, str)
        assert by_file.duration == pytest.approx(sf.info(f).duration, abs=1e-3)
        assert by_file.text == by_array.text, f.name


def test_stereo_file(model: Model, alone: dict[str, Transcript], tmp_path: Path) -> None:
    x, rate = _read(_audio("utt0.wav"))
    same = tmp_path / "same.wav"
    sf.write(same, np.stack([x, x], axis=1), rate, subtype="FLOAT")
    rng = np.random.default_rng(1)
    y = np.clip(x + 0.01 * rng.standard_normal(len(x)).astype(np.float32), -1, 1)
    different = tmp_path / "different.wav"
    stereo = np.stack([x, y], axis=1).astype(np.float32)
    sf.write(different, stereo, rate, subtype="FLOAT")
    r_same, r_diff, r_mix = model.transcribe(
        [same, different, (stereo.mean(axis=1, dtype=np.float64).astype(np.float32), rate)]
    )
    assert r_same.ok and _same(r_same, alone["utt0.wav"])
    assert r_diff.ok and isinstance(r_diff.text, str)
    assert r_diff.text == r_mix.text  # a stereo file is the average of its channels


def test_very_short_audio_gives_empty_text(model: Model, tmp_path: Path) -> None:
    x, rate = _read(_audio("utt0.wav"))
    tenth = x[: rate // 10]  # 0.1 s = 9 feature frames, fewer than one encoder frame needs
    path = tmp_path / "short.wav"
    sf.write(path, tenth, rate)
    results = model.transcribe([(tenth, rate), path, (x[:1], rate)])
    for r in results:
        assert r.ok, r.error
        assert r.text == "" and r.segments == [] and r.tokens == []
    assert results[0].duration == pytest.approx(0.1)
    lp = model.ctc_log_probs((tenth, rate))
    assert lp.shape == (0, len(model.bundle.vocab))


# ----------------------------------------------------------------------------- log-probs


@pytest.mark.parametrize("name", SHORT)
def test_ctc_log_probs_shape_and_greedy_text(
    model: Model, alone: dict[str, Transcript], name: str
) -> None:
    path = _audio(name)
    lp = model.ctc_log_probs(path)
    frames = num_frames(sf.info(path).frames)
    assert lp.dtype == np.float32
    assert lp.shape == ((frames - 15) // 8 + 1, len(model.bundle.vocab))
    np.testing.assert_allclose(np.logaddexp.reduce(lp, axis=-1), 0.0, atol=1e-4)
    best = collapse_ctc(lp.argmax(-1).tolist(), model.bundle.model.cfg.blank_id)
    assert model.bundle.vocab.decode(best.tokens) == alone[name].text


def test_ctc_log_probs_do_not_depend_on_block_size(model: Model) -> None:
    path = _audio("utt3.wav")
    whole = model.ctc_log_probs(path)
    blocks = model.ctc_log_probs(path, block_seconds=0.5)
    assert blocks.shape == whole.shape
    np.testing.assert_allclose(blocks, whole, atol=1e-4, rtol=0)


def test_ctc_log_probs_of_an_array(model: Model) -> None:
    path = _audio("utt2.wav")
    x, rate = _read(path)
    np.testing.assert_allclose(
        model.ctc_log_probs(x, sample_rate=rate), model.ctc_log_probs(path), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("kind", BAD_FILE_KINDS)
def test_ctc_log_probs_of_bad_file_raises_audio_error(
    model: Model, tmp_path: Path, kind: str
) -> None:
    path, _ = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioError) as info:
        model.ctc_log_probs(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_ctc_log_probs_of_array_without_rate_raises(model: Model) -> None:
    x, _ = _read(_audio("utt2.wav"))
    with pytest.raises(AudioError, match="sample rate"):
        model.ctc_log_probs(x)
    with pytest.raises(AudioError, match="8000 Hz minimum"):
        model.ctc_log_probs((x, 4000))


# ------------------------------------------------------------------ batch/block independence


def test_result_does_not_depend_on_batch_or_block_seconds(model: Model) -> None:
    paths = sorted(AUDIO_DIR.glob("*.wav"))
    assert len(paths) >= 5
    default = model.transcribe(paths)
    small = model.transcribe(paths, batch_seconds=1.0, block_seconds=0.5)
    assert [r.source for r in small] == [str(p) for p in paths]
    for p, a, b in zip(paths, default, small):
        assert a.ok and b.ok
        assert a.text == b.text, p.name
        assert a.segments == b.segments, p.name
        assert a.tokens == b.tokens, p.name
        assert a.duration == b.duration


def test_public_api_is_exported() -> None:
    missing = [name for name in echostream.__all__ if not hasattr(echostream, name)]
    assert missing == []
    assert {"load_model", "Model", "Transcript", "Recognizer", "Stream"} <= set(echostream.__all__)
    assert issubclass(AudioError, ValueError) and issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------- names, partial results (issue 9)


def test_bundled_models_load_by_name() -> None:
    default = load_model()
    assert load_model("default").bundle.model.cfg == default.bundle.model.cfg
    samples = Path(__file__).resolve().parents[1] / "samples"
    assert "press two" in load_model("small_en").transcribe(samples / "options_16k.wav")[0].text


def test_a_missing_relative_path_is_missing_not_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import echostream.model as model_module

    tried: list[str] = []
    monkeypatch.setattr(model_module, "_download", lambda repo: tried.append(repo) or (_ for _ in ()).throw(
        CheckpointError(f"{repo}: not downloadable")))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for path in ("models/mine", "./mine", "mine.pt", "models/mine/model.pt", "nothing-here"):
        with pytest.raises(CheckpointError, match="no such model file or folder") as info:
            load_model(path)
        assert str(info.value).startswith(f"{path}: ") and "bundled models: default" in str(info.value)
    assert tried == []
    for repo in ("khanhld/chunkformer-large-vie", "hf:models/mine"):
        with pytest.raises(CheckpointError, match="not downloadable"):
            load_model(repo)
    assert tried == ["khanhld/chunkformer-large-vie", "models/mine"]


def test_a_corrupt_block_mid_file_keeps_the_transcript_before_it(model: Model, tmp_path: Path) -> None:
    samples, rate = sf.read(_audio("long.wav"), dtype="float32")
    bad = tmp_path / "bad.flac"
    sf.write(bad, samples, rate)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(range(256)) * 7 + bytes(208)
    bad.write_bytes(bytes(data))
    for decoding in ("greedy", "prefix_beam"):
        result, good = model.transcribe([bad, _audio("utt2.wav")], block_seconds=5, decoding=decoding)
        assert result.error is not None and "flac decoder" in result.error and good.ok
        before = model.transcribe((samples[: int(result.duration * rate)], rate), block_seconds=5, decoding=decoding)[0]
        assert 5 <= result.duration < 30
        assert result.text == before.text != ""
