"""The station configuration (config.yaml), validated once at start.

Every error names the key path and what was expected, never a stack trace:
``sources[0].backpressure: Input should be 'block' or 'drop_oldest' (got 'drop')``.
Secrets never need to be in the file: each can come from an environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from flowedge.calibration.config import DriftConfig
from flowedge.core.errors import ConfigError
from flowedge.core.validation import Strict, format_validation_error
from flowedge.flows.config import DetectorConfig, TrainingConfig
from flowedge.modalities.image_decode import DEFAULT_LIMITS, DecodeLimits

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]


class ModelConfig(Strict):
    # A checkpoint directory (weights.safetensors + card.json), an .onnx file or a TensorRT .engine
    path: Path = Path("runs/demo/model")
    backend: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    device: str = "cpu"  # torch: cpu | cuda[:N]; onnxruntime: cpu | cuda
    calibration: Path | None = None  # calibration.json bound to the model; overrides threshold
    threshold: float | None = None  # used when no calibration file is given
    intra_op_threads: int = Field(0, ge=0, description="0: the backend's default")


class SourceConfig(Strict):
    name: Name
    kind: Literal["camera", "folder", "watch"]
    # camera: index ("0"), device path, RTSP/HTTP URL, GStreamer pipeline or video file
    uri: str | None = None
    # folder (replay) and watch (new files dropped by a vision system)
    path: Path | None = None
    pattern: str = "*.png,*.jpg,*.jpeg,*.bmp,*.tif,*.tiff"
    rate_hz: float | None = Field(
        None, gt=0, description="replay or capture rate; None: as fast as possible"
    )
    loop: bool = False  # folder replay: start again at the end
    backpressure: Literal["block", "drop_oldest"] = "block"
    queue_size: int = Field(8, ge=1)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _needs_location(self) -> SourceConfig:
        if self.kind == "camera" and not self.uri:
            raise ValueError("a camera source needs 'uri' (index, device path, URL or pipeline)")
        if self.kind in ("folder", "watch") and self.path is None:
            raise ValueError(f"a {self.kind} source needs 'path' (a directory of images)")
        return self


class LimitsConfig(Strict):
    """What one input file may cost: larger files or images are that sample's ERROR, checked
    before reading or decoding, so a hostile file cannot exhaust the station's memory."""

    max_file_mib: float = Field(DEFAULT_LIMITS.max_bytes / 2**20, gt=0)
    max_megapixels: float = Field(DEFAULT_LIMITS.max_pixels / 1e6, gt=0)

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(int(self.max_file_mib * 2**20), int(self.max_megapixels * 1e6))


class PipelineConfig(Strict):
    max_batch: int = Field(8, ge=1, description="infer batches frames that queue up, up to this")
    queue_size: int = Field(32, ge=1)
    heatmaps: Literal["none", "anomalies", "all"] = "anomalies"
    heatmap_dir: Path = Path("runs/heatmaps")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class TLSConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname check (lab brokers only)


class MQTTConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: str | None = None  # default: flowedge-<site>-<station>
    username: str | None = None
    username_env: str = "FLOWEDGE_MQTT_USERNAME"
    password_env: str = "FLOWEDGE_MQTT_PASSWORD"  # the password itself never lives in config.yaml
    tls: TLSConfig | None = None
    keepalive_s: int = Field(30, ge=5)
    topic_prefix: str = "flowedge"
    message_expiry_s: int = Field(0, ge=0, description="MQTT 5 expiry for decisions; 0: none")
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    def resolved_username(self) -> str | None:
        return os.environ.get(self.username_env) or self.username

    def resolved_password(self) -> str | None:
        return os.environ.get(self.password_env)


class SpoolConfig(Strict):
    path: Path = Path("runs/spool.sqlite")
    max_messages: int = Field(100_000, ge=10)
    # drop_oldest: keep the newest decisions; reject_new: keep the oldest (both are counted and reported)
    overflow: Literal["drop_oldest", "reject_new"] = "drop_oldest"


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False


class FlowedgeConfig(Strict):
    site: Name = "site"
    station: Name = "station"
    model: ModelConfig = Field(default_factory=ModelConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _unique_sources(self) -> FlowedgeConfig:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return self


def parse_config(data: Any, source: str = "<config>") -> FlowedgeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return FlowedgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> FlowedgeConfig:
    """Read and validate a YAML config; relative paths stay relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found; start from the commented config.yaml in the repository"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))
