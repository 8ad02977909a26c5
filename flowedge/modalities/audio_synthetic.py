"""A gear-motor sound generator: the folding mirror actuator of seed 000, with its faults.

Real recordings of such actuators are not available offline, so the audio path is
developed and benchmarked on sound built from the physics of the machine:

* a DC motor whose shaft speed drops with load; its slot/commutator whine has
  harmonics that grow with load (more current, more magnetic force ripple);
* the gear mesh (pinion teeth x shaft speed) with harmonics and sidebands at the
  intermediate shaft's rate (eccentricity modulates the mesh force);
* broadband mechanical noise (bearings, brushes) that follows the speed;
* a room: a direct path plus an exponentially decaying diffuse tail (RT60), and
  a faint background.

Faults (seed 000, Table 1), each at a severity factor:

* ``misalignment``: a buzz, friction noise pulsed once per shaft revolution plus
  the 2x shaft-speed line of a misaligned coupling;
* ``tooth_scratch``: a "tick-tock" when the damaged tooth meshes, once per motion,
  twice for the worst severity (dented or broken teeth);
* ``thrust_click``: one click as the shaft hits its thrust stop at motion start.

Unit-to-unit spread (speed, levels, load, room) makes the normal class a class,
not one waveform. ``fold`` and ``unfold`` differ in load profile and speed.

Any clip length and sample rate a model's front end accepts gives a clip (export
parity checks generate them for every audio model): ramps, fault timings and
noise bands shrink to fit a short motion or a low rate, and stay as they are for
the lengths and rates the benchmarks use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

FAULTS = ("misalignment", "tooth_scratch", "thrust_click")
SEVERITIES = {"low": 0.35, "mid": 0.7, "high": 1.4}
MOTIONS = ("fold", "unfold")
MOTION_START, MOTION_END = 0.15, 0.9  # fractions of the clip: silence before and after
TARGET_DBFS = -26.0  # RMS of a normal motion; faults add to it
DIFFUSE_ENERGY = 0.3  # of the room tail relative to the direct sound (a small booth)


@dataclass(frozen=True)
class Operating:
    """An operating point of the actuator, what a recipe changes: the load it moves (a
    factor on the load profile: the shaft slows and the whine grows with it), the motor's
    speed setpoint (a factor on the shaft speed) and how loud the booth records it (dB on
    the nominal level: gain, distance, a louder machine)."""

    load: float = 1.0
    speed: float = 1.0
    level_db: float = 0.0


NOMINAL = Operating()


def _band_noise(rng: np.random.Generator, n: int, rate: int, low: float, high: float) -> np.ndarray:
    high = min(high, 0.45 * rate)
    if low >= high:  # the band lies above what this rate can carry: its top octave instead
        low = high / 2
    sos = butter(2, [low, high], btype="bandpass", fs=rate, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    return noise / (np.std(noise) or 1.0)


def _ring(rate: int, freq: float, tau: float) -> np.ndarray:
    """A decaying resonance: what a struck part sounds like."""
    t = np.arange(int(8 * tau * rate)) / rate
    return np.exp(-t / tau) * np.sin(2 * np.pi * min(freq, 0.45 * rate) * t)


def _harmonics(
    phase: np.ndarray, amplitudes: list[np.ndarray | float], rate_hz: np.ndarray, rate: int
) -> np.ndarray:
    """Sum of a_k sin(k phase), leaving out harmonics above 0.45 x the sample rate."""
    out = np.zeros_like(phase)
    for k, amp in enumerate(amplitudes, start=1):
        audible = k * rate_hz < 0.45 * rate
        out += np.where(audible, amp, 0.0) * np.sin(k * phase)
    return out


def _envelope(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """Motor on between ``start`` and ``end`` with an 80 ms spin-up and a 60 ms stop (each at
    most half of a short motion, so the motor always reaches full speed)."""
    half = (end - start) / 2
    rise = np.clip((t - start) / min(0.08, half), 0.0, 1.0)
    fall = np.clip((end - t) / min(0.06, half), 0.0, 1.0)
    return rise * fall


def _add_at(out: np.ndarray, i: int, sound: np.ndarray) -> None:
    """Add ``sound`` into ``out`` from sample ``i`` on, cut at the end of the clip."""
    piece = sound[: max(0, len(out) - i)]
    out[i : i + len(piece)] += piece


def _reverb(rng: np.random.Generator, signal: np.ndarray, rate: int, rt60: float) -> np.ndarray:
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.005 * rate)] = 0.0  # first reflections arrive after 5 ms
    tail *= np.sqrt(DIFFUSE_ENERGY / np.sum(tail**2))
    tail[0] = 1.0  # direct path
    return fftconvolve(signal, tail)[: len(signal)]


def gear_motor_clip(
    rate: int,
    duration_s: float,
    rng: np.random.Generator,
    motion: str = "fold",
    fault: str | None = None,
    severity: float = 1.0,
    operating: Operating = NOMINAL,
) -> np.ndarray:
    """One motion of one actuator unit at ``operating`` as float32 mono in [-1, 1]."""
    n = int(duration_s * rate)
    t = np.arange(n) / rate
    start, end = MOTION_START * duration_s, MOTION_END * duration_s
    on = _envelope(t, start, end)
    progress = np.clip((t - start) / (end - start), 0.0, 1.0)
    # fold works against the detent spring more and more; unfold runs at a steadier load
    load = (0.3 + 0.4 * progress if motion == "fold" else 0.5 + 0.05 * np.sin(6 * progress)) * (
        1 + 0.1 * rng.standard_normal()
    )
    load = load * operating.load
    nominal = 140.0 * (1 + 0.03 * rng.standard_normal()) * (1.0 if motion == "fold" else 1.06)
    nominal = nominal * operating.speed
    shaft_hz = nominal * (1 - 0.15 * load) * on
    shaft = 2 * np.pi * np.cumsum(shaft_hz) / rate
    slot_hz = 6 * shaft_hz
    whine = _harmonics(
        6 * shaft, [0.5 / k * (1 + 2.0 * load * k / 8) for k in range(1, 9)], slot_hz, rate
    )
    mesh_hz = 10 * shaft_hz  # 10-tooth pinion
    sideband = 1 + 0.3 * np.cos(shaft / 5)  # intermediate shaft, ratio 5: mesh +- shaft/5
    mesh = sideband * _harmonics(10 * shaft, [0.6, 0.25, 0.1], mesh_hz, rate)
    lines = (
        0.15 * np.sin(shaft)
        + whine * (0.8 + 0.4 * rng.random())
        + mesh * (0.8 + 0.4 * rng.random())
    )
    noise = 0.35 * _band_noise(rng, n, rate, 400.0, 8000.0) * (shaft_hz / nominal)
    normal = on * lines + noise
    level = TARGET_DBFS + operating.level_db + rng.normal(0, 1.0)
    gain = 10 ** (level / 20) / (np.std(normal[on > 0.5]) or 1.0)
    dry = normal + (
        _fault(fault, severity, rng, rate, t, shaft, shaft_hz, on, start, end) if fault else 0.0
    )
    wet = _reverb(rng, dry * gain, rate, rt60=rng.uniform(0.15, 0.35))
    background = 10 ** (-62 / 20) * _band_noise(rng, n, rate, 50.0, 4000.0)
    return np.clip(_within_gain(wet + background), -1.0, 1.0).astype(np.float32)


def _within_gain(mix: np.ndarray) -> np.ndarray:
    """A clip the audio modality would refuse as clipped (a loud fault in a short motion)
    turned down to peak at 90 % of its clip level, as a bench operator lowers the gain."""
    from flowedge.modalities.audio import DEFAULT_LIMITS  # that module builds on this one

    loud = np.abs(mix) >= DEFAULT_LIMITS.clip_level
    if np.mean(loud) <= DEFAULT_LIMITS.clip_fraction:
        return mix
    return mix * (0.9 * DEFAULT_LIMITS.clip_level / np.max(np.abs(mix)))


def _fault(
    fault: str,
    severity: float,
    rng: np.random.Generator,
    rate: int,
    t: np.ndarray,
    shaft: np.ndarray,
    shaft_hz: np.ndarray,
    on: np.ndarray,
    start: float,
    end: float,
) -> np.ndarray:
    """The fault's sound at the scale of the normal signal (RMS about 1 before the gain)."""
    out = np.zeros_like(t)
    if fault == "misalignment":
        pulses = (0.5 + 0.5 * np.cos(shaft)) ** 4  # friction once per revolution: a buzz
        friction = _band_noise(rng, len(t), rate, 2000.0, 6000.0) * pulses
        out = on * severity * (0.6 * friction + 0.3 * np.sin(2 * shaft))
    elif fault == "tooth_scratch":
        hits = 2 if severity >= SEVERITIES["high"] else 1
        tick, tock = _ring(rate, 3500.0, 0.004), _ring(rate, 2500.0, 0.006)
        margin = min(0.2, (end - start) / 2)  # clear of spin-up and stop
        span = max(0.0, end - start - 2 * margin)
        for when in rng.uniform(start + margin, start + margin + span, size=hits):
            for sound, delay in ((tick, 0.0), (tock, 0.06)):
                _add_at(out, int((when + delay) * rate), 4.0 * severity * sound)
    elif fault == "thrust_click":
        crack, thump = _ring(rate, 5000.0, 0.003), _ring(rate, 300.0, 0.015)
        click = 0.8 * thump
        click[: len(crack)] += crack
        _add_at(out, int((start + 0.015) * rate), 5.0 * severity * click)
    else:
        raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    return out


def sample_clips(
    rate: int, duration_s: float, n_normal: int, n_anomalous: int, seed: int = 0
) -> list[np.ndarray]:
    """Normal clips first, then anomalous ones cycling through the faults at high severity."""
    rng = np.random.default_rng(seed)
    clips = [gear_motor_clip(rate, duration_s, rng) for _ in range(n_normal)]
    clips += [
        gear_motor_clip(
            rate, duration_s, rng, fault=FAULTS[i % len(FAULTS)], severity=SEVERITIES["high"]
        )
        for i in range(n_anomalous)
    ]
    return clips


def write_dataset(
    root: str | Path,
    n_train: int,
    n_test_good: int,
    n_test_defect: int,
    rate: int = 44100,
    duration_s: float = 3.0,
    motion: str = "fold",
    severities: tuple[str, ...] = ("mid",),
    seed: int = 0,
    operating: Operating = NOMINAL,
) -> Path:
    """WAV files in MVTec layout: ``train/good``, ``test/good``, ``test/<fault>_<severity>``
    (``n_test_defect`` per fault and severity), 16-bit PCM like a recording bench writes,
    all at operating point ``operating``."""
    import soundfile

    root = Path(root)
    rng = np.random.default_rng(seed)
    plan = [("train/good", None, 0.0, n_train), ("test/good", None, 0.0, n_test_good)]
    plan += [
        (f"test/{fault}_{level}", fault, SEVERITIES[level], n_test_defect)
        for fault in FAULTS
        for level in severities
    ]
    for folder, fault, severity, count in plan:
        out = root / folder
        out.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            clip = gear_motor_clip(rate, duration_s, rng, motion, fault, severity, operating)
            soundfile.write(out / f"{motion}_{i:04d}.wav", clip, rate, subtype="PCM_16")
    return root
