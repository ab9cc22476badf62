"""The wrk workloads, the sentence sets their request bodies are made of (from STS-B, bench.harness.stsb),
and one wrk run parsed into numbers."""

from __future__ import annotations

import json
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..harness import stsb
from .schema import Workload

WRK_DIR = Path(__file__).resolve().parent / "wrk"

#: How many consecutive STS-B sentences each input of the "stsb-joined" set joins, cycled: half the
#: inputs are one sentence, the rest two or three, so lengths have a long tail.
GROUP_SIZES = (1, 2, 1, 3, 1, 2, 1, 1, 3, 2)
#: The fixed seed that orders the "stsb-joined" inputs (the file groups sentences by genre, and so
#: by length; shuffled, any stretch of a wrk run sees the whole mix).
SHUFFLE_SEED = 13


def joined_sentences(sentences: list[str] | None = None) -> list[str]:
    """STS-B's sentences in file order (bench.harness.stsb.sentences), joined by a space in groups of
    GROUP_SIZES (consecutive sentences, so a pair's two sentences and a genre's long news sentences
    often go together: lengths from a few tokens to over 100), then shuffled with SHUFFLE_SEED.
    Every sentence is used exactly once; the same list on every call and machine."""
    sentences = stsb.sentences() if sentences is None else sentences
    out, start, index = [], 0, 0
    while start < len(sentences):
        size = GROUP_SIZES[index % len(GROUP_SIZES)]
        out.append(" ".join(sentences[start:start + size]))
        start, index = start + size, index + 1
    random.Random(SHUFFLE_SEED).shuffle(out)
    return out


#: The inputs a POST workload's bodies are made of, by the name its Workload.sentence_set gives.
SENTENCE_SETS = {
    "stsb": stsb.sentences,
    "stsb-joined": joined_sentences,
}

WORKLOADS = {
    "health": Workload("health", "GET /health (no model: what the HTTP stack alone costs a request)",
                       "GET", "/health", 0),
    "root": Workload("root", 'GET / (encodes "this is a test"; the original benchmark)', "GET", "/", 1),
    "embed1": Workload("embed1", "POST /embed, 1 STS-B sentence per request", "POST", "/embed", 1,
                       "stsb"),
    "embed32": Workload("embed32", "POST /embed, 32 STS-B sentences per request", "POST", "/embed", 32,
                        "stsb"),
    "embed1long": Workload("embed1long", "POST /embed, 1 input per request: 1, 2 or 3 consecutive STS-B "
                           "sentences joined (mixed lengths, a long tail)", "POST", "/embed", 1,
                           "stsb-joined"),
}


def sentence_set(name: str) -> list[str]:
    """The named sentence set (SENTENCE_SETS)."""
    return SENTENCE_SETS[name]()


def workload_sentences(workload: Workload) -> list[str]:
    """What a POST workload's bodies hold, each input once ([] for GET)."""
    return sentence_set(workload.sentence_set) if workload.sentence_set else []


def write_bodies(workload: Workload, sentences: list[str], directory: Path) -> Path | None:
    """The request bodies of a POST workload, one JSON document per line (for bench/sweep/wrk/post.lua)."""
    if workload.method != "POST":
        return None
    k = workload.sentences_per_request
    if k == 1:
        bodies = [{"inputs": s} for s in sentences]
    else:
        doubled = sentences + sentences  # windows wrap around, so every sentence is sent
        bodies = [{"inputs": doubled[i:i + k]} for i in range(0, len(sentences), k)]
    path = directory / f"{workload.name}.jsonl"
    path.write_text("".join(json.dumps(b, ensure_ascii=True) + "\n" for b in bodies))
    return path


@dataclass(frozen=True)
class WrkOptions:
    threads: int = 8
    connections: int = 32
    timeout: str = "30s"


def run_wrk(url: str, workload: Workload, bodies: Path | None, seconds: float,
            options: WrkOptions) -> dict:
    """One wrk run, the original shape ``-t 8 -c 32 -d <s> --latency``; returns its numbers (the
    wrk fields of schema.WrkRun)."""
    argv = ["wrk", "-t", str(options.threads), "-c", str(options.connections),
            "-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", options.timeout]
    if bodies is None:
        argv += ["-s", str(WRK_DIR / "report.lua"), url + workload.path]
    else:
        argv += ["-s", str(WRK_DIR / "post.lua"), url + workload.path, "--", str(bodies),
                 str(options.threads)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    raw = json.loads(match.group(1))
    seconds_run = raw["duration_us"] / 1e6
    rps = raw["requests"] / seconds_run if seconds_run else 0.0
    return {
        "requests": raw["requests"],
        "duration_s": round(seconds_run, 3),
        "requests_per_s": round(rps, 2),
        "sentences_per_s": round(rps * workload.sentences_per_request, 2),
        "latency_mean_ms": round(raw["latency_mean_us"] / 1000, 2),
        "latency_p50_ms": round(raw["p50_us"] / 1000, 2),
        "latency_p90_ms": round(raw["p90_us"] / 1000, 2),
        "latency_p99_ms": round(raw["p99_us"] / 1000, 2),
        "latency_max_ms": round(raw["latency_max_us"] / 1000, 2),
        "non_2xx": raw["status_errors"],  # wrk counts statuses >= 400 (we serve no 3xx)
        "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
        + raw["timeouts"],
        "socket_errors_detail": {k: raw[k] for k in ("connect_errors", "read_errors",
                                                      "write_errors", "timeouts")},
    }
