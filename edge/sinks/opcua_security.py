"""Who may connect to the station's OPC UA server, and what they may do.

- The station's application certificate and key: generated on first start when absent
  (RSA 2048, self-signed, one year, the application URI and host name in the subject
  alternative names); the key file is written 0600 and refused when others may read it.
- Users: a password user from the users file (:mod:`opcua_users`), or a client that signs
  in with a certificate listed in ``certificate_users``; anonymous only when configured,
  and then read-only. With ``trusted_clients``, only the client application certificates
  in that folder may open a session at all.
- Roles: ``read`` users browse, read and subscribe; only ``write`` users may write, and
  only the handshake nodes are writable at all.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from flowedge.core.errors import ConfigError
from flowedge.edge.passwords import FailedLogins, verify_password
from flowedge.edge.sinks.opcua_users import UserEntry, private_file_problem

log = logging.getLogger(__name__)

WRITE_REQUEST = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
CERT_DAYS = 365


def ensure_certificate(cert_file: Path, key_file: Path, app_uri: str) -> bool:
    """Generate the station's certificate and key when the key is absent; True if generated.
    A key that is there but open to group or others is refused (ConfigError)."""
    if key_file.exists():
        problem = private_file_problem(key_file, "OPC UA private key")
        if problem:
            raise ConfigError(problem)
        if not cert_file.exists():
            raise ConfigError(
                f"OPC UA certificate {cert_file} is missing beside its key {key_file}; "
                "restore it, or remove the key to have a new pair generated"
            )
        return False
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    host = socket.gethostname()
    cert = generate_self_signed_app_certificate(
        key,
        app_uri,
        {"commonName": f"flowedge {host}", "organizationName": "flowedge"},
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=CERT_DAYS,
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(dump_private_key_as_pem(key))
    cert_file.write_bytes(cert.public_bytes(Encoding.DER))
    log.info(
        "OPC UA: generated the station certificate %s (valid until %s) and key %s",
        cert_file,
        (datetime.datetime.now(datetime.UTC) + datetime.timedelta(CERT_DAYS)).date(),
        key_file,
    )
    return True


def certificate_der(path: Path) -> bytes:
    """A client certificate file (DER or PEM) as DER, what the server compares."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


class StationUsers:
    """asyncua's user manager: password users, certificate users, optional anonymous."""

    def __init__(
        self,
        passwords: dict[str, UserEntry],
        certificates: dict[bytes, tuple[str, str]],  # DER -> (name, role)
        anonymous: bool,
        on_locked: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.passwords, self.certificates, self.anonymous = passwords, certificates, anonymous
        self.logins, self.on_locked = FailedLogins(), on_locked
        self.writers: set[str] = {n for n, e in passwords.items() if e.role == "write"}
        self.writers |= {name for name, role in certificates.values() if role == "write"}

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:
            if self.logins.locked_for(username):
                log.warning("OPC UA: login of user %r refused: the name is locked", username)
                return None
            entry = self.passwords.get(username)
            if entry is not None and verify_password(entry.hashed, password or ""):
                self.logins.succeeded(username)
                return User(role=UserRole.User, name=f"user:{username}")
            log.warning(
                "OPC UA: login of user %r refused (unknown user or wrong password)", username
            )
            if self.logins.failed(username):
                self.on_locked(username)
            return None
        if certificate is not None and certificate in self.certificates:
            name, _ = self.certificates[certificate]
            return User(role=UserRole.User, name=f"cert:{name}")
        if self.anonymous:  # asyncua passes the client's application certificate here too
            return User(role=UserRole.User, name="anonymous")
        log.warning("OPC UA: a session without a known user or certificate was refused")
        return None

    def may_write(self, user: User | None) -> bool:
        if user is None or user.name is None:
            return False
        kind, _, name = user.name.partition(":")
        return kind in ("user", "cert") and name in self.writers


class WriteRoles(SimpleRoleRuleset):
    """asyncua's per-request check, plus: a Write request only from a user with the write role."""

    def __init__(self, users: StationUsers) -> None:
        super().__init__()
        self.users = users

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        if action_type_id == WRITE_REQUEST and not self.users.may_write(user):
            log.warning("OPC UA: write by %s refused (read-only role)", getattr(user, "name", None))
            return False
        return super().check_validity(user, action_type_id, body)


def load_certificate_users(entries: list[Any]) -> dict[bytes, tuple[str, str]]:
    """``certificate_users`` of the config, read (ConfigError naming the file if it cannot be)."""
    users: dict[bytes, tuple[str, str]] = {}
    for entry in entries:
        try:
            users[certificate_der(Path(entry.cert_file))] = (entry.name, entry.role)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"OPC UA certificate user {entry.name}: {entry.cert_file} is not a readable "
                f"certificate ({exc}); give its DER or PEM file"
            ) from None
    return users


class TrustedClients:
    """asyncua's certificate validator: only client application certificates found in the
    ``trusted_clients`` folder (DER or PEM files) may open a session."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ConfigError(
                f"OPC UA trusted_clients {folder} is not a folder; create it and put the "
                "PLCs' application certificates (DER or PEM) in it"
            )
        self.folder = folder
        self.trusted: set[bytes] = set()
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            try:
                self.trusted.add(certificate_der(path))
            except ValueError:
                log.warning("OPC UA: %s in trusted_clients is not a certificate", path)

    async def __call__(self, cert: x509.Certificate, description: Any) -> None:
        if cert.public_bytes(Encoding.DER) in self.trusted:
            return
        thumbprint = cert.fingerprint(hashes.SHA1()).hex()
        log.warning(
            "OPC UA: client %s (certificate %s, SHA-1 %s) is not trusted; to allow it, copy "
            "its certificate into %s and restart",
            getattr(description, "ApplicationUri", "?"),
            cert.subject.rfc4514_string(),
            thumbprint,
            self.folder,
        )
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
