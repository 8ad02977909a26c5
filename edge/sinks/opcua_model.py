"""The OPC UA address space of the station: one object per source, shaped like OPC 40100.

``Objects/<station>/<source>/`` holds the source's ``State`` (OPC 40100's vision state
machine, reduced to Ready / Busy / Error / Stopped), ``Result/`` (the latest result, like
a ResultType), ``History`` (the last results, newest first), ``Counters/`` and, for a
``triggered`` source, ``Handshake/`` (the PLC's trigger and acknowledgement). Node ids are
strings in the station's namespace: ``ns=<i>;s=<source>.<path>``, e.g.
``cam1.Result.Decision``; docs/plant-protocols.md lists them all.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

from asyncua import Node, Server, ua

V = ua.VariantType
NEVER = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)  # OPC UA's null DateTime


@dataclass(frozen=True)
class Var:
    """One variable: its id after ``<source>.``, data type, and whether a PLC may write it."""

    path: str  # e.g. Result.Decision: the folders before the browse name
    vtype: V
    writable: bool = False
    array: bool = False

    @property
    def browse_name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def initial(self) -> Any:
        if self.array:
            return []
        return {
            V.String: "",
            V.Double: math.nan,
            V.UInt64: 0,
            V.Boolean: False,
            V.DateTime: NEVER,
        }[self.vtype]

    def variant(self, value: Any) -> ua.Variant:
        """``value`` as this variable's type; a missing number is NaN, a missing text ''."""
        if value is None:
            value = self.initial()
        elif self.vtype == V.DateTime and isinstance(value, str):
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif self.vtype == V.Double:
            value = float(value)
        elif self.vtype == V.UInt64:
            value = int(value)
        elif self.vtype == V.String and not self.array:
            value = str(value)
        return ua.Variant(value, self.vtype, is_array=self.array)


STATE = Var("State", V.String)
RESULT = {  # result key (opcua_results.result_of) -> variable
    "part_id": Var("Result.PartId", V.String),
    "decision": Var("Result.Decision", V.String),
    "score": Var("Result.Score", V.Double),
    "threshold": Var("Result.Threshold", V.Double),
    "normalised_score": Var("Result.NormalisedScore", V.Double),
    "model_id": Var("Result.ModelId", V.String),
    "decided_utc": Var("Result.Time", V.DateTime),
    "heatmap": Var("Result.HeatmapPath", V.String),
    "evidence": Var("Result.EvidencePath", V.String),
    "error": Var("Result.Error", V.String),
    "seq": Var("Result.Sequence", V.UInt64),  # written last: a client can watch it alone
}
HISTORY = Var("History", V.String, array=True)
COUNTERS = {
    "ok": Var("Counters.Ok", V.UInt64),
    "anomaly": Var("Counters.Anomaly", V.UInt64),
    "error": Var("Counters.Error", V.UInt64),
    "samples": Var("Counters.Samples", V.UInt64),
}
HANDSHAKE = {
    "part_id": Var("Handshake.PartId", V.String, writable=True),
    "trigger": Var("Handshake.Trigger", V.Boolean, writable=True),
    "ack": Var("Handshake.ResultAck", V.Boolean, writable=True),
    "ready": Var("Handshake.Ready", V.Boolean),
    "busy": Var("Handshake.Busy", V.Boolean),
    "result_part_id": Var("Handshake.ResultPartId", V.String),
    "result_decision": Var("Handshake.ResultDecision", V.String),
    "result_score": Var("Handshake.ResultScore", V.Double),
    "result_sequence": Var("Handshake.ResultSequence", V.UInt64),
    "ack_timeout": Var("Handshake.AckTimedOut", V.Boolean),
    "result_ready": Var("Handshake.ResultReady", V.Boolean),  # last: the PLC's signal
}


def node_id(idx: int, source: str, var: Var) -> ua.NodeId:
    return ua.NodeId(f"{source}.{var.path}", idx)


def all_vars(triggered: bool) -> list[Var]:
    out = [STATE, *RESULT.values(), HISTORY, *COUNTERS.values()]
    return out + list(HANDSHAKE.values()) if triggered else out


# ``Objects/<station>/Recipe``: the PLC announces the product here (the ``set_recipe``
# command, for ``recipes.select.by: command``; refused unless ``commands.allowed`` names it)
RECIPE = Var("Recipe", V.String, writable=True)


def recipe_node_id(idx: int, station: str) -> ua.NodeId:
    return ua.NodeId(f"{station}.{RECIPE.path}", idx)


async def build_root(server: Server, idx: int, station: str) -> Node:
    """``Objects/<station>``: the station object the sources hang under, with its Recipe."""
    root = await server.nodes.objects.add_object(
        ua.NodeId(station, idx), ua.QualifiedName(station, idx)
    )
    recipe = await root.add_variable(
        recipe_node_id(idx, station),
        ua.QualifiedName(RECIPE.browse_name, idx),
        RECIPE.variant(None),
    )
    await recipe.set_writable(True)
    return root


async def build_source(root: Node, idx: int, source: str, triggered: bool) -> None:
    """A source's object, folders and variables (initial values; handshake if triggered)."""
    folders = {"": await root.add_object(ua.NodeId(source, idx), ua.QualifiedName(source, idx))}
    for var in all_vars(triggered):
        folder_path = var.path.rpartition(".")[0]
        if folder_path not in folders:
            folders[folder_path] = await folders[""].add_object(
                ua.NodeId(f"{source}.{folder_path}", idx), ua.QualifiedName(folder_path, idx)
            )
        node = await folders[folder_path].add_variable(
            node_id(idx, source, var), ua.QualifiedName(var.browse_name, idx), var.variant(None)
        )
        if var.array:
            await node.write_value_rank(ua.ValueRank.OneDimension)
        if var.writable:
            await node.set_writable(True)
