"""The audio modality: WAV/FLAC clips become standardised log-mel spectrograms.

numpy, scipy and soundfile only (no torch), so the station handles microphones
and recorded files with the same front end training used (:mod:`audio_mel`,
checked against torchaudio by a parity test). Bad audio (truncated, clipped,
silent, recorded at too low a rate) is the sample's :class:`BadInputError`,
named and with what to do; never a crash.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.signal import resample_poly

from flowedge.core.card import AudioInput
from flowedge.core.errors import BadInputError
from flowedge.modalities import audio_synthetic
from flowedge.modalities.audio_mel import log_mel
from flowedge.modalities.base import Modality
from flowedge.modalities.baseline import BaselineRules, baseline_statistics, require_samples
from flowedge.modalities.overlay import render_overlay


@dataclass(frozen=True)
class Clip:
    """Decoded audio: float32 samples [frames, channels] in [-1, 1] at ``rate`` Hz."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class AudioLimits:
    """What one clip may cost and what counts as unusable audio."""

    max_bytes: int = 256 << 20
    max_seconds: float = 600.0
    clip_level: float = 0.999  # |x| at or above this is a clipped sample
    clip_fraction: float = 1e-3  # more clipped samples than this fraction: the gain is too high
    silence_dbfs: float = -70.0  # RMS below this: microphone unplugged, muted or broken


DEFAULT_LIMITS = AudioLimits()
MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces record at


def _require_soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError) as exc:  # OSError: libsndfile itself is missing
        raise BadInputError(
            f"audio files need the soundfile package ({exc}); pip install 'flowedge[audio]'"
        ) from None
    return soundfile


def check_wav_complete(data: bytes, name: str) -> None:
    """A RIFF/WAVE file whose header says more bytes than it holds was cut short, and one whose
    data chunk is followed by bytes that are no WAV chunks has a header that lies about its
    size (libsndfile silently reads what the header says, so the header is checked here)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    riff = int.from_bytes(data[4:8], "little")
    if 0 < riff < 0xFFFFFFFF and riff + 8 > len(data):  # 0 / 0xFFFFFFFF: unknown (streamed)
        raise BadInputError(
            f"audio {name}: truncated: the RIFF header declares {riff + 8} bytes, the file "
            f"holds {len(data)}; the recording or copy was interrupted: record or copy it again"
        )
    end = riff + 8 if 0 < riff < 0xFFFFFFFF else len(data)
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            int.from_bytes(data[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"data":
            held = len(data) - offset - 8
            if 0 < size < 0xFFFFFFFF and size > held:  # 0 / 0xFFFFFFFF: length unknown (streamed)
                raise BadInputError(
                    f"audio {name}: truncated: the header declares {size} bytes of samples, the "
                    f"file holds {held}; the recording or copy was interrupted: record or copy "
                    "it again"
                )
            if 0 < size < 0xFFFFFFFF:
                _chunks_after_data(data, offset + 8 + size, end, size, name)
            return
        offset += 8 + size + (size & 1)


def _chunks_after_data(data: bytes, offset: int, end: int, size: int, name: str) -> None:
    """The samples end within the RIFF size, and what follows them up to its end are chunks
    (LIST, id3, ...); else the header lies about the size."""
    lie = f"audio {name}: the header declares {size} bytes of samples, but "
    again = "; the header lies about the size: record or copy the file again"
    if offset > end:
        raise BadInputError(f"{lie}they reach past the {end} bytes of the RIFF header{again}")
    offset += size & 1 if offset < end else 0  # the pad byte after an odd-sized chunk
    while offset + 8 <= end:
        chunk, length = (
            data[offset : offset + 4],
            int.from_bytes(data[offset + 4 : offset + 8], "little"),
        )
        if not all(32 <= c < 127 for c in chunk) or offset + 8 + length > end:
            raise BadInputError(f"{lie}{end - offset} bytes after them are no WAV chunk{again}")
        offset += 8 + length + (length & 1)


def decode_audio(data: bytes, name: str, limits: AudioLimits = DEFAULT_LIMITS) -> Clip:
    """Decode WAV/FLAC bytes; BadInputError naming ``name`` when they are not usable audio."""
    soundfile = _require_soundfile()
    if len(data) > limits.max_bytes:
        raise BadInputError(
            f"audio {name}: {len(data)} bytes exceed the {limits.max_bytes}-byte limit; "
            "cut the recording into motions or windows"
        )
    check_wav_complete(data, name)
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            if handle.samplerate > MAX_SAMPLE_RATE:
                raise BadInputError(
                    f"audio {name}: the header says {handle.samplerate} samples per second, more "
                    f"than any recorder makes ({MAX_SAMPLE_RATE}): the header is damaged; "
                    "record or copy the file again"
                )
            if handle.frames / handle.samplerate > limits.max_seconds:
                raise BadInputError(
                    f"audio {name}: {handle.frames / handle.samplerate:.0f} s is longer than "
                    f"{limits.max_seconds:g} s; cut continuous recordings into windows first"
                )
            samples = handle.read(dtype="float32", always_2d=True)
            rate = handle.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise BadInputError(
            f"audio {name}: not a readable WAV/FLAC file ({exc}); check the file, or record it again"
        ) from None
    return Clip(samples, int(rate))


def read_audio(path: str | Path, limits: AudioLimits = DEFAULT_LIMITS) -> Clip:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise BadInputError(
                f"audio {path}: {size} bytes exceed the {limits.max_bytes}-byte limit; cut the "
                "recording into motions or windows"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(
            f"audio {path}: cannot be read ({exc.strerror}); check the path"
        ) from None
    return decode_audio(data, str(path), limits)


def validate_clip(clip: Any, name: str, limits: AudioLimits = DEFAULT_LIMITS) -> None:
    """Empty, non-finite, clipped or silent audio is refused, saying what to check."""
    if not isinstance(clip, Clip) or clip.samples.ndim != 2:
        raise BadInputError(f"audio {name}: expected a decoded clip, got {type(clip).__name__}")
    samples = clip.samples
    if samples.size == 0 or clip.rate <= 0:
        raise BadInputError(f"audio {name}: no samples; the recording is empty")
    if not np.isfinite(samples).all():
        raise BadInputError(f"audio {name}: contains NaN or Inf values; check the source")
    clipped = float(np.mean(np.abs(samples) >= limits.clip_level))
    if clipped > limits.clip_fraction:
        raise BadInputError(
            f"audio {name}: clipped ({clipped:.2%} of samples at full scale); lower the "
            "microphone gain or move it away from the source"
        )
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    level = 20.0 * math.log10(max(rms, 1e-12))
    if level < limits.silence_dbfs:
        raise BadInputError(
            f"audio {name}: silent ({level:.0f} dBFS RMS, below {limits.silence_dbfs:g}); check "
            "the microphone cable, power and mute switch"
        )


def select_channel(clip: Clip, spec: AudioInput, name: str) -> np.ndarray:
    """Mono signal: the mean of all channels ("mix", delay-free beamforming) or one channel."""
    if spec.channels == "mix":
        return clip.samples.mean(axis=1)
    if spec.channels >= clip.samples.shape[1]:
        raise BadInputError(
            f"audio {name}: the model uses channel {spec.channels}, the recording has "
            f"{clip.samples.shape[1]}; record with more channels or set input.channels"
        )
    return clip.samples[:, spec.channels]


def resample(signal: np.ndarray, rate: int, spec: AudioInput, name: str) -> np.ndarray:
    """Polyphase resampling (Kaiser anti-aliasing filter) to the model rate.

    A recording whose Nyquist frequency is below the model's ``f_max`` is refused: the
    bands above it would be empty, which the model has never seen (a wrong rate).
    """
    if rate == spec.sample_rate:
        return signal
    if rate < 2 * spec.f_max:
        raise BadInputError(
            f"audio {name}: recorded at {rate} Hz, the model looks at frequencies up to "
            f"{spec.f_max:g} Hz and needs at least {2 * spec.f_max:g} Hz; record at "
            f"{spec.sample_rate} Hz"
        )
    common = math.gcd(rate, spec.sample_rate)
    return resample_poly(signal, spec.sample_rate // common, rate // common)


def fit_length(signal: np.ndarray, spec: AudioInput) -> np.ndarray:
    """Cut to ``duration_s`` or pad with silence at the end (one motion per clip)."""
    n = math.floor(spec.duration_s * spec.sample_rate)
    return signal[:n] if len(signal) >= n else np.pad(signal, (0, n - len(signal)))


def clip_db(
    clip: Clip, spec: AudioInput, name: str = "<clip>", limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """One clip -> its dB mel spectrogram [n_mels, frames]: mono, resampled, cut, log-mel."""
    validate_clip(clip, name, limits)
    signal = fit_length(resample(select_channel(clip, spec, name), clip.rate, spec, name), spec)
    return log_mel(signal, spec)


def to_tensor(
    clip: Clip, spec: AudioInput, name: str = "<clip>", limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """One clip -> (1, n_mels, frames) float32: the dB spectrogram, standardised."""
    return ((clip_db(clip, spec, name, limits) - spec.mean) / spec.std).astype(np.float32)[None]


def level_statistics(spectrograms: Iterable[np.ndarray]) -> tuple[float, float, int]:
    """(mean, std, count) of the dB values of spectrograms, summed as they come (no stacking)."""
    count, n, total, squares = 0, 0, 0.0, 0.0
    for db in spectrograms:
        values = np.asarray(db, dtype=np.float64)
        count, n = count + 1, n + values.size
        total, squares = total + values.sum(), squares + np.square(values).sum()
    if not count:
        return math.nan, math.nan, 0
    mean = total / n
    return mean, math.sqrt(max(squares / n - mean * mean, 0.0)), count


def fitted_level(
    files: Sequence[Path], settings: Mapping[str, Any], limits: AudioLimits | None = None
) -> dict[str, float]:
    """``{"mean", "std"}`` of the dB values of the training files (cut as ``settings`` say),
    for a front end whose settings leave them out; what the settings give wins."""
    if "mean" in settings and "std" in settings:
        return {}
    spec = AudioInput(**{**settings, "mean": 0.0, "std": 1.0})
    tensors = (t[0] for path in files for t in _readable_parts(path, spec, limits))
    mean, std, count = level_statistics(tensors)
    if not count:
        raise ValueError(
            f"none of the {len(files)} training file(s) gives a usable clip to measure the "
            "dB level on; check the files, or set front_end mean and std"
        )
    fitted = {"mean": round(mean, 4), "std": round(max(std, 1e-3), 4)}
    return {key: value for key, value in fitted.items() if key not in settings}


def _readable_parts(path: Path, spec: AudioInput, limits: AudioLimits | None) -> list[np.ndarray]:
    """The file's samples, none when it is unusable (training skips it too, with a warning)."""
    try:
        return MODALITY.load_all(path, spec, limits)
    except BadInputError:
        return []


def rebaselined(clips: Sequence[Clip], spec: AudioInput, rules: BaselineRules) -> AudioInput:
    """``spec`` standardising with the dB level of ``clips`` (a changeover's first motions):
    a gain, a distance or a louder machine adds to every dB value, so the level moves and
    the training spread stays (also with ``rules.spread``); BaselineRefused when the level
    lies outside ``rules`` around training's."""
    what = f"baseline of {len(clips)} clip(s)"
    require_samples(len(clips), what)
    mean, std, _ = level_statistics(
        clip_db(clip, spec, f"baseline clip {i}") for i, clip in enumerate(clips)
    )
    level = replace(rules, spread=False)
    means, _ = baseline_statistics(
        ["dB"], np.array([mean]), np.array([std]), [spec.mean], [spec.std], level, what
    )
    return replace(spec, mean=round(float(means[0]), 4))


def spectrogram_view(tensor: np.ndarray) -> np.ndarray:
    """The network input as a BGR picture, low frequencies at the bottom."""
    db = np.asarray(tensor, dtype=np.float32)[0]
    low, high = float(db.min()), float(db.max())
    gray = ((db - low) / ((high - low) or 1.0) * 255.0).astype(np.uint8)[::-1]
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR)


class AudioModality(Modality[Clip, AudioInput, AudioLimits]):
    """Microphone events and WAV/FLAC files."""

    name = "audio"
    extensions = frozenset({".wav", ".flac"})

    def limits(self, max_bytes: int, max_pixels: int) -> AudioLimits:
        """Only the size: a clip's length and levels keep their defaults."""
        return AudioLimits(max_bytes=max_bytes)

    def read(self, path: str | Path, limits: AudioLimits | None = None) -> Clip:
        return read_audio(path, limits or DEFAULT_LIMITS)

    def decode(self, data: bytes, name: str, limits: AudioLimits | None = None) -> Clip:
        return decode_audio(data, name, limits or DEFAULT_LIMITS)

    def validate(self, raw: Any, name: str) -> None:
        validate_clip(raw, name)

    def preprocess(
        self, raw: Any, spec: AudioInput, name: str, limits: AudioLimits | None = None
    ) -> np.ndarray:
        return to_tensor(self.as_raw(raw, name, limits), spec, name, limits or DEFAULT_LIMITS)

    def cuts(self, spec: AudioInput, limits: AudioLimits | None = None) -> bool:
        return spec.cut is not None

    def training_spec(self, files: Sequence[Path], settings: Mapping[str, Any]) -> AudioInput:
        """The settings, with the dB level measured on the training files unless they set it."""
        return AudioInput(**{**settings, **fitted_level(files, settings)})

    def rebaseline(
        self, raws: Sequence[Clip], spec: AudioInput, rules: BaselineRules
    ) -> AudioInput:
        """The dB level of the clips (the spread stays training's)."""
        return rebaselined(raws, spec, rules)

    def read_all(
        self, path: str | Path, spec: AudioInput, limits: AudioLimits | None = None
    ) -> list[Clip]:
        if spec.cut is None:
            return [self.read(path, limits)]
        from flowedge.modalities.audio_cut import cut_clip  # it builds on this module

        return cut_clip(self.read(path, limits), spec.cut)

    def load_all(
        self, path: str | Path, spec: AudioInput, limits: AudioLimits | None = None
    ) -> list[np.ndarray]:
        if spec.cut is None:
            return [self.load(path, spec, limits)]
        from flowedge.modalities.audio_cut import cut_tensors  # it builds on this module

        return cut_tensors(
            self.read(path, limits),
            spec.cut,
            str(path),
            lambda clip, name: to_tensor(clip, spec, name),
        )

    def display(
        self, path: str | Path, spec: AudioInput, limits: AudioLimits | None = None
    ) -> np.ndarray:
        """The spectrogram as RGB, row 0 the lowest band (so it lines up with the map)."""
        return spectrogram_view(self.load(path, spec, limits))[::-1, :, ::-1].copy()

    def synthesize(
        self,
        root: str | Path,
        n_train: int,
        n_test_good: int,
        n_test_defect: int,
        seed: int = 0,
        sample_rate: int = 16000,
        duration_s: float = 2.0,
    ) -> Path:
        return audio_synthetic.write_dataset(
            root, n_train, n_test_good, n_test_defect, sample_rate, duration_s, seed=seed
        )

    def synthetic_batch(
        self, spec: AudioInput, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        clips = audio_synthetic.sample_clips(
            spec.sample_rate, spec.duration_s, n_normal, n_anomalous, seed
        )
        return np.stack(
            [
                to_tensor(Clip(c[:, None], spec.sample_rate), spec, f"synthetic-{i}")
                for i, c in enumerate(clips)
            ]
        )

    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: AudioInput,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        flipped = np.asarray(amap, dtype=np.float32)[::-1]  # the view has low bands at the bottom
        return render_overlay(spectrogram_view(input_tensor), flipped, score, decision, threshold)


MODALITY = AudioModality()
