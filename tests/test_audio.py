"""The audio modality: readers, bad audio, the numpy mel front end against torchaudio,
the gear-motor generator and the overlay picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowedge.core.card import AudioInput
from flowedge.core.errors import BadInputError
from flowedge.modalities import get_modality
from flowedge.modalities.audio import Clip, to_tensor
from flowedge.modalities.audio_mel import log_mel
from flowedge.modalities.audio_synthetic import FAULTS, SEVERITIES, gear_motor_clip
from tests.conftest import REAL_DATA

sf = pytest.importorskip("soundfile")
AUDIO = get_modality("audio")
RATE = 16000
SPEC = AudioInput(
    sample_rate=RATE, n_fft=1024, win_length=512, hop_length=128, n_mels=64, duration_s=1.0
)
SEED000 = AudioInput(  # seed 000's transform, with the n_mels this project chose (docs/audio.md)
    sample_rate=44100,
    n_fft=4096,
    win_length=2048,
    hop_length=250,
    n_mels=256,
    f_max=22050.0,
    duration_s=1.0,
)


def tone(rate: int = RATE, seconds: float = 1.0, level: float = 0.3, freq: float = 440.0):
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.01
    return (level * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def test_multichannel_wav_is_mixed_or_one_channel_is_taken(tmp_path: Path) -> None:
    left, right = tone(freq=440.0), tone(freq=2000.0)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    clip = AUDIO.read(path)
    assert clip.rate == RATE and clip.samples.shape == (RATE, 2)
    mixed = AUDIO.load(path, SPEC)
    only_right = AUDIO.load(path, AudioInput(**{**_fields(SPEC), "channels": 1}))
    assert mixed.shape == SPEC.tensor_shape == only_right.shape and mixed.dtype == np.float32
    assert not np.allclose(mixed, only_right)
    with pytest.raises(BadInputError, match=r"stereo.wav: the model uses channel 5.*has 2"):
        AUDIO.load(path, AudioInput(**{**_fields(SPEC), "channels": 5}))


def _fields(spec: AudioInput) -> dict:
    return {k: v for k, v in spec.__dict__.items() if k != "kind"}


def test_a_higher_rate_is_resampled_and_a_too_low_rate_is_refused(tmp_path: Path) -> None:
    native = AUDIO.load(write(tmp_path / "16k.wav", tone()), SPEC)
    resampled = AUDIO.load(write(tmp_path / "48k.flac", tone(48000), 48000), SPEC)
    # the same tone recorded at 48 kHz has the same level in its band (mean 0, std 1: dB)
    band = int(np.argmax(native[0].mean(axis=1)))
    assert int(np.argmax(resampled[0].mean(axis=1))) == band
    inner = slice(4, -4)  # the first and last frames see the resampling filter's edges
    assert np.abs(native[0, band, inner] - resampled[0, band, inner]).max() < 0.1
    with pytest.raises(BadInputError, match=r"8k.wav: recorded at 8000 Hz.*up to 8000 Hz"):
        AUDIO.load(write(tmp_path / "8k.wav", tone(8000), 8000), SPEC)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda: np.zeros(RATE, np.float32), "silent"),
        (lambda: np.clip(tone(level=3.0), -1, 1), "clipped"),
    ],
)
def test_silent_and_clipped_audio_is_that_files_error(tmp_path: Path, content, message) -> None:
    path = write(tmp_path / "bad.wav", content())
    with pytest.raises(BadInputError, match=rf"bad.wav: {message}.*; (check|lower)"):
        AUDIO.load(path, SPEC)


def test_truncated_and_broken_files_are_named(tmp_path: Path) -> None:
    data = write(tmp_path / "full.wav", tone()).read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"cut.wav: truncated: .*record or copy it again"):
        AUDIO.read(tmp_path / "cut.wav")
    (tmp_path / "noise.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(BadInputError, match=r"noise.wav: not a readable WAV/FLAC"):
        AUDIO.read(tmp_path / "noise.wav")
    with pytest.raises(BadInputError, match=r"absent.wav: cannot be read"):
        AUDIO.read(tmp_path / "absent.wav")


def test_numpy_front_end_matches_torchaudio_within_a_thousandth_of_a_db() -> None:
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    signal = gear_motor_clip(44100, 1.0, np.random.default_rng(1), fault="thrust_click")
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=44100, n_fft=4096, win_length=2048, hop_length=250, n_mels=256, f_max=22050.0
    )
    to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=SEED000.top_db)
    expected = to_db(mel(torch.from_numpy(signal)[None]))[0].numpy()
    ours = log_mel(signal, SEED000)
    assert ours.shape == expected.shape == SEED000.map_shape
    assert np.abs(ours - expected).max() < 1e-3  # measured 5e-4 dB (float32 vs float64)


def test_every_fault_changes_the_spectrum_more_as_it_gets_worse() -> None:
    def spectrum(fault: str | None, severity: float) -> np.ndarray:
        clip = gear_motor_clip(RATE, 1.0, np.random.default_rng(3), fault=fault, severity=severity)
        return to_tensor(Clip(clip[:, None], RATE), SPEC)

    normal = spectrum(None, 0.0)
    for fault in FAULTS:
        low, high = (
            np.abs(spectrum(fault, SEVERITIES[s]) - normal).mean() for s in ("low", "high")
        )
        assert 0 < low < high, fault


def test_synthesize_writes_an_mvtec_layout_of_wav_files(tmp_path: Path) -> None:
    root = AUDIO.synthesize(tmp_path / "motor", n_train=2, n_test_good=1, n_test_defect=1)
    assert len(AUDIO.list_files(root / "train" / "good")) == 2
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(
        ["good", *(f"{f}_mid" for f in FAULTS)]
    )
    batch = AUDIO.synthetic_batch(SPEC, 2, 3)
    assert batch.shape == (5, *SPEC.tensor_shape) and np.isfinite(batch).all()


def test_render_shows_the_spectrogram_with_map_banner_and_bar() -> None:
    tensor = AUDIO.synthetic_batch(SPEC, 1, 0)[0]
    amap = np.zeros(SPEC.map_shape, np.float32)
    amap[:8, 10:20] = 1.0  # the lowest bands: drawn at the bottom
    picture = AUDIO.render(tensor, amap, SPEC, 2.5, "ANOMALY", 1.0)
    assert picture.dtype == np.uint8 and picture.ndim == 3
    body = picture[28:, : picture.shape[1] - 80]
    hot_rows = np.nonzero((body[:, :, 2].astype(int) - body[:, :, 0]) > 60)[0]
    assert hot_rows.min() > body.shape[0] * 0.8  # red (hot) only near the bottom


def test_real_mimii_clips_read_mixed_and_resampled() -> None:
    folder = REAL_DATA / "mimii-valve"
    files = AUDIO.list_files(folder) if folder.is_dir() else []
    if not files:
        pytest.skip(f"real MIMII valve clips not found in {folder}")
    clip = AUDIO.read(files[0])
    assert clip.rate == 16000 and clip.samples.shape[1] == 8
    spec = AudioInput(
        sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256, duration_s=10.0
    )
    tensor = AUDIO.load(files[0], spec)  # 16 kHz -> 22.05 kHz, f_max 8 kHz
    assert tensor.shape == spec.tensor_shape and np.isfinite(tensor).all()
