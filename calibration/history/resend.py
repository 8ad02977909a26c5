"""A historian's request to send a range of a sensor's decisions again: signed and checked.

The fleet historian (``flowedge historian``) finds a gap in a sensor's sequence (decisions
a broker acknowledged and then lost) and asks the station for that range; the station
answers from its history (:func:`flowedge.calibration.history.query.documents`). Both
sides share a secret of at least 32 bytes, read from an environment variable or from a
file only its owner may read. The historian signs each request with HMAC-SHA256 over its
fields; the station accepts it only when the signature matches, when it names this
station and the configured historian, when it is recent (``max_age_s``) and when its
nonce was not seen within that time. So a request cannot be forged without the secret,
altered, redirected to another station nor replayed; and an accepted one only publishes
again decisions that were published already. Both the station (``edge/``) and the
historian (``flowedge/historian``) import this module, which imports no station code.

The wire format: a JSON object with the fields of :class:`ResendRequest`, ``schema``
(``flowedge.resend/1``) and ``mac``, the hex HMAC-SHA256 of the other fields as canonical
JSON (sorted keys, no spaces, ASCII). Times are integer milliseconds (no float formatting
to disagree on).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowedge.core.errors import ConfigError

SCHEMA = "flowedge.resend/1"
MIN_SECRET_BYTES = 32
MAX_REQUEST_BYTES = 4096  # a request is a few hundred bytes; more is not a request
FIELDS = ("schema", "historian", "site", "station", "sensor", "first", "last", "utc_ms", "nonce")
_HEX_MAC = re.compile(r"^[0-9a-f]{64}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
SECRET_HINT = "e.g. the output of 'openssl rand -hex 32', the same on the station and the historian"


def read_secret(env: str, file: Path | None, key: str) -> bytes:
    """The shared secret: the file when one is given (a regular file only its owner may read
    or write), else the environment variable ``env``. ConfigError naming ``key`` otherwise."""
    if file is None:
        secret = os.environ.get(env, "").strip().encode()
        if not secret:
            raise ConfigError(
                f"{key}: the environment variable {env} with the historian's shared secret is "
                f"empty or unset; set it ({SECRET_HINT}) or give {key}.secret_file"
            )
        where = f"${env}"
    else:
        secret = read_private(file, f"{key}.secret_file").strip()
        where = str(file)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{key}: the shared secret in {where} has {len(secret)} bytes; use at least "
            f"{MIN_SECRET_BYTES} ({SECRET_HINT})"
        )
    return secret


def read_private(file: Path, key: str) -> bytes:
    """The bytes of ``file``, a regular file only its owner may read or write (a secret, a
    password file); ConfigError naming ``key`` otherwise."""
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{key} {file} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{key} {file} may be read or written by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 {file}"
            )
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {file} ({exc.strerror}); check the path and "
            "that the service user owns it"
        ) from None


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signature(fields: dict[str, Any], secret: bytes) -> str:
    return hmac.new(secret, canonical(fields), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ResendRequest:
    """Send ``sensor``'s decisions ``first``..``last`` of ``site``/``station`` again."""

    historian: str  # who asks: the station accepts only its configured historian
    site: str
    station: str
    sensor: str
    first: int
    last: int
    utc_ms: int  # when it was signed (against replays after max_age_s)
    nonce: str  # 32 hex digits, once per request (against replays before)

    @classmethod
    def new(
        cls, historian: str, site: str, station: str, sensor: str, first: int, last: int
    ) -> ResendRequest:
        return cls(
            historian,
            site,
            station,
            sensor,
            first,
            last,
            int(time.time() * 1000),
            secrets.token_hex(16),
        )

    def fields(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    def signed(self, secret: bytes) -> bytes:
        """The message to publish on the station's command topic."""
        fields = self.fields()
        return canonical({**fields, "mac": signature(fields, secret)})


class RequestChecker:
    """The station's side: which requests to accept, remembering nonces while they are fresh."""

    def __init__(
        self,
        secret: bytes,
        historian: str,
        site: str,
        station: str,
        max_age_s: float = 300.0,
        max_documents: int = 1000,
    ) -> None:
        self.secret, self.historian = secret, historian
        self.site, self.station = site, station
        self.max_age_ms, self.max_documents = int(max_age_s * 1000), max_documents
        self._seen: dict[str, int] = {}  # nonce -> when it may be forgotten (ms)

    def check(self, doc: Any, now_ms: int | None = None) -> ResendRequest:
        """The request ``doc`` carries if it may be answered; ValueError saying why not."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if not isinstance(doc, dict):
            raise ValueError(f"a request must be a JSON object, got {type(doc).__name__}")
        keys = set(doc) - {"mac"}
        if keys != set(FIELDS):
            missing, extra = sorted(set(FIELDS) - keys), sorted(keys - set(FIELDS))
            raise ValueError(
                f"request fields: missing {missing or 'none'}, unknown {extra or 'none'}"
            )
        mac = doc.get("mac")
        if not isinstance(mac, str) or not _HEX_MAC.match(mac):
            raise ValueError("the request carries no signature (mac: 64 hex digits)")
        fields = {key: doc[key] for key in FIELDS}
        if not hmac.compare_digest(mac, signature(fields, self.secret)):
            raise ValueError(
                "the signature does not match: not signed with this station's shared secret "
                "(forged or altered, or the station and the historian have different secrets)"
            )
        request = self._parsed(fields)
        self._fresh(request, now_ms)
        return request

    def _parsed(self, fields: dict[str, Any]) -> ResendRequest:
        if fields["schema"] != SCHEMA:
            raise ValueError(f"schema {fields['schema']!r}: this station reads {SCHEMA}")
        for key in ("first", "last", "utc_ms"):
            value = fields[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer (got {value!r})")
        for key in ("historian", "site", "station", "sensor", "nonce"):
            if not isinstance(fields[key], str) or not fields[key]:
                raise ValueError(f"{key} must be a non-empty string (got {fields[key]!r})")
        request = ResendRequest(**{key: fields[key] for key in FIELDS if key != "schema"})
        if request.historian != self.historian:
            raise ValueError(
                f"signed by historian {request.historian!r}; this station answers "
                f"{self.historian!r} (commands.resend.historian)"
            )
        if (request.site, request.station) != (self.site, self.station):
            raise ValueError(
                f"addressed to {request.site}/{request.station}, not to this station "
                f"{self.site}/{self.station}"
            )
        count = request.last - request.first + 1
        if count < 1 or count > self.max_documents:
            raise ValueError(
                f"range #{request.first}..#{request.last}: give first <= last and at most "
                f"{self.max_documents} decisions per request (commands.resend.max_documents)"
            )
        if not _NONCE.match(request.nonce):
            raise ValueError("nonce must be 32 hex digits")
        return request

    def _fresh(self, request: ResendRequest, now_ms: int) -> None:
        """Recent and not seen before; remembered until it is too old to be accepted anyway."""
        age_ms = now_ms - request.utc_ms
        if abs(age_ms) > self.max_age_ms:
            raise ValueError(
                f"signed {age_ms / 1000:.0f} s {'ago' if age_ms > 0 else 'in the future'}, "
                f"beyond commands.resend.max_age_s {self.max_age_ms / 1000:g}: a replay, or "
                "the two clocks differ (run NTP on the station and the historian)"
            )
        self._seen = {nonce: until for nonce, until in self._seen.items() if until > now_ms}
        if request.nonce in self._seen:
            raise ValueError(f"nonce {request.nonce} was used already: a replayed request")
        self._seen[request.nonce] = request.utc_ms + self.max_age_ms
