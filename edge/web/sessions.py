"""Login sessions: a random token in an HttpOnly, SameSite=Strict cookie, a CSRF token
per session, expiry after idle time and after a maximum age (checked on every request)."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from flowedge.edge.web.users import User

COOKIE = "flowedge_session"
PRE_COOKIE = "flowedge_login"  # the login form's own CSRF token (double submit)


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float = field(default=0.0)


class Sessions:
    def __init__(self, idle_s: float, max_age_s: float, clock=time.monotonic) -> None:
        self.idle_s, self.max_age_s, self.clock = idle_s, max_age_s, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, user: User) -> str:
        token, now = secrets.token_urlsafe(32), self.clock()
        with self._lock:
            self._expire(now)
            self._sessions[token] = Session(user, secrets.token_urlsafe(32), now, now)
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle time restarts), None when none."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(token)
            if session is not None:
                session.seen = now
            return session

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _expire(self, now: float) -> None:
        dead = [
            token
            for token, s in self._sessions.items()
            if now - s.seen > self.idle_s or now - s.created > self.max_age_s
        ]
        for token in dead:
            del self._sessions[token]


def same_token(given: str | None, expected: str) -> bool:
    """A CSRF token check in constant time."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())
