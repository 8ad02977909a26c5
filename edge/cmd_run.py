"""``flowedge run``: the station service.

Start: validate config, load model and threshold, open the spool, connect MQTT,
start the stages, tell systemd READY=1. SIGTERM (or SIGINT): stop capture, drain
every queue, deliver or spool every decision, publish ``offline``, exit 0.
SIGHUP: reload threshold / calibration / drift / heatmap settings from the
config file without touching the broker connection. The run also ends when all
sources have ended (folder replay without ``loop``) or after ``--max-samples``; when
every source failed, it exits non-zero (3) so systemd's ``Restart=on-failure`` restarts it.
Each enabled sink (the ``mqtt`` section, ``sinks``) delivers every record from its own
cursor in the spool. With no sink enabled nothing is sent: decisions and events stay
in the spool (the station's local record, bounded by ``spool.max_messages``) until a
sink is enabled.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flowedge.backends import open_backend
from flowedge.backends.base import Backend
from flowedge.core.errors import EXIT_DATA, EXIT_INTERNAL, EXIT_OK, ConfigError, FlowedgeError
from flowedge.edge import logs
from flowedge.edge.commands import StationCommands, threshold_argument
from flowedge.edge.config import FlowedgeConfig, load_config
from flowedge.edge.health import Notifier, Watchdog, watchdog_interval_s
from flowedge.edge.loop.pipeline import Pipeline
from flowedge.edge.loop.policy import load_policy
from flowedge.edge.metrics import Metrics
from flowedge.edge.sinks import Sink, SinkContext, make_sink
from flowedge.edge.spool import Spool

log = logging.getLogger("flowedge.run")

# settings a SIGHUP applies in place; anything else needs a restart
RELOADABLE = ("model.threshold", "model.calibration", "drift", "pipeline.heatmaps", "logging")
FLUSH_ON_STOP_S = 5.0


def _exclude_spec(dotted: tuple[str, ...]) -> dict:
    """pydantic's nested ``exclude`` for dotted names: ``model.threshold`` -> {"model": {"threshold"}}."""
    spec: dict = {}
    for name in dotted:
        section, _, key = name.partition(".")
        if key:
            spec.setdefault(section, set()).add(key)
        else:
            spec[section] = True
    return spec


_RELOADABLE = _exclude_spec(RELOADABLE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="station config.yaml")
    parser.add_argument(
        "--max-samples",
        type=int,
        default=None,
        metavar="N",
        help="stop capturing after N samples (all sources together)",
    )
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="when capture ends, wait until the broker acknowledged every "
        "decision before exiting (folder replay in demos and tests)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")


class Station:
    """Wires config, backend, spool, sinks, pipeline and systemd together."""

    def __init__(
        self,
        config_path: Path,
        cfg: FlowedgeConfig,
        max_samples: int | None,
        backend: Backend | None = None,
    ) -> None:
        """``backend``: an opened backend (tests, benches); None opens ``cfg.model``."""
        self.config_path, self.cfg = config_path, cfg
        self.backend = (
            backend
            if backend is not None
            else open_backend(
                cfg.model.path, cfg.model.backend, cfg.model.device, cfg.model.intra_op_threads
            )
        )
        self.policy = load_policy(cfg, self.backend.card, self.backend.calibration)
        self.spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.pipeline = Pipeline(
            cfg,
            self.backend,
            self.policy,
            self.spool,
            self.metrics,
            on_status=self._status_changed,
            max_samples=max_samples,
        )
        self.commands = StationCommands(cfg.commands, self.pipeline.events.emit)
        self.commands.handle("set_threshold", self._set_threshold)
        context = SinkContext(
            cfg.site,
            cfg.station,
            self.spool,
            self.metrics,
            self.pipeline.events.emit,
            self.status_fields,
            self.commands,
        )
        self.sinks: list[Sink] = [make_sink(sink, context) for sink in cfg.active_sinks()]
        self.watchdog: Watchdog | None = None

    @property
    def publisher(self) -> Sink | None:
        """The default sink (the ``mqtt`` section), None when it is disabled."""
        return next((sink for sink in self.sinks if sink.name == self.cfg.mqtt.name), None)

    def _status_changed(self, reason: str) -> None:
        for sink in self.sinks:
            sink.status_changed(reason)

    def status_fields(self) -> dict[str, Any]:
        """Extra fields of the retained status message (the pipeline exists before MQTT)."""
        return {
            "model_id": self.backend.card.model_id,
            "threshold": self.pipeline.policy.threshold,
            "sources": self.pipeline.states.snapshot(),
            "counts": self.pipeline.counts.snapshot(),
            "spooled": self.spool.count(),
            "spool_overflowed": self.spool.overflowed,
        }

    def status_line(self) -> str:
        """The STATUS= line of ``systemctl status``: counts plus each sink's state."""
        sinks = "; ".join(f"{sink.name}: {sink.health()}" for sink in self.sinks)
        return f"{self.pipeline.status_line()}; {sinks or 'no sink enabled'}"

    def start(self) -> None:
        if self.cfg.metrics.enabled:
            try:
                self.metrics.serve(self.cfg.metrics)
            except OSError as exc:
                raise ConfigError(
                    f"metrics.port {self.cfg.metrics.port} on {self.cfg.metrics.host}: cannot listen "
                    f"({exc.strerror}); choose a free port or set metrics.enabled: false"
                ) from exc
        for sink in self.sinks:
            sink.start()
        if not self.sinks:
            log.warning(
                "no sink enabled (MQTT disabled by mqtt.enabled: false, no sinks): decisions and events are kept "
                "in the spool %s (at most %d, then %s), not sent; enable a sink to forward "
                "them in order",
                self.spool.path,
                self.spool.max_messages,
                self.cfg.spool.overflow,
            )
        self.pipeline.start()
        interval = watchdog_interval_s()
        if interval:
            self.watchdog = Watchdog(
                self.notifier, self.pipeline.progress, interval, self.status_line
            )
            self.watchdog.start()
        self.notifier.send("READY=1", f"STATUS=running model {self.backend.card.model_id}")
        log.info(
            "station %s/%s running: %d source(s), model %s, threshold %g from %s",
            self.cfg.site,
            self.cfg.station,
            len(self.cfg.sources),
            self.backend.card.model_id,
            self.policy.threshold,
            self.policy.origin,
        )

    def _set_threshold(self, args: dict[str, Any], origin: str) -> str:
        """A sink's ``set_threshold``: the next decision uses it; a reload or restart goes
        back to the configured threshold."""
        value = threshold_argument(args)
        old = self.pipeline.policy
        self.pipeline.policy = replace(old, threshold=value, origin=f"command from {origin}")
        self._status_changed("threshold set by command")
        return f"threshold {old.threshold:g} -> {value:g} (until the next reload or restart)"

    def reload(self) -> None:
        """SIGHUP: new threshold/calibration/drift/heatmaps; the broker connection stays up."""
        # systemd >= 253 wants the reload's monotonic time stamp
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading configuration"
        )
        try:
            new = load_config(self.config_path)
            policy = load_policy(new, self.backend.card, self.backend.calibration)
        except FlowedgeError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.pipeline.events.emit(None, "reload_failed", f"reload refused: {exc}")
            self.notifier.send("READY=1", "STATUS=reload failed; running the previous config")
            return
        old = self.cfg.model_dump(mode="json", exclude=_RELOADABLE)
        fresh = new.model_dump(mode="json", exclude=_RELOADABLE)
        changed = sorted(k for k in fresh if fresh[k] != old.get(k))
        if changed:
            log.warning(
                "reload: changes to %s need a restart (systemctl restart); applied only %s",
                ", ".join(changed),
                ", ".join(RELOADABLE),
            )
        self.cfg.model.threshold, self.cfg.model.calibration = (
            new.model.threshold,
            new.model.calibration,
        )
        self.cfg.drift = new.drift
        self.cfg.pipeline.heatmaps = new.pipeline.heatmaps
        logs.configure(new.logging)
        self.pipeline.policy = policy
        self.pipeline.events.emit(
            None,
            "reloaded",
            f"configuration reloaded: threshold {policy.threshold:g}",
            threshold=policy.threshold,
        )
        self._status_changed("reloaded")
        self.notifier.send("READY=1", f"STATUS=reloaded: threshold {policy.threshold:g}")

    def shutdown(self, reason: str, wait_for_delivery: bool, interrupted: threading.Event) -> None:
        self.notifier.send("STOPPING=1", f"STATUS=stopping: {reason}")
        self.pipeline.stop()
        self.pipeline.wait()
        if self.watchdog is not None:
            self.watchdog.stop()
        if wait_for_delivery and self.sinks:
            log.info("waiting until every sink acknowledged %d record(s)", self.spool.count())
            while not interrupted.is_set() and not all(sink.flush(5.0) for sink in self.sinks):
                log.info(
                    "still %d record(s) to deliver (SIGTERM to stop waiting)", self.spool.count()
                )
        for sink in self.sinks:
            sink.stop(reason, FLUSH_ON_STOP_S)
        left = self.spool.count()
        if left:
            log.info("%d record(s) stay in the spool %s for the next start", left, self.spool.path)
        self.backend.close()
        self.metrics.close()
        self.spool.close()
        self.notifier.close()
        log.info("stopped (%s): %s", reason, self.pipeline.status_line())


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    logs.configure(cfg.logging, verbose=args.verbose)
    requests: list[str] = []
    wakeup = threading.Event()
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        requests.append("reload" if signum == signal.SIGHUP else "stop")
        if signum != signal.SIGHUP:
            stop_requested.set()
        wakeup.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)  # before loading: a stop during start-up is honoured too
    station = Station(args.config, cfg, args.max_samples)
    station.start()
    reason = "capture ended"
    while not station.pipeline.finished.is_set():
        wakeup.wait(0.5)
        wakeup.clear()
        while requests:
            if requests.pop(0) == "reload":
                station.reload()
            else:
                reason = "stopped by signal (graceful)"
                station.pipeline.stop()
    # a stop request drains the pipeline but never waits for an absent broker
    wait = args.exit_when_done and not stop_requested.is_set()
    code = EXIT_OK
    failure, sources_failed = station.pipeline.failure, station.pipeline.sources_failed()
    if failure is not None:
        reason, wait, code = f"stage failed: {failure}", False, EXIT_INTERNAL
    elif sources_failed is not None:
        reason, code = f"every source failed ({sources_failed})", EXIT_DATA
        log.error("%s: exiting with %d so that systemd restarts the station", reason, code)
    station.shutdown(reason, wait_for_delivery=wait, interrupted=stop_requested)
    return code
