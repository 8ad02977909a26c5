"""Events per second per CPU core with ONNX Runtime, and the time from event end to decision.

Exports seed 000's configuration (hybrid input, 256 x 384 spectrogram image, 4 blocks,
Lite0) untrained (the cost does not depend on the weights), then runs what the station
does per motion on one thread: the numpy mel front end on a 3 s, 44.1 kHz clip and one
inference at batch 1. Event end to publish = segmenter hang (rules.hang_s, waiting for
quiet) + preprocess + infer + publish (the station's own MQTT publish is about a
millisecond, see docs/performance.md)::

    python bench/audio_throughput.py --work /tmp/audio-throughput --events 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from flowedge.backends import open_backend
from flowedge.cli import main as flowedge
from flowedge.flows.checkpoint import save_checkpoint
from flowedge.flows.config import AudioFlowConfig
from flowedge.flows.detectors import build_detector
from flowedge.flows.train import build_card
from flowedge.modalities import get_modality
from flowedge.modalities.audio import Clip
from flowedge.modalities.audio_events import EventRules
from flowedge.modalities.audio_synthetic import gear_motor_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    onnx_path = args.work / "audioflow.onnx"
    if not onnx_path.is_file():
        config = AudioFlowConfig()
        detector = build_detector(config).eval()
        save_checkpoint(detector, build_card(detector, config, {}), args.work / "model")
        assert flowedge(["export", "onnx", str(args.work / "model"), "--out", str(onnx_path)]) == 0
    backend = open_backend(onnx_path, threads=1)
    spec = backend.card.input
    audio = get_modality("audio")
    rng = np.random.default_rng(0)
    clips = [
        Clip(gear_motor_clip(spec.sample_rate, spec.duration_s, rng)[:, None], spec.sample_rate)
        for _ in range(args.events)
    ]
    pre, inf = [], []
    backend.infer(audio.preprocess(clips[0], spec, "warm-up")[None])
    for i, clip in enumerate(clips):
        t0 = time.perf_counter()
        tensor = audio.preprocess(clip, spec, f"event-{i}")
        t1 = time.perf_counter()
        backend.infer(tensor[None])
        t2 = time.perf_counter()
        pre.append(t1 - t0)
        inf.append(t2 - t1)
    per_event = statistics.median(p + q for p, q in zip(pre, inf, strict=True))
    hang = EventRules().hang_s
    print(f"input {spec.tensor_shape}, ONNX Runtime {backend.name}, 1 thread, {args.events} events")
    print(f"preprocess (numpy mel) median {statistics.median(pre) * 1e3:.0f} ms")
    print(f"inference (batch 1)    median {statistics.median(inf) * 1e3:.0f} ms")
    print(f"events per second per core: {1.0 / per_event:.1f}")
    print(
        f"event end to decision: {(hang + per_event) * 1e3:.0f} ms (hang {hang * 1e3:.0f} ms + {per_event * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
