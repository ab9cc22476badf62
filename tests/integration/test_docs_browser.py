"""Swagger UI at /docs in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) against a real Gunicorn server: the page loads nothing but the server's own URLs, lists
every operation of /openapi.json, and "Try it out" on POST /embed shows the vectors that a direct
POST /embed returns. tests/fast/test_docs_page.py has the page and its assets through Flask's test
client.
"""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.integration
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 30  # seconds for any one thing to appear in the page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with its performance (network) and console logs kept, and its own
    background traffic (updates, sync, ...) off: this machine reaches nothing outside."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    assert not missing, f"{missing} missing: `make apt` installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # The driver is given: selenium's own driver download (Selenium Manager) never runs.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _open_docs(browser, server):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("performance")  # drop what came before (the browser's start page)
    browser.get_log("browser")
    browser.get(server.url + "/docs")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements("css selector", ".opblock"))


def _network(browser) -> tuple[list[str], dict[str, int]]:
    """URLs the page requested, and the status of each response, from the performance log."""
    requested, statuses = [], {}
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            statuses[response["url"]] = response["status"]
    return requested, statuses


def test_docs_load_from_the_server_alone_and_list_every_route(server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    expected = {(method.upper(), path) for path, item in document["paths"].items()
                for method in item if method in HTTP_METHODS}
    _open_docs(browser, server)
    shown_js = """return [...document.querySelectorAll('.opblock')].map(op => [
        op.querySelector('.opblock-summary-method').textContent,
        op.querySelector('.opblock-summary-path').dataset.path])"""
    shown: set = set()

    def all_shown(b):
        shown.clear()
        shown.update(tuple(row) for row in b.execute_script(shown_js))
        return shown == expected

    try:
        WebDriverWait(browser, WAIT).until(all_shown)
    except Exception:
        pytest.fail(f"operations in the page != the document's: missing {sorted(expected - shown)}, "
                    f"extra {sorted(shown - expected)}")
    assert browser.title == "embedder API"

    requested, statuses = _network(browser)
    elsewhere = [url for url in requested
                 if urlsplit(url).scheme not in ("data", "chrome") and not url.startswith(server.url + "/")]
    assert not elsewhere, f"the page requested URLs outside the server: {elsewhere}"
    paths = {urlsplit(url).path for url in requested if url.startswith(server.url + "/")}
    assert {"/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"} <= paths, paths
    failed = {url: status for url, status in statuses.items() if url.startswith(server.url) and status != 200}
    assert not failed, failed
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors  # no script error, no request refused by the page's CSP


def test_try_it_out_on_post_embed_shows_the_servers_vectors(server, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    body = {"inputs": ["Swagger UI sent this sentence.", "And this one, from the same page."]}
    direct = requests.post(server.url + "/embed", json=body, timeout=60)
    assert direct.status_code == 200
    _open_docs(browser, server)
    wait = WebDriverWait(browser, WAIT)
    operation = browser.find_element(
        "xpath", "//div[contains(@class,'opblock-post')][.//*[@data-path='/embed']]")
    operation.find_element("css selector", ".opblock-summary-control").click()
    wait.until(lambda b: operation.find_element("css selector", ".try-out__btn")).click()
    editor = wait.until(lambda b: operation.find_element("css selector", "textarea.body-param__text"))
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(json.dumps(body))
    operation.find_element("css selector", "button.execute").click()

    status_cell = ".live-responses-table tr.response .response-col_status"
    wait.until(lambda b: operation.find_elements("css selector", status_cell))
    status = operation.find_element("css selector", status_cell).get_attribute("textContent").strip()
    shown = operation.find_element(
        "css selector", ".live-responses-table tr.response .response-col_description .highlight-code code")
    text = shown.get_attribute("textContent")
    assert status == "200", text[:2000]
    vectors = json.loads(text)
    assert isinstance(vectors, list) and len(vectors) == 2
    assert all(len(row) == 384 and all(isinstance(x, float) for x in row) for row in vectors)
    assert np.abs(np.array(vectors) - np.array(direct.json())).max() < 1e-5
