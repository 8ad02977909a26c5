"""The station's web page over plain HTTP: nothing without login, CSRF on every write,
evidence only from the evidence folders, cookie flags, roles, sessions that expire, the
users file's permissions, and decisions pushed to an open page as server-sent events."""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import (  # noqa: E402
    Recorder,
    decision,
    filled_history,
    put_decisions,
    sink_context,
)
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_until,
    write_images,
)
from web_fakes import USERS, Client, station_document, users_file, web_sections  # noqa: E402

from flowedge.calibration.history.review import reviews_of  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.cmd_check import check_sinks  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402
from flowedge.edge.sinks.web import WebSink, WebSinkConfig, check  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402
from flowedge.edge.web.sessions import Sessions  # noqa: E402
from flowedge.edge.web.users import User, load_users, save_user  # noqa: E402


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory):
    """A station that decided 4 images (1 OK, 3 ANOMALY) into its history, page open."""
    tmp = tmp_path_factory.mktemp("web")
    write_images(tmp / "images", 4)
    (tmp / "outside.png").write_bytes(b"\x89PNG secret")
    cfg = station_config(tmp, **web_sections(tmp))
    running = open_station(cfg)
    running.start()
    assert running.pipeline.wait(15) and all(sink.flush(10) for sink in running.sinks)
    running.tmp = tmp  # type: ignore[attr-defined]
    yield running
    stop_station(running)


def port(station) -> int:
    return station.sinks[1].server.port


def logged_in(station, user: str = "olga") -> Client:
    client = Client(port(station))
    assert client.login(user) == 303
    return client


def test_no_page_or_api_without_login(station) -> None:
    anonymous = Client(port(station))
    for path in ("/", "/static/app.js", "/static/index.html", "/evidence/0/cam1/x.png"):
        status, headers, _ = anonymous.get(path)
        assert (status, headers["Location"]) == (303, "/login"), path
    for path in (
        "/api/snapshot",
        "/api/status",
        "/api/queue",
        "/api/refit",
        "/api/search?part_id=img_0001.png",
        "/api/events",
    ):
        assert anonymous.get(path)[0] == 401, path
    for path in ("/api/review", "/api/apply", "/logout"):
        assert anonymous.post(path, {"threshold": 9.0}, csrf="guess")[0] == 401, path
    assert anonymous.get("/login")[0] == 200  # the form itself (and its style sheet)
    assert anonymous.get("/static/app.css")[0] == 200
    assert logged_in(station).get("/static/nothing.js")[0] == 404
    assert Client(port(station)).login("olga", "wrong password") == 401


def test_the_session_cookie_is_httponly_samesite_strict_and_ends_at_logout(station) -> None:
    client = logged_in(station)
    cookie = next(c for c in client.login_cookies if c.startswith("flowedge_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert client.get("/api/snapshot")[0] == 200
    assert client.post("/logout", {})[0] == 200
    assert client.get("/api/snapshot")[0] == 401


def test_every_write_needs_the_sessions_csrf_token(station) -> None:
    client, other = logged_in(station), logged_in(station)
    body = {"source": "cam1", "seq": 2, "verdict": "false_alarm"}
    assert client.post("/api/review", body, csrf="")[0] == 403
    assert client.post("/api/review", body, csrf=other.csrf)[0] == 403  # another session's
    assert client.post("/api/apply", {"threshold": 9.0}, csrf="forged")[0] == 403
    assert reviews_of(station.tmp / "history", "cam1", 2) == []
    forged = Client(port(station))  # a login form posted from elsewhere (no form token)
    status, _, _ = forged.request(
        "POST",
        "/login",
        b"user=olga&password=correct+horse&csrf=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 401 and "flowedge_session" not in forged.cookies


def test_evidence_is_served_only_from_the_evidence_folders(station) -> None:
    client = logged_in(station)
    latest = client.json("/api/snapshot")["latest"]["cam1"]
    status, headers, body = client.get(latest["overlay"])
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"
    link = station.tmp / "heatmaps" / "cam1" / "link.png"
    link.symlink_to(station.tmp / "outside.png")
    for path in (
        "/evidence/0/../outside.png",
        "/evidence/0/%2e%2e/outside.png",
        "/evidence/0/..%2Foutside.png",
        "/evidence/0/cam1/link.png",  # a link out of the folder
        f"/evidence/0/{station.tmp / 'outside.png'}",
        "/evidence/9/cam1/x.png",
        "/evidence/-1/x.png",
    ):
        status, _, body = client.get(path)
        assert status == 404 and b"secret" not in body, path


def test_an_operator_reviews_but_only_an_engineer_applies_the_refit(station) -> None:
    operator, engineer = logged_in(station, "olga"), logged_in(station, "ernst")
    queue = operator.json("/api/queue")
    assert {(r["seq"], r["decision"]) for r in queue} == {
        (1, "OK"),
        (2, "ANOMALY"),
        (3, "ANOMALY"),
        (4, "ANOMALY"),
    }
    wrong = operator.post("/api/review", {"source": "cam1", "seq": 1, "verdict": "false_alarm"})
    assert wrong[0] == 400 and "use missed_defect or confirmed_normal" in wrong[1]["error"]
    status, done = operator.post(
        "/api/review", {"source": "cam1", "seq": 2, "verdict": "false_alarm"}
    )
    assert status == 200 and reviews_of(station.tmp / "history", "cam1", 2)[0].reviewer == "olga"
    refit = operator.json("/api/refit")
    before = station.status_fields()["threshold"]
    assert refit["before"] == before and refit["after"] > before
    assert any("reviewed normal" in line for line in refit["lines"])
    status, refused = operator.post("/api/apply", {"threshold": refit["after"]})
    assert status == 403 and "olga" in refused["error"]
    assert station.status_fields()["threshold"] == before
    assert engineer.post("/api/apply", {"threshold": refit["after"] + 1})[0] == 409  # not shown
    status, applied = engineer.post("/api/apply", {"threshold": refit["after"]})
    assert status == 200 and station.status_fields()["threshold"] == refit["after"]
    assert station.sinks[0].flush(10)
    with HistoryDB(station.tmp / "history") as db:
        events = [json.loads(row[0]) for row in db.rows("SELECT document FROM events")]
    origins = {(e["kind"], e["details"].get("origin")) for e in events}
    assert ("command_refused", "web user olga (operator)") in origins
    assert ("command", "web user ernst (engineer)") in origins


def test_the_queue_mixes_in_oks_only_when_asked(station) -> None:
    app = replace(station.sinks[1].site.app, ok_sample=0)
    assert {r["decision"] for r in app.queue()} == {"ANOMALY"}


def test_history_search_by_part_id_and_the_sinks_health(station) -> None:
    sinks = logged_in(station).json("/api/status")["sinks"]
    assert sinks["history"]["health"].startswith("history ") and sinks["web"]["backlog"] >= 0
    rows = logged_in(station).json("/api/search?part_id=img_0002.png")
    assert [(r["seq"], r["decision"]) for r in rows] == [(3, "ANOMALY")]
    assert rows[0]["input"].startswith("/evidence/")
    assert logged_in(station).get("/api/search?since=yesterday")[0] == 400


def test_sessions_expire_when_idle_and_when_old() -> None:
    now = [0.0]
    sessions = Sessions(idle_s=60, max_age_s=300, clock=lambda: now[0])
    user = User("olga", "operator", "x")
    token = sessions.open(user)
    now[0] = 59
    assert sessions.get(token) is not None
    now[0] = 120  # idle 61 s
    assert sessions.get(token) is None
    token = sessions.open(user)
    for step in range(1, 8):  # every 50 s, up to 350 s
        now[0] = 120 + step * 50
        alive = sessions.get(token)
    assert alive is None  # 300 s after opening, however busy


def test_the_users_file_is_private_and_its_passwords_hashed(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    assert (path.stat().st_mode & 0o777) == 0o600
    text = path.read_text()
    assert "correct horse" not in text and text.count("scrypt$") == len(USERS)
    assert {u.role for u in load_users(path).values()} == set(USERS.values())
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_users(path)
    with pytest.raises(ConfigError, match="chmod 600"):
        save_user(path, "new", "admin", "long enough")
    cfg = WebSinkConfig(users=path)
    assert not check(cfg, "plant", "line1", 1.0).ok
    path.chmod(0o600)
    assert check(cfg, "plant", "line1", 1.0).ok
    with pytest.raises(ConfigError, match="role"):
        save_user(path, "x", "root", "long enough")


def test_the_config_knows_the_web_sink(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "site": "plant",
            "station": "line1",
            "model": {"path": "m"},
            "sources": [{"name": "cam1", "kind": "folder", "path": "x"}],
            "mqtt": {"enabled": False},
            "sinks": [{"kind": "web", "users": "u.json"}],
        }
    )
    web = cfg.sinks[0]
    assert (web.host, web.port, web.secure_cookie) == ("127.0.0.1", 8080, False)
    result = check_sinks(cfg, 1.0)[-1]  # flowedge check: the users file is missing
    assert result.name == "web web" and not result.ok and "u.json" in result.detail
    with pytest.raises(ConfigError, match="tls_key"):
        parse_config(
            {
                "site": "plant",
                "station": "line1",
                "model": {"path": "m"},
                "sources": [{"name": "cam1", "kind": "folder", "path": "x"}],
                "sinks": [{"kind": "web", "users": "u.json", "tls_cert": "c.pem"}],
            }
        )


def test_an_open_page_gets_each_decision_pushed_once(tmp_path: Path) -> None:
    """The feed on a bare spool: an SSE stream gets decisions as they are stored; a record
    delivered again (a restart) is not shown twice; the spool's cursor moves."""
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    context = sink_context(spool, Recorder(), lambda: {"threshold": 3.0}, station_config(tmp_path))
    sink = WebSink(WebSinkConfig(port=0, users=users_file(tmp_path)), context)
    sink.start()
    try:
        client = Client(sink.server.port)
        assert client.login("olga") == 303
        stream = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
        stream.request(
            "GET",
            "/api/events",
            headers={"Cookie": f"flowedge_session={client.cookies['flowedge_session']}"},
        )
        response = stream.getresponse()
        assert response.headers["Content-Type"] == "text/event-stream"
        put_decisions(spool, [decision(0, 5.0), decision(0, 1.0)])
        seen: list[dict] = []
        while len(seen) < 2:
            line = response.fp.readline().decode()
            if line.startswith("data: ") and '"seq"' in line:
                seen += json.loads(line[6:])
        assert [(d["seq"], d["decision"]) for d in seen] == [(1, "ANOMALY"), (2, "OK")]
        assert sink.flush(5) and spool.backlog("web") == 0
        assert sink.live.decision(decision(1, 5.0)) is None  # delivered again
        assert sink.live.snapshot()["latest"]["cam1"]["seq"] == 2
        assert sink.live.snapshot()["shift"]["ANOMALY"] == 1
        stream.close()
    finally:
        sink.stop("test over", 1.0)
        spool.close()


def test_the_page_loses_nothing_across_a_station_sigkill(tmp_path: Path) -> None:
    """``flowedge run`` is SIGKILLed while its page is fed; after the restart the web sink
    takes what it had not acknowledged, and its cursor reaches the end of the spool."""
    import signal

    from mqtt_broker import free_port
    from runtime_fakes import write_onnx_model
    from web_browser import start_station, stop

    write_images(tmp_path / "images", 8)
    sections = web_sections(tmp_path, shift=-3.0, port=free_port())
    sections["model"].update(path=str(write_onnx_model(tmp_path / "model.onnx")))
    sections["model"]["backend"] = "onnxruntime"
    source = {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images")}
    config = station_document(tmp_path, [{**source, "loop": True, "rate_hz": 50}], **sections)
    port = sections["sinks"][1]["port"]
    station = start_station(config, tmp_path)
    try:
        client = Client(port)
        wait_until(lambda: _logs_in(client), 60, "the page")
        wait_until(
            lambda: client.json("/api/snapshot")["latest"].get("cam1", {}).get("seq", 0) >= 5,
            60,
            "decisions on the page",
        )
        station.send_signal(signal.SIGKILL)
        station.wait(10)
    finally:
        stop(station)
    spool = Spool(tmp_path / "spool.sqlite", 100_000)
    before = spool.cursor("web")
    # The spool deletes what every sink has, so it may be empty: then the cursor is the newest.
    decided = max((r.id for r in spool.after(0, 100_000)), default=before)
    spool.close()
    assert 0 < before <= decided
    config["sources"] = [source]  # the 8 images once more, then the run ends
    rerun = start_station(config, tmp_path)
    assert rerun.wait(60) == 0, (tmp_path / "station.log").read_text()[-2000:]
    spool = Spool(tmp_path / "spool.sqlite", 100_000)
    assert spool.backlog("web") == 0 and spool.cursor("web") > decided
    spool.close()


def _logs_in(client: Client) -> bool:
    try:
        return client.login("olga") == 303
    except OSError:
        return False


def web_sink(tmp_path: Path, spool: Spool, **cfg: object) -> WebSink:
    """A web sink on a bare spool, beside a history at ``tmp_path/history``."""
    history = {"kind": "history", "name": "history", "path": str(tmp_path / "history")}
    context = sink_context(
        spool, Recorder(), lambda: {"threshold": 3.0}, station_config(tmp_path, sinks=[history])
    )
    return WebSink(WebSinkConfig(**{"port": 0, "users": users_file(tmp_path), **cfg}), context)


def test_the_trend_and_counters_come_back_from_the_history_after_a_restart(
    tmp_path: Path,
) -> None:
    filled_history(tmp_path / "history", [decision(1, 5.0), decision(2, 1.0)]).close()
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    sink = web_sink(tmp_path, spool)
    sink.start()
    try:
        shown = sink.live.snapshot()
        assert [point[3] for point in shown["trend"]["cam1"]] == ["ANOMALY", "OK"]
        assert shown["latest"]["cam1"]["seq"] == 2
        assert (shown["shift"]["OK"], shown["shift"]["ANOMALY"]) == (1, 1)
    finally:
        sink.stop("test over", 1.0)
        spool.close()


def test_https_directly_marks_the_cookie_secure(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl missing: no certificate to test TLS with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    sink = web_sink(tmp_path, spool, tls_cert=cert, tls_key=key)
    sink.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        connection = http.client.HTTPSConnection(
            "127.0.0.1", sink.server.port, context=context, timeout=10
        )
        connection.request("GET", "/login")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert "Secure" in response.headers["Set-Cookie"]
        with pytest.raises(ConfigError, match="cannot listen"):  # the port is taken
            web_sink(tmp_path, spool, port=sink.server.port, host="127.0.0.1")
    finally:
        sink.stop("test over", 1.0)
        spool.close()


def test_repeated_failed_logins_lock_the_name_and_raise_an_event(tmp_path: Path) -> None:
    """Five wrong passwords for one name lock it (the right one too, 429 with the wait);
    the lock is an event; another name is unaffected."""
    spool, emitted = Spool(tmp_path / "spool.sqlite", 1000), Recorder()
    context = sink_context(spool, emitted, lambda: {"threshold": 3.0}, station_config(tmp_path))
    sink = WebSink(WebSinkConfig(port=0, users=users_file(tmp_path)), context)
    sink.start()
    try:
        client = Client(sink.server.port)
        assert [client.login("olga", f"guess {i}") for i in range(5)] == [401] * 5
        assert client.login("olga") == 429
        assert client.login("ernst") == 303
    finally:
        sink.stop("test over", 1.0)
        spool.close()
    locked = [(m, d) for kind, m, d in emitted.events if kind == "login_locked"]
    assert len(locked) == 1 and locked[0][1]["user"] == "olga" and "'olga'" in locked[0][0]


def test_with_recipes_the_refit_and_its_apply_name_the_recipe(tmp_path: Path) -> None:
    """A recipe station: the preview is per recipe (its model's reviews, calibration and
    threshold in force), and apply sets that recipe's threshold, never a guessed one."""
    from web_fakes import calibration_file

    from flowedge.calibration.history.review import review
    from flowedge.edge.commands import CommandsConfig, Reply, StationCommands
    from flowedge.edge.web.app import Refused, WebApp

    history = tmp_path / "history"
    filled_history(
        history, [decision(seq, 2.0 + seq / 10, 1.49, recipe="A") for seq in (1, 2, 3)]
    ).close()
    for seq in (1, 2, 3):
        review(history, "false_alarm", by="olga", source="cam1", seq=seq)
    calibrations = {"A": calibration_file(tmp_path / "a.json"), "B": None}
    status = {"recipes": {"A": {"threshold": 1.49}, "B": {"threshold": 3.0}}}
    applied: list[dict] = []
    commands = StationCommands(CommandsConfig(allowed=["set_threshold"]), Recorder())
    commands.handle("set_threshold", lambda args, origin: applied.append(args) or Reply("set"))
    app = WebApp(history, calibrations.get, lambda: status, commands, Recorder(), lambda p: None)
    unnamed = app.refit()
    assert unnamed["after"] is None and unnamed["recipes"] == ["A", "B"]
    assert "choose the recipe whose threshold to re-fit (in use: A, B)" in unnamed["reason"]
    assert app.refit("B")["after"] is None and "calibration file" in app.refit("B")["reason"]
    a = app.refit("A")
    assert a["recipe"] == "A" and a["before"] == 1.49 and a["after"] > 2.0
    engineer = User("ernst", "engineer", "")
    with pytest.raises(Refused, match="the re-fit now gives None"):
        app.apply(engineer, {"threshold": a["after"]})  # which recipe's? never guessed
    done = app.apply(engineer, {"threshold": a["after"], "recipe": "A"})
    assert done["recipe"] == "A" and applied == [{"value": a["after"], "recipe": "A"}]


def test_sound_and_robot_cycle_decisions_show_with_their_pictures(tmp_path: Path) -> None:
    """The page takes every modality's decision the same way: a microphone's motion and a
    robot's cycle appear live, each with its spectrogram or cycle plot served as evidence."""
    import cv2
    import numpy as np

    pictures = tmp_path / "heatmaps"
    for name in ("mic1", "robot1"):
        (pictures / name).mkdir(parents=True)
        cv2.imwrite(str(pictures / name / "1.png"), np.zeros((8, 8, 3), np.uint8))
    event = {"label": "unfold", "start_utc": "2026-12-01T10:00:00.000Z", "start_s": 3.2}
    cycle = {"id": "c17", "first_row": 1700, "rows": 100, "start_s": 0.0, "end_s": 1.0}
    cycle |= {"top_signals": [{"signal": "torque_1", "map_sum": 4.0}], "top_time_ranges": []}
    docs = [
        decision(1, 5.0, source="mic1", modality="audio", event=event, part_id="motion-1"),
        decision(1, 1.0, source="robot1", modality="series", cycle=cycle, part_id="c17"),
    ]
    for doc in docs:
        doc["heatmap"] = str(pictures / doc["sensor"] / "1.png")
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    context = sink_context(spool, Recorder(), lambda: {"threshold": 3.0}, station_config(tmp_path))
    sink = WebSink(WebSinkConfig(port=0, users=users_file(tmp_path)), context)
    sink.start()
    try:
        put_decisions(spool, docs)
        assert sink.flush(10)
        client = Client(sink.server.port)
        assert client.login("olga") == 303
        latest = client.json("/api/snapshot")["latest"]
        assert (latest["mic1"]["decision"], latest["robot1"]["decision"]) == ("ANOMALY", "OK")
        assert latest["mic1"]["detail"] == "motion unfold"
        assert latest["robot1"]["detail"] == "cycle c17 · driven by torque_1"
        for source in ("mic1", "robot1"):
            status, headers, body = client.get(latest[source]["overlay"])
            assert (status, headers["Content-Type"], body[:4]) == (200, "image/png", b"\x89PNG")
    finally:
        sink.stop("test over", 1.0)
        spool.close()
