"""Static TensorRT compatibility check: which ops of a graph the TRT ONNX parser may refuse.

Runs anywhere (no TensorRT), so an export on the workstation warns before the
engine build on the station fails.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx

OPS_FILE = Path(__file__).with_name("data") / "tensorrt_ops.json"
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpFinding:
    domain: str
    op_type: str
    count: int

    def __str__(self) -> str:
        name = (
            f"{self.domain}::{self.op_type}" if self.domain not in _ONNX_DOMAINS else self.op_type
        )
        return f"{name} (x{self.count})"


@lru_cache(maxsize=1)
def supported_ops() -> tuple[str, frozenset[str]]:
    """(TensorRT version the list comes from, supported ONNX op types)."""
    data = json.loads(OPS_FILE.read_text(encoding="utf-8"))
    return str(data["tensorrt_version"]), frozenset(data["ops"])


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # subgraphs of If/Loop/Scan
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def unsupported_ops(model: onnx.ModelProto) -> list[OpFinding]:
    """Every op (with its count) that is not in TensorRT's supported list; custom domains too."""
    _, ops = supported_ops()
    counts = Counter((node.domain, node.op_type) for node in _all_nodes(model.graph))
    return [
        OpFinding(domain, op, n)
        for (domain, op), n in sorted(counts.items())
        if domain not in _ONNX_DOMAINS or op not in ops
    ]
