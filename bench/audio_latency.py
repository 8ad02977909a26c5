"""Audio motions: time from a motion's end to its decision at an MQTT subscriber.

A player thread hands generated gear-motor motions (fold/unfold in turn) to the
microphone source block by block in real time, the way PortAudio's callback does (no
PortAudio here: the player stands in for ``sounddevice``'s stream) and stamps when each
block was handed over. The station (``flowedge run``'s Station: microphone source ->
energy segmenter -> mel front end -> ONNX Runtime audio flow -> decision -> SQLite spool
-> MQTT QoS 1 to a private mosquitto) publishes one decision per motion; a subscriber
stamps its arrival. Two clocks start at the motion's end (its last loud frame, ``end_s``):
when that audio was handed over, and ``hang_s`` later, when the segmenter can first know
the motion has ended (the fair comparison with bench/robot_latency.py).

    python bench/audio_latency.py --motions 12 --epochs 1
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from station_harness import print_latencies, station_on_private_broker

from flowedge.edge.sources import microphone
from flowedge.export.checked import ExportRequest, run_export
from flowedge.flows.config import AudioFlowConfig, PyramidBackboneConfig, TrainingConfig
from flowedge.flows.train import train
from flowedge.modalities import get_modality
from flowedge.modalities.audio_events import EventRules
from flowedge.modalities.audio_synthetic import gear_motor_clip

RATE, BLOCK, MOTION_S = 44100, 1024, 3.0


def onnx_audioflow(work: Path, epochs: int) -> Path:
    """The default-size audio flow (random backbone: latency, not accuracy), exported."""
    data = get_modality("audio").synthesize(
        work / "motor", 8, 0, 0, sample_rate=RATE, duration_s=MOTION_S
    )
    config = AudioFlowConfig(backbone=PyramidBackboneConfig(weights="none"))
    train(
        config,
        TrainingConfig(epochs=epochs, batch_size=4),
        data,
        work / "model",
        show_progress=False,
    )
    run_export(ExportRequest(work / "model", work / "audioflow.onnx"))
    return work / "audioflow.onnx"


class RealTimePlayer:
    """Stream opener: plays ``audio`` into the callback at the real rate once, then ends."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = audio
        self.handed: list[float] = []  # perf_counter when block k was handed over
        self.active = True
        self.opened = 0

    def __call__(self, settings: Any, callback: Callable[..., None]) -> RealTimePlayer:
        self.opened += 1
        if self.opened > 1:  # the recording is over: the source reconnects into silence
            self.audio = self.audio[:0]
        self.callback = callback
        return self

    def __enter__(self) -> RealTimePlayer:
        threading.Thread(target=self._play, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False

    def _play(self) -> None:
        start = time.perf_counter()
        for first in range(0, len(self.audio), BLOCK):
            time.sleep(max(0.0, start + (first + BLOCK) / RATE - time.perf_counter()))
            block = self.audio[first : first + BLOCK, None]
            self.handed.append(time.perf_counter())
            self.callback(block, len(block), None, None)
        self.active = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motions", type=int, default=12, help="motions measured")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (latency only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="audio-latency-"))
    model = onnx_audioflow(tmp, args.epochs)
    rng = np.random.default_rng(7)
    labels = ["fold", "unfold"]
    audio = np.concatenate(
        [gear_motor_clip(RATE, MOTION_S, rng, labels[k % 2]) for k in range(args.motions + 1)]
    )
    player = RealTimePlayer(audio)
    microphone.require_sounddevice = lambda: None  # the player is the stream: no PortAudio
    microphone.open_sounddevice = player
    rules = EventRules()
    source = {
        "name": "mic1",
        "kind": "microphone",
        "modality": "audio",
        "microphone": {"sample_rate": RATE, "block_size": BLOCK},
    }
    model_section = {"path": str(model), "backend": "onnxruntime", "threshold": 1e9}
    with station_on_private_broker(tmp, model_section, source) as (_, sub):
        docs = sub.wait_for("/decision", args.motions + 1, timeout=60 + 4 * MOTION_S * args.motions)
        arrived = sub.arrival_times("/decision", lambda doc: doc["part_id"])

    def handed_at(stream_s: float) -> float:
        return player.handed[min(len(player.handed) - 1, int(stream_s * RATE) // BLOCK)]

    measured = [d for d in docs[1:] if d["part_id"] in arrived]  # the first warms up
    from_end = [1e3 * (arrived[d["part_id"]] - handed_at(d["event"]["end_s"])) for d in measured]
    closed = [
        1e3 * (arrived[d["part_id"]] - handed_at(d["event"]["end_s"] + rules.hang_s))
        for d in measured
    ]
    inside = [d["latency_ms"]["total"] for d in measured]
    print(
        f"audio flow (hybrid, 256x384, {RATE} Hz, {MOTION_S:g} s per motion), ONNX Runtime CPU, "
        f"batch 1; {len(measured)} motions ({sum(d['decision'] != 'ERROR' for d in measured)} "
        f"scored), hang_s {rules.hang_s:g}"
    )
    print_latencies(
        [
            ("motion end -> MQTT arrival", from_end),
            ("end + hang_s -> MQTT arrival", closed),
            ("capture -> decision", inside),
        ]
    )


if __name__ == "__main__":
    main()
