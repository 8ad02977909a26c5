"""The web sink: the station's own page (live view, trend, counters, review queue, search).

``sinks: [{kind: web, name: web, users: /etc/flowedge/web-users.json}]``, off unless
listed; it listens on 127.0.0.1:8080 unless ``host``/``port`` say otherwise. Like every
sink it takes the records after its cursor in the spool (:class:`Delivery`) and
acknowledges them once the live view holds them; the view pushes each to the open pages
as server-sent events. Reviews and searches go to the station's history sink; applying a
re-fitted threshold is the ``set_threshold`` command (``commands.allowed``). docs/web.md.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flowedge.calibration.history.query import Query, select
from flowedge.calibration.history.retention import utc_text
from flowedge.calibration.history.store import HistoryDB, locate
from flowedge.core.errors import ConfigError, FlowedgeError
from flowedge.core.paths import BoundedPath
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sinks.base import Delivery, SinkBaseConfig, SinkContext, SinkKind
from flowedge.edge.web.app import WebApp
from flowedge.edge.web.evidence import Evidence
from flowedge.edge.web.live import Live
from flowedge.edge.web.server import Server, Site, tls_context
from flowedge.edge.web.sessions import Sessions
from flowedge.edge.web.users import load_users

log = logging.getLogger(__name__)

BATCH = 200
IDLE_S = 0.5
STATUS_EVERY_S = 2.0
SEED_HOURS = 24  # of the history's decisions in the trend at start
PUSH_EVERY_S = 0.1  # a page is sent decisions at most 10 times a second


class WebSinkConfig(SinkBaseConfig):
    """One ``sinks`` entry of kind ``web``."""

    kind: Literal["web"] = "web"
    name: str = Field("web", pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
    host: str = Field("127.0.0.1", description="0.0.0.0 to serve other machines (use TLS)")
    port: int = Field(8080, ge=0, le=65535, description="0: any free port (tests)")
    users: BoundedPath = Field(
        Path("web-users.json"), description="users file (0600): flowedge web-user adds users"
    )
    tls_cert: BoundedPath | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key: BoundedPath | None = None
    secure_cookie: bool = Field(
        False, description="behind a TLS reverse proxy: mark the cookie Secure (TLS here does)"
    )
    session_idle_minutes: float = Field(30, gt=0, le=24 * 60)
    session_max_hours: float = Field(12, gt=0, le=24 * 7)
    trend_points: int = Field(5000, ge=10, le=1_000_000, description="scores kept per source")
    shifts: list[str] = Field(
        ["06:00", "14:00", "22:00"], min_length=1, description="shift starts, local time"
    )
    review_ok_sample: int = Field(10, ge=0, le=1000, description="OKs mixed into the queue")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSinkConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        for start in self.shifts:
            try:
                time.strptime(start, "%H:%M")
            except ValueError:
                raise ValueError(f"shift start {start!r}: use HH:MM, e.g. 06:00") from None
        return self


def _station_paths(station: Any) -> tuple[Path | None, list[Path]]:
    """The history folder (the first history sink's) and the folders evidence may come from."""
    try:
        history = station.resend_history()
    except StopIteration:
        history = None
    roots = [station.pipeline.heatmap_dir, station.pipeline.evidence.dir]
    return history, [*roots, *([history] if history is not None else [])]


def _listen(cfg: WebSinkConfig, site: Site) -> Server:
    """The server on ``host:port`` (with TLS when configured); ConfigError saying why not."""
    try:
        tls = None if cfg.tls_cert is None else tls_context(cfg.tls_cert, cfg.tls_key)  # type: ignore[arg-type]
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"sinks.{cfg.name}: tls_cert/tls_key do not load ({exc})") from None
    try:
        return Server(site, cfg.host, cfg.port, tls)
    except OSError as exc:
        raise ConfigError(
            f"sinks.{cfg.name}: cannot listen on {cfg.host}:{cfg.port} ({exc.strerror}); "
            "choose a free port or another host"
        ) from None


def _calibration_of(station: Any, recipe: str | None) -> Path | None:
    """The calibration file of the station's model, or of ``recipe``'s with recipes."""
    if station.recipes is None:
        return station.model.calibration
    model = station.recipes.models.get(recipe or "")
    return None if model is None else model.calibration


class WebSink:
    """The delivery thread feeding the live view, and the HTTP server."""

    def __init__(self, cfg: WebSinkConfig, context: SinkContext) -> None:
        self.name, self.cfg, self.context = cfg.name, cfg, context
        self.delivery = Delivery(context.spool, cfg.name, cfg.max_backlog)
        load_users(cfg.users)  # a missing or open users file stops the start, with its name
        station = context.config
        history, roots = _station_paths(station)
        evidence = Evidence(roots)
        self.live = Live(cfg.trend_points, cfg.shifts, evidence.url)
        app = WebApp(
            history=history,
            calibration=partial(_calibration_of, station),
            status=self.status,
            commands=context.commands,
            emit=context.emit,
            evidence_url=evidence.url,
            ok_sample=cfg.review_ok_sample,
        )
        sessions = Sessions(cfg.session_idle_minutes * 60, cfg.session_max_hours * 3600)
        secure = cfg.secure_cookie or cfg.tls_cert is not None
        users = partial(load_users, cfg.users)  # read at each login: a new user needs no restart
        self.site = Site(app, self.live, sessions, users, evidence, secure)
        self.server = _listen(cfg, self.site)
        self.shown = 0
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{cfg.name}-feed", daemon=True)
        context.spool.subscribe(self.wake)

    def status(self) -> dict[str, Any]:
        """The station's live state for the page: threshold, sources, counts, and each sink's
        health (a broker lost) and backlog in the spool."""
        spool, health = self.context.spool, self.context.sinks_health()
        return {
            **self.context.status_fields(),
            "sinks": {
                name: {"backlog": spool.backlog(name), "health": health.get(name, "")}
                for name in spool.attached()
            },
        }

    def _seed(self) -> None:
        """The trend and the shift's counters from the history (a restart keeps them)."""
        history = self.site.app.history
        if history is None or not locate(history)[1].is_file():
            return
        since = utc_text(datetime.now(UTC) - timedelta(hours=SEED_HOURS))
        try:
            with HistoryDB(history) as db:
                rows = select(db, Query(since=since, limit=self.cfg.trend_points))
        except (FlowedgeError, sqlite3.Error) as exc:
            log.warning(
                "web: the trend starts empty, the history %s is unreadable: %s", history, exc
            )
            return
        for row in rows:
            self.live.decision(
                {
                    **row.as_dict(),
                    "sensor": row.source,
                    "heatmap": row.heatmap_path,
                    "evidence": {"input": row.input_path},
                }
            )

    # --- the sink protocol -------------------------------------------------------------
    def start(self) -> None:
        self._seed()
        self.server.start()
        scheme = "https" if self.cfg.tls_cert else "http"
        log.info("web: page at %s://%s:%d/", scheme, self.cfg.host, self.server.port)
        self._thread.start()

    def wake(self) -> None:
        self._kick.set()

    def status_changed(self, reason: str) -> None:
        self.live.publish("status", {"reason": reason, **self.status()})

    def health(self) -> str:
        return f"page on port {self.server.port}, {self.live.subscribers()} open"

    def flush(self, timeout_s: float) -> bool:
        return self.delivery.wait_until_delivered(timeout_s, self.wake)

    def stop(self, reason: str, flush_timeout_s: float = 5.0) -> None:
        self.flush(flush_timeout_s)
        self._stop.set()
        self.wake()
        self._thread.join(timeout=max(flush_timeout_s, 2.0))
        self.live.close()
        self.server.stop()

    # --- the feed ----------------------------------------------------------------------
    def _run(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            self._kick.clear()
            records = self.delivery.next(BATCH)
            shown = []
            for record in records:
                try:
                    doc = record.doc()
                    if record.kind != "decision":
                        self.live.event(doc)
                    elif (item := self.live.decision(doc)) is not None:
                        shown.append(item)
                except (KeyError, TypeError, ValueError) as exc:  # not a station document
                    log.error("web: record %d not shown, unreadable (%s)", record.id, exc)
            self.delivery.acknowledged(record.id for record in records)
            self.shown += len(records)
            if shown:
                self.live.publish("decisions", shown)
            if time.monotonic() >= next_status and self.live.subscribers():
                self.live.publish("status", self.status())
                next_status = time.monotonic() + STATUS_EVERY_S
            if records:
                self._stop.wait(PUSH_EVERY_S)  # what comes meanwhile goes in the next batch
            else:
                self._kick.wait(IDLE_S)


def check(cfg: WebSinkConfig, site: str, station: str, timeout_s: float) -> CheckResult:
    """The users file is private and names users; the TLS pair loads."""
    name = f"web {cfg.name}"
    try:
        users = load_users(cfg.users)
        if not users:
            raise ConfigError(f"{cfg.users} names no user: add one with 'flowedge web-user'")
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            tls_context(cfg.tls_cert, cfg.tls_key)
    except FlowedgeError as exc:
        return failed(name, str(exc), exc.exit_code)
    except (OSError, ssl.SSLError) as exc:
        return failed(name, f"tls_cert/tls_key {cfg.tls_cert}, {cfg.tls_key}: {exc}")
    scheme = "https" if cfg.tls_cert else "http"
    roles = sorted({u.role for u in users.values()})
    return passed(
        name,
        f"{scheme}://{cfg.host}:{cfg.port}/ with {len(users)} user(s) ({', '.join(roles)})",
    )


KIND = SinkKind(WebSinkConfig, WebSink, check)
