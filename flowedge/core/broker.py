"""An MQTT broker connection: its settings and the one way to build a client.

Shared by the station's MQTT sink, a microphone's PLC trigger, ``flowedge check`` and
the fleet historian (``flowedge historian``, which must not load the station), so each
connects the same way. Secrets never need to be in the file: the user name and password
can come from environment variables.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Literal

import paho.mqtt.client as mqtt
from pydantic import AfterValidator, Field, model_validator

from flowedge.core.paths import BoundedPath
from flowedge.core.validation import DAY_S, Strict, ordered_backoff

MQTT_MAX_STRING_BYTES = 65535  # MQTT UTF-8 strings: topic, client id, user name, password
MQTT_MAX_KEEPALIVE_S = 65535  # two-byte field in CONNECT
MQTT_PORTABLE_CLIENT_ID = 23  # MQTT 3.1.1 servers may refuse longer client ids
# MQTT 5 "Unsupported protocol version"; a 3.1.1-only broker answers 1 ("unacceptable version")
UNSUPPORTED_PROTOCOL = {1, 132}
AUTH_FAILURES = {4, 5, 134, 135}  # 3.1.1 and 5 codes for bad credentials / not authorised


def mqtt_string(value: str) -> str:
    """An MQTT UTF-8 string: no NUL (brokers disconnect), at most 65535 bytes encoded."""
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    size = len(value.encode("utf-8"))
    if size > MQTT_MAX_STRING_BYTES:
        raise ValueError(f"is {size} bytes in UTF-8; MQTT allows at most {MQTT_MAX_STRING_BYTES}")
    return value


MqttString = Annotated[str, AfterValidator(mqtt_string)]


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
    """Where the broker is and how to log in (the ``mqtt`` section's connection keys)."""

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
    reconnect_min_s: float = Field(1.0, gt=0, le=DAY_S)
    reconnect_max_s: float = Field(30.0, gt=0, le=DAY_S)

    @model_validator(mode="after")
    def _backoff(self) -> MQTTConfig:
        ordered_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self

    def resolved_username(self) -> str | None:
        return os.environ.get(self.username_env) or self.username

    def resolved_password(self) -> str | None:
        return os.environ.get(self.password_env)

    def environment_problems(self, key: str = "mqtt") -> list[str]:
        """Credentials and TLS files as the process sees them (``key: problem`` lines)."""
        problems = []
        username = self.resolved_username()
        for field, value in (("username", username), ("password", self.resolved_password())):
            try:
                mqtt_string(value or "")
            except ValueError as exc:
                problems.append(f"{key}.{field} (from the file or the environment): {exc}")
        if username and not self.resolved_password():
            problems.append(
                f"{key}.password_env: the user name {username!r} is set but the environment "
                f"variable {self.password_env} is empty or unset; set it (systemd: "
                "/etc/flowedge/<station>.env) or remove the user name"
            )
        for field, path in (self.tls.files() if self.tls else {}).items():
            try:
                with path.open("rb") as handle:
                    handle.read(1)
            except OSError as exc:
                problems.append(
                    f"{key}.tls.{field}: cannot read {path} ({exc.strerror}); check the path "
                    "and that the service user may read it"
                )
        return problems


def protocol_number(name: str) -> int:
    """paho's protocol constant for the configured name ("auto" starts with MQTT 5)."""
    return mqtt.MQTTv311 if name == "3.1.1" else mqtt.MQTTv5


def new_client(c: MQTTConfig, client_id: str, protocol: int) -> mqtt.Client:
    """A paho client (callback API 2) with the configured user, password and TLS files."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
    )
    username = c.resolved_username()
    if username:
        client.username_pw_set(username, c.resolved_password())
    if c.tls is not None:
        client.tls_set(
            ca_certs=str(c.tls.ca_file) if c.tls.ca_file else None,
            certfile=str(c.tls.cert_file) if c.tls.cert_file else None,
            keyfile=str(c.tls.key_file) if c.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(c.tls.insecure)
    return client
