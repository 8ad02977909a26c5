"""Which signals drove an anomalous cycle's score, from forward passes only (occlusion).

An exported graph cannot backpropagate, and an MTS-Flow graph's map says *when*, not
*which* (flows.detectors.mtsflow). So for a cycle decided ANOMALY the station asks the
same backend once more, with a batch holding the cycle S times, copy i with signal i
replaced by its training mean (0 after the per-signal standardisation, which is also
the padding value): the score drop of copy i is how much of the anomaly signal i
carries. It costs S extra cycles of inference per anomalous cycle (docs/robot.md
measures it), nothing for normal cycles.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from flowedge.backends.base import Backend
from flowedge.core.card import SeriesInput
from flowedge.core.decision import decide
from flowedge.edge.cycle_report import names_signals
from flowedge.edge.loop.sample import Sample

log = logging.getLogger(__name__)


def occlusion_drops(backend: Backend, cycle: np.ndarray, score: float) -> np.ndarray:
    """Score drop per signal [S] when that signal is set to its training mean (0).

    ``cycle`` is the preprocessed tensor [S, T] that scored ``score``. Batches are
    at most the backend's ``max_batch``; a positive drop means the signal drove it.
    """
    signals = cycle.shape[0]
    drops = np.empty(signals, dtype=np.float64)
    for lo in range(0, signals, backend.max_batch):
        chosen = np.arange(lo, min(signals, lo + backend.max_batch))
        batch = np.repeat(cycle[None], len(chosen), axis=0)
        batch[np.arange(len(chosen)), chosen] = 0.0
        scores, _ = backend.infer(batch)
        drops[chosen] = score - np.asarray(scores, dtype=np.float64)
    return drops


def explain_anomalies(backend: Backend, samples: list[Sample], threshold: float) -> None:
    """Set ``signal_drops`` of each scored series cycle decided ANOMALY whose map cannot
    name signals. A failure costs only the drivers: the decision still goes out."""
    if not isinstance(backend.card.input, SeriesInput):
        return
    for sample in samples:
        if sample.error is not None or sample.tensor is None or sample.amap is None:
            continue
        if decide(sample.score, threshold) != "ANOMALY" or names_signals(sample.amap):
            continue
        t0 = time.perf_counter()
        try:
            sample.signal_drops = occlusion_drops(backend, sample.tensor, float(sample.score))
        except Exception:  # drivers are extra: a broken backend shows in the next scoring
            log.exception("occlusion of %s/%s failed", sample.source, sample.part_id)
        sample.mark("drivers", t0)
