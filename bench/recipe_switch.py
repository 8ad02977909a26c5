"""Recipe switches under load: what a switch costs, and that none loses or misroutes a sample.

A folder of images named ``<n>_<recipe>.png`` in blocks of ``--block`` that alternate
between recipes A and B runs through ``flowedge run``'s wiring (recipes by file name, real
ONNX Runtime models), once with ``max_loaded: 1`` (every switch closes one model and opens
the other: the worst case) and once with ``max_loaded: 2`` (both stay open); the baseline,
in the same run, is one model for every image. Printed: throughput and its ratio to the
baseline, the switch times the station measures itself (the ``recipe_switched`` events'
``waited_s``: how long the first sample of the new recipe waited for its model), and the
counts of lost and misrouted samples (both must be 0).

    python bench/recipe_switch.py                       # stand-in ONNX models (tests' kind)
    python bench/recipe_switch.py --model MODEL.onnx   # any `flowedge export onnx` output, for both
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runtime_fakes import fake_card, station_config, write_images, write_onnx_model  # noqa: E402

from flowedge.edge.cmd_run import Station  # noqa: E402

RECIPES = ("A", "B")


def models(folder: Path, real: Path | None) -> dict[str, Path]:
    """One model file per recipe: copies of ``real``, or stand-ins with distinct ids."""
    out = {}
    for i, recipe in enumerate(RECIPES):
        path = folder / f"model_{recipe}.onnx"
        if real is not None:
            shutil.copy(real, path)
        else:
            card = dataclasses.replace(fake_card(), weights_sha256=f"{i + 10:x}" * 32)
            write_onnx_model(path, card=card)
        out[recipe] = path
    return out


def images(folder: Path, count: int, block: int) -> list[str]:
    """``count`` images, the recipe in each name switching every ``block``; the plan."""
    write_images(folder, count)
    plan = []
    for i, path in enumerate(sorted(folder.glob("*.png"))):
        recipe = RECIPES[(i // block) % 2]
        path.rename(folder / f"{i:05d}_{recipe}.png")
        plan.append(recipe)
    return plan


def run(work: Path, sections: dict[str, Any]) -> tuple[float, list[dict], list[dict]]:
    """(seconds, decisions, events) of one pass over the images."""
    spool = work / f"spool-{time.monotonic_ns()}.sqlite"
    source = {"name": "cam1", "kind": "folder", "path": str(work / "images")}
    cfg = station_config(
        work,
        sources=[source],
        spool={"path": str(spool), "max_messages": 1_000_000},
        pipeline={"heatmaps": "none", "max_batch": 8},
        **sections,
    )
    station = Station(Path("unused.yaml"), cfg, None)
    started = time.perf_counter()
    station.pipeline.start()
    assert station.pipeline.wait(600), "the pass did not finish"
    seconds = time.perf_counter() - started
    rows = [(r.kind, json.loads(r.body)) for r in station.spool.after(0, 10_000_000)]
    station.pipeline.router.close()
    station.spool.close()
    return (
        seconds,
        [doc for kind, doc in rows if kind == "decision"],
        [doc for kind, doc in rows if kind == "event"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--block", type=int, default=20, help="images per recipe run")
    parser.add_argument("--model", type=Path, help="an exported model for both recipes")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = models(work, args.model)
        plan = images(work / "images", args.images, args.block)
        single = {"model": {"path": str(files["A"]), "threshold": 3.0}}
        baseline_s, decisions, _ = run(work, single)
        base_rate = len(decisions) / baseline_s
        print(f"one model: {len(decisions)} decisions, {base_rate:.0f}/s (baseline)")
        recipes = {name: {"path": str(path), "threshold": 3.0} for name, path in files.items()}
        for loaded in (1, 2):
            section = {
                "select": {"by": "filename", "pattern": r"_(?P<recipe>[AB])\.png$"},
                "models": recipes,
                "max_loaded": loaded,
            }
            seconds, decisions, events = run(work, {"model": None, "recipes": section})
            ids = {doc["recipe"]: doc["model"]["id"] for doc in decisions if doc.get("model")}
            lost = len(plan) - len(decisions)
            misrouted = sum(
                doc.get("recipe") != plan[int(doc["part_id"][:5])]
                or doc["model"] is None
                or doc["model"]["id"] != ids[plan[int(doc["part_id"][:5])]]
                for doc in decisions
            )
            waits = [
                e["details"]["waited_s"] * 1000 for e in events if e["kind"] == "recipe_switched"
            ]
            rate = len(decisions) / seconds
            print(
                f"recipes, max_loaded {loaded}: {len(decisions)} decisions, {rate:.0f}/s "
                f"({rate / base_rate:.2f}x the baseline); {len(waits)} switches, first sample "
                f"waited p50 {statistics.median(waits):.1f} ms, max {max(waits):.1f} ms; "
                f"lost {lost}, misrouted {misrouted}"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
