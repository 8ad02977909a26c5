"""Stand-ins for the web page's tests: a users file, a calibration for the fake model, a
station config with the history and web sinks, and an HTTP client that keeps its cookies."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from runtime_fakes import fake_card

from flowedge.calibration.calibfile import save_calibration
from flowedge.calibration.calibrate import CalibrationOptions, build_calibration
from flowedge.edge.web.users import save_user

PASSWORD = "correct horse"
USERS = {"olga": "operator", "ernst": "engineer"}


def users_file(folder: Path) -> Path:
    path = folder / "web-users.json"
    for name, role in USERS.items():
        save_user(path, name, role, PASSWORD)
    return path


def calibration_file(path: Path, shift: float = 0.0) -> Path:
    """The fake model's calibration: normal scores 0.5..1.5, threshold near 1.49 (the first
    of :func:`runtime_fakes.write_images` scores 1.01 with FakeBackend, the next ones 1.66,
    2.30, ...); the ONNX stand-in scores 3 less: ``shift`` -3."""
    data = build_calibration(
        np.linspace(0.5, 1.5, 200) + shift, fake_card(), CalibrationOptions(target_far=0.01)
    )
    save_calibration(data, path)
    return path


def web_sections(tmp: Path, shift: float = 0.0, **web: Any) -> dict[str, Any]:
    """Config sections of a station with a history, a web page (on a free port unless
    ``web`` says otherwise) and ``set_threshold`` allowed; ``shift``: see calibration_file."""
    calibration = calibration_file(tmp / "cal.json", shift)
    return {
        "model": {"path": str(tmp / "model"), "calibration": str(calibration)},
        "pipeline": {
            "heatmaps": "anomalies",
            "heatmap_dir": str(tmp / "heatmaps"),
            "evidence": {"inputs": "all", "dir": str(tmp / "evidence")},
        },
        "sinks": [
            {"kind": "history", "name": "history", "path": str(tmp / "history"), "min_free_mb": 0},
            {"kind": "web", "name": "web", "port": 0, "users": str(users_file(tmp)), **web},
        ],
        "commands": {"allowed": ["set_threshold"]},
    }


def station_document(tmp: Path, sources: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    """A ``flowedge run`` config as its YAML file holds it: MQTT and metrics off, the spool
    in ``tmp``, plus ``sections`` (e.g. :func:`web_sections`)."""
    return {
        "site": "plant",
        "station": "line1",
        "sources": sources,
        "mqtt": {"enabled": False},
        "metrics": {"enabled": False},
        "spool": {"path": str(tmp / "spool.sqlite")},
        **sections,
    }


class Client:
    """One browser's worth of HTTP: its cookies, the page's CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.set_cookie: list[str] = []
        self.login_cookies: list[str] = []

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        self.set_cookie = response.headers.get_all("Set-Cookie") or []
        for line in self.set_cookie:
            name, _, rest = line.partition("=")
            value = rest.split(";")[0]
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        connection.close()
        return response.status, dict(response.headers), data

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path)

    def json(self, path: str) -> Any:
        status, _, data = self.get(path)
        assert status == 200, (path, status, data)
        return json.loads(data)

    def post(self, path: str, body: dict, csrf: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        token = self.csrf if csrf is None else csrf
        if token:
            headers["X-CSRF-Token"] = token
        status, _, data = self.request("POST", path, json.dumps(body).encode(), headers)
        return status, json.loads(data)

    def login(self, user: str, password: str = PASSWORD) -> int:
        """The login form as a browser sends it; the page's CSRF token kept. Its status."""
        _, _, form = self.get("/login")
        token = re.search(rb'name="csrf" value="([^"]+)"', form).group(1).decode()
        body = urlencode({"csrf": token, "user": user, "password": password}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, _ = self.request("POST", "/login", body, headers)
        self.login_cookies = list(self.set_cookie)
        if status == 303:
            _, _, page = self.get("/")
            self.csrf = re.search(rb'name="csrf" content="([^"]+)"', page).group(1).decode()
        return status
