"""Under faults and overload the server keeps answering, never hands out a wrong vector, and
never lets a request hang; an API key keeps unauthorised callers out."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import numpy as np
import pytest
import requests

from fault_wsgi import DIE_TEXT, HANG_TEXT
from serverproc import Server

TOL = 1e-5


def embed(srv, inputs, timeout=60, **kw):
    return requests.post(srv.url + "/embed", json={"inputs": inputs}, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def texts(stsb):
    return list(dict.fromkeys(s for _, s1, s2 in stsb for s in (s1, s2)))[:160]


@pytest.fixture(scope="module")
def want(reference_model, texts):
    return dict(zip(texts, reference_model.encode(texts, normalize_embeddings=True)))


def wait_replaced(srv, old_pid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = srv.worker_pids()
        if old_pid not in pids and len(pids) == srv.workers:
            break
        time.sleep(0.2)
    srv.wait_ready(timeout)
    return time.monotonic()


def test_sigkill_under_load(texts, want):
    with Server(workers=2) as srv:
        def one(i):
            group = texts[(4 * i) % len(texts):][:4]
            try:
                return group, embed(srv, group, timeout=90)
            except requests.ConnectionError as exc:
                return group, exc

        with cf.ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(one, i) for i in range(160)]
            time.sleep(2)
            victim = srv.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            done, not_done = cf.wait(futures, timeout=150)
        assert not not_done, "requests hung"
        ok = failed = 0
        for future in done:
            group, r = future.result()
            if isinstance(r, Exception):
                failed += 1  # the killed worker's own connections are reset: a clean failure
                continue
            if r.status_code == 200:
                got = np.array(r.json())
                assert np.abs(got - np.stack([want[t] for t in group])).max() < TOL, "wrong vector"
                ok += 1
            else:
                assert r.headers["Content-Type"] == "application/json" and r.status_code in (429, 503)
                failed += 1
        assert ok > 0
        killed_at = time.monotonic()
        # Answers normally again within a few seconds (the survivor never stopped answering).
        r = embed(srv, texts[0], timeout=30)
        assert r.status_code == 200 and np.abs(np.array(r.json()[0]) - want[texts[0]]).max() < TOL
        assert time.monotonic() - killed_at < 30
        wait_replaced(srv, victim)
        assert embed(srv, texts[1]).status_code == 200


def test_sigterm_drains_requests_in_flight(texts):
    srv = Server(workers=1).start()
    try:
        with cf.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(embed, srv, [t * 8 for t in texts[:64]], 120) for _ in range(6)]
            time.sleep(1.0)
            srv.proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200] * 6
        assert all(len(r.json()) == 64 for r in results)
        assert srv.proc.wait(60) == 0
        with pytest.raises(requests.ConnectionError):
            embed(srv, "after shutdown", timeout=5)
    finally:
        srv.stop()


def test_overload_gets_429_with_retry_after_then_recovers(texts, want):
    env = {"EMBEDDER_MAX_QUEUED_INPUTS": "8", "EMBEDDER_HTTP_THREADS": "64"}
    with Server(workers=1, env=env) as srv:
        groups = [texts[i:i + 6] for i in range(0, 150, 6)]
        with cf.ThreadPoolExecutor(max_workers=len(groups)) as pool:
            results = list(pool.map(lambda g: (g, embed(srv, g)), groups))
        codes = [r.status_code for _, r in results]
        assert codes.count(429) > 0 and codes.count(200) > 0, codes
        for group, r in results:
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert r.json()["error_type"] == "overloaded"
            else:
                assert r.status_code == 200, r.text
                assert np.abs(np.array(r.json()) - np.stack([want[t] for t in group])).max() < TOL
        r = embed(srv, texts[:3])
        assert r.status_code == 200
        metrics = requests.get(srv.url + "/metrics", timeout=10).text
        assert f'embedder_failures_total{{reason="overloaded"}} {codes.count(429)}.0' in metrics


def test_request_deadline_gives_503_and_drops_the_inputs(texts):
    env = {"EMBEDDER_REQUEST_TIMEOUT": "1", "EMBEDDER_STALL_TIMEOUT": "600"}
    with Server(workers=1, env=env, app="tests.fault_wsgi:app") as srv:
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            hung = pool.submit(embed, srv, HANG_TEXT, 30)
            time.sleep(0.3)
            queued = pool.submit(embed, srv, texts[:5], 30)
            for r in (hung.result(), queued.result()):
                assert r.status_code == 503 and r.json()["error_type"] == "timeout"
        metrics = requests.get(srv.url + "/metrics", timeout=10).text
        assert "embedder_queued_inputs 0.0" in metrics


@pytest.mark.parametrize("trigger", [DIE_TEXT, HANG_TEXT], ids=["dead", "hung"])
def test_broken_batching_thread_is_detected_and_replaced(trigger, texts, want):
    env = {"EMBEDDER_STALL_TIMEOUT": "3", "EMBEDDER_REQUEST_TIMEOUT": "120"}
    with Server(workers=1, env=env, app="tests.fault_wsgi:app") as srv:
        victim = srv.worker_pids()[0]
        began = time.monotonic()
        r = embed(srv, trigger, timeout=60)
        assert r.status_code == 503 and r.json()["error_type"] == "unavailable", r.text
        assert time.monotonic() - began < 30  # failed fast, not after the 120 s deadline
        wait_replaced(srv, victim)
        r = embed(srv, texts[0])
        assert r.status_code == 200 and np.abs(np.array(r.json()[0]) - want[texts[0]]).max() < TOL
        assert "unhealthy" in srv.log()


def test_api_key():
    key = "s3cret-key"
    with Server(workers=1, env={"EMBEDDER_API_KEY": key}) as srv:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key},
                        {"Authorization": "Basic " + key}):
            r = embed(srv, "hello", headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.json()["error_type"] == "auth"
            r = requests.post(srv.url + "/v1/embeddings", json={"input": "x"}, headers=headers, timeout=10)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert requests.get(srv.url + "/", headers=headers, timeout=10).status_code == 401
        good = {"Authorization": f"Bearer {key}"}
        assert embed(srv, "hello", headers=good).status_code == 200
        assert requests.get(srv.url + "/", headers=good, timeout=10).text == "ok"
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200
        assert requests.get(srv.url + "/metrics", timeout=10).status_code == 200
        assert key not in srv.log()
        import openai

        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
        assert len(client.embeddings.create(model="m", input="hi").data[0].embedding) == 384
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).embeddings.create(
                model="m", input="hi")
    with Server(workers=1, env={"EMBEDDER_API_KEY": key, "EMBEDDER_METRICS_REQUIRE_KEY": "true"}) as srv:
        assert requests.get(srv.url + "/metrics", timeout=10).status_code == 401
        assert requests.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {key}"},
                            timeout=10).status_code == 200


def test_body_over_the_limit_is_answered_413_not_reset():
    with Server(workers=1, env={"EMBEDDER_MAX_BODY_BYTES": "100000"}) as srv:
        big = b'{"inputs": "' + b"x" * 3_000_000 + b'"}'
        r = requests.post(srv.url + "/embed", data=big, headers={"Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code == 413 and r.json()["error"]
        assert r.headers["Content-Type"] == "application/json"
        assert embed(srv, "still fine").status_code == 200
