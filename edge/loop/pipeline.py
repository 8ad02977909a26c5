"""The station loop, wired: capture (one thread per source) -> preprocess -> infer -> publish.

Stages are threads joined by bounded queues; capture journals each frame and applies
its source's backpressure (:mod:`.fanin`); infer scores and decides each sample once;
publish numbers each decision per sensor and stores it in the spool (one
transaction), from where every sink delivers it. Stopping (end of finite sources,
``--max-samples`` or SIGTERM) stops capture and then drains every queue, so every
sample already captured gets its decision.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from flowedge.backends.base import Backend
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.handshake import Handshakes
from flowedge.edge.loop.capture import Capture
from flowedge.edge.loop.counts import Counts
from flowedge.edge.loop.events import DropReporter, EventBus
from flowedge.edge.loop.evidence import InputKeeper
from flowedge.edge.loop.fanin import FanIn
from flowedge.edge.loop.heatmaps import HeatmapWriter
from flowedge.edge.loop.infer import Infer
from flowedge.edge.loop.models import Router, SingleModel
from flowedge.edge.loop.policy import Policy
from flowedge.edge.loop.preprocess import Preprocess
from flowedge.edge.loop.publish import Publish
from flowedge.edge.loop.recipes import Opener, Recipes, open_model
from flowedge.edge.loop.sample import Sample
from flowedge.edge.loop.source_states import SourceStates
from flowedge.edge.metrics import Metrics
from flowedge.edge.sources import Source, SourceContext, make_source
from flowedge.edge.spool import Spool

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        cfg: FlowedgeConfig,
        backend: Backend | None,
        policy: Policy | None,
        spool: Spool,
        metrics: Metrics,
        on_status: Callable[[str], None] = lambda reason: None,
        max_samples: int | None = None,
        source_factory: Callable[..., Source] = make_source,
        opener: Opener = open_model,
    ) -> None:
        """``backend`` and ``policy``: the one model's (``cfg.model``); with ``cfg.recipes``
        both are None and each recipe's model is opened with ``opener`` when needed."""
        self.spool = spool
        self.counts = Counts()
        self.events = EventBus(cfg, spool, metrics)
        self.router: Router
        if cfg.recipes is not None:
            self.router = Recipes(cfg, self.events.emit, metrics, opener)
        else:
            assert backend is not None and policy is not None
            self.router = SingleModel(cfg.model, backend, policy, self.events.emit)
        self.states = SourceStates([s.name for s in cfg.sources], metrics, on_status)
        self.stop_capture = threading.Event()
        self.finished = threading.Event()  # every stage has drained and ended
        self.failure: BaseException | None = None  # a stage died: the run ends with an error
        self._drops = DropReporter(self.events, self.counts, metrics)
        self.fan_in = FanIn(cfg.sources, self._dropped)
        to_infer: queue.Queue = queue.Queue(cfg.pipeline.queue_size)
        to_publish: queue.Queue = queue.Queue(cfg.pipeline.queue_size)
        heatmaps = HeatmapWriter(cfg.pipeline, self.events.emit)
        inputs = InputKeeper(cfg.pipeline.evidence, self.events.emit)
        self.handshakes = Handshakes()  # filled by triggered sources, fed by Publish
        context = SourceContext(
            self.events.emit, spool, self.states.connected, cfg.mqtt, self.handshakes
        )
        sources = [source_factory(s, context) for s in cfg.sources]
        captures = [
            Capture(
                src,
                spool,
                self.fan_in,
                self.states,
                self.counts,
                metrics,
                self.events,
                self.stop_capture,
                max_samples,
                self.router.stamp,
            )
            for src in sources
        ]

        def depths() -> dict[str, int]:
            return {
                "preprocess": self.fan_in.depth(),
                "infer": to_infer.qsize(),
                "publish": to_publish.qsize(),
            }

        stages = (
            Preprocess(
                self.fan_in, to_infer, self.router, cfg.pipeline.limits, metrics, self.events
            ),
            Infer(to_infer, to_publish, cfg.pipeline.max_batch, metrics, self.events),
            Publish(
                to_publish,
                cfg,
                heatmaps,
                inputs,
                spool,
                self.counts,
                metrics,
                self.events,
                depths,
                self.handshakes,
            ),
        )
        self.progress = [stage.progress for stage in stages]
        self._capture_threads = [
            threading.Thread(target=c.run, name=f"capture-{c.source.name}", daemon=True)
            for c in captures
        ]
        self._stage_threads = [
            threading.Thread(
                target=self._guarded,
                args=(stage.run, self.finished.set if stage is stages[-1] else None),
                name=stage.progress.name,
                daemon=True,
            )
            for stage in stages
        ]

    @property
    def policy(self) -> Policy:
        """The one model's policy (a station without recipes)."""
        assert isinstance(self.router, SingleModel), "each recipe has its own policy"
        return self.router.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """SIGHUP: the next decision uses the new policy; one in progress keeps the old one."""
        assert isinstance(self.router, SingleModel), "each recipe has its own policy"
        self.router.policy = policy

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._stage_threads + self._capture_threads:
            thread.start()
        threading.Thread(target=self._close_when_captured, name="capture-join", daemon=True).start()

    def _close_when_captured(self) -> None:
        for thread in self._capture_threads:
            thread.join()
        self._drops.report_all()
        self.fan_in.close()

    def stop(self) -> None:
        """Stop capturing; queued samples still get their decisions."""
        self.stop_capture.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def _dropped(self, sample: Sample) -> None:
        """A drop_oldest drop closes the sample's journal row: counted and reported, not lost."""
        if sample.intake_id is not None:
            self.spool.drop_intake(sample.intake_id)
        self._drops.dropped(sample)

    def sources_failed(self) -> str | None:
        """Why every source failed, None when any source ended normally or still runs."""
        return self.states.all_failed()

    def status_line(self) -> str:
        c = self.counts.snapshot()
        return (
            f"{c['decisions']} decisions, {c['errors']} errors, {c['dropped']} dropped, "
            f"{self.spool.count()} spooled"
        )

    def _guarded(self, run: Callable[[], None], then: Callable[[], None] | None) -> None:
        """A stage that raises is a bug or a broken disk: end the run (exit 1, systemd restarts)
        instead of leaving a half-dead loop."""
        try:
            run()
        except Exception as exc:
            log.exception("stage %s failed; stopping the station", threading.current_thread().name)
            self.failure = exc
            self.stop_capture.set()
            self.finished.set()
            return
        if then is not None:
            then()
