"""Post-training INT8: ONNX Runtime static quantisation and NNCF for OpenVINO.

Both quantisers see only normal training samples (the distribution the station sees;
a defect among them would widen the ranges the anomalies must stand out of). Both keep
the same nodes fp32: the *reduction work* of :func:`export.graph.reduction_nodes`, i.e.
everything downstream of the latents z (z**2 and its sums over 10^5 values, the
per-position maps and their upsampling) and every branch that feeds an output without
feeding a latent: the log-determinant sums (sum of coupling log-scales, CNF's and
MTS-Flow's). In INT8 those sums lose the digits the threshold is set in, exactly as in
fp16 but far worse (256 levels per tensor). The backbone and the flow's coupling
subnetworks up to z are quantised. The nodes are found by traversal from the latent
tensor names the export records, never listed by hand: ONNX node names for ORT's
``nodes_to_exclude``, OpenVINO operation names for NNCF's ``IgnoredScope``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from flowedge.core import metadata
from flowedge.core.card import CardError
from flowedge.export.fp16 import latent_names
from flowedge.export.graph import Node, reduction_nodes
from flowedge.export.onnx_graph import get_metadata, graph_nodes, name_nodes, set_metadata

log = logging.getLogger(__name__)

INT8 = "int8"
# ORT quantises only the weighted ops: its default list also takes Add/Mul/Sub, which in
# these graphs compute shapes too (the backbone's TF-style "same" padding), and a
# quantised pad size breaks the graph. NNCF's CPU preset quantises the same kind of ops.
ORT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def keep_fp32_onnx(model: onnx.ModelProto, source: str) -> list[str]:
    """ONNX node names that stay fp32 (the module docstring); names nodes that have none."""
    name_nodes(model)
    outputs = [o.name for o in model.graph.output]
    return sorted(reduction_nodes(graph_nodes(model), latent_names(model, source), outputs))


def _ov_nodes(model: Any) -> tuple[list[Node], dict[str, str]]:
    """OpenVINO operations as :class:`Node` records (tensors named ``op:port``), and each
    ONNX tensor name the model keeps -> its ``op:port``."""
    nodes, tensor_ids = [], {}
    for op in model.get_ordered_ops():
        inputs = tuple(
            f"{i.get_source_output().get_node().friendly_name}:{i.get_source_output().get_index()}"
            for i in op.inputs()
        )
        outputs = tuple(f"{op.friendly_name}:{k}" for k in range(op.get_output_size()))
        for k, output in enumerate(op.outputs()):
            tensor_ids.update(dict.fromkeys(output.get_names(), outputs[k]))
        nodes.append(Node(op.friendly_name, inputs, outputs))
    return nodes, tensor_ids


def keep_fp32_openvino(model: Any, latents: list[str], source: str) -> list[str]:
    """OpenVINO operation names that stay fp32, by the same traversal as for ONNX."""
    nodes, tensor_ids = _ov_nodes(model)
    missing = [name for name in latents if name not in tensor_ids]
    if missing:
        raise CardError(
            f"{source}: the OpenVINO model lost the latent tensors {missing[:3]}; "
            "export it again with 'flowedge export openvino'"
        )
    outputs = [f"{r.friendly_name}:0" for r in model.get_results()]
    return sorted(reduction_nodes(nodes, [tensor_ids[n] for n in latents], outputs))


def _nothing(name: str) -> bool:
    return False


class _Batches:
    """ORT's CalibrationDataReader protocol over preprocessed samples, one at a time."""

    def __init__(self, samples: np.ndarray) -> None:
        self._items: Iterator[np.ndarray] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {metadata.INPUT_NAME: item[None].astype(np.float32)}


def quantize_onnx(
    fp32: Path, out: Path, samples: np.ndarray, fp32_also: Callable[[str], bool] = _nothing
) -> list[str]:
    """QDQ INT8 graph of ``fp32`` calibrated on ``samples`` (normal); the fp32 node names.

    ``fp32_also(name)``: nodes to keep fp32 beyond the reductions (bench experiments)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32))
    keep = keep_fp32_onnx(model, str(fp32))
    keep += [n.name for n in model.graph.node if n.name not in keep and fp32_also(n.name)]
    with tempfile.TemporaryDirectory(prefix="flowedge-int8-") as tmp:
        named = Path(tmp) / "named.onnx"  # the node names nodes_to_exclude refers to
        onnx.save(model, str(named))
        quantize_static(
            str(named),
            str(out),
            _Batches(samples),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=ORT_OPS,
            nodes_to_exclude=keep,
        )
    quantized = onnx.load(str(out))
    set_metadata(quantized, {**get_metadata(model), metadata.PRECISION_KEY: INT8})
    onnx.save(quantized, str(out))
    log.info("ONNX Runtime INT8: %s, %d node(s) kept fp32", out, len(keep))
    return keep


def quantize_openvino(
    fp32: Any, samples: np.ndarray, source: str, fp32_also: Callable[[str], bool] = _nothing
) -> tuple[Any, list[str]]:
    """NNCF INT8 model of the OpenVINO model ``fp32`` calibrated on ``samples`` (normal);
    ``fp32_also`` as for :func:`quantize_onnx`."""
    import nncf

    from flowedge.backends.openvino_backend import model_metadata, set_model_metadata

    meta = model_metadata(fp32)
    latents = metadata.json_entry(meta, metadata.LATENTS_KEY, source) or []
    if not latents:
        raise CardError(f"{source}: no latent tensors recorded; export it again")
    keep = keep_fp32_openvino(fp32, list(latents), source)
    names = [op.friendly_name for op in fp32.get_ordered_ops()]
    keep += [name for name in names if name not in keep and fp32_also(name)]
    quantized = nncf.quantize(
        fp32,
        nncf.Dataset([s[None].astype(np.float32) for s in samples]),
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(names=keep, validate=False),
    )
    set_model_metadata(quantized, {**meta, metadata.PRECISION_KEY: INT8})
    log.info("NNCF INT8: %s, %d operation(s) kept fp32", source, len(keep))
    return quantized, keep
