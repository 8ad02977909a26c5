"""Does a calibrated threshold keep its promise? Repeated simulations on known distributions.

For each law and calibration size N: draw N normal scores, calibrate (default strategy,
``--target`` false-alarm rate), then compute the *true* false-alarm rate of the chosen
threshold from the law's survival function. Reports the mean true rate, its ratio to
the target (the baseline), and how often the stated confidence interval covers the true
rate (should be about 95 %). Also the drift monitor's false drift reports on stationary
streams and its detection delay after a shift.

    .venv/bin/python bench/calibration_far.py --reps 200
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

from flowedge.calibration.calibfile import save_calibration
from flowedge.calibration.calibrate import CalibrationOptions, build_calibration
from flowedge.calibration.config import DriftConfig
from flowedge.calibration.drift import DriftMonitor
from flowedge.core.card import ImageInput, ModelCard, ScoreSpec

LAWS = {"gamma(2)": stats.gamma(2.0), "lognormal(0.5)": stats.lognorm(0.5), "normal": stats.norm()}
CARD = ModelCard("bench", {}, {}, ImageInput(), ScoreSpec("x"), weights_sha256="0" * 64)


def coverage(law, n: int, opts: CalibrationOptions, reps: int, rng: np.random.Generator) -> str:
    true, covered, methods = [], 0, set()
    for _ in range(reps):
        data = build_calibration(law.rvs(n, random_state=rng), CARD, opts)
        far = data["expected_far"]
        rate = float(law.sf(data["threshold"]))
        true.append(rate)
        covered += far["low"] <= rate <= far["high"]
        methods.add(data["strategy"]["detail"]["method"])
    mean = float(np.mean(true))
    return (
        f"target {opts.target_far:g}  N={n:5d}  true FAR mean {mean:.3g} (ratio {mean / opts.target_far:.2f}) "
        f"sd {np.std(true):.2g}  CI coverage {covered / reps:.0%}  [{', '.join(sorted(methods))}]"
    )


def drift(reps: int, rng: np.random.Generator) -> None:
    law = stats.gamma(2.0)
    cfg = DriftConfig(window=500, check_every=50, p_value=0.001)
    with tempfile.TemporaryDirectory() as tmp:
        cal = save_calibration(
            build_calibration(law.rvs(2000, random_state=rng), CARD, CalibrationOptions()),
            Path(tmp) / "c.json",
        )
    false_reports, decisions = 0, 0
    delays = {1.1: [], 1.3: []}
    for _ in range(reps):
        monitor = DriftMonitor(cal, cfg)
        for s in law.rvs(5000, random_state=rng):
            false_reports += monitor.update(float(s)) is not None
        decisions += 5000
        for scale, found in delays.items():
            monitor.reset()
            for s in law.rvs(500, random_state=rng):
                monitor.update(float(s))
            shifted = stats.gamma(2.0, scale=scale).rvs(5000, random_state=rng)
            found.append(next((i for i, s in enumerate(shifted) if monitor.update(float(s))), 5000))
    print(
        f"drift: {false_reports} false drift reports in {decisions} stationary decisions (window 500, every 50, p 0.001)"
    )
    for scale, found in delays.items():
        print(
            f"drift: score scale x{scale}: detected after median {np.median(found):.0f} decisions (max {max(found)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    base = CalibrationOptions(bootstrap=100)
    for name, law in LAWS.items():
        print(f"== {name}")
        for n in (200, 1000, 5000):
            print(coverage(law, n, base, args.reps, rng))
        tail = replace(base, target_far=1e-4)
        print(coverage(law, 1000, tail, max(args.reps // 4, 10), rng))
    drift(max(args.reps // 20, 3), rng)


if __name__ == "__main__":
    main()
