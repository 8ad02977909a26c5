"""Small helpers on ONNX protos (no torch): node records, unique names, metadata entries."""

from __future__ import annotations

import onnx

from flowedge.export.graph import Node


def graph_nodes(model: onnx.ModelProto) -> list[Node]:
    """Top-level nodes as plain :class:`Node` records for the traversal in :mod:`export.graph`."""
    return [Node(n.name, tuple(n.input), tuple(n.output)) for n in model.graph.node]


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: fp16 block lists and TRT layer names refer to them."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
