"""The station configuration (config.yaml), validated once at start.

Every error names the key path and what was expected, never a stack trace:
``sources[0].backpressure: Input should be 'block' or 'drop_oldest' (got 'drop')``.
Secrets never need to be in the file: each can come from an environment variable.

What would only fail later, at run time, is refused here: MQTT limits (topic
characters, string lengths, keepalive and expiry ranges), glob patterns that
reach outside their folder, NaN/inf numbers; and, in :func:`load_config`, what
the file alone cannot show: no source to run, a user name whose password
variable is empty, a TLS file that cannot be read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from flowedge.calibration.config import DriftConfig
from flowedge.core.errors import ConfigError
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import Strict, format_validation_error
from flowedge.core.yamlfile import read_yaml
from flowedge.flows.config import TrainingSections
from flowedge.modalities.audio_events import EventRules
from flowedge.modalities.image_decode import DEFAULT_LIMITS, DecodeLimits
from flowedge.modalities.series_cycles import SegmentConfig
from flowedge.modalities.series_io import LogFormat

log = logging.getLogger(__name__)

# site, station and source names are MQTT topic levels: these characters are always safe
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]

MQTT_MAX_STRING_BYTES = 65535  # MQTT UTF-8 strings: topic, client id, user name, password
MQTT_MAX_KEEPALIVE_S = 65535  # two-byte field in CONNECT
MQTT_MAX_EXPIRY_S = 2**32 - 1  # MQTT 5 Message Expiry Interval: four-byte integer
MQTT_PORTABLE_CLIENT_ID = 23  # MQTT 3.1.1 servers may refuse longer client ids
LONGEST_TOPIC_SUFFIX = "/decision"  # the longest per-sensor topic the station publishes


def _mqtt_string(value: str) -> str:
    """An MQTT UTF-8 string: no NUL (brokers disconnect), at most 65535 bytes encoded."""
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    size = len(value.encode("utf-8"))
    if size > MQTT_MAX_STRING_BYTES:
        raise ValueError(f"is {size} bytes in UTF-8; MQTT allows at most {MQTT_MAX_STRING_BYTES}")
    return value


def _topic_prefix(value: str) -> str:
    """Topic levels the station publishes under: no wildcards, no '$', no empty level."""
    _mqtt_string(value)
    if not value:
        raise ValueError("must not be empty (the default is 'flowedge')")
    if "+" in value or "#" in value:
        raise ValueError("must not contain the MQTT wildcards '+' or '#'")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics such as $SYS)")
    if "" in value.split("/"):
        raise ValueError("must not start or end with '/' or contain '//' (an empty topic level)")
    return value


def split_patterns(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def _confined_patterns(value: str) -> str:
    """Comma-separated globs relative to the source folder, never reaching outside it."""
    patterns = split_patterns(value)
    if not patterns:
        raise ValueError("needs at least one file pattern, e.g. '*.png'")
    for pattern in patterns:
        posix, windows = PurePosixPath(pattern), PureWindowsPath(pattern)
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            raise ValueError(f"pattern {pattern!r} must be relative to the source path")
        if ".." in posix.parts or ".." in windows.parts:
            raise ValueError(f"pattern {pattern!r} must not use '..' (it would leave the folder)")
    return value


MqttString = Annotated[str, AfterValidator(_mqtt_string)]


class ModelConfig(Strict):
    # A checkpoint directory (weights.safetensors + card.json), an .onnx file or a TensorRT .engine
    path: BoundedPath = Path("runs/demo/model")
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = "auto"  # auto: by path
    device: str = "cpu"  # torch: cpu | cuda[:N]; onnxruntime: cpu | cuda
    # calibration.json bound to the model; overrides threshold
    calibration: BoundedPath | None = None
    threshold: float | None = None  # used when no calibration file is given (finite)
    intra_op_threads: int = Field(0, ge=0, description="0: the backend's default")


AUDIO_PATTERN = "*.wav,*.flac"


class TriggerConfig(Strict):
    """Motions cut where the PLC says (an MQTT topic on the station's broker), not by energy.

    Payloads: ``start``/``stop`` (also ``1``/``0``, ``on``/``off``, ``true``/``false``: a
    digital input), or JSON ``{"state": "start"|"stop", "motion": "fold"}``; see docs/audio.md.
    """

    topic: MqttString = Field(min_length=1)
    qos: Literal[0, 1] = 1


PDOType = Literal["int8", "int16", "int32", "uint8", "uint16", "uint32", "float32"]


class PDOSignal(Strict):
    """One signal in a slave's input process data (little-endian, as EtherCAT sends it)."""

    name: str
    slave: int = Field(ge=0, description="0-based position of the slave on the bus")
    offset: int = Field(ge=0, description="byte offset in the slave's input PDO")
    type: PDOType
    scale: float = 1.0  # engineering value = raw * scale
    unit: str = ""


class EtherCATConfig(Strict):
    """A live EtherCAT bus (``kind: ethercat``): the NIC, what to decode and how often."""

    interface: str = Field(description="network interface of the bus, e.g. eth1")
    cycle_s: float = Field(0.004, gt=0, description="process data cycle period")
    signals: list[PDOSignal] = Field(min_length=1)
    block_rows: int = Field(250, ge=1, description="samples gathered before cycles are cut")
    receive_timeout_us: int = Field(2000, ge=1)


class MicrophoneConfig(Strict):
    """A PortAudio input (``kind: microphone``): what to open and how to cut it into motions."""

    device: str | int | None = (
        None  # name (substring, as PortAudio lists it) or index; None: default
    )
    sample_rate: Literal[44100, 48000] = 44100
    channels: int = Field(1, ge=1, le=32)
    block_size: int = Field(1024, ge=64, le=65536, description="samples per callback block")
    ring_s: float = Field(
        10.0, gt=0, description="audio buffered while the detector is busy; beyond it blocks drop"
    )
    events: EventRules = Field(default_factory=EventRules)
    trigger: TriggerConfig | None = None  # None: energy segmentation with ``events``
    labels: list[str] | None = Field(
        None,
        min_length=1,
        description="score only these motions; another station scores the others with its "
        "own model (docs/audio.md); None: every motion",
    )

    @model_validator(mode="after")
    def _known_labels(self) -> MicrophoneConfig:
        """Energy segmentation only names motions from ``events.labels``: any other never comes."""
        unknown = set(self.labels or ()) - set(self.events.labels)
        if self.trigger is None and unknown:
            raise ValueError(
                f"microphone.labels {sorted(unknown)} are not in events.labels "
                f"{self.events.labels}; no such motion would ever be scored"
            )
        return self


class SourceConfig(Strict):
    name: Name
    kind: Literal["camera", "folder", "watch", "tail", "microphone", "ethercat"]
    # what the files are: image, or audio (WAV/FLAC, one motion per file), or series (robot
    # cycles: what a tail source yields); the model's input kind must match. The default
    # pattern follows it.
    modality: Literal["image", "audio", "series"] = "image"
    # camera: index ("0"), device path, RTSP/HTTP URL, GStreamer pipeline or video file
    uri: str | None = None
    # folder (replay) and watch (new files dropped by a vision system)
    path: BoundedPath | None = None
    # comma-separated globs inside ``path`` (no absolute patterns, no '..')
    pattern: Annotated[str, AfterValidator(_confined_patterns)] = (
        "*.png,*.jpg,*.jpeg,*.bmp,*.tif,*.tiff"
    )
    rate_hz: float | None = Field(
        None, gt=0, description="replay or capture rate; None: as fast as possible"
    )
    loop: bool = False  # folder replay: start again at the end
    settle_timeout_s: float = Field(
        10.0,
        gt=0,
        description="watch: a file still changing (or without its end marker) this long "
        "after it appeared is answered ERROR; a later complete version is answered again",
    )
    # tail (a growing machine-data log): how to read it and how to cut it into cycles
    log: LogFormat | None = None
    segment: SegmentConfig | None = None
    microphone: MicrophoneConfig | None = None
    ethercat: EtherCATConfig | None = None  # live process data, cut by ``segment``
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
        if self.kind == "camera" and self.modality != "image":
            raise ValueError("a camera source delivers images: set modality image")
        if self.kind == "microphone":
            if self.modality != "audio":
                raise ValueError("a microphone source delivers sound: set modality audio")
            self.microphone = self.microphone or MicrophoneConfig()
        if self.modality == "audio" and "pattern" not in self.model_fields_set:
            self.pattern = AUDIO_PATTERN
        if self.kind == "ethercat" and self.ethercat is None:
            raise ValueError("an ethercat source needs 'ethercat' (interface, signals)")
        if self.kind == "tail" and self.path is None:
            raise ValueError("a tail source needs 'path' (the log file the logger appends to)")
        _ordered_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self


def _ordered_backoff(low: float, high: float) -> None:
    if low > high:
        raise ValueError(f"reconnect_min_s ({low:g}) must not exceed reconnect_max_s ({high:g})")


class LimitsConfig(Strict):
    """What one input file may cost: larger files or images are that sample's ERROR, checked
    before reading or decoding, so a hostile file cannot exhaust the station's memory."""

    max_file_mib: float = Field(DEFAULT_LIMITS.max_bytes / 2**20, gt=0)
    max_megapixels: float = Field(DEFAULT_LIMITS.max_pixels / 1e6, gt=0)

    def decode_limits(self, kind: str = "image") -> Any:
        """The limits type of modality ``kind`` (image: DecodeLimits; audio: AudioLimits)."""
        max_bytes = int(self.max_file_mib * 2**20)
        if kind == "audio":
            from flowedge.modalities.audio import AudioLimits  # scipy: audio stations only

            return AudioLimits(max_bytes=max_bytes)
        return DecodeLimits(max_bytes, int(self.max_megapixels * 1e6))


class PipelineConfig(Strict):
    max_batch: int = Field(8, ge=1, description="infer batches frames that queue up, up to this")
    queue_size: int = Field(32, ge=1)
    heatmaps: Literal["none", "anomalies", "all"] = "anomalies"
    heatmap_dir: BoundedPath = Path("runs/heatmaps")
    # retention per sensor, oldest deleted first: whichever limit is reached first
    heatmap_keep: int = Field(1000, ge=1, description="overlay PNGs kept per sensor")
    heatmap_keep_mb: float = Field(500.0, gt=0, description="megabytes of overlays per sensor")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class TLSConfig(Strict):
    ca_file: BoundedPath | None = None
    cert_file: BoundedPath | None = None
    key_file: BoundedPath | None = None
    insecure: bool = False  # skip hostname check (lab brokers only)

    @model_validator(mode="after")
    def _key_needs_certificate(self) -> TLSConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is given without cert_file (the client certificate)")
        return self

    def files(self) -> dict[str, Path]:
        """The configured files by key, for the readability check at load."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {key: path for key, path in named.items() if path is not None}


class MQTTConfig(Strict):
    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    # default: flowedge-<site>-<station>; MQTT 3.1.1 brokers may refuse more than 23 characters
    client_id: Annotated[MqttString, Field(min_length=1)] | None = None
    username: MqttString | None = None
    username_env: str = Field("FLOWEDGE_MQTT_USERNAME", min_length=1)
    # the password itself never lives in config.yaml
    password_env: str = Field("FLOWEDGE_MQTT_PASSWORD", min_length=1)
    tls: TLSConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=MQTT_MAX_KEEPALIVE_S)
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = "flowedge"
    message_expiry_s: int = Field(
        0, ge=0, le=MQTT_MAX_EXPIRY_S, description="MQTT 5 expiry for decisions; 0: none"
    )
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _backoff(self) -> MQTTConfig:
        _ordered_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self

    def resolved_username(self) -> str | None:
        return os.environ.get(self.username_env) or self.username

    def resolved_password(self) -> str | None:
        return os.environ.get(self.password_env)

    def environment_problems(self) -> list[str]:
        """Credentials and TLS files as the process sees them (``key: problem`` lines)."""
        problems = []
        username = self.resolved_username()
        for key, value in (("username", username), ("password", self.resolved_password())):
            try:
                _mqtt_string(value or "")
            except ValueError as exc:
                problems.append(f"mqtt.{key} (from the file or the environment): {exc}")
        if username and not self.resolved_password():
            problems.append(
                f"mqtt.password_env: the user name {username!r} is set but the environment "
                f"variable {self.password_env} is empty or unset; set it (systemd: "
                "/etc/flowedge/<station>.env) or remove the user name"
            )
        for key, path in (self.tls.files() if self.tls else {}).items():
            try:
                with path.open("rb") as handle:
                    handle.read(1)
            except OSError as exc:
                problems.append(
                    f"mqtt.tls.{key}: cannot read {path} ({exc.strerror}); check the path "
                    "and that the service user may read it"
                )
        return problems


class SpoolConfig(Strict):
    path: BoundedPath = Path("runs/spool.sqlite")
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


class FlowedgeConfig(TrainingSections):
    """The whole config.yaml: the station's sections, and the 'detector' and 'training'
    sections (with their defaults rule) that ``flowedge train`` reads."""

    site: Name = "site"
    station: Name = "station"
    model: ModelConfig = Field(default_factory=ModelConfig)
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

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"flowedge-{self.site}-{self.station}"

    @model_validator(mode="after")
    def _topics_fit(self) -> FlowedgeConfig:
        longest = max((source.name for source in self.sources), key=len, default="")
        topic = (
            f"{self.mqtt.topic_prefix}/{self.site}/{self.station}/{longest}{LONGEST_TOPIC_SUFFIX}"
        )
        size = len(topic.encode("utf-8"))
        if size > MQTT_MAX_STRING_BYTES:
            raise ValueError(
                f"mqtt.topic_prefix is too long: topics would be {size} bytes in UTF-8, "
                f"MQTT allows {MQTT_MAX_STRING_BYTES}"
            )
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


def station_problems(cfg: FlowedgeConfig) -> list[str]:
    """What a valid file can still get wrong for a running station (``key: problem`` lines)."""
    problems = []
    if not cfg.sources:
        problems.append("sources: a station needs at least one source (camera, folder or watch)")
    if cfg.mqtt.enabled:
        problems += cfg.mqtt.environment_problems()
    return problems


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
    client_id = cfg.mqtt.client_id
    if cfg.mqtt.enabled and client_id and len(client_id) > MQTT_PORTABLE_CLIENT_ID:
        log.warning(
            "mqtt.client_id %r is longer than %d characters: MQTT 3.1.1 brokers may refuse it",
            client_id,
            MQTT_PORTABLE_CLIENT_ID,
        )
    return cfg
