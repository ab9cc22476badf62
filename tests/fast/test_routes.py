"""Routes, auth, backpressure and deadlines, through Flask's test client on the stand-in model and
backend of tests/support/fakes.py. test_error_answers.py has every row of the error table;
test_validation.py every bad input, body sizes included."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import re
import threading
import time

import numpy as np
import pytest

from fakes import expected, make_app

KEY = "s3cret-key"


@pytest.fixture()
def app():
    app = make_app()
    yield app
    app.backend.gate.set()  # never leave a request thread waiting on a held pass


def test_root_and_embed_give_the_models_vectors(app):
    client = app.test_client()
    assert client.get("/").text == "ok"
    texts = ["a man plays a flute", "the cat sat", "hello"]
    r = client.post("/embed", json={"inputs": texts})
    assert r.status_code == 200
    assert np.abs(np.array(r.get_json()) - expected(app, texts)).max() < 1e-6
    for header in ("x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert float(r.headers[header]) >= 0
    assert r.headers["x-input-tokens"] == str(sum(len(t.split()) + 2 for t in texts))


def test_openai_shape_base64_dimensions_and_token_ids(app):
    client = app.test_client()
    texts = ["one two three", "four five"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "fake/whitespace-mean"}).get_json()
    assert body["model"] == "fake/whitespace-mean" and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert np.abs(np.array([d["embedding"] for d in body["data"]]) - expected(app, texts)).max() < 1e-6
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    b64 = client.post("/embeddings", json={"input": texts, "encoding_format": "base64"}).get_json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]])
    assert np.abs(decoded - expected(app, texts)).max() < 1e-6
    ids = app.service.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    by_ids = make_app(openai_token_ids=True).test_client().post("/v1/embeddings", json={"input": ids}).get_json()
    assert np.abs(np.array([d["embedding"] for d in by_ids["data"]]) - expected(app, texts)).max() < 1e-6
    short = client.post("/embed", json={"inputs": texts, "dimensions": 8, "normalize": False}).get_json()
    assert np.abs(np.array(short) - expected(app, texts, normalize=False)[:, :8]).max() < 1e-6


def test_prompt_name_prepends_the_prompt(app):
    r = app.test_client().post("/embed", json={"inputs": "find me", "prompt_name": "query"})
    assert np.abs(np.array(r.get_json()) - expected(app, ["query: find me"])).max() < 1e-6


def test_concurrent_requests_get_their_own_vectors(app):
    texts = [f"sentence number {i} " + "word " * (i % 17) for i in range(120)]
    app.backend.gate.clear()  # hold the first pass so the rest queue up and share batches

    def one(i):
        return i, app.test_client().post("/embed", json={"inputs": texts[i]})

    with cf.ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(one, i) for i in range(len(texts))]
        assert app.backend.entered.wait(10)
        app.backend.gate.set()
        results = [f.result(timeout=60) for f in futures]
    for i, r in results:
        assert r.status_code == 200
        assert np.abs(np.array(r.get_json()[0]) - expected(app, [texts[i]])[0]).max() < 1e-6, i
    assert len(app.backend.batches) < len(texts)  # batched across requests


def test_info_health_metrics_openapi(app):
    client = app.test_client()
    info = client.get("/info").get_json()
    layout = app.service.settings.layout()
    assert (info["backend"], info["workers"], info["threads_per_worker"]) == ("fake", layout.workers,
                                                                             layout.threads)
    assert client.get("/health").get_json() == {"status": "ok"}
    assert b"embedder_requests_total" in client.get("/metrics").data
    document = client.get("/openapi.json").get_json()
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())  # Flask's <path:x>: {x}
              for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and not rule.endpoint.startswith("docs.")  # /docs: the page, not the API
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.fixture()
def held():
    """Apps whose forward passes the test holds; released at teardown whatever happened."""
    apps = []
    yield lambda **settings: apps.append(make_app(**settings)) or apps[-1]
    for app in apps:
        app.backend.gate.set()


def test_overload_gets_429_with_retry_after_then_recovers(held):
    app = held(max_queued_inputs=4)
    app.backend.gate.clear()
    client = app.test_client()
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(client.post, "/embed", json={"inputs": "taken by the batching thread"})
        assert app.backend.entered.wait(10)
        queued = pool.submit(app.test_client().post, "/embed", json={"inputs": ["q"] * 3})
        deadline = threading.Event()
        while app.service.batcher.queued < 3 and not deadline.wait(0.01):
            pass
        r = client.post("/v1/embeddings", json={"input": ["a", "b"]})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.get_json()["error"]["type"] == "rate_limit_error"
        app.backend.gate.set()
        assert first.result(10).status_code == 200 and queued.result(10).status_code == 200
    assert client.post("/embed", json={"inputs": ["a", "b"]}).status_code == 200


def test_deadline_gives_503_and_drops_the_inputs(held):
    app = held(request_timeout=0.3)
    app.backend.gate.clear()
    client = app.test_client()
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        hung = pool.submit(client.post, "/embed", json={"inputs": "held"})
        assert app.backend.entered.wait(10)
        r = app.test_client().post("/embed", json={"inputs": ["waits", "too long"]})
        assert r.status_code == 503 and r.get_json()["error_type"] == "timeout"
        assert app.service.batcher.queued == 0
        assert hung.result(10).status_code == 503
    app.backend.gate.set()


def test_unhealthy_worker_answers_503_on_health():
    app = make_app()  # its own: the watchdog then gives this worker up (and logs it) within ~1 s
    client = app.test_client()
    assert client.get("/health").status_code == 200
    app.service.batcher.fail_all("test")
    r = client.get("/health")
    assert r.status_code == 503 and r.get_json()["error_type"] == "unavailable"
    r = client.post("/embed", json={"inputs": "x"})
    assert r.status_code == 503 and "test" in r.get_json()["error"]
    deadline = time.monotonic() + 5
    while app.extensions["embedder"].ready and time.monotonic() < deadline:  # its log lands in this test, no later
        time.sleep(0.05)
    assert not app.extensions["embedder"].ready


def test_api_key():
    app = make_app(api_key=KEY)
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                    {"Authorization": "Basic " + KEY}):
        r = client.post("/embed", json={"inputs": "hello"}, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.get_json()["error_type"] == "auth"
        r = client.post("/v1/embeddings", json={"input": "x"}, headers=headers)
        assert r.status_code == 401 and r.get_json()["error"]["type"] == "authentication_error"
        assert client.get("/", headers=headers).status_code == 401
        assert client.get("/info", headers=headers).status_code == 401
    good = {"Authorization": f"Bearer {KEY}"}
    assert client.post("/embed", json={"inputs": "hello"}, headers=good).status_code == 200
    assert client.get("/", headers=good).text == "ok"
    for open_route in ("/health", "/openapi.json", "/metrics"):
        assert client.get(open_route).status_code == 200, open_route
    assert KEY not in repr(app.service.settings)
    closed = make_app(api_key=KEY, metrics_require_key=True).test_client()
    assert closed.get("/metrics").status_code == 401
    assert closed.get("/metrics", headers=good).status_code == 200
