"""A small stand-in model and backend for the fast tier: the real Flask app, routes, validation,
service and batcher run on them in-process, with no torch, no ONNX Runtime and no Gunicorn.

The tokenizer splits on white space (one id per word, so token counts are easy to reason about)
and the backend mean-pools fixed random vectors per token id, so vectors are deterministic and
differ between inputs: a request that got someone else's rows would show.
"""

from __future__ import annotations

import re
import threading
import zlib

import numpy as np

from embedder.config import Settings
from embedder.core.service import EmbeddingService
from embedder.http.app import create_app
from embedder.model.loaded import LoadedModel
from embedder.model.rerank import PairTemplate

DIMENSION, VOCAB, MAX_TOKENS = 384, 30522, 256
CLS, SEP, PAD = 101, 102, 0


def word_id(word: str) -> int:
    return 1000 + zlib.crc32(word.encode()) % (VOCAB - 1000)


class WhitespaceTokenizer:
    """One id per white-space separated word: embedder.model.tokenizer.Tokenizer's methods, and callable like
    a Hugging Face tokenizer. It remembers the words it has seen, to decode them."""

    SPECIAL = {CLS: "[CLS]", SEP: "[SEP]", PAD: "[PAD]"}

    def __init__(self):
        self.words: dict[int, str] = {}

    def __call__(self, texts, add_special_tokens=True, **_):
        single = isinstance(texts, str)
        rows = [[self._id(word) for word in text.split()] for text in ([texts] if single else texts)]
        if add_special_tokens:
            rows = [[CLS, *row, SEP] for row in rows]
        return {"input_ids": rows[0] if single else rows}

    def _id(self, word: str) -> int:
        self.words[word_id(word)] = word
        return word_id(word)

    def content_ids(self, texts):
        return self(texts, add_special_tokens=False)["input_ids"]

    def wrapped_ids(self, text):
        return self(text, add_special_tokens=True)["input_ids"]

    def tokens(self, text, add_special_tokens):
        out = [(self._id(m.group()), m.group(), False, m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        if add_special_tokens:
            out = [(CLS, "[CLS]", True, 0, 0), *out, (SEP, "[SEP]", True, 0, 0)]
        return out

    def decode(self, ids, skip_special_tokens):
        return " ".join(self.SPECIAL.get(i) or self.words.get(i, f"[{i}]") for i in ids
                        if not (skip_special_tokens and i in self.SPECIAL))


def fake_model(prompts: dict | None = None) -> LoadedModel:
    return LoadedModel(st_model=None, tokenizer=WhitespaceTokenizer(), model_id="fake/whitespace-mean",
                       path="", dimension=DIMENSION, max_input_tokens=MAX_TOKENS, vocab_size=VOCAB,
                       ends_with_normalize=True,
                       prompts={"query": "query: ", "document": ""} if prompts is None else prompts,
                       prefix_ids=[CLS], suffix_ids=[SEP], pad_id=PAD)


class FakeBackend:
    """Mean of fixed random vectors per token id. ``gate`` cleared holds every forward pass (to
    build a queue, or a hang); ``entered`` is set when a pass begins; ``batches`` records them."""

    name = "fake"

    def __init__(self):
        self.table = np.random.default_rng(0).normal(size=(4096, DIMENSION)).astype(np.float32)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[list[int]]] = []
        self.threads = None

    def start(self, threads: int) -> None:
        self.threads = threads

    def forward(self, batch):
        self.entered.set()
        self.gate.wait()
        self.batches.append([list(ids) for ids in batch])
        return self.vectors(batch)

    def vectors(self, batch) -> np.ndarray:
        """What forward returns, without recording or waiting: the expected answer."""
        return np.stack([self.table[np.asarray(ids) % len(self.table)].mean(axis=0) for ids in batch])


def make_app(**settings):
    """The real app on the fake model and backend, its worker started (warm-up done, batching
    thread running) as Gunicorn's post_worker_init would; ``app.backend`` and ``app.service``."""
    service = EmbeddingService(Settings(**settings), fake_model(), FakeBackend())
    app = create_app(service.settings, service)
    app.extensions["embedder"].start_worker()
    service.backend.batches.clear()
    service.backend.entered.clear()
    app.service, app.backend = service, service.backend
    return app


class FakeRerankModel:
    """A cross-encoder stand-in: pairs as ``[CLS] query [SEP] document [SEP]`` of white-space
    token ids, documents cut (never the query) as the real model layer cuts them, and a sigmoid."""

    kind = "reranker"
    model_id = "fake/reranker"
    path = ""
    dimension = 1
    max_input_tokens = 32
    vocab_size = VOCAB
    prompts: dict = {}
    default_prompt_name = None
    ends_with_normalize = False
    pooling_modes = ()
    modules = ("Transformer",)
    architecture = "FakeForSequenceClassification"
    tokenizer_kind = "white space"
    loaded_with = "fake"
    loader_note = ""
    activation = "Sigmoid"
    prefix_ids, suffix_ids, pad_id = [CLS], [SEP], PAD
    pair_template = PairTemplate(prefix=(CLS,), middle=(SEP,), suffix=(SEP,), prefix_types=(0,), query_type=0,
                                 middle_types=(0,), document_type=1, suffix_types=(1,))

    def __init__(self):
        self.tokenizer = WhitespaceTokenizer()

    def pair_ids(self, query, documents, truncate, max_tokens_per_doc=None):
        from embedder.model.errors import QueryTooLong, TooManyTokens

        q = self.tokenizer.content_ids([query])[0]
        room = self.max_input_tokens - len(q) - 3
        if room < 1:
            raise QueryTooLong(len(q) + 3, self.max_input_tokens)
        out = []
        for index, d in enumerate(self.tokenizer.content_ids(documents)):
            if max_tokens_per_doc:
                d = d[:max_tokens_per_doc]
            if len(d) > room:
                if not truncate:
                    raise TooManyTokens(index, len(q) + len(d) + 3, self.max_input_tokens)
                d = d[:room]
            out.append([CLS, *q, SEP, *d, SEP])
        return out

    def activate(self, logits):
        return (1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))).astype(np.float32)


class FakeRerankBackend(FakeBackend):
    """A logit per pair: the query words the document shares, less a little per document word
    (deterministic, and distinct for distinct documents)."""

    name = "fake"

    def vectors(self, batch) -> np.ndarray:
        rows = []
        for ids in batch:
            ids = list(ids)
            middle = ids.index(SEP)
            query, document = set(ids[1:middle]), ids[middle + 1:-1]
            shared = sum(1 for token in document if token in query)
            rows.append([shared - 0.01 * len(document) - 0.001 * (sum(document) % 97)])
        return np.asarray(rows, dtype=np.float32)


def make_models_app(**settings):
    """The real app serving the fake embedding model and the fake reranker on one scheduler (as
    EMBEDDER_MODELS would), its worker started; ``app.service``/``app.backend`` are the embedding
    model's, ``app.reranker``/``app.rerank_backend`` the reranker's."""
    from embedder.core.models import ServedModels
    from embedder.core.rerank import RerankService
    from embedder.core.scheduler import Scheduler

    settings = Settings(**settings)
    scheduler = Scheduler(settings.max_queued_inputs, settings.max_queued_tokens)
    service = EmbeddingService(settings, fake_model(), FakeBackend(), scheduler)
    reranker = RerankService(settings, FakeRerankModel(), FakeRerankBackend(), scheduler)
    app = create_app(settings, ServedModels(settings, [service, reranker]))
    app.extensions["embedder"].start_worker()
    for backend in (service.backend, reranker.backend):
        backend.batches.clear()
        backend.entered.clear()
    app.service, app.backend = service, service.backend
    app.reranker, app.rerank_backend = reranker, reranker.backend
    return app


def expected(app, texts: list[str], normalize: bool = True) -> np.ndarray:
    """The vectors the app must answer for these texts."""
    rows = app.backend.vectors(app.service.model.token_ids(texts, truncate=True))
    if normalize:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return rows
