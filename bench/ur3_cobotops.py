"""The real UR3 CobotOps log: MTS-Flow, PCA and 1-NN on sliding windows, AUROC per event type.

The log (../shared/data/ur3-cobotops, ~1 Hz, 7,409 rows) is read as is from a
config (``;``, decimal commas, ISO time stamps, empty trailing columns). Windows
of ``--window`` rows every ``--step`` rows; the first ``--train-fraction`` of the
log (in time) gives the training windows, *without* any window that touches a
labelled row (labels are never used otherwise); the rest is the test set. AUROC of
windows containing a protective stop, and of windows containing a lost grip,
against the test windows without events. Windows the repair rules reject (NaN
runs, logger stalls) are counted and left out, as the station would answer them ERROR.

    python bench/ur3_cobotops.py
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.config import (
    MTSFLOW_TRAINING,
    MTSFlowConfig,
    NearestNeighborConfig,
    PCAConfig,
    TrainingConfig,
)
from flowedge.flows.data.series import score_series, standardise_set, train_series
from flowedge.modalities.series_cycles import SegmentConfig, segment
from flowedge.modalities.series_io import LogFormat, read_log

LOG = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "ur3-cobotops"
    / "dataset_02052023.csv"
)
EVENTS = ("Robot_ProtectiveStop", "grip_lost")
UR3_FORMAT = LogFormat(
    separator=";",
    decimal=",",
    time_column="Timestamp",
    cycle_column="cycle",
    meta_columns=["Num", *EVENTS],
    signals=[f"Current_J{j}" for j in range(6)]
    + [f"Speed_J{j}" for j in range(6)]
    + ["Tool_current"],
    units={
        **{f"Current_J{j}": "A" for j in range(6)},
        **{f"Speed_J{j}": "rad/s" for j in range(6)},
        "Tool_current": "A",
    },
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, default=LOG)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=MTSFLOW_TRAINING["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    log = read_log(args.log, UR3_FORMAT)
    windows = segment(
        log, SegmentConfig(mode="window", window_rows=args.window, step_rows=args.step)
    )
    events = {w.name: {e: bool(np.nansum(w.columns[e]) > 0) for e in EVENTS} for w in windows}
    split = int(args.train_fraction * len(log))
    train = [
        w for w in windows if w.first_row + len(w) <= split and not any(events[w.name].values())
    ]
    test = [w for w in windows if w.first_row >= split]
    signals = list(UR3_FORMAT.signals or [])
    common = {"signals": signals, "units": [UR3_FORMAT.units[s] for s in signals], "rate_hz": 1.0}
    epochs = args.epochs
    flow_training = TrainingConfig(
        **{
            **MTSFLOW_TRAINING,
            "epochs": epochs,
            "seed": args.seed,
            "lr_milestones": [round(epochs * 11 / 70), round(epochs * 61 / 70)],
        }
    )
    configs = {
        "MTS-Flow": (MTSFlowConfig(**common), flow_training),
        "PCA": (PCAConfig(**common, n_components=32), TrainingConfig()),
        "1-NN": (NearestNeighborConfig(**common), TrainingConfig()),
    }
    work = Path(tempfile.mkdtemp(prefix="ur3-bench-"))
    rows = {}
    for name, (config, training) in configs.items():
        card = train_series(train, config, training, work / name)
        detector, _ = load_checkpoint(work / name)
        test_set = standardise_set(test, detector.config)
        scores = dict(zip(test_set.names, score_series(detector, test_set.tensors), strict=True))
        normal = [s for n, s in scores.items() if not any(events[n].values())]
        rows[name] = {
            event: roc_auc_score(
                [0] * len(normal)
                + [1] * len(hits := [s for n, s in scores.items() if events[n][event]]),
                normal + hits,
            )
            for event in EVENTS
        }
        counts = {e: sum(events[n][e] for n in scores) for e in EVENTS}
    print(
        f"UR3 CobotOps: {len(windows)} windows of {args.window} rows every {args.step}; "
        f"train {card.training['data']['n_cycles']} event-free windows from the first "
        f"{args.train_fraction:.0%} (skipped {len(card.training['data']['skipped'])}); test "
        f"{len(test_set.names)} windows ({len(test_set.skipped)} rejected by the repair rules), "
        f"{counts['Robot_ProtectiveStop']} with a protective stop, {counts['grip_lost']} with a "
        "lost grip"
    )
    print("| Event | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for event in EVENTS:
        print(f"| {event} | " + " | ".join(f"{100 * rows[n][event]:.1f}" for n in rows) + " |")


if __name__ == "__main__":
    main()
