"""Pipeline overhead: the full station loop against the bare inference loop, same run.

Full loop = ``flowedge run``'s Station: folder source -> preprocess -> infer
(PyTorch backend) -> decision -> SQLite spool (fsync) -> MQTT QoS 1 to a private
mosquitto, every decision received by a subscriber. Bare loop = the same
backend on the same images: read, preprocess, ``infer`` one at a time.

Throughput: both unpaced. Latency: the full loop paced at ``--load`` of the bare
throughput (a station is not run saturated), capture to decision as carried in
each message (``latency_ms.total``) and to arrival at the subscriber; the bare
figure is one read+preprocess+infer call. Overhead ratio = bare throughput /
pipeline throughput (must stay under 1.15 at batch 1); bare and full runs are
interleaved ``--repeats`` times and the best of each is kept (shared machines).

    .venv/bin/python bench/pipeline.py --size 128 --images 60 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mqtt_broker import Broker, Subscriber  # noqa: E402

from flowedge.backends.torch_backend import TorchBackend  # noqa: E402
from flowedge.edge.cmd_run import Station  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402


def demo_checkpoint(size: int, out: Path) -> Path:
    """A default-shaped CS-Flow (random backbone) fitted once on noise: latency needs no training."""
    import torch

    from flowedge.flows.checkpoint import save_checkpoint
    from flowedge.flows.config import BackboneConfig, CSFlowConfig, TrainingConfig
    from flowedge.flows.detectors import build_detector
    from flowedge.flows.fit import fit_detector
    from flowedge.flows.train import build_card

    det_cfg = CSFlowConfig(backbone=BackboneConfig(weights="none"), image_size=size)
    train_cfg = TrainingConfig(epochs=1, batch_size=2)
    detector = build_detector(det_cfg)
    spec = detector.input_spec()
    x = torch.randn(2, spec.channels, spec.height, spec.width)
    with torch.no_grad():
        feats = detector.features(x)
    fit_detector(detector, lambda: [(feats, None)], train_cfg)
    card = build_card(detector, det_cfg, {"config": train_cfg.model_dump(mode="json")})
    save_checkpoint(detector, card, out)
    return out


def write_images(folder: Path, count: int, size: int) -> None:
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"part_{i:04d}.png"), image)


def bare_loop(
    backend: TorchBackend, images: list[Path], preload: bool
) -> tuple[float, list[float], float]:
    """One sample at a time; ``preload``: tensors made beforehand (inference only)."""
    spec = backend.card.input
    load = get_modality(spec.kind).load
    tensors = [load(path, spec)[None] for path in images] if preload else []
    backend.infer(load(images[0], spec)[None])  # warm-up
    latencies = []
    start, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(images):
        t0 = time.perf_counter()
        backend.infer(tensors[i] if preload else load(path, spec)[None])
        latencies.append(time.perf_counter() - t0)
    n = len(images)
    return n / (time.perf_counter() - start), latencies, (time.process_time() - cpu) / n


def full_loop(
    tmp: Path, model: Path, images: Path, count: int, threads: int, rate_hz: float | None, tag: str
) -> tuple[float, list[dict], float]:
    (tmp / f"broker-{tag}").mkdir()
    broker = Broker(tmp / f"broker-{tag}").start()
    cfg = parse_config(
        {
            "model": {
                "path": str(model),
                "backend": "torch",
                "threshold": 1e9,
                "intra_op_threads": threads,
            },
            "sources": [{"name": "cam", "kind": "folder", "path": str(images), "rate_hz": rate_hz}],
            "pipeline": {"max_batch": 1, "heatmaps": "none"},
            "mqtt": {"port": broker.port},
            "metrics": {"enabled": False},
            "spool": {"path": str(tmp / f"spool-{tag}.sqlite")},
        }
    )
    sub = Subscriber(broker.port, topic="flowedge/+/+/+/decision")
    station = Station(tmp / "unused.yaml", cfg, max_samples=None)
    arrivals: dict[int, float] = {}
    original = sub._on_message

    def stamp(client, userdata, msg):  # noqa: ANN001, ANN202
        original(client, userdata, msg)
        arrivals[len(arrivals) + 1] = time.perf_counter()

    sub.client.on_message = stamp
    time.sleep(0.5)  # subscriber connected
    station.backend.infer(np.zeros((1, *station.backend.input_shape), np.float32))  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    station.start()
    docs = sub.wait_for("/decision", count, timeout=600)
    elapsed = max(arrivals.values()) - start
    cpu_per_image = (time.process_time() - cpu) / count
    station.shutdown(
        "benchmark over", wait_for_delivery=False, interrupted=station.pipeline.finished
    )
    sub.close()
    broker.stop()
    assert [d["seq"] for d in docs] == list(range(1, count + 1)), "lost or reordered decisions"
    return count / elapsed, docs, cpu_per_image


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="model input side")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (both loops)"
    )
    parser.add_argument("--load", type=float, default=0.5, help="paced run: fraction of bare rate")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs, best kept")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model = args.checkpoint or demo_checkpoint(args.size, tmp / "model")
        write_images(tmp / "images", args.images, args.size)
        files = sorted((tmp / "images").glob("*.png"))
        backend = TorchBackend.open(model, "cpu", args.threads)
        bare_rate, io_rate, pipe_rate, bare_lat, io_lat = 0.0, 0.0, 0.0, [], []
        cpu: dict[str, list[float]] = {"bare": [], "io": [], "pipe": []}
        pair_ratios: list[float] = []  # bare / pipeline of adjacent runs: similar machine load
        for r in range(args.repeats):  # interleaved; best of each: the machine is shared
            rate, lat, used = bare_loop(backend, files, preload=True)
            cpu["bare"].append(used)
            pair_bare = rate
            if rate > bare_rate:
                bare_rate, bare_lat = rate, lat
            rate, lat, used = bare_loop(backend, files, preload=False)
            cpu["io"].append(used)
            if rate > io_rate:
                io_rate, io_lat = rate, lat
            rate, _, used = full_loop(
                tmp, model, tmp / "images", args.images, args.threads, None, f"unpaced{r}"
            )
            cpu["pipe"].append(used)
            pipe_rate = max(pipe_rate, rate)
            pair_ratios.append(pair_bare / rate)
        paced = bare_rate * args.load
        _, docs, _ = full_loop(
            tmp, model, tmp / "images", args.images, args.threads, paced, "paced"
        )
    e2e = [d["latency_ms"]["total"] / 1e3 for d in docs]
    stages = {k: statistics.median(d["latency_ms"][k] for d in docs) for k in docs[0]["latency_ms"]}
    print(
        f"model: CS-Flow {args.size}x{args.size}, torch cpu, {args.threads} thread(s), "
        f"{args.images} images, batch 1, best of {args.repeats} interleaved runs"
    )
    print(
        f"bare infer    : {bare_rate:7.2f} img/s  latency p50 {pct(bare_lat, 50):7.1f} ms  "
        f"p99 {pct(bare_lat, 99):7.1f} ms  (tensors preloaded)"
    )
    print(
        f"bare read+pre+infer: {io_rate:7.2f} img/s  latency p50 {pct(io_lat, 50):7.1f} ms  "
        f"p99 {pct(io_lat, 99):7.1f} ms"
    )
    print(
        f"full pipeline : {pipe_rate:7.2f} img/s  (capture -> MQTT PUBACK'd, subscriber received)"
    )
    print(
        f"paced at {paced:.2f} Hz: end-to-end latency p50 {pct(e2e, 50):7.1f} ms  "
        f"p99 {pct(e2e, 99):7.1f} ms  (capture -> decision spooled)"
    )
    print("  per-stage p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print(
        f"overhead ratio (bare infer / pipeline throughput): best-of {bare_rate / pipe_rate:.3f}, "
        f"median of adjacent pairs {statistics.median(pair_ratios):.3f} "
        f"(pairs: {' '.join(f'{r:.2f}' for r in pair_ratios)}; target < 1.15); "
        f"vs bare read+pre+infer: {io_rate / pipe_rate:.3f}"
    )
    best = {k: 1e3 * min(v) for k, v in cpu.items()}
    print(
        f"CPU time per image (process, all threads; best run): bare infer {best['bare']:.1f} ms, "
        f"bare read+pre+infer {best['io']:.1f} ms, pipeline {best['pipe']:.1f} ms -> ratio "
        f"{best['pipe'] / best['bare']:.3f} / {best['pipe'] / best['io']:.3f}"
    )
    print(
        f"latency ratio p50 (pipeline end-to-end / bare read+pre+infer): "
        f"{pct(e2e, 50) / pct(io_lat, 50):.3f}"
    )


if __name__ == "__main__":
    main()
