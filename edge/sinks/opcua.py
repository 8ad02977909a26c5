"""The OPC UA sink: a results server in the station for PLCs and SCADA (OPC 40100-shaped).

An asyncua server runs on its own thread with its own asyncio loop. Each decision record
of the spool (through this sink's :class:`Delivery` cursor) updates its source's
``Result`` nodes, ``History`` and ``Counters`` (opcua_model); the record is acknowledged
only after its node values are written and the results file (opcua_results) is on disk,
so a SIGKILL loses nothing and a re-sent record is recognised by its id and not counted
twice. A ``triggered`` source also gets the PLC handshake nodes (opcua_handshake).

Security (opcua_security): Basic256Sha256 Sign and SignAndEncrypt endpoints (None only
when ``security`` lists it), the station's certificate generated on first start,
password users from a 0600 users file, certificate users, anonymous off unless
``allow_anonymous`` (then read-only); only ``write`` users may write, and only the
handshake nodes are writable.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from flowedge.core.errors import ConfigError
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import Name, Strict
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sinks.base import Delivery, SinkBaseConfig, SinkContext, SinkKind
from flowedge.edge.sinks.opcua_results import ResultsState
from flowedge.edge.sinks.opcua_users import load_users, private_file_problem

log = logging.getLogger(__name__)

BATCH = 64  # records per results-file write
START_TIMEOUT_S = 30.0
POLICIES = {
    "Basic256Sha256_Sign": "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt": "Basic256Sha256_SignAndEncrypt",
    "None": "NoSecurity",
}


class CertificateUser(Strict):
    """A client that signs in with this certificate (X509 identity token) is ``name``."""

    name: Name
    cert_file: BoundedPath
    role: Literal["read", "write"] = "read"


class OpcuaSinkConfig(SinkBaseConfig):
    """An OPC UA results server under ``sinks`` (kind ``opcua``)."""

    kind: Literal["opcua"] = "opcua"
    host: str = Field("0.0.0.0", min_length=1, description="address to listen on")
    port: int = Field(4840, ge=1, le=65535)
    endpoint_path: str = Field("flowedge", pattern=r"^[A-Za-z0-9._/-]*$")
    security: list[Literal["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt", "None"]] = Field(
        ["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"],
        min_length=1,
        description="endpoints offered; None (unsigned) only when listed here",
    )
    users_file: BoundedPath | None = Field(
        None, description="password users (flowedge opcua-user), mode 0600"
    )
    certificate_users: list[CertificateUser] = Field(default_factory=list)
    allow_anonymous: bool = Field(False, description="anonymous sessions (read-only)")
    trusted_clients: BoundedPath | None = Field(
        None,
        description="folder of the client application certificates allowed to connect; "
        "None: any client certificate (users still log in)",
    )
    cert_file: BoundedPath | None = Field(
        None, description="station certificate (DER); None: <spool path>.<name>.cert.der"
    )
    key_file: BoundedPath | None = Field(
        None, description="its private key (PEM, 0600); None: <spool path>.<name>.key.pem"
    )
    history_size: int = Field(20, ge=1, le=1000, description="results kept in History")

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> OpcuaSinkConfig:
        if not (self.users_file or self.certificate_users or self.allow_anonymous):
            raise ValueError(
                "nobody could log in: give users_file (flowedge opcua-user), "
                "certificate_users, or allow_anonymous: true (read-only)"
            )
        return self

    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/{self.endpoint_path}"

    def files(self, spool_path: Path) -> tuple[Path, Path]:
        """The station certificate and key files."""
        base = f"{spool_path}.{self.name}"
        return (
            Path(self.cert_file or f"{base}.cert.der"),
            Path(self.key_file or f"{base}.key.pem"),
        )


def namespace_uri(site: str, station: str) -> str:
    return f"urn:flowedge:{site}:{station}"


def _asyncua_missing(name: str) -> ConfigError:
    return ConfigError(f"sinks.{name} (kind opcua) needs asyncua: pip install 'flowedge[opcua]'")


class OpcuaSink:
    """Owns the server thread and its loop; the loop alone writes nodes and moves the cursor."""

    def __init__(self, cfg: OpcuaSinkConfig, context: SinkContext) -> None:
        try:
            from flowedge.edge.sinks import opcua_server
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("asyncua", "cryptography"):
                raise
            raise _asyncua_missing(cfg.name) from None
        self.name, self.cfg, self.context = cfg.name, cfg, context
        self.cert_file, self.key_file = cfg.files(context.spool.path)
        passwords = load_users(Path(cfg.users_file)) if cfg.users_file else {}
        self.delivery = Delivery(context.spool, cfg.name, cfg.max_backlog)
        self.results = ResultsState(
            Path(f"{context.spool.path}.{cfg.name}.results.json"), cfg.history_size
        )
        if self.results.last_id > self.delivery.sent + BATCH:  # a new spool: ids start again
            log.warning("OPC UA: the spool is newer than %s; counting again", self.results.path)
            self.results.last_id = self.delivery.sent
        self.server = opcua_server.ResultsServer(
            cfg,
            context,
            self.delivery,
            self.results,
            opcua_server.station_users(cfg, passwords, context.emit),
            (self.cert_file, self.key_file),
        )
        self._thread = threading.Thread(
            target=self.server.run, name=f"{cfg.name}-opcua", daemon=True
        )
        context.spool.subscribe(self.wake)

    def start(self) -> None:
        self._thread.start()
        if not self.server.started.wait(START_TIMEOUT_S):
            raise ConfigError(f"sinks.{self.name}: the OPC UA server did not start in time")
        if self.server.error:
            raise ConfigError(f"sinks.{self.name}: {self.server.error}")
        log.info("OPC UA: serving %s (namespace %s)", self.cfg.endpoint(), self.server.uri)

    def wake(self) -> None:
        self.server.wake()

    def status_changed(self, reason: str) -> None:
        self.server.wake(status=True)

    def health(self) -> str:
        if self.server.error:
            return f"OPC UA server DOWN ({self.server.error})"
        return f"OPC UA serving {self.cfg.endpoint()}"

    def flush(self, timeout_s: float) -> bool:
        return self.delivery.wait_until_delivered(timeout_s, self.wake)

    def stop(self, reason: str, flush_timeout_s: float = 5.0) -> None:
        """Write what is in the spool (within the timeout), show Stopped, close the server."""
        if self._thread.is_alive():
            self.flush(flush_timeout_s)
        self.server.stop()
        self._thread.join(timeout=10.0)
        log.info("OPC UA: server %s closed (%s)", self.cfg.endpoint(), reason)


def _port_problem(host: str, port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = (
                "another process (a running station?) listens there; choose another port"
                if exc.errno == errno.EADDRINUSE
                else "check sinks[].host"
            )
            return f"cannot listen on {host}:{port} ({exc.strerror}); {hint}"
    return None


def check(c: OpcuaSinkConfig, site: str, station: str, timeout_s: float) -> CheckResult:
    """asyncua is installed, the port is free, users file and key are private, certificate
    users' files are readable. A running station holds its port: stop it before checking."""
    name = f"opcua {c.name}"
    try:
        import asyncua  # noqa: F401
    except ModuleNotFoundError:
        return failed(name, str(_asyncua_missing(c.name)))
    problems = []
    if c.users_file:
        try:
            load_users(Path(c.users_file))
        except ConfigError as exc:
            problems.append(str(exc))
    for user in c.certificate_users:
        if not Path(user.cert_file).is_file():
            problems.append(f"certificate of user {user.name}: {user.cert_file} is not a file")
    if c.key_file and Path(c.key_file).exists():
        problems.append(private_file_problem(Path(c.key_file), "OPC UA private key") or "")
    problems.append(_port_problem(c.host, c.port) or "")
    problems = [p for p in problems if p]
    if problems:
        return failed(name, "; ".join(problems))
    security = ", ".join(c.security)
    return passed(name, f"{c.endpoint()} free, security {security}")


KIND = SinkKind(OpcuaSinkConfig, OpcuaSink, check)
