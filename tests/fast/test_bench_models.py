"""bench/tools/models.py without a server: its workloads (rerank and probe bodies from STS-B), the
/metrics arithmetic, the summaries and the report on made-up numbers, and its flags.
bench/harness/reranker.py's model is only described here (building it needs torch)."""

from __future__ import annotations

import json

import pytest

from bench.harness import reranker, stsb
from bench.tools import models


def test_rerank_bodies_are_seeded_queries_with_other_sentences():
    sentences = stsb.unique_sentences()
    bodies = models.rerank_bodies(sentences, 200, (20, 100), seed=21)
    assert bodies == models.rerank_bodies(sentences, 200, (20, 100), seed=21)  # deterministic
    assert bodies != models.rerank_bodies(sentences, 200, (20, 100), seed=22)
    assert len(bodies) == 200
    counts = [len(b["texts"]) for b in bodies]
    assert min(counts) >= 20 and max(counts) <= 100 and len(set(counts)) > 20  # spread over the range
    for body in bodies:
        assert set(body) == {"query", "texts"} and body["query"] in sentences
        assert body["query"] not in body["texts"]  # distinct sentences: never the query itself
        assert len(set(body["texts"])) == len(body["texts"])  # no document twice
    assert len({b["query"] for b in bodies}) > 150
    fixed = models.rerank_bodies(sentences, 10, (20, 20), seed=22)
    assert {len(b["texts"]) for b in fixed} == {20}


@pytest.mark.parametrize("docs", [(0, 5), (5, 4), (3, 3)])
def test_rerank_bodies_refuse_impossible_ranges(docs):
    with pytest.raises(ValueError):
        models.rerank_bodies(["a", "b", "c"], 1, docs, seed=0)


def test_embed_probes_are_single_sentences(tmp_path):
    sentences = stsb.sentences()
    bodies = models.embed_probe_bodies(sentences, 50, seed=22)
    assert bodies == models.embed_probe_bodies(sentences, 50, seed=22)
    assert all(isinstance(b["inputs"], str) and b["inputs"] in sentences for b in bodies)
    path = models.write_jsonl(bodies, tmp_path / "b.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == bodies


def test_docs_flag_and_quick_defaults():
    assert models.parse_docs("20-100") == (20, 100) and models.parse_docs("20") == (20, 20)
    args = models.parse_args([])
    assert (args.duration, args.rounds, args.memory_workers, args.workers) == (20, 2, [1, 2, 4], 2)
    assert args.docs == (20, 100) and args.sections == list(models.SECTIONS)
    quick = models.parse_args(["--quick", "--rounds", "2"])
    assert quick.duration == 5 and quick.rounds == 2 and quick.memory_workers == [1, 2]  # later flags win
    with pytest.raises(SystemExit):
        models.parse_args(["--sections", "memory,nonsense"])


def test_latency_stats_are_nearest_rank():
    stats = models.latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (stats["n"], stats["p50_ms"], stats["p95_ms"], stats["max_ms"]) == (100, 50.0, 95.0, 100.0)
    assert models.latency_stats([0.002])["p95_ms"] == 2.0
    assert models.latency_stats([]) == {"n": 0}


METRICS_BEFORE = """\
# HELP embedder_forward_duration_seconds Time of one forward pass, by model.
embedder_forward_duration_seconds_bucket{le="0.025",model="minilm"} 10.0
embedder_forward_duration_seconds_bucket{le="0.05",model="minilm"} 10.0
embedder_forward_duration_seconds_bucket{le="0.1",model="minilm"} 10.0
embedder_forward_duration_seconds_bucket{le="+Inf",model="minilm"} 10.0
embedder_forward_duration_seconds_count{model="minilm"} 10.0
embedder_forward_duration_seconds_sum{model="minilm"} 0.5
embedder_forward_duration_seconds_count{model="reranker"} 2.0
embedder_forward_duration_seconds_sum{model="reranker"} 0.4
embedder_batch_size_sum{model="minilm"} 40.0
embedder_batch_size_sum{model="reranker"} 64.0
embedder_batch_tokens_sum{model="minilm"} 400.0
embedder_inputs_total{model="minilm"} 38.0
embedder_requests_total{code="200",model="minilm",route="/embed"} 38.0
embedder_failures_total{model="minilm",reason="client_gone"} 0.0
"""
METRICS_AFTER = """\
embedder_forward_duration_seconds_bucket{le="0.025",model="minilm"} 10.0
embedder_forward_duration_seconds_bucket{le="0.05",model="minilm"} 20.0
embedder_forward_duration_seconds_bucket{le="0.1",model="minilm"} 29.0
embedder_forward_duration_seconds_bucket{le="+Inf",model="minilm"} 30.0
embedder_forward_duration_seconds_count{model="minilm"} 30.0
embedder_forward_duration_seconds_sum{model="minilm"} 1.5
embedder_forward_duration_seconds_count{model="reranker"} 2.0
embedder_forward_duration_seconds_sum{model="reranker"} 0.4
embedder_batch_size_sum{model="minilm"} 120.0
embedder_batch_size_sum{model="reranker"} 64.0
embedder_batch_tokens_sum{model="minilm"} 1200.0
embedder_inputs_total{model="minilm"} 110.0
embedder_requests_total{code="200",model="minilm",route="/embed"} 110.0
embedder_requests_total{code="499",model="minilm",route="/embed"} 2.0
embedder_requests_total{code="503",model="minilm",route="/embed"} 1.0
embedder_failures_total{model="minilm",reason="client_gone"} 2.0
embedder_failures_total{model="minilm",reason="timeout"} 1.0
embedder_workers 2.0
"""


def test_metrics_deltas_per_model():
    before, after = models.parse_metrics(METRICS_BEFORE), models.parse_metrics(METRICS_AFTER)
    assert after[("embedder_workers", ())] == 2.0
    delta = models.counter_delta(models.model_counters(before, "minilm"), models.model_counters(after, "minilm"), 4.0)
    assert delta["passes"] == 20 and delta["mean_pass_ms"] == 50.0
    assert delta["batched"] == 80 and delta["inputs_per_pass"] == 4.0 and delta["inputs_per_s"] == 20.0
    assert delta["forward_s_per_s"] == 0.25 and delta["passes_per_s"] == 5.0
    assert delta["inputs"] == 72 and delta["padded_tokens"] == 800
    # Of the run's 20 passes, 10 took <= 50 ms and 19 <= 100 ms; one went past the last bound.
    assert delta["pass_p95_le_ms"] == 100.0 and delta["pass_max_le_ms"] is None
    assert not any(key.startswith("le_") for key in delta)
    # 499 (a client gone: wrk stopping mid-request) is not misbehaviour; 503 is.
    assert delta["code_499"] == 2 and delta["code_503"] == 1 and delta["non_2xx"] == 1
    assert delta["client_gone"] == 2 and delta["failures"] == 1
    idle = models.counter_delta(models.model_counters(before, "reranker"), models.model_counters(after, "reranker"), 4)
    assert idle["passes"] == 0 and idle["mean_pass_ms"] is None and idle["inputs_per_s"] == 0
    problems = []
    models.check_counters(delta, "run", problems)
    models.check_counters(idle, "run", problems)
    assert len(problems) == 1 and "503" in problems[0]


def test_cpu_info_reads_model_and_flags():
    text = "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile\n\n" \
           "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu\n"
    info = models.cpu_info(text)
    assert info["cpu_model"] == "Some Xeon"
    assert info["flags"]["avx512_vnni"] and info["flags"]["amx_tile"] and not info["flags"]["avx512_bf16"]


def _delta(passes, forward_s, batched, seconds=20.0):
    return models.counter_delta({"passes": 0, "forward_s": 0, "batched": 0},
                                {"passes": passes, "forward_s": forward_s, "batched": batched}, seconds)


def _wrk(rps):
    return {"requests_per_s": rps, "latency_p50_ms": 100.0, "latency_p99_ms": 300.0, "non_2xx": 0, "socket_errors": 0}


def _results() -> dict:
    idle = _delta(0, 0, 0)
    probe = {"n": 40, "errors": 0, "p50_ms": 90.0, "p95_ms": 120.0, "max_ms": 150.0}
    served = [
        {"kind": "latency", "probe_model": "rerank", "load": None, "round": 1, "probe": probe, "wrk": None,
         "server_cores": 1.0, "host_busy_cores": 1.1,
         "models": {"minilm": idle, "reranker": _delta(80, 2.4, 800)}},
        {"kind": "latency", "probe_model": "rerank", "load": "embed", "round": 1,
         "probe": {**probe, "p95_ms": 200.0}, "wrk": _wrk(150.0), "server_cores": 1.9, "host_busy_cores": 2.0,
         "models": {"minilm": _delta(800, 32.0, 3000), "reranker": _delta(80, 3.2, 800)}},
        {"kind": "alone", "load": "rerank", "round": 1, "wrk": {"rerank": _wrk(2.0)}, "server_cores": 2.0,
         "models": {"minilm": idle, "reranker": _delta(200, 40.0, 3000)}},
        {"kind": "alone", "load": "embed", "round": 1, "wrk": {"embed1long": _wrk(300.0)}, "server_cores": 2.0,
         "models": {"minilm": _delta(1000, 40.0, 6000), "reranker": idle}},
        {"kind": "mixed", "load": "embed+rerank", "round": 1, "wrk": {"embed1long": _wrk(60.0), "rerank": _wrk(1.5)},
         "server_cores": 2.0,
         "models": {"minilm": _delta(150, 6.0, 1200), "reranker": _delta(150, 34.0, 2400)}},
    ]
    return {"name": "2026-12-06-test", "command": "python -m bench.tools.models --quick", "started": "s",
            "finished": "f", "settings": vars(models.parse_args(["--quick"])) | {"docs": [20, 100]},
            "machine": {"cpu_model": "Some Xeon", "flags": {"avx512_vnni": True}, "nproc": 2, "available_cpus": 2,
                        "versions": {"onnxruntime": "1.31.1"}},
            "reranker": {"note": reranker.NOTE, "weights_bytes": 90 * 2**20, "serving_bytes": 128 * 2**20},
            "workloads": {"rerank": {"bodies": 200, "pairs": 11483, "mean_docs": 57.4}},
            "memory": [{"workers": 2, "models": "embedding", "pss_mib": 275.0, "private_mib": 130.0,
                        "pss_mib_by_pid": {"1": 35.0, "2": 120.0, "3": 120.0}},
                       {"workers": 2, "models": "embedding+reranker", "pss_mib": 430.0, "private_mib": 190.0,
                        "pss_mib_by_pid": {"1": 44.0, "2": 193.0, "3": 193.0}}],
            "memory_summary": models.memory_summary(
                [{"workers": 2, "models": "embedding", "pss_mib": 275.0},
                 {"workers": 2, "models": "embedding+reranker", "pss_mib": 430.0}], 90 * 2**20),
            "limit": {"pairs_per_s": 160.0, "runs": [158.0, 162.0], "processes": 2, "threads": 1, "batch_size": 32,
                      "seconds": 10, "pairs": 11483, "cores": [2.0, 2.0], "pairs_per_cpu_s": 80.0,
                      "pair_tokens": {"min": 8, "median": 25, "p90": 43, "p99": 60, "max": 80, "mean": 27.0}},
            "served": served, "problems": []}


def test_summaries_and_report_on_made_up_numbers():
    results = _results()
    assert results["memory_summary"] == [{"workers": 2, "alone_pss_mib": 275.0, "both_pss_mib": 430.0,
                                          "difference_mib": 155.0, "reranker_weights_mib": 90.0,
                                          "weights_times_workers_mib": 180.0}]
    summary = results["summary"] = models.summarize(results)
    loaded = next(r for r in summary["latency"] if r["load"] == "embed")
    # The probe: 80 passes over 40 requests = 2 a request, 40 ms each; the load's passes 40 ms.
    assert loaded["probe_passes_per_request"] == 2.0 and loaded["probe_pass_ms"] == 40.0
    assert loaded["load_pass_ms"] == 40.0 and loaded["p95_in_load_passes"] == 5.0
    assert loaded["turn_bound_ms"] == 160.0 and loaded["p95_over_bound"] == 1.25
    baseline = next(r for r in summary["latency"] if r["load"] == "none")
    assert baseline["load_pass_ms"] is None and baseline["turn_bound_ms"] == 60.0
    assert summary["rerank"]["served_median"] == 150.0 and summary["rerank"]["served_over_limit"] == 0.94
    # Per CPU-second: 150 pairs/s on 2.0 server cores, against the limit's 80 a CPU-second.
    rerank = summary["rerank"]
    assert rerank["served_pairs_per_cpu_s"] == 75.0 and rerank["served_over_limit_per_cpu"] == 0.94
    shares = {s["model"]: s for s in summary["mixed"]}
    assert shares["minilm"]["mixed_over_alone"] == 0.2 and shares["reranker"]["mixed_over_alone"] == 0.8
    assert shares["reranker"]["mixed_forward_share"] == 0.85 and shares["minilm"]["mixed_passes_per_s"] == 7.5
    assert summary["mixed_sum_of_shares"] == 1.0
    text = models.markdown(results)
    for needed in ("python -m bench.tools.models --quick", "Some Xeon", "avx512_vnni", "random-weight",
                   "meaningless", "| 2 | 275.0 | 430.0 | **155.0** | 90.0 | 180.0 |", "**160.0 pairs/s**",
                   "= **0.94**", "None seen", "## Headlines", "- **Memory**: the reranker adds 155.0 MiB at 2 workers",
                   "p95 200 ms (no load: 120 ms) = 5.0 mean passes of the load (40 ms), 1.25 × the turn bound",
                   "served / limit 0.94 (0.94 per CPU-second)", "together 1.00 of alone"):
        assert needed in text, needed
    results["problems"] = ["round 1 mixed (minilm): 1 non-2xx"]
    assert "round 1 mixed (minilm): 1 non-2xx" in models.markdown(results)


def test_the_bench_reranker_has_ms_marco_minilm_l6_shape():
    assert reranker.SHAPE["architectures"] == ["BertForSequenceClassification"]
    assert {k: reranker.SHAPE[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                           "intermediate_size", "max_position_embeddings", "num_labels")} == \
        {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
         "max_position_embeddings": 512, "num_labels": 1}
    assert reranker.cache_key() == reranker.cache_key() and len(reranker.cache_key()) == 16
    assert "meaningless" in reranker.NOTE


SS = """\
0      0      127.0.0.1:8000      127.0.0.1:40001 users:(("gunicorn",pid=11,fd=12))
0      0      127.0.0.1:8000      127.0.0.1:40002 users:(("gunicorn",pid=12,fd=12))
0      0      127.0.0.1:8000      127.0.0.1:40003 users:(("gunicorn",pid=12,fd=13))
0      0      127.0.0.1:8000      127.0.0.1:40004 users:(("gunicorn",pid=12,fd=14))
0      0      127.0.0.1:40001     127.0.0.1:8000  users:(("wrk",pid=98,fd=3))
0      0      127.0.0.1:40002     127.0.0.1:8000  users:(("wrk",pid=99,fd=3))
0      0      127.0.0.1:40003     127.0.0.1:8000  users:(("wrk",pid=98,fd=4))
0      0      127.0.0.1:40004     127.0.0.1:8000  users:(("python",pid=7,fd=3))
0      0      127.0.0.1:22        127.0.0.1:5000  users:(("sshd",pid=1,fd=3))
"""


def test_connections_by_worker_and_client():
    who = {98: "embed", 99: "rerank", 7: "probe"}
    found = models.connections(8000, SS, client=who.get)
    assert found["by_worker"] == {"11": 1, "12": 3}
    assert found["by_worker_and_client"] == {"11": {"embed": 1}, "12": {"rerank": 1, "embed": 1, "probe": 1}}
    assert found["probe_worker"] == "12"
    run = {"connections": found, "worker_cores": {"11": 0.5, "12": 1.0}}
    spread = models._spread(run)
    assert spread["connections_by_worker"] == [1, 3] and spread["cores_by_worker"] == [0.5, 1.0]
    assert spread["probe_worker_other_connections"] == 2
    assert models._conns(spread) == "1 (embed 1) + 3 (embed 1, probe 1, rerank 1)"
    assert models.connections(8000, "") == {"by_worker": {}, "by_worker_and_client": {}, "probe_worker": None}


def test_memory_fit_splits_once_from_per_worker():
    rows = [{"workers": w, "difference_mib": 120.0 + 20.0 * w} for w in (1, 2, 4)]
    assert models.memory_fit(rows) == {"once_mib": 120.0, "per_worker_mib": 20.0}
    assert models.memory_fit(rows[:1]) is None


def test_uneven_connections_are_observed():
    def run(kind, by_client, load="embed+rerank"):
        return {"kind": kind, "round": 1, "load": load, "probe_model": None, "wrk": {"x": {}},
                "worker_cores": {"11": 0.5, "12": 0.6},
                "connections": {"by_worker": {w: sum(c.values()) for w, c in by_client.items()},
                                "by_worker_and_client": by_client}}

    even = run("mixed", {"11": {"embed": 8, "rerank": 8}, "12": {"embed": 8, "rerank": 8}})
    lopsided = run("mixed", {"11": {"rerank": 3}, "12": {"embed": 16, "rerank": 13}})
    assert models.spread_observations([even]) == []
    found = models.spread_observations([lopsided])
    assert found == ["round 1, mixed: embed connections by worker 0 + 16 (a worker held none); cores by worker "
                     "0.50 / 0.60",
                     "round 1, mixed: rerank connections by worker 3 + 13; cores by worker 0.50 / 0.60"]
