"""In-process sorted limit: what one backend does on one workload's own sentences with no HTTP,
when every batch holds sentences of similar length. What a server on that backend and those cores
could at best approach on that workload.

The sentence set (bench.sweep.workloads.SENTENCE_SETS) is tokenized once, sorted by token count and cut
into batches of ``--batch-size``, so padding costs next to nothing; the batches are then put in a
fixed pseudo-random order, so that any stretch of batches mixes short and long ones like the
whole set. Each batch is tokenized again and run through embedder's own backend (``forward``,
the same tokenizing, padding and forward pass the server runs, for torch as for onnx), timed.

Layout: like the server, the model is loaded once and ``--processes`` processes are forked from it,
each starting the backend with ``--threads`` intra-op threads (by default bench/sweep/run.py asks for the
server's default layout: one process per core, 1 thread each). They warm up, start together, each
cycles over all the batches from its own offset for ``--seconds``, and their rates add up.

Run by bench/sweep/run.py in a child process (its own threads and memory); prints one JSON line, a
schema.Limit.
Usage: python -m bench.tools.ceiling --backend NAME --sentence-set NAME --processes P --threads T
                                     [--batch-size B] [--seconds S] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queues
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedder.config import BACKEND_LABELS  # noqa: E402

from ..sweep.schema import Limit  # noqa: E402
from ..sweep.workloads import SENTENCE_SETS, sentence_set  # noqa: E402

#: The fixed order of the sorted batches.
BATCH_ORDER_SEED = 13


def token_stats(lengths: list[int]) -> dict[str, float]:
    """min, median, p90, p99, max and mean of token counts (nearest rank)."""
    ordered = sorted(lengths)
    n = len(ordered)

    def rank(q: float) -> int:
        return ordered[min(n - 1, max(0, round(q * n + 0.5) - 1))]

    return {"min": ordered[0], "median": statistics.median(ordered), "p90": rank(0.9), "p99": rank(0.99),
            "max": ordered[-1], "mean": round(sum(ordered) / n, 1)}


def sorted_batches(texts: list[str], lengths: list[int], batch_size: int,
                   seed: int = BATCH_ORDER_SEED) -> list[list[str]]:
    """The texts sorted by token count (ties in set order), in batches of ``batch_size``, the
    batches in a fixed pseudo-random order."""
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    batches = [[texts[i] for i in order[start:start + batch_size]]
               for start in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def _process(runner, model, batches, threads: int, offset: int, seconds: float, repeat: int,
             barrier, results) -> None:
    """One forked process: start the backend, warm up, then ``repeat`` timed runs, each begun
    together with the other processes; puts (run, sentences/s) or ("error", text) on ``results``."""
    try:
        runner.start(threads)
        longest = max(batches, key=lambda b: max(len(t) for t in b))
        for batch in [longest, *batches[:3]]:  # warm-up: the arena for the longest inputs, too
            runner.forward(model.token_ids(batch, truncate=True))
        for run in range(repeat):
            barrier.wait(timeout=600)
            done, index, began = 0, offset, time.perf_counter()
            while True:  # whole batches until the time is up (at least one)
                batch = batches[index % len(batches)]
                runner.forward(model.token_ids(batch, truncate=True))
                done, index = done + len(batch), index + 1
                elapsed = time.perf_counter() - began
                if elapsed >= seconds:
                    break
            results.put((run, done / elapsed))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        barrier.abort()


def gather(children: list, results, count: int, deadline: float) -> dict:
    """``count`` results ``(run, value)`` from forked ``children`` through the ``results`` queue, by
    run; raises if a child dies, reports an error, or none answers by ``deadline`` (monotonic).
    The children are joined (killed if they hang) whatever happens."""
    values: dict = {}
    try:
        for _ in range(count):
            while True:
                try:
                    run, value = results.get(timeout=1)
                    break
                except queues.Empty:
                    dead = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a process died (exit {dead[0]})") from None
                    if time.monotonic() > deadline:
                        raise RuntimeError("a process gave no result in time") from None
            if run == "error":
                raise RuntimeError(value)
            values.setdefault(run, []).append(value)
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    return values


def measure(backend: str, set_name: str, processes: int, threads: int, batch_size: int,
            seconds: float, repeat: int) -> Limit:
    from embedder.backends import create_backend
    from embedder.config import Settings
    from embedder.model.load import load_model
    from embedder.model.source import resolve_model

    name, precision = BACKEND_LABELS[backend]
    # The servers' cache directory (EMBEDDER_CACHE_DIR), so that both read the same exported file.
    settings = Settings(backend=name, precision=precision, cache_dir=os.environ.get("EMBEDDER_CACHE_DIR", ""))
    source = resolve_model(settings)
    model = load_model(source.path, source.model_id, settings.backend)
    runner = create_backend(settings, model)  # as in Gunicorn's master: built here, started per process

    texts = sentence_set(set_name)
    lengths = [len(ids) for ids in model.token_ids(texts, truncate=True)]
    batches = sorted_batches(texts, lengths, batch_size)
    limit = Limit(backend=backend, sentence_set=set_name, processes=processes, threads=threads,
                  batch_size=batch_size, sentences=len(texts), tokens=token_stats(lengths))

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_process, daemon=True,
                                args=(runner, model, batches, threads, i * len(batches) // processes,
                                      seconds, repeat, barrier, results))
                for i in range(processes)]
    for child in children:
        child.start()
    rates = gather(children, results, processes * repeat, time.monotonic() + 600 + repeat * seconds * 3)
    limit.add([round(sum(rates[run]), 2) for run in sorted(rates)])
    return limit


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=list(BACKEND_LABELS), required=True)
    parser.add_argument("--sentence-set", choices=list(SENTENCE_SETS), default="stsb")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="per run")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if min(args.processes, args.threads, args.batch_size, args.repeat) < 1 or args.seconds <= 0:
        parser.error("--processes, --threads, --batch-size and --repeat must be >= 1, --seconds > 0")
    limit = measure(args.backend, args.sentence_set, args.processes, args.threads, args.batch_size,
                    args.seconds, args.repeat)
    print(json.dumps(limit.to_dict()))


if __name__ == "__main__":
    main()
