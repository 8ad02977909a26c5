"""Keys and readers for what flowedge embeds in an ONNX graph.

Pure standard library: the station reads the card through ONNX Runtime's
``custom_metadata_map`` without onnx or torch installed.
"""

from __future__ import annotations

from typing import Any

from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import ConfigError
from flowedge.core.jsonfile import parse_json

CARD_KEY = "flowedge.card"  # the model card JSON (calibration_sha256 set when bound)
CALIBRATION_KEY = "flowedge.calibration"  # {"threshold": float, "sha256": str} when bound
LATENTS_KEY = "flowedge.latents"  # JSON list of the latent z tensor names (fp16 boundary)
PRECISION_KEY = "flowedge.precision"  # "fp32", "fp16" (fp16 up to z, fp32 reductions), "int8"
PARITY_KEY = "flowedge.parity"  # JSON report of the export's parity check
INT8_KEY = "flowedge.int8"  # JSON report of the INT8 accuracy gate (quantised models)

MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("score", "map")


def check_opset(opset: int) -> None:
    """An opset older than the graphs need is a bad option value (exit 2), refused before work."""
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset {opset} is too old; use --opset {MIN_OPSET} or newer")


def card_from_metadata(meta: dict[str, str], source: str) -> ModelCard:
    """Read and check the embedded card; a graph without one is not a flowedge model."""
    if CARD_KEY not in meta:
        raise CardError(
            f"{source}: no model card embedded (metadata key '{CARD_KEY}'); "
            "only graphs written by 'flowedge export onnx' can be run: export the checkpoint again"
        )
    return ModelCard.from_dict(json_entry(meta, CARD_KEY, source), source=source)


def model_entries(meta: dict[str, str], source: str) -> tuple[ModelCard, Any, str]:
    """(card, bound calibration or None, precision) of an exported model's metadata: what
    every backend that reads ONNX metadata (ONNX Runtime, OpenVINO) needs from it."""
    return (
        card_from_metadata(meta, source),
        json_entry(meta, CALIBRATION_KEY, source),
        meta.get(PRECISION_KEY, "fp32"),
    )


def json_entry(meta: dict[str, str], key: str, source: str, default: Any = None) -> Any:
    """A JSON-valued metadata entry, or ``default`` when absent; CardError when unreadable."""
    if key not in meta:
        return default
    try:
        return parse_json(meta[key])
    except ValueError as exc:
        raise CardError(
            f"{source}: metadata entry '{key}' is not valid JSON ({exc}); the file is damaged: "
            "export it again with 'flowedge export onnx'"
        ) from exc
