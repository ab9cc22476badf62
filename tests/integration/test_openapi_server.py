"""The live server conforms to its OpenAPI document.

Schemathesis generates requests from the server's own /openapi.json (schema-valid ones, which
must be accepted, and invalid ones, which must be refused with a documented 4xx) and checks each
response's status, content type, headers and body against the document. The server runs with an
API key, so the 401 paths and the key's enforcement are part of the check.
tests/fast/test_openapi_document.py checks the document itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from bench.harness.servers import Gunicorn

pytestmark = pytest.mark.integration
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
KEY = "test-key-for-schemathesis"
# Examples per operation and phase; about a minute on 2 slow cores. Raise it to fuzz harder.
MAX_EXAMPLES = 100
SEED = 20240607


@pytest.fixture(scope="module")
def keyed_server():
    # 80 characters stay under 256 tokens whatever they are (a Hangul syllable is at most 3
    # wordpieces), so every schema-valid text is accepted, even with truncate=false.
    env = {"EMBEDDER_API_KEY": KEY, "EMBEDDER_MAX_INPUTS": "8", "EMBEDDER_MAX_INPUT_CHARS": "80",
           "EMBEDDER_MAX_BODY_BYTES": "65536"}
    with Gunicorn(workers=1, env=env) as srv:
        yield srv


def test_openapi_json_is_served_as_json_without_a_key(keyed_server):
    validate(requests.get(keyed_server.url + "/openapi.json", timeout=30).json())
    r = requests.get(keyed_server.url + "/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json()["openapi"].startswith("3.1")
    assert r.json()["components"]["schemas"]["EmbedRequest"]["properties"]["inputs"]["oneOf"][0]["maxLength"] == 80
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
    selected = re.search(r"(\d+) selected / (\d+) total", output)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= 15, output  # TEI's, OpenAI's too
    assert "Fuzzing" in output, output
    assert keyed_server.worker_pids() and "Traceback" not in keyed_server.log()


def test_body_over_the_limit_is_answered_413_not_reset(keyed_server):
    """Gunicorn, not only Flask: a 3 MB body against a 64 kB limit is read and answered, so the
    client sees the 413 rather than a connection reset."""
    big = b'{"inputs": "' + b"x" * 3_000_000 + b'"}'
    r = requests.post(keyed_server.url + "/embed", data=big, timeout=60,
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413 and r.json()["error_type"] == "request_entity_too_large"
    assert requests.post(keyed_server.url + "/embed", json={"inputs": "still fine"}, timeout=60,
                         headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
