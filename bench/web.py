"""The station's web page: time from decision to the browser showing it, page weight, and
the station's inference throughput with the page open against without, in one run.

    .venv/bin/python bench/web.py [--window 10] [--rounds 3] [--latency-decisions 300]

One real station (:class:`Station`, the ``flowedge run`` wiring) with the ONNX stand-in model
of the tests on onnxruntime, a looping folder source of 32 px images as fast as it goes,
heatmaps of the anomalies, and the web sink; a headless Chromium (Debian's, via Selenium).
Throughput: decisions per second in windows of ``--window`` s, alternately with no page open
(the browsers on about:blank), with only the event stream read by another process (what
the station does for an open page, no browser on its cores), and with the live page open
in a Chromium at the station's priority and in one at nice 19 (decisions pushed and drawn,
overlays fetched); the ratio to closed of the summed windows, the station process's CPU
per decision and the browsers' CPU. Latency: a second station replaying at 20 Hz; for
each decision the page records ``Date.now()`` minus the decision's ``decided_utc``
(stamped before its spool commit) after drawing it (next animation frame); p50 and p99. Page weight: the bytes of the page, its script and style
sheet, and of the first snapshot and status answers. The load average is printed: the
machine is shared.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mqtt_broker import free_port  # noqa: E402
from runtime_fakes import write_images, write_onnx_model  # noqa: E402
from web_browser import browser  # noqa: E402
from web_fakes import PASSWORD, Client, web_sections  # noqa: E402

from flowedge.edge.cmd_run import Station  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402

IMAGES = 64


def station(work: Path, rate_hz: float | None) -> tuple[Station, str]:
    """A started station replaying ``IMAGES`` images in a loop, its page's URL."""
    work.mkdir()
    write_images(work / "images", IMAGES)
    sections = web_sections(work, shift=-3.0, port=free_port())
    sections["model"].update(path=str(write_onnx_model(work / "model.onnx")), backend="onnxruntime")
    sections["sinks"] = sections["sinks"][1:]  # the web page only
    source: dict[str, Any] = {"name": "cam1", "kind": "folder", "path": str(work / "images")}
    source.update(loop=True, rate_hz=rate_hz)
    cfg = parse_config(
        {
            "site": "plant",
            "station": "bench",
            "sources": [source],
            "mqtt": {"enabled": False},
            "metrics": {"enabled": False},
            "spool": {"path": str(work / "spool.sqlite")},
            **sections,
        }
    )
    running = Station(work / "unused.yaml", cfg, max_samples=None)
    running.start()
    return running, f"http://127.0.0.1:{sections['sinks'][0]['port']}"


def stop(running: Station) -> None:
    running.shutdown("benchmark over", wait_for_delivery=False, interrupted=threading.Event())


def log_in(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/login")
    driver.find_element(By.ID, "user").send_keys("olga")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-button").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "stream-state").text == "live")


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(times.get(pid, 0.0) for pid in tree)


def decisions(running: Station) -> int:
    return running.pipeline.counts["decisions"]


def window(running: Station, seconds: float) -> tuple[int, float]:
    start, t0 = decisions(running), time.perf_counter()
    time.sleep(seconds)
    return decisions(running) - start, time.perf_counter() - t0


def page_weight(url: str) -> dict[str, int]:
    client = Client(int(url.rsplit(":", 1)[1]))
    assert client.login("olga") == 303
    sizes = {path: len(client.get(path)[2]) for path in ("/", "/static/app.js", "/static/app.css")}
    sizes.update({path: len(client.get(path)[2]) for path in ("/api/snapshot", "/api/status")})
    return sizes


STREAM = "stream only (no browser)"
READER = """
import http.client, sys
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
connection.request("GET", "/api/events", headers={"Cookie": "flowedge_session=" + sys.argv[2]})
response = connection.getresponse()
while response.fp.readline():
    pass
"""


def stream_reader(url: str) -> subprocess.Popen:
    """Another process reading the page's event stream and drawing nothing: what the
    station itself does for an open page, without a browser on its cores."""
    client = Client(int(url.rsplit(":", 1)[1]))
    assert client.login("olga") == 303
    port, token = url.rsplit(":", 1)[1], client.cookies["flowedge_session"]
    return subprocess.Popen([sys.executable, "-c", READER, port, token])


def throughput(
    work: Path, drivers: dict[str, Any], args: argparse.Namespace
) -> dict[str, tuple[float, float, float]]:
    """Decisions per second and the station's CPU seconds per decision, for the page closed
    and open in each browser (``drivers``), in alternating windows of one station."""
    running, url = station(work / "throughput", None)
    try:
        for driver in drivers.values():
            log_in(driver, url)
            driver.get("about:blank")
        window(running, 2.0)  # warm up
        totals = {mode: [0, 0.0, 0.0, 0.0] for mode in ("closed", STREAM, *drivers)}
        for _ in range(args.rounds):
            for mode in totals:
                for name, driver in drivers.items():
                    driver.get(url + "/#live" if name == mode else "about:blank")
                reader = stream_reader(url) if mode == STREAM else None
                time.sleep(0.5)  # the page's first load is not the steady state
                cpu = time.process_time()
                browsers = sum(tree_cpu_s(d.service.process.pid) for d in drivers.values())
                count, seconds = window(running, args.window)
                totals[mode][0] += count
                totals[mode][1] += seconds
                totals[mode][2] += time.process_time() - cpu
                totals[mode][3] += (
                    sum(tree_cpu_s(d.service.process.pid) for d in drivers.values()) - browsers
                )
                if reader is not None:
                    reader.terminate()
                    reader.wait()
                print(f"  {mode:<24} {count / seconds:8.1f} decisions/s")
        return {mode: (n / s, 1000 * c / max(n, 1), b / s) for mode, (n, s, c, b) in totals.items()}
    finally:
        stop(running)


def latency(
    work: Path, driver: Any, args: argparse.Namespace
) -> tuple[list[float], dict[str, int]]:
    running, url = station(work / "latency", 20.0)
    try:
        weight = page_weight(url)
        log_in(driver, url)
        count = args.latency_decisions
        deadline = time.monotonic() + count / 20.0 * 3 + 30
        values: list[float] = []
        while len(values) < count and time.monotonic() < deadline:
            time.sleep(1.0)
            values = driver.execute_script("return window.flowedgeLatencyMs")
        return [float(v) for v in values[:count]], weight
    finally:
        stop(running)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of windows")
    parser.add_argument("--latency-decisions", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        drivers = {
            "open (browser here)": browser(),
            "open (browser niced 19)": browser(niced=Path(folder)),
        }
        try:
            print("throughput (ONNX stand-in, 32 px images, heatmaps of anomalies):")
            rates = throughput(Path(folder), drivers, args)
            for driver in drivers.values():
                driver.get("about:blank")
            values, weight = latency(Path(folder), drivers["open (browser here)"], args)
        finally:
            for driver in drivers.values():
                driver.quit()
    closed = rates["closed"][0]
    for mode, (rate, cpu_ms, browser_cpu) in rates.items():
        print(
            f"  {mode:<24} {rate:8.1f} decisions/s, ratio {rate / closed:.3f}, "
            f"station CPU {cpu_ms:.2f} ms/decision, browsers {browser_cpu:.2f} CPU-s/s"
        )
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(
        f"decision -> browser shows it (20 Hz, n={len(values)}): p50 "
        f"{statistics.median(values):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"
    )
    first = sum(v for k, v in weight.items() if not k.startswith("/api"))
    print(f"page weight: {first} bytes (html+js+css, uncompressed); {weight}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
