"""The PLC handshake over OPC UA nodes: a thin transport over :mod:`flowedge.edge.handshake`.

The PLC writes ``Handshake.PartId``, then ``Handshake.Trigger = true``; the station takes
the trigger (``Trigger`` back to false, ``Busy`` true, ``Ready`` false), answers with
``ResultPartId``, ``ResultDecision``, ``ResultScore``, ``ResultSequence`` and then
``ResultReady = true``; the PLC writes ``ResultAck = true`` and the station clears
``ResultReady``, ``ResultAck`` and ``Busy`` and sets ``Ready``. A refused trigger (busy,
result not acknowledged) is set back to false and published as a ``handshake_refused``
event. Only users with the write role may write these nodes (opcua_security).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Server, ua

from flowedge.edge.handshake import BUSY, READY, RESULT_READY, Handshake, Snapshot
from flowedge.edge.sinks.opcua_model import HANDSHAKE, Var, node_id

log = logging.getLogger(__name__)


class OpcuaHandshake:
    """Shows one source's handshake in its nodes and passes the PLC's writes on."""

    def __init__(
        self,
        server: Server,
        idx: int,
        handshake: Handshake,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[str], Awaitable[None]],
    ) -> None:
        self.server, self.idx, self.handshake, self.loop = server, idx, handshake, loop
        self.on_change = on_change  # the sink shows the source's State
        self.ids = {key: node_id(idx, handshake.source, var) for key, var in HANDSHAKE.items()}
        self._lock = asyncio.Lock()  # snapshots are shown in the order they came
        handshake.listen(self._changed)

    def _changed(self, snapshot: Snapshot) -> None:
        """From any thread: show the snapshot on the server's loop."""
        try:
            asyncio.run_coroutine_threadsafe(self._show(snapshot), self.loop)
        except RuntimeError:  # the server's loop has ended (station stopping)
            log.debug("OPC UA: handshake of %s not shown: server stopped", snapshot.source)

    async def _write(self, key: str, value: Any) -> None:
        var: Var = HANDSHAKE[key]
        await self.server.write_attribute_value(self.ids[key], ua.DataValue(var.variant(value)))

    async def _show(self, snapshot: Snapshot) -> None:
        async with self._lock:
            result = snapshot.result or {}
            if snapshot.state == BUSY:
                await self._write("trigger", False)
                await self._write("result_ready", False)
            if snapshot.state == RESULT_READY:
                await self._write("result_part_id", snapshot.part_id)
                await self._write("result_decision", result.get("decision"))
                await self._write("result_score", result.get("score"))
                await self._write("result_sequence", result.get("seq"))
            await self._write("ack_timeout", snapshot.timed_out)
            await self._write("busy", snapshot.state == BUSY)
            await self._write("ready", snapshot.state == READY)
            await self._write("result_ready", snapshot.state == RESULT_READY)
            if snapshot.state == READY:
                await self._write("ack", False)
            await self.on_change(snapshot.source)

    async def written(self, written_id: ua.NodeId, value: Any, who: str) -> None:
        """A client wrote one of this source's nodes (the server's PostWrite)."""
        origin = f"OPC UA client {who}"
        if written_id == self.ids["trigger"] and value is True:
            part_id = self.server.read_attribute_value(self.ids["part_id"]).Value.Value
            if self.handshake.trigger(str(part_id or ""), origin) is not None:
                await self._write("trigger", False)  # refused: the PLC sees it was not taken
        elif (
            written_id == self.ids["ack"]
            and value is True
            and not self.handshake.acknowledge(origin)
        ):
            await self._write("ack", False)
