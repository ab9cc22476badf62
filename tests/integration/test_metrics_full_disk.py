"""A full metrics filesystem never takes a real server down (metrics/safe_mmap.py): before, every
worker died with SIGBUS on its first metric write there (1,463 restarts in 10 minutes). Now the
values wait in memory, /metrics answers a clear 503, and all is written once there is space.
The tmpfs is real and full (root only, else skipped); tests/fast/test_metrics_disk.py has the
same without a server."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.servers import Gunicorn
from full_tmpfs import refill

pytestmark = pytest.mark.integration
TOL = 1e-5


class ServingGunicorn(Gunicorn):
    """Ready when /health answers (every worker's /metrics answers 503 while the disk is full)."""

    def ready_workers(self):
        try:
            ok = requests.get(self.url + "/health", timeout=5).status_code == 200
        except requests.RequestException:
            return None
        return self.workers if ok else None


def test_a_full_metrics_filesystem_never_takes_the_service_down(full_tmpfs, stsb, reference_model):
    """Workers on a full metrics filesystem keep serving, with the same pids (no restart loop);
    /metrics says why it cannot answer, logged once per process; when space comes back every
    count made meanwhile is there."""
    mount, filler = full_tmpfs
    texts = list(dict.fromkeys(s for _, s1, s2 in stsb for s in (s1, s2)))[:12]
    want = reference_model.encode(texts, normalize_embeddings=True)
    srv = ServingGunicorn(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(mount)})
    with srv:
        pids = sorted(srv.worker_pids())
        sent = 0
        deadline = time.monotonic() + 6  # some seconds of traffic, over every route
        while time.monotonic() < deadline or sent < 24:
            text = texts[sent % len(texts)]
            r = requests.post(srv.url + "/embed", json={"inputs": text}, timeout=30)
            assert r.status_code == 200
            assert np.abs(np.array(r.json()[0]) - want[sent % len(texts)]).max() < TOL
            sent += 1
            for path in ("/health", "/info", "/openapi.json"):
                assert requests.get(srv.url + path, timeout=30).status_code == 200, path
            assert requests.get(srv.url + "/no-such-route", timeout=30).status_code == 404  # new series
            r = requests.post(srv.url + "/v1/embeddings", json={"input": text}, timeout=30)
            assert r.status_code == 200
            m = requests.get(srv.url + "/metrics", timeout=30)
            assert m.status_code == 503 and m.headers["Content-Type"].startswith("application/json")
            assert "metrics directory" in m.text and "full or not writable" in m.text
        assert sorted(srv.worker_pids()) == pids and srv.proc.poll() is None, "workers were replaced"
        log = srv.log()
        assert "SIGBUS" not in log and "Traceback" not in log, log[-3000:]
        failures = re.findall(r"\[(\d+)\] \[ERROR\] embedder\.metrics: cannot write metric file", log)
        assert set(map(int, failures)) >= set(pids) and len(failures) == len(set(failures)), log[-3000:]

        filler.unlink()  # space again: each worker writes what it kept within about a second
        wait = time.monotonic() + 20
        while embed_count(srv) != sent:
            assert time.monotonic() < wait, "/metrics did not recover, or counts made while full were lost"
            time.sleep(0.2)
        assert "writable again" in srv.log()

        refill(filler)  # full again while the workers run: new series (new codes) still harmless
        for body, code in (({"inputs": ""}, 422), ({"inputs": texts[0]}, 200), ({"input": []}, 422)):
            route = "/embed" if "inputs" in body else "/v1/embeddings"
            assert requests.post(srv.url + route, json=body, timeout=30).status_code == code
        assert requests.post(srv.url + "/embed", data=b"x", timeout=30).status_code == 415
        assert requests.get(srv.url + "/metrics", timeout=30).status_code in (200, 503)
        assert sorted(srv.worker_pids()) == pids and "SIGBUS" not in srv.log()

def embed_count(srv) -> float | None:
    """embedder_requests_total{route="/embed",code="200"} of one scrape; None while it answers 503."""
    r = requests.get(srv.url + "/metrics", timeout=30)
    if r.status_code != 200:
        return None
    return sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples
               if s.name == "embedder_requests_total" and (s.labels["route"], s.labels["code"]) == ("/embed", "200"))
