"""The historian's configuration file (historian.yaml), validated once at start."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from flowedge.calibration.history.resend import read_secret
from flowedge.core.broker import MQTTConfig
from flowedge.core.errors import ConfigError
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import DAY_S, Name, Strict, format_validation_error
from flowedge.core.yamlfile import read_yaml

_PREFIX = re.compile(r"^[^+#$/][^+#]*$")


def _topic_prefix(value: str) -> str:
    if not _PREFIX.match(value) or "" in value.split("/"):
        raise ValueError(
            "must be topic levels without wildcards, '$', or empty levels (the stations' "
            "mqtt.topic_prefix, default 'flowedge')"
        )
    return value


class HistorianMqtt(MQTTConfig):
    """The broker, and the persistent session that keeps what arrives while the historian
    is away (MQTT 5: session expiry, receive maximum)."""

    protocol: Literal["auto", "5"] = "5"
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "flowedge-historian"
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = "flowedge"
    session_expiry_s: int = Field(
        86_400, ge=60, le=2**32 - 1, description="how long the broker queues while it is away"
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65_535, description="decisions in flight, received and not yet committed"
    )
    inputs: list[Literal["mqtt", "sparkplug"]] = Field(
        ["mqtt"],
        min_length=1,
        description="mqtt: the stations' JSON decisions under topic_prefix; sparkplug: their "
        "Sparkplug B DDATA (spBv1.0/<site>/DDATA/<station>/<source>, needs protobuf)",
    )


class DatabaseConfig(Strict):
    """Where the rows go. The password never lives in the file: ``password_env``, or
    libpq's own PGPASSWORD / ~/.pgpass."""

    dsn: str = Field(
        "dbname=flowedge", min_length=1, description="libpq connection string, no password"
    )
    password_env: str = Field("FLOWEDGE_HISTORIAN_DB_PASSWORD", min_length=1)
    timescale: Literal["auto", "off"] = Field(
        "auto", description="auto: a TimescaleDB hypertable when the extension is installed"
    )

    @model_validator(mode="after")
    def _no_password_in_the_file(self) -> DatabaseConfig:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self.dsn)
        except ProgrammingError as exc:
            raise ValueError(f"dsn is not a libpq connection string ({exc})") from None
        if "password" in params:
            raise ValueError(
                f"dsn holds a password: remove it and set ${self.password_env} (or PGPASSWORD, "
                "or ~/.pgpass with mode 0600)"
            )
        return self


class ResendRequests(Strict):
    """Asking stations for the decisions the broker lost (their ``commands.resend``)."""

    enabled: bool = True
    historian: Name = Field("historian", description="the stations' commands.resend.historian")
    secret_env: str = Field("FLOWEDGE_HISTORIAN_SECRET", min_length=1)
    secret_file: BoundedPath | None = None
    gap_wait_s: float = Field(
        5.0, gt=0, le=DAY_S, description="a younger gap may still fill by itself (reordering)"
    )
    retry_s: float = Field(30.0, gt=0, le=DAY_S, description="first wait for an answer")
    max_retry_s: float = Field(3600.0, gt=0, le=DAY_S, description="the wait doubles up to this")
    attempts: int = Field(10, ge=1, le=1000, description="then a range is logged as lost")
    max_documents: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="per request: the stations' commands.resend.max_documents",
    )
    idle_probe_s: float = Field(
        60.0, gt=0, le=DAY_S, description="ask an idle sensor for decisions after its last one"
    )
    backfill: bool = Field(
        True, description="ask for a sensor's decisions before the first one received"
    )

    def secret(self) -> bytes:
        return read_secret(self.secret_env, self.secret_file, "resend")


class HistorianConfig(Strict):
    mqtt: HistorianMqtt = Field(default_factory=HistorianMqtt)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    resend: ResendRequests = Field(default_factory=ResendRequests)
    batch: int = Field(1000, ge=1, le=100_000, description="decisions per transaction at most")
    batch_wait_s: float = Field(
        0.05, ge=0, le=10, description="how long a transaction waits for more decisions"
    )


def load_historian_config(path: Path) -> HistorianConfig:
    data = read_yaml(path, "historian config", missing="start from docs/historian.md")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        return HistorianConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
