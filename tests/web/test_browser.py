"""The timeline page in headless Chromium, against a collector fed by simulated VMs.

Each test loads the page the collector serves (``--http``) and looks at what the
browser drew: lanes, marks, the detail of a clicked mark, live updates, filters.
A screenshot of the page is saved under the test's ``tmp_path`` (its path printed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from click.testing import CliRunner
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from qmpevents.cli import main
from tests.web.conftest import SEEDED, Fleet

WAIT = 15


def shapes(driver: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = driver.execute_script(
        "return window.qmpTimeline ? window.qmpTimeline.shapes() : []"
    )
    return found


def marks(driver: Any, vm: str | None = None) -> list[dict[str, Any]]:
    return [s for s in shapes(driver) if s["type"] == "mark" and vm in (None, s["vm"])]


def lane_names(driver: Any) -> list[str]:
    return [el.text for el in driver.find_elements(By.CSS_SELECTOR, "#labels .lane")]


def click_mark(driver: Any, mark: dict[str, Any]) -> None:
    canvas = driver.find_element(By.ID, "canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(mark["x"] - rect["width"] / 2), int(mark["y"] - rect["height"] / 2)
    ).click().perform()


def seed(fleet: Fleet) -> dict[str, bytes]:
    """All seven seed events on web-1, two on db-1, one VSERPORT_CHANGE on ``<script>``."""
    for name, data in SEEDED:
        fleet.emit("web-1", name, data)
    fleet.emit("db-1", "MIGRATION_PASS", {"pass": 3})
    fleet.emit("db-1", "GUEST_PANICKED", {"action": "pause"})
    line = fleet.emit("<script>", "VSERPORT_CHANGE", {"id": "org.qemu.guest_agent.0", "open": True})
    return {"<script>": line}


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.loads")
    )


def test_lanes_marks_and_a_click_shows_qemus_exact_json(
    fleet: Fleet, browser: Any, tmp_path: Path
) -> None:
    sent = seed(fleet)
    # A fixed window (not following now), so that marks stay where they are to be clicked.
    open_page(browser, fleet.url + f"?range=120&end={time.time() + 20:.3f}")
    WebDriverWait(browser, WAIT).until(lambda d: len(marks(d)) >= 10 or d.refresh())
    assert lane_names(browser) == ["<script>", "db-1", "web-1"]  # a name, not markup
    assert browser.execute_script("return document.querySelectorAll('#labels script').length") == 0
    assert {m["name"] for m in marks(browser, "web-1")} == {name for name, _ in SEEDED}
    legend = browser.find_element(By.ID, "legend").text
    assert "VSERPORT_CHANGE 2" in legend and "GUEST_PANICKED 2" in legend
    screenshot = tmp_path / "timeline.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot of the timeline: {screenshot}")
    (mark,) = marks(browser, "<script>")
    click_mark(browser, mark)
    raw = WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.ID, "raw").text if d.find_element(By.ID, "raw").text else None
    )
    assert raw == sent["<script>"].decode()  # byte for byte what QEMU's side wrote
    assert browser.find_element(By.ID, "detail-title").text == "VSERPORT_CHANGE on <script>"
    fields = browser.find_element(By.ID, "detail-fields").text
    assert "id str " + json.dumps("org.qemu.guest_agent.0") in fields
    assert "open bool true" in fields
    assert "held back" in browser.find_element(By.ID, "detail-meta").text
    browser.save_screenshot(str(tmp_path / "detail.png"))
    print(f"screenshot of a mark's detail: {tmp_path / 'detail.png'}")


def test_a_live_event_appears_without_reload(fleet: Fleet, browser: Any) -> None:
    seed(fleet)
    open_page(browser, fleet.url + "?range=300")
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.stream") == "open"
    )
    WebDriverWait(browser, WAIT).until(lambda d: len(marks(d)) >= 10)
    loads = browser.execute_script("return document.body.dataset.loads")
    browser.execute_script("window.notReloaded = true")
    fleet.emit("db-1", "MEM_UNPLUG_ERROR", {"device": "dimm7", "msg": "live"})
    WebDriverWait(browser, WAIT).until(
        lambda d: any(m["name"] == "MEM_UNPLUG_ERROR" for m in marks(d, "db-1"))
    )
    assert browser.execute_script("return window.notReloaded") is True
    assert browser.execute_script("return document.body.dataset.loads") == loads
    assert int(browser.execute_script("return document.body.dataset.live")) >= 1


def test_filters_change_the_url_and_the_view(fleet: Fleet, browser: Any) -> None:
    seed(fleet)
    open_page(browser, fleet.url + "?range=300")
    WebDriverWait(browser, WAIT).until(lambda d: len(lane_names(d)) == 3)
    box = browser.find_element(By.ID, "vm")
    box.send_keys("web-*")
    browser.find_element(By.ID, "event").send_keys("QUORUM_*,VSERPORT_CHANGE")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    WebDriverWait(browser, WAIT).until(lambda d: lane_names(d) == ["web-1"])
    WebDriverWait(browser, WAIT).until(lambda d: len(marks(d)) == 3)
    url = unquote(browser.current_url)
    assert "vm=web-*" in url and "event=QUORUM_*,VSERPORT_CHANGE" in url
    assert {m["name"] for m in marks(browser)} == {
        "QUORUM_FAILURE",
        "QUORUM_REPORT_BAD",
        "VSERPORT_CHANGE",
    }
    # The URL is the view: opened afresh, it shows the same.
    browser.get(browser.current_url)
    WebDriverWait(browser, WAIT).until(lambda d: lane_names(d) == ["web-1"] and len(marks(d)) == 3)
    assert browser.find_element(By.ID, "vm").get_attribute("value") == "web-*"
    browser.find_element(By.CSS_SELECTOR, '#zoom [data-range="60"]').click()
    WebDriverWait(browser, WAIT).until(lambda d: "range=60" in d.current_url)


def test_history_html_is_the_same_timeline_in_one_offline_file(
    history_db: Path, browser: Any, tmp_path: Path
) -> None:
    out = tmp_path / "timeline.html"
    result = CliRunner().invoke(main, ["history", "--db", str(history_db), "--html", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<script>" not in text.split('id="qmp-data">')[1].split("</script>")[0]
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    open_page(browser, out.as_uri())
    WebDriverWait(browser, WAIT).until(lambda d: len(marks(d)) == 21)
    assert lane_names(browser) == ["<script>", "db-1", "web-1"]
    gaps = [s for s in shapes(browser) if s["type"] == "gap"]
    assert [g["vm"] for g in gaps] == ["db-1"]
    (mark,) = [m for m in marks(browser, "<script>") if m["name"] == "GUEST_PANICKED"]
    click_mark(browser, mark)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "raw").text)
    assert '"event": "GUEST_PANICKED"' in browser.find_element(By.ID, "raw").text
    browser.save_screenshot(str(tmp_path / "history.png"))
    print(f"\nscreenshot of the saved timeline: {tmp_path / 'history.png'}")
