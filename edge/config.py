"""The station configuration (config.yaml), validated once at start.

Every error names the key path and what was expected, never a stack trace:
``sources[0].backpressure: Input should be 'block' or 'drop_oldest' (got 'drop')``.
Each source kind (``sources[].kind``) and each sink kind (the ``mqtt`` section, and
``sinks[].kind`` for further outputs) brings its own config model from its module
(edge/sources, edge/sinks). Secrets never need to be in the file: each can come from
an environment variable.

What would only fail later, at run time, is refused here: MQTT limits (topic
characters, string lengths, keepalive and expiry ranges), glob patterns that
reach outside their folder, NaN/inf numbers; and, in :func:`load_config`, what
the file alone cannot show: no source to run, a user name whose password
variable is empty, a TLS file that cannot be read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from flowedge.calibration.config import DriftConfig
from flowedge.core.broker import MQTT_PORTABLE_CLIENT_ID, MQTTConfig
from flowedge.core.errors import ConfigError
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import (
    MAX_QUEUE,
    MAX_RECORDS,
    Name,
    Strict,
    format_validation_error,
)
from flowedge.core.yamlfile import read_yaml
from flowedge.edge.commands import CommandsConfig
from flowedge.edge.metrics import MetricsConfig
from flowedge.edge.models_config import ModelConfig, RecipesConfig
from flowedge.edge.sinks import SINK_KINDS, SinkBaseConfig, SinkConfig
from flowedge.edge.sinks.mqtt import MqttSinkConfig
from flowedge.edge.sources import SOURCE_KINDS, SourceConfig
from flowedge.flows.config import TrainingSections
from flowedge.modalities import get_modality
from flowedge.modalities.image_decode import DEFAULT_LIMITS

log = logging.getLogger(__name__)

UNION_TAGS = frozenset(SOURCE_KINDS) | frozenset(SINK_KINDS)  # left out of error paths


class LimitsConfig(Strict):
    """What one input file may cost: larger files or images are that sample's ERROR, checked
    before reading or decoding, so a hostile file cannot exhaust the station's memory."""

    max_file_mib: float = Field(DEFAULT_LIMITS.max_bytes / 2**20, gt=0, le=16 * 1024)
    # OpenCV itself refuses images over 2**30 pixels (CV_IO_MAX_IMAGE_PIXELS)
    max_megapixels: float = Field(DEFAULT_LIMITS.max_pixels / 1e6, gt=0, le=1000)

    def decode_limits(self, kind: str = "image") -> Any:
        """The limits of modality ``kind`` (image: DecodeLimits; audio: AudioLimits)."""
        return get_modality(kind).limits(
            int(self.max_file_mib * 2**20), int(self.max_megapixels * 1e6)
        )


class EvidenceConfig(Strict):
    """Copies of the input files, made before the decision is stored: the source (or the
    vision system) may delete or overwrite a file once it is answered, and the history
    sink keeps these copies as the sample's evidence (docs/history.md)."""

    inputs: Literal["none", "anomalies", "all"] = "none"  # which decisions' inputs are copied
    dir: BoundedPath = Path("runs/evidence")
    # retention per sensor, oldest deleted first: the history keeps its own links to them
    keep: int = Field(1000, ge=1, description="input copies kept per sensor")
    keep_mb: float = Field(500.0, gt=0, description="megabytes of input copies per sensor")


class PipelineConfig(Strict):
    max_batch: int = Field(
        8, ge=1, le=MAX_QUEUE, description="infer batches frames that queue up, up to this"
    )
    queue_size: int = Field(32, ge=1, le=MAX_QUEUE)
    heatmaps: Literal["none", "anomalies", "all"] = "anomalies"
    heatmap_dir: BoundedPath = Path("runs/heatmaps")
    # retention per sensor, oldest deleted first: whichever limit is reached first
    heatmap_keep: int = Field(1000, ge=1, le=10**7, description="overlay PNGs kept per sensor")
    heatmap_keep_mb: float = Field(
        500.0, gt=0, le=10**7, description="megabytes of overlays per sensor"
    )
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class SpoolConfig(Strict):
    path: BoundedPath = Path("runs/spool.sqlite")
    max_messages: int = Field(100_000, ge=10, le=MAX_RECORDS)
    # drop_oldest: keep the newest decisions; reject_new: keep the oldest (both are counted and reported)
    overflow: Literal["drop_oldest", "reject_new"] = "drop_oldest"


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False


class FlowedgeConfig(TrainingSections):
    """The whole config.yaml: the station's sections, and the 'detector' and 'training'
    sections (with their defaults rule) that ``flowedge train`` reads."""

    site: Name = "site"
    station: Name = "station"
    model: ModelConfig = Field(default_factory=ModelConfig)  # the one model, or:
    recipes: RecipesConfig | None = None  # one model per recipe (not with 'model')
    sources: list[SourceConfig] = Field(default_factory=list)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    mqtt: MqttSinkConfig = Field(default_factory=MqttSinkConfig)  # the default sink
    sinks: list[SinkConfig] = Field(default_factory=list)  # further outputs, each its own cursor
    commands: CommandsConfig = Field(default_factory=CommandsConfig)  # what sinks may change
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> FlowedgeConfig:
        for section, names in (
            ("source", [source.name for source in self.sources]),
            ("sink", [self.mqtt.name, *(sink.name for sink in self.sinks)]),
        ):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{section} names must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _one_model_section(self) -> FlowedgeConfig:
        if self.recipes is not None and "model" in self.model_fields_set:
            raise ValueError(
                "give either 'model' (one model) or 'recipes' (one model per recipe), not both"
            )
        return self

    @model_validator(mode="after")
    def _sinks_fit(self) -> FlowedgeConfig:
        sources = [source.name for source in self.sources]
        for sink in self.active_sinks():
            problems = sink.station_problems(self.site, self.station, sources)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _resend_has_its_sinks(self) -> FlowedgeConfig:
        if "resend" not in self.commands.allowed:
            return self
        kinds = {getattr(sink, "kind", "") for sink in self.active_sinks()}
        if "history" not in kinds:
            raise ValueError(
                "commands.allowed names resend, which answers from the station's history: "
                "enable a sink of kind history (docs/history.md)"
            )
        if "mqtt" not in kinds:
            raise ValueError(
                "commands.allowed names resend, whose requests arrive over MQTT: enable the "
                "mqtt section or a sink of kind mqtt"
            )
        return self

    @model_validator(mode="after")
    def _triggers_can_arrive(self) -> FlowedgeConfig:
        """A triggered source without MQTT topics is triggered only through the OPC UA sink."""
        kinds = {getattr(sink, "kind", "") for sink in self.active_sinks()}
        for source in self.sources:
            if source.kind == "triggered" and source.mqtt is None and "opcua" not in kinds:
                raise ValueError(
                    f"source {source.name} (kind triggered) would never be triggered: give it "
                    "mqtt topics, or enable a sink of kind opcua (its Handshake nodes)"
                )
        return self

    def resend_history(self) -> Path:
        """The folder the ``resend`` command answers from: the first enabled history sink's."""
        return next(
            sink.path for sink in self.active_sinks() if getattr(sink, "kind", "") == "history"
        )

    def active_sinks(self) -> list[SinkBaseConfig]:
        """The enabled sinks, the ``mqtt`` section first."""
        return [sink for sink in (self.mqtt, *self.sinks) if sink.enabled]

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id_for(self.site, self.station)


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
        raise ConfigError(format_validation_error(exc, source, UNION_TAGS)) from None


def station_problems(cfg: FlowedgeConfig) -> list[str]:
    """What a valid file can still get wrong for a running station (``key: problem`` lines)."""
    problems = []
    if not cfg.sources:
        kinds = ", ".join(SOURCE_KINDS)
        problems.append(f"sources: a station needs at least one source ({kinds})")
    for sink in cfg.active_sinks():
        key = "mqtt" if sink is cfg.mqtt else f"sinks.{sink.name}"
        if isinstance(sink, MQTTConfig):
            problems += sink.environment_problems(key)
    return problems + cfg.commands.environment_problems()


def load_config(path: str | Path) -> FlowedgeConfig:
    """Read and validate a station config, including what it needs from this machine.

    Relative paths stay relative to the working directory.
    """
    data = read_yaml(
        path, "config file", missing="start from the commented config.yaml in the repository"
    )
    cfg = parse_config(data, source=str(path))
    problems = station_problems(cfg)
    if problems:
        raise ConfigError(
            f"{path}: cannot run a station with this configuration "
            f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    cores = os.cpu_count() or 1
    models = (
        {f"recipes.models.{name}": model for name, model in cfg.recipes.models.items()}
        if cfg.recipes is not None
        else {"model": cfg.model}
    )
    for key, model in models.items():
        if model.intra_op_threads > cores:
            log.warning(
                "%s.intra_op_threads %d is more than this machine's %d cores: inference "
                "threads will wait for each other; give at most %d",
                key,
                model.intra_op_threads,
                cores,
                cores,
            )
    for sink in cfg.active_sinks():
        client_id = getattr(sink, "client_id", None)
        if client_id and len(client_id) > MQTT_PORTABLE_CLIENT_ID:
            log.warning(
                "%s.client_id %r is longer than %d characters: MQTT 3.1.1 brokers may refuse it",
                sink.name,
                client_id,
                MQTT_PORTABLE_CLIENT_ID,
            )
    return cfg
