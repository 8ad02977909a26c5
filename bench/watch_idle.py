"""Idle CPU of a station watching a folder: inotify against forced polling, same run.

A real ``flowedge run`` process (watch source, tiny ONNX graph, no MQTT, no metrics
endpoint) watches a folder holding 0 or ``--files`` files (there before its first
start, so not its to score) while nothing arrives. Its CPU time (user + system, all
threads, from /proc/<pid>/stat) is read over ``--seconds`` of wall time after a
warm-up; the figure is the share of one core. Each configuration runs ``--repeats``
times, interleaved, and the median is kept (the machine may be shared).

    .venv/bin/python bench/watch_idle.py --files 5000 --seconds 20 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from runtime_fakes import write_images, write_onnx_model  # noqa: E402

from flowedge.edge.sources.changes import folder_changes  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def station_config(work: Path, folder: Path, notify: str) -> Path:
    config = work / f"config-{notify}.yaml"
    data = {
        "model": {"path": str(work / "model.onnx"), "threshold": 1.0e9},
        "sources": [{"name": "line", "kind": "watch", "path": str(folder), "notify": notify}],
        "mqtt": {"enabled": False},
        "metrics": {"enabled": False},
        "spool": {"path": str(work / f"spool-{notify}-{folder.name}.sqlite")},
        "pipeline": {"heatmaps": "none"},
    }
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config


def idle_share(config: Path, warmup_s: float, seconds: float) -> float:
    """CPU seconds per wall second of an idle station started on ``config``."""
    station = subprocess.Popen(
        [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(warmup_s)
        if station.poll() is not None:
            raise SystemExit(f"the station exited with {station.returncode}; run it by hand")
        cpu, wall = cpu_seconds(station.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(station.pid) - cpu) / (time.monotonic() - wall)
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(30)


def folder_of(work: Path, files: int) -> Path:
    """A folder holding ``files`` small PNG files."""
    folder = work / f"drop-{files}"
    folder.mkdir()
    if files:
        [first] = write_images(folder, 1)
        for index in range(1, files):
            shutil.copyfile(first, folder / f"img_{index:05d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the full folder")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured idle wall time")
    parser.add_argument("--warmup", type=float, default=12.0, help="seconds before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watch-idle-") as tmp:
        work = Path(tmp)
        write_onnx_model(work / "model.onnx")
        folders = [folder_of(work, 0), folder_of(work, args.files)]
        changes = folder_changes(folders[1], flat=True, mode="auto")
        changes.close()
        if changes.how != "inotify":
            raise SystemExit(f"no inotify here, the comparison would be void: {changes.how}")
        runs = [(folder, notify) for folder in folders for notify in ("auto", "poll")]
        shares: dict[tuple[str, str], list[float]] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for folder, notify in runs:
                config = station_config(work, folder, notify)
                share = idle_share(config, args.warmup, args.seconds)
                shares.setdefault((folder.name, notify), []).append(share)
                loads.append(os.getloadavg()[0])
    print(
        f"idle station, {args.seconds:g} s measured after {args.warmup:g} s, median of "
        f"{args.repeats}; 1-min load average {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(f"{'folder':>12} {'watch':>8} {'% of a core':>12}   runs")
    median = {key: statistics.median(values) for key, values in shares.items()}
    for (folder, notify), values in shares.items():
        watch = "inotify" if notify == "auto" else "polling"
        runs_text = " ".join(f"{100 * v:.2f}" for v in values)
        print(f"{folder:>12} {watch:>8} {100 * median[folder, notify]:>12.2f}   {runs_text}")
    full = f"drop-{args.files}"
    ratio = median[full, "poll"] / max(median[full, "auto"], 1e-9)
    print(f"polling / inotify with {args.files} files: {ratio:.1f}x")


if __name__ == "__main__":
    main()
