"""TensorRT engine metadata and the compatibility rules, in plain Python (no TensorRT needed).

An engine only runs on the TensorRT version and GPU architecture it was built
for; loading another one either fails deep inside TensorRT or, worse, runs
with different tactics. The JSON beside every engine makes the station refuse
it up front with a message that says how to rebuild.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import ConfigError, ModelMismatchError
from flowedge.core.jsonfile import read_json

META_SUFFIX = ".json"


@dataclass(frozen=True)
class BatchProfile:
    """Optimisation profile of the batch dimension (min <= opt <= max)."""

    min: int = 1
    opt: int = 4
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got min {self.min}, "
                f"opt {self.opt}, max {self.max}; fix --min-batch/--opt-batch/--max-batch"
            )

    def shapes(
        self, sample_shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes for ``IOptimizationProfile.set_shape``."""
        return tuple((b, *sample_shape) for b in (self.min, self.opt, self.max))  # type: ignore[return-value]


@dataclass
class EngineMeta:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    onnx_sha256: str
    precision: str  # fp32 | fp16 | int8
    profile: BatchProfile
    card: dict[str, Any]
    strongly_typed: bool = False
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def model_card(self, source: str) -> ModelCard:
        return ModelCard.from_dict(self.card, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> EngineMeta:
        rebuild = "rebuild the engine with 'flowedge export trt MODEL.onnx'"
        if not isinstance(data, dict) or not isinstance(data.get("profile"), dict):
            raise CardError(
                f"{source}: engine metadata must be a JSON object with a 'profile' object; {rebuild}"
            )
        if not isinstance(data.get("card"), dict):
            raise CardError(f"{source}: engine metadata has no model card object; {rebuild}")
        try:
            data = dict(data)
            data["profile"] = BatchProfile(**data["profile"])
            return cls(**data)
        except (TypeError, ConfigError) as exc:
            raise CardError(f"{source}: malformed engine metadata ({exc}); {rebuild}") from exc


def meta_path(engine: Path) -> Path:
    return engine.with_name(engine.name + META_SUFFIX)


def write_meta(engine: Path, meta: EngineMeta) -> Path:
    path = meta_path(engine)
    path.write_text(meta.to_json() + "\n", encoding="utf-8")
    return path


def read_meta(engine: Path) -> EngineMeta:
    path = meta_path(engine)
    data = read_json(
        path,
        f"{engine}: engine metadata",
        CardError,
        missing="an engine is only usable with the metadata beside it: "
        "rebuild with 'flowedge export trt MODEL.onnx'",
        invalid="rebuild the engine with 'flowedge export trt MODEL.onnx'",
    )
    return EngineMeta.from_dict(data, str(path))


def check_compatible(
    meta: EngineMeta, tensorrt_version: str, gpu_name: str, compute_capability: str, source: str
) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU architecture."""
    problems = []
    if meta.tensorrt_version != tensorrt_version:
        problems.append(
            f"built with TensorRT {meta.tensorrt_version}, this station has {tensorrt_version}"
        )
    if meta.compute_capability != compute_capability:
        problems.append(
            f"built for a {meta.gpu_name} (compute capability {meta.compute_capability}), this GPU is a "
            f"{gpu_name} ({compute_capability})"
        )
    if problems:
        raise ModelMismatchError(
            f"{source}: engine does not fit this station: {'; '.join(problems)}. Rebuild it here with "
            "'flowedge export trt MODEL.onnx' (engines are not portable across TensorRT versions or GPUs)"
        )
