"""Swagger UI at /docs (embedder/docs_page.py).

Fast tier, through Flask's test client: the page refers to its own assets and /openapi.json only,
each asset is served with caching headers, nothing else under /docs/ is (path traversal included),
and none of it needs the API key. Integration tier: the page in a real headless Chromium (Debian's
chromium and chromium-driver, driven by selenium) against a real Gunicorn server loads nothing but
the server's own URLs, lists every operation of /openapi.json, and "Try it out" on POST /embed
shows the vectors that a direct POST /embed returns.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from embedder.http import docs_page
from fakes import make_app

KEY = "docs-key"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


class _Refs(HTMLParser):
    """Every URL a page refers to: src, href and the document's URL the page's script reads."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "data-openapi-url")]


def refs(page: str) -> list[str]:
    parser = _Refs()
    parser.feed(page)
    return parser.urls


# -- fast tier ---------------------------------------------------------------------------------

def test_page_refers_only_to_its_assets_and_the_document():
    client = make_app().test_client()
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "://" not in r.text  # no absolute URL anywhere, inline script included
    urls = refs(r.text)
    assert "/openapi.json" in urls and "/docs/swagger-ui-bundle.js" in urls and "/docs/swagger-ui.css" in urls
    assert set(urls) == {"/openapi.json"} | {f"/docs/{name}" for name in docs_page.ASSETS}
    for url in urls:
        assert client.get(url).status_code == 200, url
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self' 'sha256-" in csp
    assert r.headers["Cache-Control"] == "no-cache"
    # Mounted under a prefix (SCRIPT_NAME), the page's URLs follow it.
    mounted = client.get("/docs", base_url="http://localhost/embedder")
    assert set(refs(mounted.text)) == {"/embedder" + url for url in urls}


def test_assets_are_the_packages_files_with_caching_headers():
    client = make_app().test_client()
    for name, mimetype in [("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css"),
                           ("favicon-32x32.png", "image/png")]:
        r = client.get(f"/docs/{name}")
        assert r.status_code == 200 and r.mimetype == mimetype, name
        assert r.data == (Path(docs_page.ASSET_DIR) / name).read_bytes()
        assert r.cache_control.public and r.cache_control.max_age == docs_page.ASSET_MAX_AGE
        assert r.headers["ETag"] and r.headers["X-Content-Type-Options"] == "nosniff"
        again = client.get(f"/docs/{name}", headers={"If-None-Match": r.headers["ETag"]})
        assert again.status_code == 304 and not again.data
    assert b"SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").data


@pytest.mark.parametrize("path", [
    "/docs/../app.py", "/docs/..%2fapp.py", "/docs/%2e%2e/%2e%2e/requirements.txt", "/docs/..%2F..%2Fwsgi.py",
    "/docs//etc/passwd", "/docs/swagger-ui.css/../../__init__.py", "/docs/%2Fetc%2Fpasswd",
    "/docs/index.html",  # in the package (as its other files are), but not one the page loads
    "/docs/swagger-ui.js", "/docs/LICENSE", "/docs/nope.js", "/docs/"])
def test_anything_else_under_docs_is_404(path):
    r = make_app().test_client().get(path, follow_redirects=True)  # werkzeug merges "//" (a 308)
    assert r.status_code == 404 and r.get_json()["error_type"] == "not_found", (path, r.status_code)


def test_send_from_directory_refuses_a_path_outside_the_folder_even_if_listed(monkeypatch):
    """The second guard: a name that climbs out of the folder is refused by send_from_directory."""
    climbing = {"../__init__.py", "../../../../../etc/passwd"}
    monkeypatch.setattr(docs_page, "ASSETS", docs_page.ASSETS | climbing)
    client = make_app().test_client()
    assert client.get("/docs/../__init__.py").status_code == 404
    assert client.get("/docs/../../../../../etc/passwd").status_code == 404


def test_docs_need_no_api_key_and_the_api_still_does():
    client = make_app(api_key=KEY).test_client()
    assert client.get("/docs").status_code == 200
    for path in docs_page.OPEN_PATHS:
        assert client.get(path).status_code == 200, path
    assert client.post("/embed", json={"inputs": "hello"}).status_code == 401
    assert client.get("/docs/index.html").status_code == 401  # not open: only the page's own files are
    assert client.post("/embed", json={"inputs": "hello"},
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_docs_are_not_an_operation_of_the_api_document():
    document = make_app().test_client().get("/openapi.json").get_json()
    assert not [path for path in document["paths"] if path == "/docs" or path.startswith("/docs/")]


# -- integration tier: a real browser against a real server ---------------------------------------

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


@pytest.mark.integration
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


@pytest.mark.integration
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
