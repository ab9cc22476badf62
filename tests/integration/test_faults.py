"""Under faults the real server keeps answering, never hands out a wrong vector, never lets a
request hang and loses no metrics: what only processes show (SIGKILL, SIGTERM, a batching
thread that dies or hangs). Overload, deadlines and the API key are tested in the fast tier
(tests/fast/test_routes.py)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.servers import Gunicorn
from served_apps import DIE_TEXT, HANG_TEXT, gunicorn_app

pytestmark = pytest.mark.integration
TOL = 1e-5


def embed(srv, inputs, timeout=60, **kw):
    return requests.post(srv.url + "/embed", json={"inputs": inputs}, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def texts(stsb):
    return list(dict.fromkeys(s for _, s1, s2 in stsb for s in (s1, s2)))[:160]


@pytest.fixture(scope="module")
def want(reference_model, texts):
    return dict(zip(texts, reference_model.encode(texts, normalize_embeddings=True)))


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    """Poll observable state (bounded), for what no event crosses the process boundary."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_replaced(srv, old_pid, timeout=120):
    """Until the master has replaced ``old_pid`` and every worker reports ready again."""
    wait_for(lambda: old_pid not in srv.worker_pids(), timeout, "the worker to be replaced")
    srv.wait_ready(timeout)


def scrape(srv) -> dict:
    """{sample name: value summed over its label sets} of one /metrics read."""
    out: dict = {}
    for family in text_string_to_metric_families(requests.get(srv.url + "/metrics", timeout=10).text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def test_sigkill_under_load_loses_no_answer_vector_or_count(texts, want):
    """SIGKILL one of two workers mid-load: no request hangs, no answer carries a wrong vector,
    the survivor keeps answering, counters keep what the dead worker counted, its live gauges go,
    and the master replaces it."""
    with Gunicorn(workers=2) as srv:
        for i in range(10):
            assert embed(srv, texts[i]).status_code == 200
        before = scrape(srv)

        def one(i):
            group = texts[(4 * i) % len(texts):][:4] * 8  # 32 inputs: each request takes a while
            try:
                return group, embed(srv, group, timeout=90)
            except requests.ConnectionError as exc:
                return group, exc

        with cf.ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(one, i) for i in range(160)]
            wait_for(lambda: sum(f.done() for f in futures) >= 8, what="load to flow")
            assert scrape(srv)["embedder_requests_in_flight"] > 1
            victim = srv.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            pending_at_kill = sum(not f.done() for f in futures)
            # While the load still runs, a new request is answered by the survivor, promptly.
            probe = embed(srv, texts[0], timeout=30)
            assert probe.status_code == 200 and np.abs(np.array(probe.json()[0]) - want[texts[0]]).max() < TOL
            assert time.monotonic() - killed_at < 20
            done, not_done = cf.wait(futures, timeout=150)
        assert pending_at_kill > 0, "the load had finished before the kill"
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
        wait_replaced(srv, victim)
        after = scrape(srv)
        # Every answered request stays counted, the dead worker's included (its files are kept).
        for name, least in (("embedder_requests_total", ok), ("embedder_request_duration_seconds_count", ok),
                            ("embedder_inputs_total", 32 * ok), ("embedder_input_tokens_total", 32 * ok),
                            ("embedder_batch_size_count", 1)):
            assert after[name] >= before[name] + least, name
        assert after["embedder_requests_in_flight"] == 1  # only this scrape
        assert after["embedder_queued_inputs"] == 0
        assert after["embedder_workers"] == 2
        assert embed(srv, texts[1]).status_code == 200


def test_sigterm_drains_requests_in_flight_and_removes_the_metrics_dir(texts):
    srv = Gunicorn(workers=1).start()
    try:
        metrics_dirs = list(Path(tempfile.gettempdir()).glob(f"embedder-{srv.pid}-*"))
        assert len(metrics_dirs) == 1 and metrics_dirs[0].is_dir()
        with cf.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(embed, srv, [t * 8 for t in texts[:64]], 120) for _ in range(6)]
            # All six accepted by the worker first (7 with the scrape itself): one not yet accepted
            # when the worker stops listening is (rightly) refused, which is not this test's point.
            wait_for(lambda: scrape(srv)["embedder_requests_in_flight"] >= 7, what="all 6 requests in flight")
            srv.proc.send_signal(signal.SIGTERM)
            assert not all(f.done() for f in futures)
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200] * 6
        assert all(len(r.json()) == 64 for r in results)
        assert srv.proc.wait(60) == 0
        with pytest.raises(requests.ConnectionError):
            embed(srv, "after shutdown", timeout=5)
        assert not metrics_dirs[0].exists()  # removed when its master exited
    finally:
        srv.stop()


def test_a_deleted_metrics_dir_is_recreated_and_never_takes_the_service_down(texts, want):
    """Someone deletes the metrics directory while the server runs: scrapes still answer (counts
    restart, as after a restart), /embed keeps serving, and a replacement worker boots (before,
    every scrape answered 500 and a new worker died on its first metric write)."""
    srv = Gunicorn(workers=1).start()
    try:
        (metrics_dir,) = Path(tempfile.gettempdir()).glob(f"embedder-{srv.pid}-*")
        assert embed(srv, texts[0]).status_code == 200
        before = scrape(srv)["embedder_requests_total"]
        import shutil

        shutil.rmtree(metrics_dir)
        r = requests.get(srv.url + "/metrics", timeout=10)
        assert r.status_code == 200 and metrics_dir.is_dir()
        r = embed(srv, texts[0])
        assert r.status_code == 200 and np.abs(np.array(r.json()[0]) - want[texts[0]]).max() < TOL
        # The worker writes its counts back (its keeper thread checks every second): whole again.
        wait_for(lambda: scrape(srv).get("embedder_requests_total", 0) >= before + 2, 30,
                 "the counts from before the deletion to be back")
        assert scrape(srv)["embedder_workers"] == 1
        shutil.rmtree(metrics_dir)
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)  # its replacement boots with no directory there
        wait_replaced(srv, victim)
        assert embed(srv, texts[1]).status_code == 200
        assert "rewrote its" in srv.log() and "re-created it" in srv.log()
        assert "Traceback" not in srv.log()
    finally:
        srv.stop()


def test_dead_workers_files_are_merged_and_no_count_is_lost(texts):
    """Each worker that exits leaves its counters and histograms in the merged files: the files
    scrapes read stay as many as with one worker (before, one pair more per dead worker, and
    scrapes grew slower), and no total ever goes down."""
    srv = Gunicorn(workers=1).start()
    try:
        (metrics_dir,) = Path(tempfile.gettempdir()).glob(f"embedder-{srv.pid}-*")
        seen, sent = 0.0, 0
        for _ in range(4):
            for text in texts[:3]:
                assert embed(srv, text).status_code == 200
                sent += 1
            counts = scrape(srv)
            assert counts["embedder_requests_total"] >= seen and counts["embedder_inputs_total"] >= sent
            seen = counts["embedder_requests_total"]
            victim = srv.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            wait_replaced(srv, victim)
            files = sorted(p.name for p in metrics_dir.glob("*.db"))
            assert not [f for f in files if f.endswith(f"_{victim}.db")], files
            # Only the master's (its module-level metrics, created at import), the live worker's and
            # the merged ones, however many workers have died.
            owners = {f.rsplit("_", 1)[1][:-3] for f in files if f.startswith(("counter_", "histogram_"))}
            assert owners <= {str(srv.pid), *map(str, srv.worker_pids()), "merged"}, files
        counts = scrape(srv)
        assert counts["embedder_requests_total"] >= seen and counts["embedder_inputs_total"] >= sent
        assert counts["embedder_input_tokens_total"] > 0 and counts["embedder_batch_size_count"] >= sent
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def fault_server():
    """The real config with tests/support/fault_wsgi.py's app, whose forward pass two sentences break."""
    env = {"EMBEDDER_STALL_TIMEOUT": "3", "EMBEDDER_REQUEST_TIMEOUT": "120"}
    with Gunicorn(workers=1, env=env, **gunicorn_app("fault_wsgi")) as srv:
        yield srv


@pytest.mark.parametrize("trigger", [DIE_TEXT, HANG_TEXT], ids=["dead", "hung"])
def test_broken_batching_thread_is_detected_and_replaced(fault_server, trigger, texts, want):
    srv = fault_server
    victim = srv.worker_pids()[0]
    began = time.monotonic()
    r = embed(srv, trigger, timeout=60)
    assert r.status_code == 503 and r.json()["error_type"] == "unavailable", r.text
    assert time.monotonic() - began < 30  # failed fast, not after the 120 s deadline
    wait_replaced(srv, victim)
    r = embed(srv, texts[0])
    assert r.status_code == 200 and np.abs(np.array(r.json()[0]) - want[texts[0]]).max() < TOL
    assert f"worker {victim} unhealthy" in srv.log()
