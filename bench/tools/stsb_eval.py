"""STS-B accuracy of a running server: Spearman x100 of cosine similarities against the gold scores,
and, against a reference server, how far each sentence's vector moved.

Sends the test split's unique sentences to ``POST /embed`` in requests of ``--batch`` and scores
all 1,379 pairs, so any backend or setting can be checked end to end (all-MiniLM-L6-v2 in torch
scores 82.03, the published MTEB figure). A corpus-level score can hide a few broken vectors, so
with ``--reference`` (e.g. a float32 server) it also compares every sentence's vector with the
reference's: the fidelity gate of the server's precision (:data:`GATES`, read from its /info backend
label unless ``--precision`` says) asks for Spearman within so many points of the reference's and
every sentence at so high a cosine to its reference vector (int8: 0.5 points and 0.95; bfloat16: 0.1
and 0.999). Usage::

    python -m bench.tools.stsb_eval --url http://127.0.0.1:8000 [--reference http://127.0.0.1:8001] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from ..harness.stsb import DATA, read_pairs, unique_sentences


def embed(url: str, sentences: list[str], batch: int = 64, concurrency: int = 2,
          timeout: float = 120) -> dict[str, np.ndarray]:
    """Vectors of each sentence from ``/embed``, a few requests in flight to keep the workers busy."""
    chunks = [sentences[i:i + batch] for i in range(0, len(sentences), batch)]
    with requests.Session() as http:
        def post(chunk):
            response = http.post(url.rstrip("/") + "/embed", json={"inputs": chunk}, timeout=timeout)
            response.raise_for_status()
            return chunk, response.json()

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            out = {}
            for chunk, vectors in pool.map(post, chunks):
                out.update(zip(chunk, np.asarray(vectors, dtype=np.float64)))
    return out


def spearman_x100(pairs: list[tuple[float, str, str]], vectors: dict[str, np.ndarray]) -> float:
    from scipy.stats import spearmanr

    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    cosines = [cosine(vectors[first], vectors[second]) for _, first, second in pairs]
    return float(spearmanr(cosines, [gold for gold, _, _ in pairs]).statistic) * 100


@dataclass(frozen=True)
class Gate:
    """The fidelity gate of one precision against the float32 reference: the most STS-B Spearman x100
    may drop, and the least cosine any sentence's vector may keep to its reference vector."""

    max_spearman_drop: float
    min_sentence_cosine: float


#: The gate of each precision (EMBEDDER_PRECISION), declared once: README, docs/how-it-works.md and
#: tests/integration/test_accuracy.py read it. float32 is another runtime's float32 (openvino
#: against onnx): the same arithmetic up to summation order.
GATES = {"float32": Gate(0.02, 0.9999), "bfloat16": Gate(0.1, 0.999), "int8": Gate(0.5, 0.95)}
#: int8's, under its older names.
MAX_SPEARMAN_DROP = GATES["int8"].max_spearman_drop
MIN_SENTENCE_COSINE = GATES["int8"].min_sentence_cosine


def precision_of(label: str | None) -> str:
    """The precision a backend label (/info's ``backend``) names: ``onnx-int8`` int8, ``openvino-bf16``
    bfloat16, anything else float32."""
    from embedder.config import BACKEND_LABELS

    return BACKEND_LABELS.get(label or "", ("", "float32"))[1]


def fidelity(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray],
             min_cosine: float = MIN_SENTENCE_COSINE) -> dict:
    """Cosine of each sentence's vector to its reference vector: the worst, its sentence, and how
    many fall below ``min_cosine``."""
    names = sorted(reference)
    a = np.stack([vectors[name] for name in names])
    b = np.stack([reference[name] for name in names])
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    worst = int(np.argmin(cosines))
    return {"worst_cosine": round(float(cosines[worst]), 6), "worst_sentence": names[worst],
            "below_min_cosine": int((cosines < min_cosine).sum()), "min_cosine": min_cosine,
            "mean_cosine": round(float(cosines.mean()), 5)}


def evaluate(url: str, data: str | Path = DATA, batch: int = 64, concurrency: int = 2,
             reference: str | None = None, keep_vectors: bool = False, precision: str | None = None) -> dict:
    """The server's STS-B score; with ``reference`` (another server's URL) also the reference's
    score and :func:`fidelity` against it, and whether the gate of ``precision`` (default: the one
    the server's backend label names) passes."""
    pairs = read_pairs(data)
    sentences = unique_sentences(data)
    info = requests.get(url.rstrip("/") + "/info", timeout=30).json()
    began = time.perf_counter()
    vectors = embed(url, sentences, batch, concurrency)
    result = {
        "spearman_x100": round(spearman_x100(pairs, vectors), 4),
        "pairs": len(pairs),
        "sentences": len(sentences),
        "model_id": info.get("model_id"),
        "backend": info.get("backend"),
        "seconds": round(time.perf_counter() - began, 2),
    }
    if reference:
        ref_vectors = embed(reference, sentences, batch, concurrency)
        ref_info = requests.get(reference.rstrip("/") + "/info", timeout=30).json()
        result["reference"] = {"backend": ref_info.get("backend"),
                               "spearman_x100": round(spearman_x100(pairs, ref_vectors), 4)}
        result["precision"] = precision or precision_of(info.get("backend"))
        gate = GATES[result["precision"]]
        result["gate"] = {"max_spearman_drop": gate.max_spearman_drop, "min_sentence_cosine": gate.min_sentence_cosine}
        result["fidelity"] = fidelity(vectors, ref_vectors, gate.min_sentence_cosine)
        result["gate_passed"] = bool(
            result["reference"]["spearman_x100"] - result["spearman_x100"] <= gate.max_spearman_drop
            and result["fidelity"]["below_min_cosine"] == 0)
    if keep_vectors:
        result["vectors"] = vectors
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.stsb_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)")
    parser.add_argument("--data", default=str(DATA), help="STS-B test TSV (default %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="sentences per request (default 64)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    parser.add_argument("--reference", help="a reference server (e.g. float32) to compare every "
                                                "sentence's vector with: the fidelity gate")
    parser.add_argument("--precision", choices=list(GATES),
                        help="whose fidelity gate applies (default: the precision of the server's backend)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.url, args.data, args.batch, args.concurrency, args.reference, precision=args.precision)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"STS-B test: Spearman x100 {result['spearman_x100']:.2f} ({result['pairs']} pairs, "
              f"{result['sentences']} sentences, {result['model_id']} on backend {result['backend']}, "
              f"{result['seconds']:.1f} s)")
        if args.reference:
            ref, fid = result["reference"], result["fidelity"]
            print(f"reference ({ref['backend']}): Spearman x100 {ref['spearman_x100']:.2f}; cosine to the "
                  f"reference: worst {fid['worst_cosine']:.4f} ({fid['worst_sentence']!r}), mean "
                  f"{fid['mean_cosine']:.5f}, {fid['below_min_cosine']} below {fid['min_cosine']}; "
                  f"{result['precision']} gate "
                  f"{'passed' if result['gate_passed'] else 'FAILED'}")
    return 0 if result.get("gate_passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
