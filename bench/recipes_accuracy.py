"""When normal changes (issue 24): one global model, one model per recipe, and re-baselining,
side by side, on multi-regime data; AUROC in % per set.

Generated sets (each a list of runs; each run has its training cycles or clips, the first
``--baseline`` normal samples after its changeover, and a labelled test set):

* robot (``flowedge/modalities/series_synthetic.py``, all 67 signals, PCA): recipes by the
  product's weight in the gripper, recipes by speed override, new runs whose sensors'
  zero points and gains drifted (runs never seen in training), and one regime;
* gear motor (``flowedge/modalities/audio_synthetic.py``, log-mel, tensor PCA): recipes by
  load, new runs recorded at another level (booth gain), and one regime.

Methods, as a station runs them:

* global: one model trained on every training run together (its card's statistics);
* per recipe: one model per recipe, each scored as the station normalises it (``-log`` of the
  calibrated normal tail probability from held-out normal samples of its recipe), so one
  pooled AUROC compares them; n/a for new runs (no model exists for a run never seen);
* re-baselined: the global model's weights, each test run standardised with the statistics
  of its first samples after the changeover (``Modality.rebaseline``, default bounds; a
  refused baseline keeps the card's statistics, as the station does).

"pooled" is the AUROC over all test runs together (one threshold for the station), "runs"
the mean of the per-run AUROCs. The real set, kept apart (no choice above was tuned on
it): the UR3 CobotOps log (../shared/data/ur3-cobotops, CC BY 4.0) cut into its three
sessions at its time gaps, currents, speeds, tool current and joint temperatures (which
move from session to session), windows of 32 rows every 8; leave one session out: the
global model is trained on the event-free windows of the other two, re-baselining uses
the held-out session's first windows whatever they hold (the station cannot know).

    python bench/recipes_accuracy.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from ur3_cobotops import EVENTS as UR3_EVENTS  # the real log's reading (bench/ur3_cobotops.py)
from ur3_cobotops import LOG as UR3_LOG
from ur3_cobotops import UR3_FORMAT

from flowedge.calibration.distribution import ScoreDistribution
from flowedge.core.card import AudioInput, InputSpec, SeriesInput
from flowedge.core.errors import BadInputError
from flowedge.flows.config import PCAConfig, TensorPCAConfig, TrainingConfig
from flowedge.flows.data.series import SeriesSet, fit_series, score_series
from flowedge.flows.detectors import build_detector
from flowedge.modalities import audio_synthetic as motor
from flowedge.modalities import get_modality
from flowedge.modalities import series_synthetic as robot
from flowedge.modalities.audio import Clip, clip_db, level_statistics
from flowedge.modalities.baseline import BaselineRefused, BaselineRules
from flowedge.modalities.series_cycles import SegmentConfig, segment
from flowedge.modalities.series_io import SignalTable, read_log
from flowedge.modalities.series_prep import at_model_rate, signal_statistics

SENSORS = ("torque_sensor", "motor_iq", "motor_id", "motor_voltage", "power", "robot_current")
AUDIO_RATE, CLIP_S = 16000, 1.0


@dataclass
class Run:
    """One run of the line at one operating point: what the methods train and test on."""

    recipe: str
    train: list[Any]  # normal samples (raw: cycles or clips)
    held_out: list[Any]  # normal samples for a per-recipe model's calibration
    baseline: list[Any]  # the first normal samples after the run's changeover
    test: list[Any]
    labels: list[int]  # 1: anomalous


@dataclass
class Scorer:
    """A trained model: its card's input spec (the pooled statistics of its training
    samples) and raw samples + an input spec -> scores."""

    spec: InputSpec
    score: Callable[[list[Any], InputSpec], np.ndarray]


STATION = BaselineRules()  # the station's defaults
# re-baselining each training run: no bounds (training defines them)
UNBOUNDED = BaselineRules(max_shift=np.inf, max_scale=np.inf)


def fit(
    runs: list[list[Any]],
    base: InputSpec,
    config: Callable[[InputSpec], Any],
    per_run: bool = False,
    rules: BaselineRules = UNBOUNDED,
) -> Scorer:
    """A tensor detector (``config(base)``) fitted on the runs' samples, each run standardised
    with ``base`` or, ``per_run``, with its own statistics (as the station will standardise
    each run after its changeover: :meth:`Modality.rebaseline`)."""
    modality = get_modality(base.kind)
    tensors = []
    for raws in runs:
        spec = modality.rebaseline(raws, base, rules) if per_run else base
        tensors += [modality.preprocess(raw, spec, f"train{i}") for i, raw in enumerate(raws)]
    detector = build_detector(config(base))
    names = [str(i) for i in range(len(tensors))]
    fit_series(detector, SeriesSet(np.stack(tensors), names), TrainingConfig())

    def score(samples: list[Any], spec: InputSpec) -> np.ndarray:
        batch = [modality.preprocess(raw, spec, f"test{i}") for i, raw in enumerate(samples)]
        return score_series(detector, np.stack(batch))

    return Scorer(base, score)


# --- robot cycles --------------------------------------------------------------------------


def drifted(table: SignalTable, offset: np.ndarray, gain: np.ndarray) -> SignalTable:
    """The cycle as sensors whose zero point and gain moved (per signal) record it."""
    for i, name in enumerate(robot.SIGNALS):
        table.columns[name] = table.columns[name] * gain[i] + offset[i]
    return table


def robot_runs(
    args: argparse.Namespace, regimes: Sequence[robot.Regime], drift: float, seed: int
) -> list[Run]:
    """Runs at ``regimes``; ``drift`` > 0: each run's sensors drift by that many of the
    nominal signal's standard deviations (zero point) and a fifth of it in log gain."""
    reference = robot.simulate_set(20, 0, 999, args.rate)
    spread = np.array(
        [np.std(np.concatenate([c.table.columns[s] for c in reference])) for s in robot.SIGNALS]
    )
    sensor = np.array([s.startswith(SENSORS) for s in robot.SIGNALS])
    runs = []
    for i, regime in enumerate(regimes):
        rng = np.random.default_rng(seed + i)
        offset = np.where(sensor, rng.normal(0, drift, len(sensor)) * spread, 0.0)
        gain = np.where(sensor, np.exp(rng.normal(0, drift / 5, len(sensor))), 1.0)
        parts = [
            robot.simulate_set(n, per_type, seed * 100 + i * 10 + part, args.rate, regime=regime)
            for part, (n, per_type) in enumerate(
                [(args.train, 0), (args.held_out, 0), (args.baseline, 0)]
                + [(args.test_normal, args.per_type)]
            )
        ]
        train, held_out, baseline, test = (
            [drifted(c.table, offset, gain) for c in part] for part in parts
        )
        labels = [int(c.kind != robot.NORMAL) for c in parts[3]]
        name = f"{regime.payload_kg:g} kg x{regime.speed:g}"
        runs.append(Run(name, train, held_out, baseline, test, labels))
    return runs


def series_spec(cycles: list[SignalTable], signals: Sequence[str], rate: float) -> SeriesInput:
    """The spec training computes: per-signal statistics and the longest cycle."""
    n = len(signals)
    probe = SeriesInput(tuple(signals), ("",) * n, rate, 2, (0.0,) * n, (1.0,) * n)
    values = [at_model_rate(cycle, probe) for cycle in cycles]
    mean, std = signal_statistics(values)
    length = max(v.shape[1] for v in values)
    return replace(probe, length=length, mean=tuple(mean), std=tuple(std))


def pca_config(spec: InputSpec) -> PCAConfig:
    assert isinstance(spec, SeriesInput)
    return PCAConfig(
        signals=list(spec.signals),
        units=list(spec.units),
        rate_hz=spec.rate_hz,
        length=spec.length,
        mean=list(spec.mean),
        std=list(spec.std),
    )


# --- gear-motor clips -----------------------------------------------------------------------

AUDIO = dict(
    sample_rate=AUDIO_RATE,
    n_fft=1024,
    win_length=1024,
    hop_length=256,
    n_mels=64,
    f_max=8000.0,
    duration_s=CLIP_S,
)


def motor_clips(
    rng: np.random.Generator, point: motor.Operating, n: int, fault: str | None = None
) -> list[Clip]:
    """``n`` fold motions at ``point`` (faults at mid severity)."""
    severity = motor.SEVERITIES["mid"]
    made = [
        motor.gear_motor_clip(AUDIO_RATE, CLIP_S, rng, "fold", fault, severity, point)
        for _ in range(n)
    ]
    return [Clip(clip[:, None], AUDIO_RATE) for clip in made]


def motor_runs(args: argparse.Namespace, points: Sequence[motor.Operating], seed: int) -> list[Run]:
    runs = []
    for i, point in enumerate(points):
        rng = np.random.default_rng(seed + i)
        train, held_out, baseline = (
            motor_clips(rng, point, n) for n in (args.train, args.held_out, args.baseline)
        )
        faulty = [
            c for fault in motor.FAULTS for c in motor_clips(rng, point, args.per_fault, fault)
        ]
        test = motor_clips(rng, point, args.test_normal) + faulty
        labels = [0] * args.test_normal + [1] * len(faulty)
        name = f"load x{point.load:g}, {point.level_db:+g} dB"
        runs.append(Run(name, train, held_out, baseline, test, labels))
    return runs


def audio_spec(clips: list[Clip]) -> AudioInput:
    """The front end with the dB statistics measured on the clips (as training does)."""
    mean, std, _ = level_statistics(clip_db(c, AudioInput(**AUDIO)) for c in clips)
    return AudioInput(**AUDIO, mean=round(mean, 4), std=round(std, 4))


def tensor_pca_config(spec: InputSpec) -> TensorPCAConfig:
    return TensorPCAConfig(input=asdict(spec))


# --- the methods ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """How one modality's models are made: the training spec of samples, the detector."""

    spec: Callable[[list[Any]], InputSpec]
    config: Callable[[InputSpec], Any]


def rebaselined(
    scorer: Scorer, baseline: list[Any], rules: BaselineRules
) -> tuple[InputSpec, bool]:
    """The run's spec as the station makes it: (spec, whether the baseline was refused)."""
    try:
        return get_modality(scorer.spec.kind).rebaseline(baseline, scorer.spec, rules), False
    except BaselineRefused:
        return scorer.spec, True


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    return 100.0 * roc_auc_score(labels, scores)


def compare(
    runs: list[Run],
    family: Family,
    test_runs: list[Run] | None = None,
    rules: BaselineRules = STATION,
) -> dict[str, Any]:
    """AUROC (pooled, mean over runs) of each method; ``test_runs``: new runs (no per-recipe
    model applies), else each run is tested on its own recipe."""
    tests = test_runs or runs
    labels = [label for run in tests for label in run.labels]
    pooled = [s for run in runs for s in run.train]
    base = family.spec(pooled)
    rows: dict[str, Any] = {}
    glob = fit([pooled], base, family.config)
    rows["global"] = _row(tests, labels, [glob.score(run.test, glob.spec) for run in tests])
    if test_runs is None:
        normalised = []
        for run in runs:
            own = fit([run.train], family.spec(run.train), family.config)
            calibration = ScoreDistribution.from_sample(own.score(run.held_out, own.spec))
            normalised.append(-calibration.log_sf_of(own.score(run.test, own.spec)))
        rows["per recipe"] = _row(tests, labels, normalised)
    relative = fit(
        [run.train for run in runs],
        base,
        family.config,
        True,
        replace(UNBOUNDED, spread=rules.spread),
    )
    for name, model in (("re-baselined", relative), ("global weights, re-baselined", glob)):
        refused, scores = 0, []
        for run in tests:
            spec, was_refused = rebaselined(model, run.baseline, rules)
            refused += was_refused
            scores.append(model.score(run.test, spec))
        rows[name] = _row(tests, labels, scores) | {"refused": refused}
    return rows


def _row(tests: list[Run], labels: list[int], scores: list[np.ndarray]) -> dict[str, float]:
    per_run = [auroc(run.labels, s) for run, s in zip(tests, scores, strict=True)]
    return {"pooled": auroc(labels, np.concatenate(scores)), "runs": float(np.mean(per_run))}


# --- the real set ----------------------------------------------------------------------------

UR3_SIGNALS = list(UR3_FORMAT.signals or [])  # currents, speeds, tool current
UR3_TEMPERATURES = ["Temperature_T0"] + [f"Temperature_J{j}" for j in range(1, 6)]


def usable(window: SignalTable, signals: list[str]) -> bool:
    """Whether the repair rules accept the window (stalls and NaN runs are rejected)."""
    probe = SeriesInput(
        signals=tuple(signals),
        units=("",) * len(signals),
        rate_hz=1.0,
        length=2,
        mean=(0.0,) * len(signals),
        std=(1.0,) * len(signals),
    )
    try:
        at_model_rate(window, probe)
    except BadInputError:
        return False
    return True


def ur3_sessions(baseline: int) -> list[Run]:
    """The log cut into its sessions (time gaps over 30 s), each into windows the repair
    rules accept (the station answers the others ERROR): training windows are a session's
    event-free ones; as a test run, its first ``baseline`` windows are the baseline (whatever
    they hold: the station cannot know) and the rest the test."""
    signals = UR3_SIGNALS + UR3_TEMPERATURES
    fmt = UR3_FORMAT.model_copy(update={"signals": signals, "units": {}})
    log = read_log(UR3_LOG, fmt)
    gaps = np.flatnonzero(np.diff(log.times()) > 30.0) + 1
    edges = [0, *gaps.tolist(), len(log)]
    runs = []
    for number, (start, stop) in enumerate(zip(edges, edges[1:], strict=False)):
        cut = segment(
            log.rows(start, stop, f"session{number}"),
            SegmentConfig(mode="window", window_rows=32, step_rows=8),
        )
        windows = [w for w in cut if usable(w, signals)]
        events = [int(any(np.nansum(w.columns[e]) > 0 for e in UR3_EVENTS)) for w in windows]
        normal = [w for w, e in zip(windows, events, strict=True) if not e]
        runs.append(
            Run(
                f"session {number}",
                normal,
                [],
                windows[:baseline],
                windows[baseline:],
                events[baseline:],
            )
        )
    return runs


UR3 = Family(lambda windows: series_spec(windows, UR3_SIGNALS + UR3_TEMPERATURES, 1.0), pca_config)


# --- main --------------------------------------------------------------------------------------

METHODS = ("global", "per recipe", "re-baselined", "global weights, re-baselined")


def print_row(name: str, rows: dict[str, Any]) -> None:
    cells = [
        f"{rows[m]['pooled']:.1f} ({rows[m]['runs']:.1f})" if m in rows else "n/a" for m in METHODS
    ]
    gain = rows["re-baselined"]["pooled"] - rows["global"]["pooled"]
    refused = rows["re-baselined"]["refused"]
    note = f", {refused} baseline(s) refused" if refused else ""
    print(f"| {name} | {' | '.join(cells)} | {gain:+.1f}{note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="robot model rate, Hz")
    parser.add_argument("--train", type=int, default=40, help="normal samples per training run")
    parser.add_argument("--held-out", type=int, default=20, help="per-recipe calibration samples")
    parser.add_argument("--baseline", type=int, default=10, help="samples per baseline window")
    parser.add_argument("--test-normal", type=int, default=20)
    parser.add_argument("--per-type", type=int, default=3, help="robot cycles per anomaly type")
    parser.add_argument("--per-fault", type=int, default=6, help="motor clips per fault")
    parser.add_argument("--no-real", action="store_true", help="leave the UR3 log out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    cells = Family(lambda cycles: series_spec(cycles, robot.SIGNALS, args.rate), pca_config)
    sound = Family(audio_spec, tensor_pca_config)
    nominal, weights, speeds = robot.NOMINAL, (0.1, 0.6, 1.2), (0.7, 1.0, 1.3)
    sets: dict[str, Callable[[], dict[str, Any]]] = {
        "robot, recipes by product weight (0.1 / 0.6 / 1.2 kg)": lambda: compare(
            robot_runs(args, [robot.Regime(kg) for kg in weights], 0.0, 10), cells
        ),
        "robot, recipes by speed override (70 / 100 / 130 %)": lambda: compare(
            robot_runs(args, [robot.Regime(nominal.payload_kg, x) for x in speeds], 0.0, 20), cells
        ),
        "robot, new runs: sensors' zero and gain drift (1 std); 3 runs trained, 3 new": lambda: (
            compare(
                robot_runs(args, [nominal] * 3, 1.0, 30),
                cells,
                robot_runs(args, [nominal] * 3, 1.0, 40),
            )
        ),
        "same, the baseline bound max_shift 10 instead of 3": lambda: compare(
            robot_runs(args, [nominal] * 3, 1.0, 30),
            cells,
            robot_runs(args, [nominal] * 3, 1.0, 40),
            BaselineRules(max_shift=10.0),
        ),
        "robot, one regime": lambda: compare(robot_runs(args, [nominal], 0.0, 50), cells),
        "gear motor, recipes by load (x0.5 / x1 / x2)": lambda: compare(
            motor_runs(args, [motor.Operating(load=x) for x in (0.5, 1.0, 2.0)], 60), sound
        ),
        "gear motor, new runs: recording level (-6 / 0 / +6 dB trained; -9 / +3 / +9 dB new)": (
            lambda: compare(
                motor_runs(args, [motor.Operating(level_db=d) for d in (-6.0, 0.0, 6.0)], 70),
                sound,
                motor_runs(args, [motor.Operating(level_db=d) for d in (-9.0, 3.0, 9.0)], 80),
            )
        ),
        "gear motor, one regime": lambda: compare(motor_runs(args, [motor.NOMINAL], 90), sound),
    }
    header = " | ".join(METHODS)
    print(
        f"AUROC % pooled over the test runs (mean of the per-run AUROCs)\n\n| set | {header} | re-baselined - global |"
    )
    print("|---|---|---|---|---|---|")
    for name, run in sets.items():
        print_row(name, run())
    if not args.no_real:
        sessions = ur3_sessions(args.baseline)
        print("\nReal, kept apart: UR3 CobotOps, leave one session out (PCA)\n")
        print(
            f"| held-out session (test windows, with events; baseline windows with events) | {header} | re-baselined - global |"
        )
        print("|---|---|---|---|---|---|")
        for rules, said in ((STATION, ""), (BaselineRules(spread=False), ", level only")):
            for held, run in enumerate(sessions):
                others = [other for k, other in enumerate(sessions) if k != held]
                name = (
                    f"{run.recipe} ({len(run.test)}, {sum(run.labels)}; "
                    f"{sum(1 for w in run.baseline if _has_event(w))} of {len(run.baseline)}){said}"
                )
                print_row(name, compare(others, UR3, [run], rules))
    print(f"\n{time.perf_counter() - started:.0f} s")


def _has_event(window: SignalTable) -> bool:
    return any(np.nansum(window.columns[e]) > 0 for e in UR3_EVENTS)


if __name__ == "__main__":
    main()
