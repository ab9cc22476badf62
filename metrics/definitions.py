"""Every metric the service exports, in one place.

Names use base units (``_seconds``, ``_total``). Latency buckets resolve milliseconds. In
Gunicorn each worker writes its own samples (prometheus_client multiprocess mode) and
``/metrics`` adds them up; gauges say how: ``livesum`` counts only live workers.
``python -m metrics.definitions`` prints the metrics table of docs/operations.md (which
tests/fast/test_readme.py keeps equal to it).
"""

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from metrics import safe_mmap

safe_mmap.install()  # before the first metric: a full metrics filesystem must not SIGBUS a worker

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1,
                   0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

REQUESTS = Counter("embedder_requests_total", "HTTP requests answered, by route, status code and model "
                   "(empty for routes of no model and requests that named none the server serves).",
                   ["route", "code", "model"])
REQUEST_SECONDS = Histogram("embedder_request_duration_seconds",
                            "Time from reading a request to answering it, by route and model.",
                            ["route", "model"],
                            buckets=LATENCY_BUCKETS)
INPUTS = Counter("embedder_inputs_total", "Inputs embedded (texts), or scored (query-document pairs), "
                 "by model.", ["model"])
INPUT_TOKENS = Counter("embedder_input_tokens_total",
                       "Tokens of those inputs, special tokens included, after truncation, by model.", ["model"])
BATCH_SIZE = Histogram("embedder_batch_size", "Inputs per forward pass, by model.", ["model"], buckets=SIZE_BUCKETS)
BATCH_TOKENS = Histogram("embedder_batch_tokens", "Padded tokens (inputs x longest) per forward pass, by model.",
                         ["model"], buckets=TOKEN_BUCKETS)
BATCH_PADDING = Histogram("embedder_batch_padding_ratio",
                          "Share of a forward pass's padded tokens that are padding (0: inputs of one length), "
                          "by model.", ["model"], buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
PLAN_PASSES = Histogram("embedder_batch_plan_passes",
                        "Forward passes the queued inputs were split into by length when the next "
                        "pass was planned (one of them runs; the rest are planned again), by model.",
                        ["model"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
QUEUE_SECONDS = Histogram("embedder_queue_duration_seconds",
                          "Time an input waited in its worker's queue before its forward pass began, by model.",
                          ["model"], buckets=LATENCY_BUCKETS)
FORWARD_SECONDS = Histogram("embedder_forward_duration_seconds", "Time of one forward pass, by model.",
                            ["model"], buckets=LATENCY_BUCKETS)
DROPPED_INPUTS = Counter("embedder_dropped_inputs_total",
                         "Queued inputs dropped before their forward pass, by reason (client_gone: the "
                         "client closed its connection; timeout: the request's deadline passed), by model.",
                         ["reason", "model"])
IN_FLIGHT = Gauge("embedder_requests_in_flight", "Requests being handled now.",
                  multiprocess_mode="livesum")
QUEUED_INPUTS = Gauge("embedder_queued_inputs", "Inputs waiting for a forward pass now, by model.",
                      ["model"], multiprocess_mode="livesum")
FAILURES = Counter("embedder_failures_total",
                   "Requests that failed, by reason (validation, auth, overloaded, timeout, unavailable, "
                   "client_gone, internal) and model (empty when the request named none the server serves).",
                   ["reason", "model"])
WORKERS = Gauge("embedder_workers", "Gunicorn workers alive and serving.", multiprocess_mode="livesum")
MODEL_INFO = Gauge("embedder_model_info", "Each served model (kind: embedding or reranker; dimension: "
                   "of its vectors, 1 for a reranker's score); the value is always 1.",
                   ["model", "kind", "backend", "dimension"], multiprocess_mode="livemax")

FAILURE_REASONS = ("validation", "auth", "overloaded", "timeout", "unavailable", "client_gone", "internal")
DROP_REASONS = ("client_gone", "timeout")


_GAUGE_MODES = {"livesum": "gauge (live workers' sum)", "livemax": "gauge (live workers' max)",
                "all": "gauge (per worker)", "sum": "gauge (sum)", "max": "gauge (max)", "min": "gauge (min)"}


def markdown_table() -> str:
    """docs/operations.md's metrics table, from the definitions above."""
    lines = ["| metric | type | meaning |", "| --- | --- | --- |"]
    for metric in globals().values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        if metric._labelnames:
            name += "{" + ",".join(metric._labelnames) + "}"
        kind = _GAUGE_MODES.get(metric._multiprocess_mode, "gauge") if metric._type == "gauge" else metric._type
        lines.append(f"| `{name}` | {kind} | {metric._documentation} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
