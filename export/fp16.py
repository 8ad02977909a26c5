"""fp16 graphs that keep flow scores exact: fp16 up to the latents z, fp32 from there on.

A CS-Flow score sums z**2 over e.g. 24x24x304 = 175k values; at ~1 per value
that is far beyond fp16's largest finite number (65504), and even below it the
fp16 sum loses digits the threshold depends on. The latents themselves are
O(1..10) and safe in fp16. The fp32 part is found by traversal
(:func:`export.graph.reduction_nodes`) from the latent tensor names recorded at
export, so no node names are ever listed by hand.
"""

from __future__ import annotations

import logging
import warnings

import onnx
from onnxconverter_common import float16

from flowedge.core import metadata
from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import ConfigError
from flowedge.export.graph import reduction_nodes
from flowedge.export.onnx_graph import get_metadata, graph_nodes, name_nodes, set_metadata

log = logging.getLogger(__name__)


def require_fp16_safe(card: ModelCard, source: str) -> None:
    """Refuse a model whose log-determinant terms are summed inside the flow.

    Such sums sit beside the latents rather than after them, so the traversal from z
    cannot keep them fp32, and in fp16 they would lose the digits the threshold
    depends on. A detector that returns its log-scales as latents
    (``score.logdet_in_latents``, e.g. MTS-Flow) has its log-det sums in the reduction,
    which stays fp32.
    """
    if card.score.uses_logdet and not card.score.logdet_in_latents:
        raise ConfigError(
            f"{source}: the score of {card.model_id} ({card.score.kind}) includes log-determinant "
            "terms summed inside the flow, which an fp16 graph or engine cannot keep in fp32; "
            "export and build fp32"
        )


def latent_names(model: onnx.ModelProto, source: str) -> list[str]:
    names = metadata.json_entry(get_metadata(model), metadata.LATENTS_KEY, source)
    if not names:
        raise CardError(
            f"{source}: the graph does not record its latent tensors ('{metadata.LATENTS_KEY}'); "
            "export it again with 'flowedge export onnx' before converting to fp16"
        )
    return list(names)


def fp32_nodes(model: onnx.ModelProto, source: str = "<graph>") -> set[str]:
    """Names of the nodes that must stay fp32 (reductions, log-det sums included)."""
    outputs = [o.name for o in model.graph.output]
    return reduction_nodes(graph_nodes(model), latent_names(model, source), outputs)


def _fix_casts(model: onnx.ModelProto, originals: set[str]) -> None:
    """Make the graph's own ``Cast(to=FLOAT)`` nodes agree with the conversion.

    onnxconverter-common relabels every float tensor as fp16 but leaves the
    ``to`` attribute of existing casts (e.g. torch's ``z.float()``) alone.
    """
    infos = {v.name: v for v in model.graph.value_info}
    for node in model.graph.node:
        if node.name not in originals:
            continue  # the converter's own boundary casts are right
        to = next(a for a in node.attribute if a.name == "to")
        if to.i == onnx.TensorProto.FLOAT:
            to.i = onnx.TensorProto.FLOAT16
            if node.output[0] in infos:
                infos[node.output[0]].type.tensor_type.elem_type = to.i


def _convert_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """Whole-graph fp16 with fp32 inputs/outputs (no block list: that path of the converter
    inserts wrongly typed casts, so the fp32 part is kept out of the conversion instead)."""
    name_nodes(model)
    originals = {n.name for n in model.graph.node if n.op_type == "Cast"}
    with warnings.catch_warnings():  # one warning per tiny weight flushed to fp16's minimum
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    _fix_casts(converted, originals)
    return converted


def _split(model: onnx.ModelProto, block: set[str]) -> tuple[onnx.ModelProto, list[onnx.NodeProto]]:
    """The front graph (input -> every tensor the fp32 part reads) and the fp32 nodes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input]}
    front = [n for n in model.graph.node if n.name not in block]
    back = [n for n in model.graph.node if n.name in block]
    produced = {o for n in front for o in n.output}
    boundary = list(dict.fromkeys(i for n in back for i in n.input if i in produced))
    used = {i for n in front for i in n.input}
    graph = onnx.helper.make_graph(
        front,
        "front",
        list(model.graph.input),
        [types[name] for name in boundary],
        [init for init in model.graph.initializer if init.name in used],
    )
    front_model = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    front_model.ir_version = model.ir_version
    return front_model, back


def _merge(
    model: onnx.ModelProto, front: onnx.ModelProto, back: list[onnx.NodeProto]
) -> onnx.ModelProto:
    front_inits = {init.name for init in front.graph.initializer}
    used = {i for n in back for i in n.input}
    back_inits = [
        i for i in model.graph.initializer if i.name in used and i.name not in front_inits
    ]
    shared = [i for i in model.graph.initializer if i.name in used and i.name in front_inits]
    renamed = {}
    for init in shared:  # the front's copy is fp16 now; the fp32 part keeps its own
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = renamed[init.name] = f"{init.name}__fp32"
        back_inits.append(copy)
    for node in back:
        for k, name in enumerate(node.input):
            node.input[k] = renamed.get(name, name)
    merged = onnx.ModelProto()
    merged.CopyFrom(model)
    graph = merged.graph
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    graph.node.extend([*front.graph.node, *back])
    graph.initializer.extend([*front.graph.initializer, *back_inits])
    return merged


def to_fp16(model: onnx.ModelProto, source: str = "<graph>") -> onnx.ModelProto:
    """The fp16-safe graph: fp32 inputs/outputs, fp16 up to z, fp32 reductions."""
    require_fp16_safe(metadata.card_from_metadata(get_metadata(model), source), source)
    name_nodes(model)
    block = fp32_nodes(model, source)
    log.info("fp16 conversion keeps %d reduction node(s) in fp32", len(block))
    front, back = _split(model, block)
    converted = _merge(model, _convert_all(front), back)
    name_nodes(converted)
    set_metadata(converted, {**get_metadata(model), metadata.PRECISION_KEY: "fp16"})
    return converted


def to_fp16_naive(model: onnx.ModelProto) -> onnx.ModelProto:
    """Everything in fp16 (inputs/outputs fp32): only to show what goes wrong."""
    converted = _convert_all(model)
    name_nodes(converted)
    set_metadata(converted, {**get_metadata(model), metadata.PRECISION_KEY: "fp16-naive"})
    return converted
