"""/metrics is the whole server's: every worker's counts, whichever worker answers the scrape,
valid for promtool and a real Prometheus server; each master keeps its own counts. (A killed
worker takes nothing with it: test_faults.py.)"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.servers import Gunicorn, free_port

pytestmark = pytest.mark.integration

N = 90


def scrape(server) -> dict:
    """{(sample name, sorted labels): value} of one /metrics read."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of a name whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def embed(server, text):
    return requests.post(server.url + "/embed", json={"inputs": text}, timeout=60)


@pytest.fixture(scope="module")
def loaded_server():
    """3 workers that have answered exactly N /embed requests, spread over the workers."""
    with Gunicorn(workers=3) as srv:
        with cf.ThreadPoolExecutor(max_workers=24) as pool:
            codes = list(pool.map(lambda i: embed(srv, f"sentence number {i}").status_code, range(N)))
        assert codes == [200] * N
        yield srv


def test_every_read_reports_all_workers(loaded_server):
    for _ in range(8):
        samples = scrape(loaded_server)
        assert value(samples, "embedder_requests_total", route="/embed") == N
        assert value(samples, "embedder_requests_total", route="/embed", code="200") == N
        assert value(samples, "embedder_request_duration_seconds_count", route="/embed") == N
        assert value(samples, "embedder_request_duration_seconds_bucket", route="/embed", le="+Inf") == N
        assert value(samples, "embedder_inputs_total") == N
        assert value(samples, "embedder_batch_size_sum") == N
        assert value(samples, "embedder_workers") == 3
        assert value(samples, "embedder_model_info", backend="onnx", dimension="384") == 1
        assert value(samples, "embedder_queued_inputs") == 0
        assert value(samples, "embedder_requests_in_flight") == 1  # this scrape
        assert value(samples, "embedder_failures_total") == 0


def test_promtool_accepts_the_output(loaded_server):
    requests.post(loaded_server.url + "/embed", data=b"{", headers={"Content-Type": "application/json"})
    text = requests.get(loaded_server.url + "/metrics", timeout=10).text
    assert "embedder_failures_total" in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_timing_headers(loaded_server):
    r = requests.post(loaded_server.url + "/v1/embeddings", json={"input": "where did the time go"}, timeout=60)
    total, queue, infer = (float(r.headers[h]) for h in ("x-total-time", "x-queue-time", "x-inference-time"))
    assert 0 < infer <= total and 0 <= queue <= total


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    raise AssertionError("unreachable")


def test_real_prometheus_scrapes_the_right_values(loaded_server, tmp_path):
    port = free_port()
    target = loaded_server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: embedder
    static_configs: [{{targets: ["{target}"]}}]
""")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1/query"

    def query(expr):
        try:
            result = requests.get(api, params={"query": expr}, timeout=5).json()["data"]["result"]
        except (requests.RequestException, KeyError, ValueError):
            return None
        return float(result[0]["value"][1]) if result else None

    try:
        deadline = time.monotonic() + 90
        total = None
        while time.monotonic() < deadline and total is None:
            total = query('sum(embedder_requests_total{route="/embed",code="200"})')
            time.sleep(0.5)
        assert total == N
        samples = scrape(loaded_server)  # no /embed traffic since: the buckets are what Prometheus holds
        summed: dict[float, float] = {}  # by le over the route's series (one per model label), as `sum by (le)`
        for (n, ls), v in samples.items():
            if n == "embedder_request_duration_seconds_bucket" and dict(ls)["route"] == "/embed":
                summed[float(dict(ls)["le"])] = summed.get(float(dict(ls)["le"]), 0.0) + v
        buckets = list(summed.items())
        for q in (0.5, 0.99):
            got = query(f'histogram_quantile({q}, sum by (le) '
                        f'(embedder_request_duration_seconds_bucket{{route="/embed"}}))')
            assert got == pytest.approx(histogram_quantile(q, buckets), rel=1e-9)
        assert query("sum(embedder_workers)") == 3
    finally:
        proc.terminate()
        proc.wait(30)


def test_each_master_has_its_own_metrics_directory(loaded_server, server):
    """Two servers at once (this module's and the session's) never mix counts. (Its removal when
    the master exits: test_faults.py's SIGTERM test.)"""
    before = value(scrape(server), "embedder_requests_total", route="/embed", code="200")
    assert embed(server, "only once").status_code == 200
    assert value(scrape(server), "embedder_requests_total", route="/embed", code="200") == before + 1
    assert value(scrape(loaded_server), "embedder_requests_total", route="/embed", code="200") == N
    for srv in (server, loaded_server):
        assert len(list(Path(tempfile.gettempdir()).glob(f"embedder-{srv.pid}-*"))) == 1
