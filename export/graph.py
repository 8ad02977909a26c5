"""Which nodes must stay fp32: found by graph traversal, never by hand-listed names.

The same rule serves ONNX (fp16 conversion block list) and a TensorRT network
(per-layer precision constraints): a node is *reduction work* when it lies
downstream of a latent z tensor, or when it feeds an output without feeding
any latent (e.g. log-determinant sums of coupling scales). Everything else
(backbone and flow up to z) may run in fp16.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _producers(nodes: Sequence[Node]) -> dict[str, Node]:
    return {out: node for node in nodes for out in node.outputs}


def descendants(nodes: Sequence[Node], tensors: Iterable[str]) -> set[str]:
    """Names of all nodes that (transitively) consume any of ``tensors``."""
    consumers: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        for name in node.inputs:
            consumers[name].append(node)
    found: set[str] = set()
    frontier = list(tensors)
    while frontier:
        for node in consumers.get(frontier.pop(), ()):
            if node.name not in found:
                found.add(node.name)
                frontier.extend(node.outputs)
    return found


def ancestors(nodes: Sequence[Node], tensors: Iterable[str]) -> set[str]:
    """Names of all nodes that (transitively) produce any of ``tensors``."""
    producers = _producers(nodes)
    found: set[str] = set()
    frontier = list(tensors)
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            frontier.extend(node.inputs)
    return found


def reduction_nodes(
    nodes: Sequence[Node], latents: Sequence[str], outputs: Sequence[str]
) -> set[str]:
    """Nodes to keep in fp32: downstream of z, or feeding an output but not a latent."""
    producers = _producers(nodes)
    missing = [name for name in latents if name not in producers]
    if missing:
        raise ValueError(f"latent tensors {missing} are produced by no node of the graph")
    downstream = descendants(nodes, latents)
    side = ancestors(nodes, outputs) - ancestors(nodes, latents)
    return downstream | side
