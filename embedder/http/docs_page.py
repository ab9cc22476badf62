"""Swagger UI at ``GET /docs``, as text-embeddings-inference serves it: a page that lists every
route of ``/openapi.json`` and sends requests to this server from the browser ("Try it out").

Machines here reach package registries only, so the page's JavaScript and CSS are Swagger UI's
own distribution files shipped in the ``flask-swagger-ui`` wheel (pinned in requirements.txt; only
its ``dist/`` folder is used, not its blueprint), served from that folder under ``/docs/``, never
from a CDN. Only the files the page loads are served (``ASSETS``), and the page's
Content-Security-Policy lets it load and fetch from this server alone. The page and its assets
hold no secret, so they need no API key (``OPEN_PATHS``, which app.py's auth lets through);
requests sent from the page carry the key given to its "Authorize" button. ``/docs`` is not an
operation in ``/openapi.json``: that document describes the JSON API, and this page is its reader.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.resources

from flask import Blueprint, Response, abort, request, send_from_directory

docs = Blueprint("docs", __name__)

#: Swagger UI's distribution files, as the installed package ships them.
ASSET_DIR = str(importlib.resources.files("flask_swagger_ui") / "dist")
#: The files the page loads; any other path under /docs/ is 404.
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "index.css", "favicon-32x32.png",
                    "favicon-16x16.png"})
#: Paths open without the API key (app.py's auth).
OPEN_PATHS = frozenset({"/docs"} | {f"/docs/{name}" for name in ASSETS})
#: The assets change only with the installed package: cached a day, then revalidated by ETag.
ASSET_MAX_AGE = 24 * 3600

# The page's one inline script. It reads the document's URL from the page, so it is the same on
# every deployment, and so is its hash, the one inline script the Content-Security-Policy allows.
_INIT = """
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  displayRequestDuration: true,
  validatorUrl: null
});
"""
CSP = ("default-src 'none'; "
       f"script-src 'self' 'sha256-{base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()}'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>embedder API</title>
<link rel="stylesheet" href="{root}/docs/index.css">
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}/docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{root}/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}/openapi.json"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script>{init}</script>
</body>
</html>
"""


@docs.get("/docs")
def page():
    """The page, its URLs under the app's mount point (SCRIPT_NAME), if any."""
    body = _PAGE.format(root=html.escape(request.script_root), init=_INIT)
    return Response(body, mimetype="text/html", headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@docs.get("/docs/<path:filename>")
def asset(filename: str):
    """One of ASSETS, from the package's folder (send_from_directory also refuses any path outside it)."""
    if filename not in ASSETS:
        abort(404)
    response = send_from_directory(ASSET_DIR, filename, max_age=ASSET_MAX_AGE)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
