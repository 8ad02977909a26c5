"""``flowedge demo``: the whole job, offline, with no hardware.

Generates a synthetic inspection data set (textured plates with scratches,
spots, cracks and missing pieces), trains CS-Flow on the normal parts,
evaluates it, calibrates a threshold on held-out normal parts, and streams
the test parts through the station loop (``flowedge run``), publishing to the
MQTT broker at 127.0.0.1:1883 when one answers; otherwise the decisions wait
in the on-disk spool. Every step is the same code path as the real commands.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
from pathlib import Path

import yaml

from flowedge.core.errors import EXIT_OK, CheckFailedError

BROKER = ("127.0.0.1", 1883)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="folder for the data, model, reports, calibration, spool and heatmaps (default runs/demo)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=12,
        help="CS-Flow training epochs (default 12, ~4 min on 2 cores)",
    )
    parser.add_argument("--image-size", type=int, default=256, help="network input side in pixels")
    parser.add_argument("--hidden", type=int, default=32, help="CS-Flow subnetwork channels")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated data and the training"
    )
    parser.add_argument(
        "--no-stream", action="store_true", help="stop after calibration (no station run, no MQTT)"
    )


def broker_answers(address: tuple[str, int] = BROKER, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _cli(*argv: str) -> None:
    """Run one flowedge command exactly as a user would; stop the demo if it fails."""
    from flowedge.cli import main

    code = main([str(a) for a in argv])
    if code != EXIT_OK:
        raise CheckFailedError(f"demo step 'flowedge {argv[0]}' failed with exit code {code}")


def _stream_folder(data: Path, stream: Path) -> int:
    """Interleave the test parts (good and defective) into one folder, as a line would present them."""
    if stream.exists():
        shutil.rmtree(stream)
    stream.mkdir(parents=True)
    groups = {
        d.name: sorted(d.glob("*.png")) for d in sorted((data / "test").iterdir()) if d.is_dir()
    }
    index = 0
    for round_ in range(max(len(files) for files in groups.values())):
        for name, files in groups.items():
            if round_ < len(files):
                shutil.copyfile(files[round_], stream / f"part{index:04d}_{name}.png")
                index += 1
    return index


def _training_config(out: Path, args: argparse.Namespace) -> Path:
    """The demo's detector: CS-Flow on the stride-16 Lite0 stage (the synthetic defects are
    thin lines and small spots, so the finer stage suits them), small enough for 2 CPU cores."""
    config = {
        "detector": {
            "kind": "csflow",
            "image_size": args.image_size,
            "hidden_channels": args.hidden,
            "backbone": {"name": "tf_efficientnet_lite0", "out_indices": [3], "weights": "auto"},
        },
        "training": {"epochs": args.epochs, "batch_size": 16, "seed": args.seed},
    }
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _station_config(out: Path, model: Path, calibration: Path, stream: Path) -> Path:
    config = {
        "site": "demo-site",
        "station": "demo-station",
        "model": {"path": str(model), "backend": "torch", "calibration": str(calibration)},
        "sources": [
            {
                "name": "cam-demo",
                "kind": "folder",
                "path": str(stream),
                "rate_hz": 20,
                "backpressure": "block",
            }
        ],
        "pipeline": {"heatmaps": "anomalies", "heatmap_dir": str(out / "heatmaps")},
        "mqtt": {"host": BROKER[0], "port": BROKER[1]},
        "spool": {"path": str(out / "spool.sqlite")},
        "metrics": {"enabled": False},
    }
    path = out / "station.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> int:
    from flowedge.modalities.image_synthetic import generate_dataset

    out: Path = args.out
    data, holdout, model = out / "data", out / "holdout", out / "model"
    out.mkdir(parents=True, exist_ok=True)

    _step("1/5 generating a synthetic inspection data set")
    generate_dataset(data, n_train=80, n_test_good=30, n_test_defect=10, size=256, seed=args.seed)
    generate_dataset(
        holdout, n_train=200, n_test_good=0, n_test_defect=0, size=256, seed=args.seed + 1000
    )
    print(
        f"training parts: {data / 'train/good'}; test parts: {data / 'test'}; held-out normal: {holdout / 'train/good'}"
    )

    _step("2/5 training CS-Flow on the normal parts")
    _cli("train", data, "--out", model, "--config", _training_config(out, args))

    _step("3/5 evaluating on the test parts")
    _cli("eval", model, data, "--out", out / "eval")

    _step("4/5 calibrating a 1 % false-alarm threshold on held-out normal parts")
    calibration = model / "calibration.json"
    defects = [d for d in sorted((data / "test").iterdir()) if d.is_dir() and d.name != "good"]
    _cli(
        "calibrate",
        model,
        "--normal",
        holdout / "train/good",
        *[arg for d in defects for arg in ("--anomalous", d)],
        "--out",
        calibration,
    )

    if not args.no_stream:
        _step("5/5 streaming the test parts through the station loop")
        n_parts = _stream_folder(data, out / "stream")
        station = _station_config(out, model, calibration, out / "stream")
        if broker_answers():
            print(
                f"broker at {BROKER[0]}:{BROKER[1]} answers: decisions go to flowedge/demo-site/demo-station/#"
            )
            print("watch them with:  mosquitto_sub -h 127.0.0.1 -t 'flowedge/#' -v")
            _cli("run", "--config", station, "--exit-when-done")
        else:
            print(
                f"no MQTT broker answers at {BROKER[0]}:{BROKER[1]}: the {n_parts} decisions wait in the "
                f"spool {out / 'spool.sqlite'} and are sent in order once a broker runs there "
                f"(start one with 'mosquitto -d', then 'flowedge run --config {station}')"
            )
            _cli("run", "--config", station)

    report = json.loads((out / "eval" / "report.json").read_text(encoding="utf-8"))
    overall = report["metrics"]["overall"]
    _step("done")
    print(
        f"image AUROC {overall['image_auroc']:.3f}, pixel AUROC {overall.get('pixel_auroc') or float('nan'):.3f}"
    )
    print(f"checkpoint      {model}")
    print(f"report          {out / 'eval' / 'report.json'}")
    print(f"pictures        {out / 'eval'} (roc.png, score_histogram.png, heatmaps/)")
    print(f"calibration     {calibration}")
    if not args.no_stream:
        print(f"station config  {out / 'station.yaml'}; anomaly overlays in {out / 'heatmaps'}")
    return EXIT_OK
