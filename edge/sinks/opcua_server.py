"""The asyncua side of the OPC UA sink: the server, its loop, and writing results into nodes.

Everything here runs on the sink's own thread and asyncio loop; other threads only call
:meth:`ResultsServer.wake` and :meth:`ResultsServer.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType

from flowedge.core.errors import ConfigError
from flowedge.edge.handshake import BUSY, STOPPED
from flowedge.edge.passwords import LOCK_AFTER, LOCK_WINDOW_S
from flowedge.edge.sinks.base import Delivery, SinkContext
from flowedge.edge.sinks.opcua import BATCH, POLICIES, OpcuaSinkConfig, namespace_uri
from flowedge.edge.sinks.opcua_handshake import OpcuaHandshake
from flowedge.edge.sinks.opcua_model import (
    COUNTERS,
    HISTORY,
    RECIPE,
    RESULT,
    STATE,
    Var,
    build_root,
    build_source,
    node_id,
    recipe_node_id,
)
from flowedge.edge.sinks.opcua_results import ResultsState
from flowedge.edge.sinks.opcua_security import (
    StationUsers,
    TrustedClients,
    WriteRoles,
    ensure_certificate,
    load_certificate_users,
)
from flowedge.edge.sinks.opcua_users import UserEntry

log = logging.getLogger(__name__)

DEAD_STATES = ("lost", "failed")
STATE_REFRESH_S = 2.0  # the State nodes follow the sources at least this often


def station_users(
    cfg: OpcuaSinkConfig, passwords: dict[str, UserEntry], emit: Callable[..., None]
) -> StationUsers:
    """The server's users; a user name locked after repeated failed logins is an event."""

    def locked(name: str) -> None:
        emit(
            None,
            "login_locked",
            f"OPC UA sink {cfg.name}: user name {name[:64]!r} locked for "
            f"{LOCK_WINDOW_S:g} s after {LOCK_AFTER} failed logins; someone may be "
            "guessing passwords",
            user=name[:64],
        )

    return StationUsers(
        passwords, load_certificate_users(cfg.certificate_users), cfg.allow_anonymous, locked
    )


class ResultsServer:
    """The asyncua server of one ``opcua`` sink and the loop that feeds it from the spool."""

    def __init__(
        self,
        cfg: OpcuaSinkConfig,
        context: SinkContext,
        delivery: Delivery,
        results: ResultsState,
        users: StationUsers,
        files: tuple[Path, Path],
    ) -> None:
        self.cfg, self.context, self.delivery, self.results = cfg, context, delivery, results
        self.users, self.files = users, files
        self.uri = namespace_uri(context.site, context.station)
        self.sources = list(context.status_fields().get("sources", {}))
        self.started = threading.Event()
        self.error = ""
        self.loop = asyncio.new_event_loop()
        self._kick = asyncio.Event()
        self._stopping = False
        self._status_dirty = True
        self._transports: dict[str, OpcuaHandshake] = {}
        self._built: set[str] = set()
        self._recipe = ""  # the last one the PLC announced here and the station took
        self._ids: dict[tuple[str, str], ua.NodeId] = {}
        self.idx = 0

    # --- from other threads ------------------------------------------------------------------
    def wake(self, status: bool = False) -> None:
        self._status_dirty = self._status_dirty or status
        with contextlib.suppress(RuntimeError):  # the loop has ended
            self.loop.call_soon_threadsafe(self._kick.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake(status=True)

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except Exception as exc:  # a dead server must not look alive: health, metric, event
            log.exception("OPC UA: the server failed")
            self.error = f"server failed: {exc}; records wait in the spool until a restart"
            self.context.metrics.sink_failures.labels(self.cfg.name).inc()
            self.context.emit(None, "sink_failed", f"OPC UA sink {self.cfg.name}: {self.error}")
            self.started.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        try:
            server = await self._open()
        except (OSError, ConfigError) as exc:
            self.error = str(exc)
            self.started.set()
            return
        self.server = server
        self.started.set()
        try:
            while not self._stopping:
                self._kick.clear()
                if await self._deliver():
                    continue
                if self._status_dirty:
                    self._status_dirty = False
                    for source in list(self._built):
                        await self._show_state(source)
                try:
                    await asyncio.wait_for(self._kick.wait(), STATE_REFRESH_S)
                except TimeoutError:
                    self._status_dirty = True
            for source in list(self._built):
                await self._show_state(source)
        finally:
            await server.stop()

    async def _open(self) -> Server:
        cert_file, key_file = self.files
        ensure_certificate(cert_file, key_file, self.uri)
        server = Server(user_manager=self.users)
        await server.init()
        server.set_endpoint(self.cfg.endpoint())
        server.set_server_name(f"flowedge {self.context.site}/{self.context.station}")
        await server.set_application_uri(self.uri)
        await server.load_certificate(str(cert_file))
        await server.load_private_key(str(key_file))
        server.set_security_policy(
            [getattr(ua.SecurityPolicyType, POLICIES[p]) for p in self.cfg.security],
            permission_ruleset=WriteRoles(self.users),
        )
        tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
        if self.cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if self.cfg.trusted_clients is not None:
            server.set_certificate_validator(TrustedClients(Path(self.cfg.trusted_clients)))
        self.idx = await server.register_namespace(self.uri)
        self.root = await build_root(server, self.idx, self.context.station)
        self.server = server
        for source in self.sources:
            await self._build_source(source)
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        try:
            await server.start()
        except OSError as exc:
            raise OSError(
                f"cannot listen on {self.cfg.host}:{self.cfg.port} ({exc.strerror or exc}); "
                "choose a free port (sinks[].port)"
            ) from None
        return server

    async def _build_source(self, source: str) -> None:
        """A source's nodes, with the values kept from before a restart."""
        handshake = self.context.handshakes.get(source)
        await build_source(self.root, self.idx, source, handshake is not None)
        self._built.add(source)
        kept = self.results.sources.get(source)
        if kept is not None and kept.latest is not None:
            await self._show_result(source, kept.latest)
            await self._show_totals(source)
        if handshake is not None:
            self._transports[source] = OpcuaHandshake(
                self.server, self.idx, handshake, self.loop, self._show_state
            )
        await self._show_state(source)

    async def _write(self, source: str, var: Var, value: Any, stamp: Any = None) -> None:
        now = datetime.datetime.now(datetime.UTC)
        key = (source, var.path)
        if key not in self._ids:
            self._ids[key] = node_id(self.idx, source, var)
        await self.server.write_attribute_value(
            self._ids[key],
            ua.DataValue(var.variant(value), SourceTimestamp=stamp or now, ServerTimestamp=now),
        )

    async def _show_result(self, source: str, result: dict[str, Any]) -> None:
        """Every result's values, one by one (a subscription sees each)."""
        stamp = RESULT["decided_utc"].variant(result["decided_utc"]).Value
        for key, var in RESULT.items():
            await self._write(source, var, result[key], stamp)

    async def _show_totals(self, source: str) -> None:
        """History and counters: once per batch, as they stand after it."""
        kept = self.results.source(source)
        await self._write(source, HISTORY, list(kept.history))
        for key, var in COUNTERS.items():
            await self._write(source, var, kept.counters[key])

    async def _show_state(self, source: str) -> None:
        """Ready / Busy / Error / Stopped, from the station's status and the handshake."""
        if self._stopping:
            state = "Stopped"
        elif self.context.status_fields().get("sources", {}).get(source) in DEAD_STATES:
            state = "Error"
        else:
            handshake = self.context.handshakes.get(source)
            shown = None if handshake is None else handshake.snapshot().state
            state = {BUSY: "Busy", STOPPED: "Stopped"}.get(shown, "Ready")
        await self._write(source, STATE, state)

    async def _deliver(self) -> bool:
        """The next batch: nodes written, results file saved, then acknowledged."""
        records = self.delivery.next(BATCH)
        shown: set[str] = set()
        for record in records:
            if record.kind != "decision":
                self.results.passed(record.id)
                continue
            try:
                doc = record.doc()
                source = record.source or doc["sensor"]
                result = self.results.apply(record.id, source, doc)
                if result is None:
                    continue  # applied before the station restarted
                if source not in self._built:
                    await self._build_source(source)
                await self._show_result(source, result)
                shown.add(source)
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "OPC UA: record %d is not a valid decision (%s); passed over", record.id, exc
                )
                self.results.passed(record.id)
        for source in shown:
            await self._show_totals(source)
        if records:
            await asyncio.to_thread(self.results.save)
            self.delivery.acknowledged(record.id for record in records)
        return bool(records)

    async def _announce_recipe(self, recipe: Any, who: str) -> None:
        """The PLC wrote Recipe: the station's ``set_recipe`` (allow-listed, an event either
        way); a refused one shows the recipe in force again."""
        origin = f"opcua sink {self.cfg.name} (user {who})"
        result = await asyncio.to_thread(
            self.context.commands.run, "set_recipe", {"recipe": recipe}, origin
        )
        if result.accepted:
            self._recipe = str(recipe)
        else:
            await self.server.write_attribute_value(
                recipe_node_id(self.idx, self.context.station),
                ua.DataValue(RECIPE.variant(self._recipe)),
            )

    async def _post_write(self, event: Any, _dispatcher: Any) -> None:
        """A client's write went through: a handshake node of one of the sources?"""
        who = getattr(event.user, "name", None) or "?"
        params, results = event.request_params, event.response_params or []
        for write, status in zip(params.NodesToWrite, results, strict=False):
            if not status.is_good() or write.AttributeId != ua.AttributeIds.Value:
                continue
            if write.NodeId == recipe_node_id(self.idx, self.context.station):
                await self._announce_recipe(write.Value.Value.Value, who)
                continue
            source = str(write.NodeId.Identifier).split(".", 1)[0]
            transport = self._transports.get(source)
            if transport is not None:
                await transport.written(write.NodeId, write.Value.Value.Value, who)
