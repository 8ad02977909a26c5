"""Re-baselining and fitted statistics in the modalities: a changeover's samples give new
input statistics, a broken baseline is refused, audio's dB level comes from the data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flowedge.core.card import AudioInput, SeriesInput
from flowedge.core.errors import BadInputError, ConfigError
from flowedge.flows.config import AudioFlowConfig
from flowedge.modalities import get_modality
from flowedge.modalities.audio import Clip, clip_db, fitted_level, level_statistics
from flowedge.modalities.audio_synthetic import NOMINAL as NOMINAL_MOTOR
from flowedge.modalities.audio_synthetic import Operating, gear_motor_clip
from flowedge.modalities.baseline import BaselineRefused, BaselineRules
from flowedge.modalities.series_prep import at_model_rate, signal_statistics
from flowedge.modalities.series_synthetic import NOMINAL, SIGNALS, Regime, simulate_set

RATE = 16000
AUDIO = AudioInput(
    sample_rate=RATE, n_fft=512, win_length=512, hop_length=256, n_mels=32, duration_s=0.5
)
SERIES_SIGNALS = tuple(s for s in SIGNALS if s.startswith(("torque_sensor_a", "motor_iq")))
RULES = BaselineRules()


def series_spec() -> SeriesInput:
    """The spec a model trained on nominal cycles gets (statistics from its cycles)."""
    probe = SeriesInput(
        signals=SERIES_SIGNALS,
        units=("",) * len(SERIES_SIGNALS),
        rate_hz=20.0,
        length=64,
        mean=(0.0,) * len(SERIES_SIGNALS),
        std=(1.0,) * len(SERIES_SIGNALS),
    )
    values = [at_model_rate(c.table, probe) for c in simulate_set(6, 0, 1, 20.0)]
    mean, std = signal_statistics(values)
    return replace(probe, mean=tuple(mean), std=tuple(std))


def cycles(n: int, regime: Regime = NOMINAL, seed: int = 2) -> list:
    return [c.table for c in simulate_set(n, 0, seed, 20.0, regime=regime)]


def test_series_baseline_follows_a_heavier_product_and_keeps_the_rest() -> None:
    spec, series = series_spec(), get_modality("series")
    heavy = series.rebaseline(cycles(4, Regime(payload_kg=1.0)), spec, RULES)
    assert heavy.signals == spec.signals and heavy.length == spec.length
    moved = np.abs(np.subtract(heavy.mean, spec.mean)) / np.asarray(spec.std)
    assert moved.max() > 0.2  # the product's weight shows in the torques and currents
    tensor = series.preprocess(cycles(1, Regime(payload_kg=1.0), seed=9)[0], heavy, "c")
    assert abs(float(tensor.mean())) < 0.5  # standardised by its own regime


def test_series_baseline_of_a_dead_sensor_or_a_wrong_unit_is_refused() -> None:
    spec, series = series_spec(), get_modality("series")
    dead = cycles(3)
    for table in dead:
        table.columns["motor_iq_2"] = np.full(len(table), 0.01)
    with pytest.raises(BaselineRefused, match="motor_iq_2 spread"):
        series.rebaseline(dead, spec, RULES)
    scaled = cycles(3)
    for table in scaled:
        table.columns["torque_sensor_a_3"] = table.columns["torque_sensor_a_3"] * 1000.0
    with pytest.raises(BaselineRefused, match="torque_sensor_a_3"):
        series.rebaseline(scaled, spec, RULES)
    with pytest.raises(BaselineRefused, match="needs 2"):
        series.rebaseline(cycles(1), spec, RULES)


def test_a_level_only_baseline_keeps_the_training_spread() -> None:
    spec, series = series_spec(), get_modality("series")
    quiet = cycles(3)
    for table in quiet:  # a slow signal: flat over the few cycles of a baseline
        table.columns["motor_iq_2"] = np.full(
            len(table), spec.mean[SERIES_SIGNALS.index("motor_iq_2")] + 0.5
        )
    level = series.rebaseline(quiet, spec, BaselineRules(spread=False))
    assert level.std == spec.std and level.mean != spec.mean
    with pytest.raises(BaselineRefused, match="spread"):
        series.rebaseline(quiet, spec, RULES)


def test_series_sample_value_is_a_column_constant_over_the_cycle() -> None:
    series = get_modality("series")
    table = cycles(1)[0]
    table.columns["program"] = np.full(len(table), 7.0)
    assert series.sample_value(table, "program") == 7.0
    table.columns["program"][-3:] = 8.0
    with pytest.raises(BadInputError, match="straddles a changeover"):
        series.sample_value(table, "program")
    with pytest.raises(BadInputError, match="no value in column 'setpoint'"):
        series.sample_value(table, "setpoint")


def clips(n: int, operating: Operating = NOMINAL_MOTOR, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    made = [gear_motor_clip(RATE, AUDIO.duration_s, rng, operating=operating) for _ in range(n)]
    return [Clip(c[:, None], RATE) for c in made]


def test_audio_baseline_follows_the_level_and_refuses_a_far_one() -> None:
    audio = get_modality("audio")
    mean, std, _ = level_statistics(clip_db(clip, AUDIO) for clip in clips(4))
    trained = replace(AUDIO, mean=mean, std=std)  # what training measures
    louder = audio.rebaseline(clips(4, Operating(level_db=6.0), 1), trained, RULES)
    assert 4.0 < louder.mean - trained.mean < 8.0  # the booth records 6 dB louder
    assert louder.n_mels == trained.n_mels and louder.std == trained.std  # a gain: level only
    tight = BaselineRules(max_shift=0.1)
    with pytest.raises(BaselineRefused, match="dB level moved"):
        audio.rebaseline(clips(4, Operating(level_db=12.0), 2), trained, tight)


def test_a_modality_without_rebaselining_says_so() -> None:
    image = get_modality("image")
    assert not image.rebaselines and get_modality("series").rebaselines
    with pytest.raises(ConfigError, match="cannot re-baseline"):
        image.rebaseline([], None, RULES)


def write_clips(folder: Path, n: int, level_db: float) -> list[Path]:
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, clip in enumerate(clips(n, Operating(level_db=level_db), seed=int(-level_db))):
        path = folder / f"clip_{i}.wav"
        soundfile.write(path, clip.samples, RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def test_audio_dB_statistics_are_measured_on_the_training_clips_unless_set(tmp_path) -> None:
    settings = {k: v for k, v in AUDIO.__dict__.items() if k not in ("kind", "mean", "std")}
    quiet = fitted_level(write_clips(tmp_path / "quiet", 3, -10.0), settings)
    loud = fitted_level(write_clips(tmp_path / "loud", 3, 0.0), settings)
    assert set(quiet) == {"mean", "std"} and 6.0 < loud["mean"] - quiet["mean"] < 14.0
    assert fitted_level([], {**settings, "mean": -5.0, "std": 17.0}) == {}
    assert set(fitted_level(sorted((tmp_path / "loud").iterdir()), {**settings, "std": 9.0})) == {
        "mean"
    }
    spec = get_modality("audio").training_spec(sorted((tmp_path / "loud").iterdir()), settings)
    assert (spec.mean, spec.std) == (loud["mean"], loud["std"])
    front_end = {k: settings[k] for k in ("sample_rate", "n_fft", "win_length", "hop_length")}
    front_end |= {"n_mels": 32, "duration_s": 0.5}
    config = AudioFlowConfig(front_end=front_end)
    completed = config.for_training_files(sorted((tmp_path / "loud").iterdir()))
    assert completed.front_end.mean == loud["mean"] and completed.front_end.std == loud["std"]
    given = AudioFlowConfig(front_end={**front_end, "mean": 1.0})
    kept = given.for_training_files(sorted((tmp_path / "loud").iterdir())).front_end
    assert kept.mean == 1.0 and kept.std != 1.0


def test_an_image_tensor_model_measures_its_channel_statistics(tmp_path: Path) -> None:
    import cv2

    paths = []
    for i in range(3):
        image = np.zeros((16, 16, 3), np.uint8)
        image[:, :, 2] = 200  # red (BGR on disk)
        image[:, :, 1] = 40 + 20 * i
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    settings = {"height": 8, "width": 8, "intensity": "raw"}
    spec = get_modality("image").training_spec(paths, settings)
    assert np.allclose(spec.mean, (200 / 255, 60 / 255, 0.0), atol=1e-4)
    assert spec.std[1] > 0.03 and spec.std[0] == 1e-3  # a flat channel keeps a usable std
    given = get_modality("image").training_spec(paths, {**settings, "mean": (0.5,) * 3})
    assert given.mean == (0.5,) * 3 and given.std == spec.std
