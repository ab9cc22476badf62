"""The OpenAPI document is valid, covers every route, and the live server conforms to it.

Schemathesis generates requests from the server's own /openapi.json (schema-valid ones, which
must be accepted, and invalid ones, which must be refused with a documented 4xx) and checks each
response's status, content type, headers and body against the document. The server runs with an
API key, so the 401 paths and the key's enforcement are part of the check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from openapi_spec_validator import validate

from embedder import openapi
from embedder.app import create_app
from embedder.config import Settings
from serverproc import Server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
KEY = "test-key-for-schemathesis"
# Examples per operation and phase; about a minute on 2 slow cores. Raise it to fuzz harder.
MAX_EXAMPLES = 100
SEED = 20240607
# all-MiniLM-L6-v2 as the document sees it (the real model is what the live tests serve).
MINILM = SimpleNamespace(model_id="sentence-transformers/all-MiniLM-L6-v2", dimension=384, vocab_size=30522,
                         max_input_tokens=256, prompts={"query": "", "document": ""})


@pytest.fixture(scope="module")
def keyed_server():
    # 80 characters stay under 256 tokens whatever they are (a Hangul syllable is at most 3
    # wordpieces), so every schema-valid text is accepted, even with truncate=false.
    env = {"EMBEDDER_API_KEY": KEY, "EMBEDDER_MAX_INPUTS": "8", "EMBEDDER_MAX_INPUT_CHARS": "80",
           "EMBEDDER_MAX_BODY_BYTES": "65536"}
    with Server(workers=1, env=env) as srv:
        yield srv


@pytest.mark.parametrize("settings", [Settings(), Settings(api_key="k"),
                                      Settings(api_key="k", metrics_require_key=True, max_inputs=3)],
                         ids=["open", "keyed", "keyed-metrics"])
def test_document_is_valid_openapi(settings):
    document = openapi.build(settings, MINILM)
    validate(document)
    embed = document["paths"]["/embed"]["post"]
    assert ("401" in embed["responses"]) == bool(settings.api_key)
    assert ("401" in document["paths"]["/metrics"]["get"]["responses"]) == settings.metrics_require_key
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["components"]["schemas"]["EmbedRequest"]["properties"]["inputs"]["anyOf"][1]["maxItems"] \
        == settings.max_inputs


def test_every_flask_route_is_documented(keyed_server):
    document = requests.get(keyed_server.url + "/openapi.json", timeout=30).json()
    validate(document)
    app = create_app(Settings(), service=SimpleNamespace())  # routing table only; nothing is served
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


def test_openapi_json_is_served_as_json_without_a_key(keyed_server):
    r = requests.get(keyed_server.url + "/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json()["openapi"].startswith("3.1")
    assert r.json()["components"]["schemas"]["Text"]["maxLength"] == 80
    assert requests.get(keyed_server.url + "/info", timeout=30).status_code == 401


def test_schemathesis_finds_no_server_error_and_no_nonconformance(keyed_server, tmp_path):
    cmd = [SCHEMATHESIS, "run", keyed_server.url + "/openapi.json",
           "--header", f"Authorization: Bearer {KEY}",
           "--checks", "all",
           "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--request-timeout", "60", "--no-color"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + "\n--- server log ---\n" + keyed_server.log()[-5000:]
    assert "7 selected / 7 total" in output and "Fuzzing" in output, output
    assert keyed_server.worker_pids() and "Traceback" not in keyed_server.log()
