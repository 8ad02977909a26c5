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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from flowedge.backends.base import Backend
from flowedge.core.errors import EXIT_DATA, EXIT_INTERNAL, EXIT_OK, ConfigError, FlowedgeError
from flowedge.edge import logs
from flowedge.edge.commands import Reply, StationCommands, threshold_argument
from flowedge.edge.config import FlowedgeConfig, load_config
from flowedge.edge.health import Notifier, Watchdog, watchdog_interval_s
from flowedge.edge.loop.models import ModelState, SingleModel
from flowedge.edge.loop.pipeline import Pipeline
from flowedge.edge.loop.policy import Policy, load_policy
from flowedge.edge.loop.recipes import Opener, Recipes, open_model
from flowedge.edge.metrics import Metrics
from flowedge.edge.resend import ResendHandler
from flowedge.edge.sinks import Sink, SinkContext, make_sink
from flowedge.edge.sources import Source, make_source
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


def _needing_restart(old: FlowedgeConfig, new: FlowedgeConfig) -> list[str]:
    """The sections that changed beyond what a reload applies (RELOADABLE, and each
    recipe's threshold and calibration)."""

    def fixed(cfg: FlowedgeConfig) -> dict[str, Any]:
        data = cfg.model_dump(mode="json", exclude=_RELOADABLE)
        for model in (data.get("recipes") or {}).get("models", {}).values():
            model.pop("threshold"), model.pop("calibration")
        return data

    before, after = fixed(old), fixed(new)
    return sorted(key for key in after if after[key] != before.get(key))


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
        opener: Opener = open_model,
        source_factory: Callable[..., Source] = make_source,
    ) -> None:
        """``backend``: an opened backend (tests, benches); None opens ``cfg.model``. With
        ``recipes`` there is none: each recipe's model is opened with ``opener`` when needed.
        ``source_factory``: opens each configured source (tests give scripted ones)."""
        self.config_path, self.cfg = config_path, cfg
        self.backend: Backend | None = None
        self.policy: Policy | None = None
        if cfg.recipes is None:
            self.backend = backend if backend is not None else open_model(cfg.model)
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
            source_factory=source_factory,
            opener=opener,
        )
        self.commands = StationCommands(cfg.commands, self.pipeline.events.emit)
        self.commands.handle("set_threshold", self._set_threshold)
        self.commands.handle("set_recipe", self._set_recipe)
        if "resend" in cfg.commands.allowed:  # reads the historian's secret: only when allowed
            self.commands.handle(
                "resend",
                ResendHandler(cfg.commands.resend, cfg.resend_history(), cfg.site, cfg.station),
            )
        context = SinkContext(
            cfg.site,
            cfg.station,
            self.spool,
            self.metrics,
            self.pipeline.events.emit,
            self.status_fields,
            self.commands,
            self.pipeline.handshakes,
            config=cfg,
            sinks_health=self.sinks_health,
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
            **self.pipeline.router.status(),
            "sources": self.pipeline.states.snapshot(),
            "counts": self.pipeline.counts.snapshot(),
            "spooled": self.spool.count(),
            "spool_overflowed": self.spool.overflowed,
        }

    def sinks_health(self) -> dict[str, str]:
        """Each sink's health phrase (the web page's health panel)."""
        return {sink.name: sink.health() for sink in self.sinks}

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
        if self.backend is None or self.policy is None:
            assert self.cfg.recipes is not None
            running = f"recipes {', '.join(self.cfg.recipes.models)}"
        else:
            running = (
                f"model {self.backend.card.model_id}, threshold {self.policy.threshold:g} from "
                f"{self.policy.origin}"
            )
        self.notifier.send("READY=1", f"STATUS=running {running}")
        log.info(
            "station %s/%s running: %d source(s), %s",
            self.cfg.site,
            self.cfg.station,
            len(self.cfg.sources),
            running,
        )

    def _set_threshold(self, args: dict[str, Any], origin: str) -> Reply:
        """A sink's ``set_threshold``: the next decision uses it; a reload or restart goes
        back to the configured threshold. With recipes, ``recipe`` names whose (a loaded one)."""
        value = threshold_argument(args)
        router, named = self.pipeline.router, ""
        holder: ModelState | SingleModel
        if isinstance(router, Recipes):
            recipe = args.get("recipe")
            state = router.states.get(recipe) if isinstance(recipe, str) else None
            if state is None:
                raise ValueError(
                    f"name the recipe whose threshold to set (one in use: "
                    f"{', '.join(router.states) or 'none yet'}), got {recipe!r}"
                )
            holder, named = state, f"recipe {recipe}: "
        else:
            assert isinstance(router, SingleModel)
            holder = router
        old = holder.policy
        holder.policy = replace(old, threshold=value, origin=f"command from {origin}")
        self._status_changed("threshold set by command")
        return Reply(
            f"{named}threshold {old.threshold:g} -> {value:g} (until the next reload or restart)"
        )

    def _set_recipe(self, args: dict[str, Any], origin: str) -> Reply:
        """A sink's ``set_recipe`` (``recipes.select.by: command``; an OPC UA node's sink):
        the samples captured from now belong to it."""
        recipe = args.get("recipe")
        if not isinstance(self.pipeline.router, Recipes):
            raise ValueError("this station runs one model, not recipes")
        if not isinstance(recipe, str) or not recipe.strip():
            raise ValueError(f"'recipe' must name a recipe, got {recipe!r}")
        return Reply(self.pipeline.router.announce(recipe.strip(), origin))

    def reload(self) -> None:
        """SIGHUP: new threshold/calibration/drift/heatmaps; the broker connection stays up."""
        # systemd >= 253 wants the reload's monotonic time stamp
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading configuration"
        )
        router = self.pipeline.router
        try:
            new = load_config(self.config_path)
            if isinstance(router, Recipes):
                problems = router.reload(new)  # every loaded recipe's policy, all or none
            else:
                assert self.backend is not None
                policy = load_policy(new, self.backend.card, self.backend.calibration)
                problems = []
        except FlowedgeError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.pipeline.events.emit(None, "reload_failed", f"reload refused: {exc}")
            self.notifier.send("READY=1", "STATUS=reload failed; running the previous config")
            return
        changed = _needing_restart(self.cfg, new) + problems
        if changed:
            log.warning(
                "reload: changes to %s need a restart (systemctl restart); applied only %s "
                "and the recipes' thresholds and calibrations",
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
        if isinstance(router, Recipes):
            thresholds = {name: state.policy.threshold for name, state in router.states.items()}
            said = ", ".join(f"{name} {value:g}" for name, value in thresholds.items())
            summary = f"recipe thresholds {said or '(no recipe loaded yet)'}"
            details: dict[str, Any] = {"thresholds": thresholds}
        else:
            self.pipeline.policy = policy
            summary, details = f"threshold {policy.threshold:g}", {"threshold": policy.threshold}
        self.pipeline.events.emit(None, "reloaded", f"configuration reloaded: {summary}", **details)
        self._status_changed("reloaded")
        self.notifier.send("READY=1", f"STATUS=reloaded: {summary}")

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
        self.pipeline.router.close()
        if self.backend is not None:
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
