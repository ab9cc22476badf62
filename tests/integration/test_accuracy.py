"""The accuracy gate: STS-B test-split Spearman x100 of cosine similarities, computed through real
servers with ``bench/tools/stsb_eval.py``. torch must reproduce the published 82.03 and the onnx backend
stay within 0.2 points of torch. Every other precision (each of EMBEDDER_QUANTIZE's values) passes
the fidelity gate against the float32 onnx server: Spearman within 0.5 points, and every STS-B
sentence's vector at cosine >= 0.95 to its float32 vector (a corpus score can hide broken vectors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.harness.servers import ROOT, Gunicorn
from bench.tools.stsb_eval import MAX_SPEARMAN_DROP, MIN_SENTENCE_COSINE, evaluate
from embedder.config import QUANTIZATIONS

pytestmark = pytest.mark.integration
PUBLISHED = 82.03  # MTEB STSBenchmark cosine_spearman of all-MiniLM-L6-v2 (bench/data/README.md)


@pytest.fixture(scope="module")
def torch_score(torch_server):
    result = evaluate(torch_server.url)
    assert (result["backend"], result["pairs"]) == ("torch", 1379)
    return result["spearman_x100"]


@pytest.fixture(scope="module")
def onnx_score(server):
    """The default server: the onnx backend, float32."""
    result = evaluate(server.url)
    assert (result["backend"], result["pairs"]) == ("onnx", 1379)
    return result["spearman_x100"]


@pytest.fixture(scope="module", params=[q for q in QUANTIZATIONS if q])
def quantized(request, server):
    """A 1-worker server with that precision, gated against the default float32 server through
    the documented command line, with --json."""
    with Gunicorn(workers=1, env={"EMBEDDER_BACKEND": "onnx", "EMBEDDER_QUANTIZE": request.param}) as srv:
        done = subprocess.run([sys.executable, "-m", "bench.tools.stsb_eval", "--url", srv.url,
                               "--reference", server.url, "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    result = json.loads(done.stdout)
    assert (result["backend"], result["pairs"], result["sentences"]) == (f"onnx-{request.param}", 1379, 2552)
    assert result["reference"]["backend"] == "onnx"
    return request.param, result, done.returncode


def test_torch_reproduces_the_published_score(torch_score):
    assert abs(torch_score - PUBLISHED) <= 0.1, torch_score


def test_onnx_is_within_0_2_points_of_torch(torch_score, onnx_score):
    assert abs(onnx_score - torch_score) <= 0.2, (onnx_score, torch_score)
    assert abs(onnx_score - PUBLISHED) <= 0.3, onnx_score


def test_every_other_precision_passes_the_fidelity_gate(quantized, onnx_score):
    name, result, returncode = quantized
    assert abs(result["reference"]["spearman_x100"] - onnx_score) < 1e-6  # the same float32 vectors
    assert onnx_score - result["spearman_x100"] <= MAX_SPEARMAN_DROP, (name, result)
    assert result["fidelity"]["below_min_cosine"] == 0, (name, result["fidelity"])
    assert result["fidelity"]["worst_cosine"] >= MIN_SENTENCE_COSINE
    assert result["gate_passed"] and returncode == 0

