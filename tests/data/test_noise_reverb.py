"""Tests for echostream.data.noise, echostream.data.reverb and echostream.data.augment: the SNR and
RT60 asked for, measured on the output."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from echostream.audio import load_audio
from echostream.data.augment import Augmenter
from echostream.data.channel import ChannelConfig, codec_available
from echostream.data.manifest import Utterance, write_manifest
from echostream.data.noise import NoiseConfig, NoiseSource, colored_noise, mix_at_snr
from echostream.data.reverb import Reverb, ReverbConfig, reverberate, room_impulse_response

SAMPLE = Path(__file__).parents[2] / "samples" / "booking_16k.wav"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE, 16000)


def measured_snr(speech: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - speech
    return float(10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise**2)))


@pytest.fixture
def noise_folders(tmp_path: Path, speech: np.ndarray) -> dict[str, str]:
    """A music folder (tones), a recordings folder (one unreadable file) and a speech manifest."""
    t = np.arange(16000 * 2) / 16000
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "hold.wav", 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t)), 16000)
    recordings = tmp_path / "recordings"
    (recordings / "street").mkdir(parents=True)
    sf.write(recordings / "street" / "hum.flac", 0.1 * np.sin(2 * np.pi * 50 * t), 16000)
    (recordings / "broken.wav").write_bytes(b"RIFF not audio")
    voices = []
    for i in range(4):
        path = tmp_path / f"voice{i}.wav"
        sf.write(path, np.roll(speech, 3000 * i), 16000)
        voices.append(Utterance(id=f"v{i}", audio=str(path), text="x", duration=speech.size / 16000))
    write_manifest(tmp_path / "babble.jsonl", voices)
    return {"music": str(music), "folder": str(recordings), "babble": str(tmp_path / "babble.jsonl")}


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble", "music", "folder"])
@pytest.mark.parametrize("snr", [5.0, 10.0, 15.0])
def test_noise_is_mixed_at_the_snr_asked_for(
    kind: str, snr: float, speech: np.ndarray, noise_folders: dict[str, str]
) -> None:
    cfg = NoiseConfig(snr_db=(snr, snr), kinds=(kind,), kind_weights=(1.0,), **noise_folders)
    mixed, what = NoiseSource(cfg, 16000).apply(speech, random.Random(7))
    assert what == f"{kind}@{snr:.1f}dB"
    assert measured_snr(speech, mixed) == pytest.approx(snr, abs=0.5)


def test_the_snr_is_drawn_from_its_range(speech: np.ndarray) -> None:
    source = NoiseSource(NoiseConfig(snr_db=(5.0, 15.0)), 16000)
    snrs = [measured_snr(speech, source.apply(speech, random.Random(i))[0]) for i in range(30)]
    assert 5.0 - 0.5 <= min(snrs) and max(snrs) <= 15.0 + 0.5
    assert max(snrs) - min(snrs) > 5  # spread over the range, not one value


@pytest.mark.parametrize(("kind", "slope"), [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_noise_colours_fall_by_their_decibels_per_octave(kind: str, slope: float) -> None:
    x = colored_noise(kind, 16000 * 8, np.random.default_rng(0))
    f, psd = signal.welch(x, 16000, nperseg=4096)
    band = (f >= 100) & (f <= 6400)
    fitted = np.polyfit(np.log2(f[band]), 10 * np.log10(psd[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.5)


def test_a_kind_with_weight_needs_a_source() -> None:
    with pytest.raises(ValueError, match="noise kind music has weight 1.0 but noise.music names no source"):
        NoiseConfig(kinds=("white", "music"), kind_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="noise.snr_db"):
        NoiseConfig(snr_db=(15.0, 5.0))
    with pytest.raises(ValueError, match="not a folder"):
        NoiseSource(NoiseConfig(kinds=("music",), kind_weights=(1.0,), music="/nonexistent"), 16000)


def test_mix_at_snr_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        mix_at_snr(np.zeros(10, np.float32), np.zeros(11, np.float32), 10.0)


def schroeder_t20(rir: np.ndarray, rate: int) -> float:
    """RT60 by a least-squares line through the Schroeder decay between -5 and -25 dB (our own
    measurement, independent of pyroomacoustics')."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    decay = 10 * np.log10(energy / energy[0])
    part = (decay <= -5) & (decay >= -25)
    slope = np.polyfit(np.arange(rir.size)[part] / rate, decay[part], 1)[0]  # dB per second
    return float(-60 / slope)


@pytest.mark.parametrize("rt60", [0.05, 0.08, 0.1, 0.15, 0.3])
def test_room_impulse_responses_have_the_rt60_asked_for(rt60: float) -> None:
    rng = random.Random(int(rt60 * 1000))
    for _ in range(3):
        rir = room_impulse_response(rt60, 16000, rng)
        assert schroeder_t20(rir, 16000) == pytest.approx(rt60, rel=0.2)
        assert np.argmax(np.abs(rir)) == 40 and rir[40] == pytest.approx(1.0, abs=1e-6)


def test_reverberation_keeps_length_power_and_timing(speech: np.ndarray) -> None:
    rir = room_impulse_response(0.15, 16000, random.Random(0))
    y = reverberate(speech, rir)
    assert y.shape == speech.shape
    assert np.mean(y.astype(np.float64) ** 2) == pytest.approx(np.mean(speech.astype(np.float64) ** 2), rel=1e-3)
    lag = int(np.argmax(signal.correlate(y, speech, mode="full"))) - (speech.size - 1)
    assert 0 <= lag <= 80  # the direct path stays within 5 ms of where it was


def test_the_bank_of_rooms_is_reproducible() -> None:
    cfg = ReverbConfig(rt60=(0.05, 0.15), bank_size=3)
    one, two = Reverb(cfg, 16000, seed=1).bank, Reverb(cfg, 16000, seed=1).bank
    assert [r for r, _ in one] == [r for r, _ in two]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, two, strict=True))
    assert all(0.05 <= r <= 0.15 for r, _ in one)


def test_augmenter_applies_room_noise_and_line_in_order(speech: np.ndarray) -> None:
    channel = ChannelConfig(codecs=("mulaw",), codec_weights=(1.0,), packet_loss_probability=0.0,
                            clip_probability=0.0)  # fmt: skip
    if not codec_available("mulaw"):
        pytest.skip("sox is not installed")
    augmenter = Augmenter(
        reverb=ReverbConfig(bank_size=2), noise=NoiseConfig(snr_db=(10.0, 10.0)), channel=channel, rate=16000
    )
    y, done = augmenter.apply(speech, random.Random(0))
    assert y.shape == speech.shape and y.dtype == np.float32 and np.abs(y).max() <= 1.0
    assert done[0].startswith("rt60=") and done[1].endswith("@10.0dB") and done[2].startswith("8k ")
    f, psd = signal.welch(y, 16000, nperseg=1024)
    assert 10 * np.log10(psd[(f > 500) & (f < 3000)].mean() / psd[f > 4500].mean()) > 40  # band-limited
    nothing = Augmenter(reverb=None, noise=None, channel=None, rate=16000)
    assert not nothing.active and nothing.apply(speech, random.Random(0)) == (speech, ())


def test_augment_command_writes_line_audio_reproducibly(
    tmp_path: Path, speech: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    if not codec_available("mulaw"):
        pytest.skip("sox is not installed")
    from echostream.cli.main import main
    from echostream.data.manifest import read_manifest

    rows = []
    for i in range(4):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, np.roll(speech, 4000 * i), 16000)
        rows.append(Utterance(id=f"u{i}", audio=str(path), text="hello", duration=speech.size / 16000))
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    rows.append(Utterance(id="broken", audio=str(tmp_path / "broken.wav"), text="x", duration=1.0))
    write_manifest(tmp_path / "in.jsonl", rows)
    args = ["augment", "--manifest", str(tmp_path / "in.jsonl"), "--channel", "--codecs", "mulaw",
            "--noise", "--snr", "10", "--seed", "3"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert "broken" in capsys.readouterr().err  # named, and the other rows written
    assert main([*args, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    written = read_manifest(tmp_path / "one" / "manifest.jsonl")
    assert [r.id for r in written] == ["u0", "u1", "u2", "u3"]
    for row in written:
        one, rate = sf.read(row.audio)
        two, _ = sf.read(tmp_path / "two" / "wav" / f"{row.id}.wav")
        assert rate == 8000 and np.array_equal(one, two)  # the same draws whatever the processes
        assert row.duration == pytest.approx(one.size / 8000, abs=1e-4)
    conditions = (tmp_path / "one" / "conditions.jsonl").read_text().splitlines()
    assert all('"white@10.0dB"' in c or '"pink@10.0dB"' in c or '"brown@10.0dB"' in c for c in conditions)
    assert all("mulaw" in c for c in conditions)
    assert main(["augment", "--manifest", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_augment_sets_aside_duplicate_ids_and_keeps_long_or_odd_ids_apart(
    tmp_path: Path, speech: np.ndarray
) -> None:
    from echostream.data.augment import ConditionsConfig, augment_manifest
    from echostream.data.manifest import read_manifest

    long_short = [speech[:8000], speech[:16000]]
    paths = []
    for i, samples in enumerate(long_short):
        paths.append(tmp_path / f"in{i}.wav")
        sf.write(paths[-1], samples, 16000)
    rows = [
        Utterance(id="a", audio=str(paths[0]), text="one", duration=0.5),
        Utterance(id="a", audio=str(paths[1]), text="two", duration=1.0),  # same id, other audio
        Utterance(id="L" * 300 + "1", audio=str(paths[0]), text="long", duration=0.5),
        Utterance(id="L" * 300 + "2", audio=str(paths[1]), text="long too", duration=1.0),
        Utterance(id="x\u0000y/z", audio=str(paths[1]), text="odd", duration=1.0),
        Utterance(id="x_y_z", audio=str(paths[0]), text="same file name", duration=0.5),
        Utterance(id="A", audio=str(paths[1]), text="a file system may not tell A from a", duration=1.0),
    ]
    conditions = ConditionsConfig(noise=NoiseConfig(kinds=("white",), kind_weights=(1.0,), snr_db=(10.0, 10.0)))
    _, failed = augment_manifest(rows, tmp_path / "out", conditions)
    assert len(failed) == 1 and failed[0].startswith("a: duplicate id")
    back = {row.id: row for row in read_manifest(tmp_path / "out" / "manifest.jsonl")}
    assert set(back) == {"a", "L" * 300 + "1", "L" * 300 + "2", "x\u0000y/z", "x_y_z", "A"}
    for row in back.values():  # each row's own audio, not another's written over it
        assert row.duration == pytest.approx(sf.info(row.audio).duration, abs=1e-4)
    assert back["a"].duration == pytest.approx(0.5, abs=1e-3)
    assert len({row.audio.casefold() for row in back.values()}) == 6


def test_augment_names_a_row_it_cannot_write_and_writes_the_others(
    tmp_path: Path, speech: np.ndarray
) -> None:
    from echostream.data.augment import ConditionsConfig, augment_manifest

    sf.write(tmp_path / "in.wav", speech[:8000], 16000)
    rows = [Utterance(id=name, audio=str(tmp_path / "in.wav"), text="t", duration=0.5) for name in "abc"]
    (tmp_path / "out" / "wav" / "b.wav").mkdir(parents=True)  # a folder where b's file would go
    conditions = ConditionsConfig(noise=NoiseConfig(kinds=("white",), kind_weights=(1.0,), snr_db=(10.0, 10.0)))
    written, failed = augment_manifest(rows, tmp_path / "out", conditions)
    assert [w.row.id for w in written] == ["a", "c"]
    assert len(failed) == 1 and failed[0].startswith("b: cannot write")
