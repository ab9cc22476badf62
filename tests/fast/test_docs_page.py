"""Swagger UI at /docs (embedder/http/docs_page.py), through Flask's test client: the page refers to
its own assets and /openapi.json only, each asset is served with caching headers, nothing else under
/docs/ is (path traversal included), and none of it needs the API key.
tests/integration/test_docs_browser.py opens the page in a real browser against a real server.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from embedder.http import docs_page
from fakes import make_app

KEY = "docs-key"


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


def test_page_refers_only_to_its_assets_and_the_document():
    client = make_app().test_client()
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "://" not in r.text  # no absolute URL anywhere, inline script included
    urls = refs(r.text)
    assert "/openapi.json" in urls and "/docs/swagger-ui-bundle.js" in urls and "/docs/swagger-ui.css" in urls
    assert set(urls) == {"/openapi.json"} | {f"/docs/{name}" for name in docs_page.ASSETS}
    for url in urls:  # buffered: read and close the file of each asset (else: ResourceWarning, unclosed file)
        assert client.get(url, buffered=True).status_code == 200, url
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
        r = client.get(f"/docs/{name}", buffered=True)
        assert r.status_code == 200 and r.mimetype == mimetype, name
        assert r.data == (Path(docs_page.ASSET_DIR) / name).read_bytes()
        assert r.cache_control.public and r.cache_control.max_age == docs_page.ASSET_MAX_AGE
        assert r.headers["ETag"] and r.headers["X-Content-Type-Options"] == "nosniff"
        again = client.get(f"/docs/{name}", headers={"If-None-Match": r.headers["ETag"]}, buffered=True)
        assert again.status_code == 304 and not again.data
    assert b"SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js", buffered=True).data


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
        assert client.get(path, buffered=True).status_code == 200, path
    assert client.post("/embed", json={"inputs": "hello"}).status_code == 401
    assert client.get("/docs/index.html").status_code == 401  # not open: only the page's own files are
    assert client.post("/embed", json={"inputs": "hello"},
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_docs_are_not_an_operation_of_the_api_document():
    document = make_app().test_client().get("/openapi.json").get_json()
    assert not [path for path in document["paths"] if path == "/docs" or path.startswith("/docs/")]
