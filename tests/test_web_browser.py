"""The web page as its users use it, in a real headless browser: log in, watch a decision
arrive live while ``flowedge run`` streams, review a false alarm with the keyboard, see
applying the re-fitted threshold refused as operator and done as engineer, search the
history. With FLOWEDGE_SCREENSHOTS=1 it saves docs/img/web-*.png."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import free_port  # noqa: E402
from runtime_fakes import wait_until, write_images, write_onnx_model  # noqa: E402
from web_browser import browser, require_browser, screenshot, start_station, stop  # noqa: E402
from web_fakes import PASSWORD, station_document, web_sections  # noqa: E402

from flowedge.calibration.history.review import reviews_of  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def log_in(driver, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    assert driver.current_url.endswith("/login")  # no page without login
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-button").click()
    waiting(driver).until(lambda d: d.find_element(By.ID, "stream-state").text == "live")


def waiting(driver, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_review_a_false_alarm_and_apply_the_refit_in_a_browser(tmp_path: Path) -> None:
    require_browser()
    from selenium.webdriver.common.by import By

    images = write_images(tmp_path / "parts", 6)
    (tmp_path / "incoming").mkdir()
    sections = web_sections(tmp_path, shift=-3.0, port=free_port())
    sections["model"]["path"] = str(write_onnx_model(tmp_path / "model.onnx"))
    sections["model"]["backend"] = "onnxruntime"
    source = {"name": "cam1", "kind": "watch", "path": str(tmp_path / "incoming")}
    config = station_document(tmp_path, [source], **sections)
    url = f"http://127.0.0.1:{sections['sinks'][1]['port']}"
    station = start_station(config, tmp_path)
    driver = browser()
    try:
        wait_until(lambda: _answers(url), 60, "the page")
        driver.get(url + "/login")
        screenshot(driver, "login")
        log_in(driver, url, "olga")
        # live: each part dropped into the watched folder appears without a reload
        for count, image in enumerate(images[:4], start=1):
            shutil.copy(image, tmp_path / "incoming" / image.name)
            waiting(driver).until(
                lambda d, n=count: (
                    d.find_element(By.ID, "live-cam1").get_attribute("data-seq") == str(n)
                )
            )
        card = driver.find_element(By.ID, "live-cam1")
        assert card.get_attribute("data-decision") == "ANOMALY"
        assert "img_0003.png" in card.text and "threshold" in card.text
        assert driver.find_element(By.ID, "count-ANOMALY").text.startswith("3")
        screenshot(driver, "live")
        driver.get(url + "/#trend")
        waiting(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trend-cam1 circle"))
        screenshot(driver, "trend")
        # review: the newest anomaly first; img_0001 (seq 2) is the false alarm
        driver.get(url + "/#review")
        row = '#queue tr[data-key="cam1/2"]'
        waiting(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        body = driver.find_element(By.TAG_NAME, "body")
        while "selected" not in driver.find_element(By.CSS_SELECTOR, row).get_attribute("class"):
            body.send_keys("j")
        body.send_keys("f")
        waiting(driver).until(lambda d: "false_alarm" in text_of(d, "review-result"))
        assert [r.reviewer for r in reviews_of(tmp_path / "history", "cam1", 2)] == ["olga"]
        waiting(driver).until(lambda d: "reviewed normal" in text_of(d, "refit"))
        driver.find_element(By.ID, "apply").click()
        waiting(driver).until(lambda d: "refused" in text_of(d, "apply-result"))
        assert "may not apply" in text_of(driver, "apply-result")
        screenshot(driver, "review")
        driver.find_element(By.ID, "logout").click()
        waiting(driver).until(lambda d: d.current_url.endswith("/login"))
        log_in(driver, url, "ernst")
        driver.get(url + "/#review")
        waiting(driver).until(lambda d: d.find_element(By.ID, "apply").is_enabled())
        proposed = driver.find_element(By.ID, "apply").text.split()[-1]
        driver.find_element(By.ID, "apply").click()
        waiting(driver).until(lambda d: "applied" in text_of(d, "apply-result"))
        screenshot(driver, "apply")
        driver.get(url + "/#live")
        waiting(driver).until(lambda d: f"threshold {proposed}" in text_of(d, "threshold"))
        # the history: search a part id, with its evidence
        driver.get(url + "/#search")
        driver.find_element(By.ID, "search-part").send_keys("img_0002.png")
        driver.find_element(By.ID, "search-button").click()
        waiting(driver).until(lambda d: "1 decision" in text_of(d, "search-result"))
        assert driver.find_elements(By.CSS_SELECTOR, "#results img.thumb")
        screenshot(driver, "search")
    finally:
        driver.quit()
        code = stop(station)
    assert code == 0, (tmp_path / "station.log").read_text()[-3000:]


def test_a_recipe_station_refits_and_applies_per_recipe_in_a_browser(tmp_path: Path) -> None:
    """Two recipes by file name: the re-fit panel lists them; recipe A (a reviewed false
    alarm) proposes a threshold that Apply sets for A alone; B (a fixed threshold, no
    calibration file) has no re-fit to apply."""
    require_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from web_fakes import Client

    from flowedge.calibration.history.review import review

    folder, idle = tmp_path / "images", tmp_path / "idle"
    idle.mkdir()
    for index, image in enumerate(write_images(tmp_path / "parts", 4)):
        folder.mkdir(exist_ok=True)
        shutil.copy(image, folder / f"{'AB'[index % 2]}_{image.name}")  # A: 0, 2; B: 1, 3
    sections = web_sections(tmp_path, shift=-3.0, port=free_port())
    model = {
        "path": str(write_onnx_model(tmp_path / "model.onnx")),
        "backend": "onnxruntime",
        "calibration": sections.pop("model")["calibration"],
    }
    sources = [  # cam1 decides its four files; cam2, idle, keeps the station running
        {"name": "cam1", "kind": "folder", "path": str(folder)},
        {"name": "cam2", "kind": "watch", "path": str(idle)},
    ]
    recipes = {
        "select": {"by": "filename", "pattern": "^(?P<recipe>[AB])_"},
        "models": {"A": model, "B": {**model, "calibration": None, "threshold": -1.5}},
    }
    config = station_document(tmp_path, sources, recipes=recipes, **sections)
    url = f"http://127.0.0.1:{sections['sinks'][1]['port']}"
    station = start_station(config, tmp_path)
    driver = browser()
    try:
        wait_until(lambda: _answers(url), 60, "the page")

        def reviewed() -> bool:  # A_img_0002 is an anomaly of recipe A, once it is stored
            try:
                review(tmp_path / "history", "false_alarm", "olga", part_id="A_img_0002.png")
            except Exception:
                return False
            return True

        wait_until(reviewed, 60, "A_img_0002.png in the history")
        log_in(driver, url, "ernst")
        driver.get(url + "/#review")
        waiting(driver).until(lambda d: "reviewed normal" in text_of(d, "refit"))
        recipes = Select(driver.find_element(By.ID, "refit-recipe"))
        assert [o.text for o in recipes.options] == ["A", "B"]
        assert recipes.first_selected_option.text == "A"
        proposed = float(driver.find_element(By.ID, "apply").text.split()[-1])
        driver.find_element(By.ID, "apply").click()
        waiting(driver).until(lambda d: "applied" in text_of(d, "apply-result"))
        recipes.select_by_visible_text("B")
        waiting(driver).until(lambda d: "recipes.models.B.calibration" in text_of(d, "refit"))
        assert not driver.find_element(By.ID, "apply").is_enabled()
        client = Client(int(url.rsplit(":", 1)[1]))
        assert client.login("ernst") == 303
        thresholds = {k: v["threshold"] for k, v in client.json("/api/status")["recipes"].items()}
    finally:
        driver.quit()
        code = stop(station)
    assert code == 0, (tmp_path / "station.log").read_text()[-3000:]
    assert thresholds == {"A": pytest.approx(proposed, rel=1e-3), "B": -1.5}


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/login", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
