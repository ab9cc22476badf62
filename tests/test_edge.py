"""What faces clients at the edge, through a real server (conftest's 2-worker default server):
inputs with no content are refused like empty ones, and the access log Gunicorn writes holds no
secret a client sent (user names, query values, credential headers)."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.integration
SECRET = "sk-edge-9f31c2"


@pytest.mark.parametrize("path,body", [
    ("/embed", {"inputs": [" \t\n"]}),
    ("/embed", {"inputs": ["ok", "\u0000"]}),
    ("/embed", {"inputs": "\u200b\u200d\ufeff"}),
    ("/v1/embeddings", {"input": ["\u3000\u2028"]}),
])
def test_inputs_without_content_are_422(server, path, body):
    r = requests.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert "no content" in r.text


def test_the_access_log_holds_no_secret(server):
    r = requests.post(f"{server.url}/embed?api_key={SECRET}", json={"inputs": "hello"}, timeout=30,
                      auth=(f"user-{SECRET}", "pw"), headers={"X-Api-Key": SECRET,
                                                             "Referer": f"http://x/?token={SECRET}"})
    assert r.status_code == 200
    deadline = time.monotonic() + 10  # Gunicorn writes the line after the response
    while "/embed?api_key=" not in server.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = server.access_log.read_text()
    assert "/embed?api_key=[redacted]" in text and '"POST' in text
    assert SECRET not in text


def test_a_chunked_body_over_the_limit_is_413(server):
    """5 MiB sent chunked (no Content-Length) against the 4 MiB default: 413, never a body cut at
    the limit and answered 200; the server keeps serving."""
    def chunks():
        yield b'{"inputs": "'
        for _ in range(5 * 16):
            yield b"x " * 32 * 1024
        yield b'"}'

    r = requests.post(server.url + "/embed", data=chunks(), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error_type"] == "request_entity_too_large"
    assert requests.post(server.url + "/embed", json={"inputs": "still fine"}, timeout=60).status_code == 200
