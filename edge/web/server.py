"""The HTTP side of the page: login, sessions, CSRF, static files, evidence, the JSON API
and the server-sent event stream. Standard library only (``http.server``), one thread
per connection; TLS when a certificate is configured.

Every route but the login form needs a live session; every POST needs the session's
CSRF token (``X-CSRF-Token``; the login form: its double-submitted cookie). Evidence is
served only from the station's evidence folders (:mod:`.evidence`).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flowedge.core.errors import FlowedgeError
from flowedge.edge.passwords import FailedLogins, hash_password, verify_password
from flowedge.edge.web.app import Refused, WebApp
from flowedge.edge.web.evidence import IMAGES, Evidence
from flowedge.edge.web.live import Live
from flowedge.edge.web.sessions import COOKIE, PRE_COOKIE, Session, Sessions, same_token
from flowedge.edge.web.users import User

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
PUBLIC_STYLE = "/static/app.css"
ASSETS = ("app.js", "app.css")  # the pages themselves are served as / and /login
UNKNOWN_USER = hash_password(secrets.token_urlsafe(16))  # checked for a name not in the file
KEEPALIVE_S = 15.0
FAILED_LOGIN_DELAY_S = 0.5
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static(name: str) -> bytes:
    return resources.files("flowedge.edge.web").joinpath("static", name).read_bytes()


@dataclass
class Site:
    """Everything a request handler needs."""

    app: WebApp
    live: Live
    sessions: Sessions
    users: Callable[[], dict[str, User]]
    evidence: Evidence
    secure: bool  # the cookie's Secure flag (TLS here or at the proxy)
    logins: FailedLogins = field(default_factory=FailedLogins)


Cookies = tuple[tuple[str, str, int | None], ...]  # (name, value, max-age or None)


class Handler(BaseHTTPRequestHandler):
    site: Site  # set on the subclass the server makes
    server_version = "flowedge"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("web %s: " + format, self.client_address[0], *args)

    # --- plumbing ----------------------------------------------------------------------
    def _cookies(self) -> SimpleCookie:
        try:
            return SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return SimpleCookie()

    def _cookie(self, name: str) -> str | None:
        morsel = self._cookies().get(name)
        return None if morsel is None else morsel.value

    def _set_cookie(self, name: str, value: str, max_age: int | None = None) -> None:
        flags = "; HttpOnly; SameSite=Strict; Path=/"
        if max_age is not None:
            flags += f"; Max-Age={max_age}"
        if self.site.secure:
            flags += "; Secure"
        self.send_header("Set-Cookie", f"{name}={value}{flags}")

    def _send(
        self,
        status: int,
        body: bytes,
        kind: str,
        cookies: Cookies = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for header, value in HEADERS.items():
            self.send_header(header, value)
        for name, value, max_age in cookies:
            self._set_cookie(name, value, max_age)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, allow_nan=False).encode(), "application/json")

    def _redirect(self, where: str, cookies: Cookies = ()) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        for name, value, max_age in cookies:
            self._set_cookie(name, value, max_age)
        self.end_headers()

    def _session(self) -> Session | None:
        return self.site.sessions.get(self._cookie(COOKIE))

    def _body(self) -> bytes:
        given = self.headers.get("Content-Length") or "0"
        if not given.isdigit():
            raise Refused(400, "Content-Length must be a number")
        if int(given) > MAX_BODY:
            raise Refused(413, f"request body over {MAX_BODY} bytes")
        return self.rfile.read(int(given))

    # --- routes ------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/login":
            return self._login_form()
        if url.path == PUBLIC_STYLE:  # the login form's look; nothing about the station
            return self._send(200, static("app.css"), TYPES[".css"])
        session = self._session()
        if session is None:
            if url.path.startswith("/api/"):
                return self._json(401, {"error": "log in first"})
            return self._redirect("/login")
        self._answer(lambda: self._get(url.path, parse_qs(url.query), session))

    def _answer(self, handle: Callable[[], None]) -> None:
        """Run a route; what goes wrong is an answer (and a log line), never a dead thread."""
        try:
            handle()
        except Refused as exc:
            self._json(exc.status, {"error": str(exc)})
        except FlowedgeError as exc:  # the history missing or unreadable, say
            self._json(409, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # a bug: keep the traceback, answer the page
            log.exception("web: %s %s failed", self.command, self.path)
            self._json(500, {"error": "internal error (see the station's log)"})

    def _get(self, path: str, query: dict[str, list[str]], session: Session) -> None:
        app, user = self.site.app, session.user
        if path == "/":
            page = static("index.html").replace(b"{{csrf}}", session.csrf.encode())
            page = page.replace(b"{{user}}", _html(f"{user.name} ({user.role})"))
            return self._send(200, page, TYPES[".html"])
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in ASSETS:
                return self._json(404, {"error": "no such file"})
            return self._send(200, static(name), TYPES[Path(name).suffix])
        if path.startswith("/evidence/"):
            return self._evidence(path)
        if path == "/api/events":
            return self._stream()
        answers: dict[str, Callable[[], Any]] = {
            "/api/snapshot": lambda: {
                **self.site.live.snapshot(),
                "user": {"name": user.name, "role": user.role, "may_apply": user.may_apply},
            },
            "/api/status": self.site.app.status,
            "/api/queue": app.queue,
            "/api/refit": lambda: app.refit(query.get("recipe", [None])[-1] or None),
            "/api/search": lambda: app.search({k: v[-1] for k, v in query.items()}),
        }
        if path not in answers:
            return self._json(404, {"error": f"no such page {path}"})
        self._json(200, answers[path]())

    def do_POST(self) -> None:
        self._answer(self._post)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path == "/login":
            return self._login()
        session = self._session()
        if session is None:
            return self._json(401, {"error": "log in first"})
        if not same_token(self.headers.get("X-CSRF-Token"), session.csrf):
            log.warning("web: POST %s by %s without a valid CSRF token", path, session.user.name)
            return self._json(403, {"error": "missing or wrong CSRF token: reload the page"})
        if path == "/logout":
            self.site.sessions.close(self._cookie(COOKIE))
            return self._json(200, {"ok": True})
        actions = {"/api/review": self.site.app.mark, "/api/apply": self.site.app.apply}
        if path not in actions:
            return self._json(404, {"error": f"no such action {path}"})
        try:
            body = json.loads(self._body() or b"{}")
        except ValueError as exc:
            raise Refused(400, f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Refused(400, "send a JSON object")
        self._json(200, actions[path](session.user, body))

    # --- login -------------------------------------------------------------------------
    def _login_form(self, error: str = "", status: int = 401) -> None:
        # one token per browser: a second form (another tab, a redirect) keeps the first valid
        token = self._cookie(PRE_COOKIE) or secrets.token_urlsafe(24)
        page = static("login.html").replace(b"{{csrf}}", token.encode())
        page = page.replace(b"{{error}}", _html(error))
        self._send(200 if not error else status, page, TYPES[".html"], ((PRE_COOKIE, token, 600),))

    def _login(self) -> None:
        form = {k: v[-1] for k, v in parse_qs(self._body().decode(errors="replace")).items()}
        if not same_token(form.get("csrf"), self._cookie(PRE_COOKIE) or "\0"):
            return self._login_form("the login form expired: try again")
        name, password = form.get("user", ""), form.get("password", "")
        address, logins = self.client_address[0], self.site.logins
        locked_s = logins.locked_for(name)
        if locked_s:
            log.warning("web: login for %r from %s refused: the name is locked", name[:64], address)
            why = f"too many failed logins for this user: try again in {math.ceil(locked_s)} s"
            return self._login_form(why, 429)
        user = self.site.users().get(name)
        stored = UNKNOWN_USER if user is None else user.password  # the same work either way
        if not verify_password(stored, password) or user is None:
            log.warning("web: failed login for %r from %s", name[:64], address)
            if logins.failed(name):
                self.site.app.emit(
                    None,
                    "login_locked",
                    f"web page: user name {name[:64]!r} locked for {logins.window_s:g} s after "
                    f"{logins.limit} failed logins (the last from {address}); someone may be "
                    "guessing passwords",
                    user=name[:64],
                    origin=address,
                )
            time.sleep(FAILED_LOGIN_DELAY_S)
            return self._login_form("wrong user name or password")
        logins.succeeded(name)
        token = self.site.sessions.open(user)
        log.info("web: %s (%s) logged in from %s", user.name, user.role, self.client_address[0])
        self._redirect("/", ((COOKIE, token, None), (PRE_COOKIE, "", 0)))

    # --- files and streams -------------------------------------------------------------
    def _evidence(self, path: str) -> None:
        _, _, index, relative = path.split("/", 3) if path.count("/") >= 3 else ("", "", "", "")
        file = self.site.evidence.file(index, unquote(relative))
        if file is None:
            log.warning("web: evidence %s refused (outside the evidence folders or no image)", path)
            return self._json(404, {"error": "no such evidence"})
        self._send(200, file.read_bytes(), IMAGES[file.suffix.lower()])

    def _stream(self) -> None:
        """Server-sent events until the page goes or the station stops."""
        live = self.site.live
        stream = live.subscribe()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for header, value in HEADERS.items():
            self.send_header(header, value)
        self.end_headers()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            while True:
                try:
                    message = stream.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    message = b": keepalive\n\n"
                if message is None:
                    return
                self.wfile.write(message)
                self.wfile.flush()
        except OSError:
            return
        finally:
            live.unsubscribe(stream)


def _html(text: str) -> bytes:
    return escape(text).encode()


class Server:
    """The listening server on its own thread."""

    def __init__(self, site: Site, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        handler = type("SiteHandler", (Handler,), {"site": site})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
