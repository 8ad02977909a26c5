"""The log-mel front end in numpy: what torchaudio computes at training time, without torch.

``MelSpectrogram(center=True, pad_mode="reflect", norm=None, mel_scale="htk")`` followed by
``AmplitudeToDB(top_db=...)``, step for step, so the torch-free station turns a microphone
signal into exactly the tensor the network was trained on. Computed in float64 and
returned as float32; tests/test_audio.py states the largest difference to torchaudio.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from flowedge.core.card import AudioInput

AMIN = 1e-10  # torchaudio's floor before the logarithm


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@cache
def mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> np.ndarray:
    """Triangular HTK filters [n_freqs, n_mels] (torchaudio.functional.melscale_fbanks)."""
    all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = mel_to_hz(m_pts)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    bank = np.maximum(0.0, np.minimum(down, up))
    bank.flags.writeable = False  # cached and shared
    return bank


@cache
def padded_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann of ``win_length`` zero-padded on both sides to ``n_fft`` (torch.stft)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    padded = np.zeros(n_fft)
    padded[left : left + win_length] = window
    padded.flags.writeable = False
    return padded


def power_spectrogram(signal: np.ndarray, spec: AudioInput) -> np.ndarray:
    """|STFT|**power [n_fft // 2 + 1, frames] of a mono signal, centred with reflect padding."""
    half = spec.n_fft // 2
    mode = "reflect" if len(signal) > half else "constant"  # reflect needs more than half a frame
    padded = np.pad(np.asarray(signal, dtype=np.float64), half, mode=mode)
    n_frames = 1 + (len(padded) - spec.n_fft) // spec.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop_length]
    spectrum = np.fft.rfft(frames[:n_frames] * padded_window(spec.win_length, spec.n_fft), axis=1)
    magnitude = np.abs(spectrum)
    return (magnitude**spec.power if spec.power != 1.0 else magnitude).T


def log_mel(signal: np.ndarray, spec: AudioInput) -> np.ndarray:
    """The dB mel spectrogram [n_mels, frames] of a mono signal at ``spec.sample_rate``."""
    power = power_spectrogram(signal, spec)
    bank = mel_filterbank(power.shape[0], spec.f_min, spec.f_max, spec.n_mels, spec.sample_rate)
    mel = bank.T @ power
    scale = 10.0 if spec.power == 2.0 else 20.0
    db = scale * np.log10(np.maximum(mel, AMIN))
    return np.maximum(db, db.max() - spec.top_db)


def mel_band_hz(spec: AudioInput) -> np.ndarray:
    """Centre frequency of every mel band (for axis labels)."""
    return mel_to_hz(np.linspace(hz_to_mel(spec.f_min), hz_to_mel(spec.f_max), spec.n_mels + 2))[
        1:-1
    ]
