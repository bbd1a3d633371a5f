"""The web dashboard in real Chromium (Debian's chromium and chromedriver, driven by Selenium)
against a running monbridge behind a route prefix with a bearer token: the page signs in, shows
every built-in component with data, loads without console errors, and an alert acknowledged on
the page is acknowledged in the alert API (and stays so on the page when an answer asked for
before the ack arrives after it). Screenshots of the page and of each component are
written to the test's directory, or to $MONBRIDGE_TEST_ARTIFACTS/dashboard when that is set."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TOKEN = "dashboard-test-token-0123"
PREFIX = "/mb"
BUILTINS = ("monitoring.dashboard.timeseries", "monitoring.dashboard.status", "monitoring.dashboard.topology",
            "monitoring.dashboard.correlation", "monitoring.dashboard.alerts")


def call(url: str, method: str = "GET", doc: object = None) -> dict:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", **({"Content-Type": "application/json"} if data else {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def webhook_alert(name: str, host: str) -> dict:
    return {"status": "firing", "labels": {"alertname": name, "service": "db", "host": host, "severity": "critical"},
            "annotations": {"summary": f"{name} on {host}"}, "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"fp-{name}"}


@pytest.fixture
def chrome(require_binary, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require_binary("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,2200",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require_binary("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, predicate, what: str, timeout: float = 40.0):
    """Polls ``predicate``; an element it read that the page replaced meanwhile (a card's data
    re-rendered between a find and a read) is a poll to repeat, not a failure."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: predicate(d))
    except TimeoutException:
        problems = driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-error], [data-event-error]'))"
            ".map(e => e.dataset.componentId + ': ' + e.dataset.error + ' / ' + e.dataset.eventError)")
        raise AssertionError(f"timed out waiting for {what}; components' errors: {problems}; "
                             f"console: {driver.get_log('browser')}") from None


def artifacts(tmp_path: Path) -> Path:
    base = os.environ.get("MONBRIDGE_TEST_ARTIFACTS")
    out = Path(base) / "dashboard" if base else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def start_with_alerts(run_monbridge, tmp_path) -> tuple[str, str, dict[str, dict]]:
    """monbridge with two firing alerts: (its URL, the API's URL, the alerts by name)."""
    mb = run_monbridge({
        "server": {"route_prefix": PREFIX, "auth": {"bearer_token": TOKEN}},
        "alerting": {"state_dir": str(tmp_path / "alerts")},
        "dashboard": {"history": {"window": 120, "resolution": 1}},
        "plugins": [
            {"plugin_id": "monitoring.metrics.system", "config": {"collection_interval": 1}},
            {"plugin_id": "monitoring.alerts.correlation", "config": {"labels": ["service"], "window": 600}},
        ],
    })
    api = mb.url + PREFIX + "/api/v1"
    call(f"{api}/alerts/alertmanager", "POST", {"version": "4", "receiver": "tests", "status": "firing",
                                                 "alerts": [webhook_alert("DiskFull", "h1"),
                                                            webhook_alert("SlowQueries", "h2")]})
    alerts = {a["name"]: a for a in call(f"{api}/alerts")["data"]}
    assert set(alerts) == {"DiskFull", "SlowQueries"}
    return mb.url, api, alerts


def texts(element, css: str, attribute: str | None = None) -> list[str]:
    """The text (or ``attribute``) of each element under ``element`` that ``css`` picks, read in one
    step in the page (a refresh cannot replace them between the find and the read)."""
    return element.parent.execute_script(
        "return Array.from(arguments[0].querySelectorAll(arguments[1]))"
        ".map(e => arguments[2] ? e.getAttribute(arguments[2]) : e.textContent)", element, css, attribute)


def sign_in(chrome, url: str) -> None:
    from selenium.webdriver.common.by import By

    chrome.get(url + PREFIX + "/ui/")
    wait(chrome, lambda d: d.find_element(By.ID, "signin").is_displayed(), "the sign-in form")
    chrome.find_element(By.ID, "token").send_keys(TOKEN)
    chrome.find_element(By.CSS_SELECTOR, "#signin button").click()


def row_state(chrome, alert_id: str) -> str | None:
    return chrome.execute_script(
        "const td = document.querySelector(`tr[data-alert='${arguments[0]}'] td[data-state]`);"
        "return td && td.dataset.state", alert_id)


def click_ack(chrome, alert_id: str) -> None:
    """Clicked by the page's own event on the button there now (the cards above it change height as
    their data refreshes, which can move the button between a pointer's move and its press)."""
    chrome.execute_script(
        "document.querySelector(`tr[data-alert='${arguments[0]}'] button[data-action=ack]`).click()", alert_id)


def test_dashboard_in_chromium(run_monbridge, chrome, tmp_path):
    from selenium.webdriver.common.by import By

    url, api, alerts = start_with_alerts(run_monbridge, tmp_path)
    time.sleep(3)  # a few rows of history at 1 s

    out = artifacts(tmp_path)
    chrome.get(url + PREFIX + "/ui/")
    # Without credentials the API answers 401 and the page asks for the token.
    wait(chrome, lambda d: d.find_element(By.ID, "signin").is_displayed(), "the sign-in form")
    assert chrome.find_element(By.ID, "token").is_displayed()
    first = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
    assert all("401" in e["message"] and "/api/v1/components" in e["message"] for e in first), first
    chrome.find_element(By.ID, "token").send_keys(TOKEN)
    chrome.find_element(By.CSS_SELECTOR, "#signin button").click()

    def loaded(d):
        cards = {c.get_attribute("data-component-id"): c for c in d.find_elements(By.CSS_SELECTOR, "section.component")}
        return all(cid in cards and cards[cid].get_attribute("data-loaded") == "true" for cid in BUILTINS) and cards
    wait(chrome, loaded, "every built-in component to show data")
    chrome.refresh()  # signed in (the token is kept for the tab): a clean load
    cards = wait(chrome, loaded, "every built-in component after a reload")
    for cid in BUILTINS:
        assert cards[cid].get_attribute("data-error") is None, (cid, cards[cid].get_attribute("data-error"))

    # The data each one shows: a chart line, plugin badges, the flow's nodes, the incident, both alerts.
    chart = cards["monitoring.dashboard.timeseries"]
    wait(chrome, lambda d: chart.find_elements(By.CSS_SELECTOR, "svg path[data-series]"), "a chart line")
    assert chart.find_element(By.CSS_SELECTOR, "input[aria-label=metric]").get_attribute("value") == \
        "monbridge_plugin_runs_total"
    assert chart.find_element(By.CSS_SELECTOR, "input[aria-label=rate]").is_selected()  # the component's default
    assert "monitoring.metrics.system" in texts(cards["monitoring.dashboard.status"], ".badge")
    nodes = set(texts(cards["monitoring.dashboard.topology"], "g.node", "data-node"))
    assert {"pipeline", "monitoring.metrics.system"} <= nodes
    corr = cards["monitoring.dashboard.correlation"]
    assert len(texts(corr, "rect.incident")) == 1
    assert "inc-" in corr.text
    view = cards["monitoring.dashboard.alerts"]
    assert set(texts(view, "tr[data-alert]", "data-alert")) == {a["id"] for a in alerts.values()}

    chrome.save_screenshot(str(out / "dashboard.png"))
    for cid in BUILTINS:
        cards[cid].screenshot(str(out / f"{cid}.png"))

    # Ack one alert on the page: the alert API has it acknowledged.
    target = alerts["DiskFull"]["id"]
    click_ack(chrome, target)
    wait(chrome, lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-alert='{target}'] td[data-state]")
         .get_attribute("data-state") == "acknowledged", "the acknowledged state on the page")
    states = {a["id"]: a["state"] for a in call(f"{api}/alerts")["data"]}
    assert states == {target: "acknowledged", alerts["SlowQueries"]["id"]: "firing"}
    chrome.save_screenshot(str(out / "dashboard-acknowledged.png"))

    errors = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    for name in ("dashboard.png", "dashboard-acknowledged.png", *(f"{cid}.png" for cid in BUILTINS)):
        assert (out / name).stat().st_size > 1000


# Holds the answer to the next request for the alert view's data until released: the server has
# answered it (``answered``) but the page does not see it yet. Once released, the page reads it in
# one chain of microtasks (its body is read already), so a timer set after the release runs after
# the page has shown or dropped it.
HOLD_NEXT_ALERTS_ANSWER = """
const real = window.fetch;
window.held = null;
window.fetch = function (url, options) {
  const answer = real.call(this, url, options);
  if (window.held || !String(url).includes("/components/monitoring.dashboard.alerts/data")) return answer;
  const held = window.held = { answered: false };
  const gate = new Promise(resolve => { held.release = resolve; });
  return answer.then(r => r.text().then(text => {
    held.answered = true;
    return gate.then(() => {
      const copy = new Response(text, { status: r.status, headers: r.headers });
      copy.json = () => Promise.resolve(JSON.parse(text));
      return copy;
    });
  }));
};
"""


def test_an_answer_asked_before_an_ack_does_not_undo_it_on_the_page(run_monbridge, chrome, tmp_path):
    url, api, alerts = start_with_alerts(run_monbridge, tmp_path)
    target = alerts["DiskFull"]["id"]
    sign_in(chrome, url)
    wait(chrome, lambda d: row_state(d, target) == "firing", "the firing alert on the page")

    # A periodic refresh asked (and answered: firing) before the ack, arriving after the ack's own.
    chrome.execute_script(HOLD_NEXT_ALERTS_ANSWER)
    wait(chrome, lambda d: d.execute_script("return !!(window.held && window.held.answered)"),
         "a periodic refresh of the alert view answered while the alert fires")
    click_ack(chrome, target)
    wait(chrome, lambda d: row_state(d, target) == "acknowledged", "the acknowledged state on the page")
    after_late_answer = chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.held.release();"
        "setTimeout(() => done([document.querySelector(`tr[data-alert='${arguments[0]}'] td[data-state]`).dataset.state,"
        " document.querySelectorAll(`tr[data-alert='${arguments[0]}'] button[data-action=ack]`).length]), 0);", target)
    assert after_late_answer == ["acknowledged", 0]
    assert {a["id"]: a["state"] for a in call(f"{api}/alerts")["data"]}[target] == "acknowledged"
    errors = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"
              and not ("401" in e["message"] and "/api/v1/components" in e["message"])]
    assert errors == [], errors
