"""HTTPS at the edge with Gunicorn's own TLS (EMBEDDER_TLS_CERT / EMBEDDER_TLS_KEY), tested with a
self-signed certificate made by Debian's openssl: the official openai client and curl --cacert get
the same vectors as POST /embed, and a plain-HTTP request to the TLS port is refused at once (the
connection is closed; the server goes on serving HTTPS)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time

import numpy as np
import pytest
import requests

from bench.harness.servers import Gunicorn

pytestmark = pytest.mark.integration
TEXTS = ["A man is playing a flute.", "hello world"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    with Gunicorn(workers=1, env={"EMBEDDER_TLS_CERT": str(cert), "EMBEDDER_TLS_KEY": str(key)}) as srv:
        assert srv.url.startswith("https://")
        yield srv, cert


@pytest.fixture(scope="module")
def want(tls_server):
    srv, cert = tls_server
    r = requests.post(srv.url + "/embed", json={"inputs": TEXTS}, verify=str(cert), timeout=60)
    assert r.status_code == 200
    return np.array(r.json())


def test_the_openai_client_gets_vectors_over_https(tls_server, want):
    import openai

    srv, cert = tls_server
    context = ssl.create_default_context(cafile=str(cert))
    with openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0,
                       http_client=openai.DefaultHttpxClient(verify=context)) as client:  # closes its TLS socket
        got = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in got.data]) - want).max() < 1e-6


def test_curl_with_the_ca_gets_vectors_and_without_it_is_refused(tls_server, want):
    srv, cert = tls_server
    argv = ["curl", "-sS", "--max-time", "30", "-H", "Content-Type: application/json",
            "-d", json.dumps({"inputs": TEXTS}), srv.url + "/embed"]
    done = subprocess.run([*argv[:1], "--cacert", str(cert), *argv[1:]], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert np.abs(np.array(json.loads(done.stdout)) - want).max() < 1e-6
    untrusted = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert untrusted.returncode == 60, untrusted.stderr  # curl: peer certificate cannot be authenticated


def test_plain_http_to_the_tls_port_is_refused_at_once(tls_server):
    srv, cert = tls_server
    plain = srv.url.replace("https://", "http://")
    began = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.get(plain + "/health", timeout=10)
    assert time.monotonic() - began < 5
    assert requests.get(srv.url + "/health", verify=str(cert), timeout=10).status_code == 200
    assert "Traceback" not in srv.log()
