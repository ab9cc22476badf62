"""One served model in a worker: the core's entry points. An :class:`EmbeddingService` takes domain
requests (:class:`EmbedRequest`), tokenizes, queues for its model's batcher, post-processes the
vectors, and raises only the core's errors (``errors.py``); rerankers have theirs in ``rerank.py``.
It knows nothing of HTTP or of any API's shapes (the HTTP layer, ``embedder/http/``, turns requests
into these and results into its answers).

Built in the Gunicorn master with the loaded model; :meth:`ModelService.prepare_worker` runs in
each worker after fork (threads, warm-up, the pass cost probe), never in the master, called by
``models.py``'s :class:`~.models.ServedModels`, which starts the worker's one scheduling thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from metrics import definitions as m

from ..config import Settings
from ..model.errors import TooManyTokens
from .batch_plan import OnlineCost, probe
from .batching import Batcher
from .errors import AnswerTooLarge, ClientGone, InputTooLong, TimedOut
from .scheduler import Scheduler
from .token_budget import WORKER

log = logging.getLogger("embedder.service")

WARMUP_TEXT = "this is a test"


#: Characters an average token of text spans, for admission before tokenizing: 4.45 over the
#: STS-B test sentences with the default model's WordPiece (1 % of them under 2.9). An estimate,
#: not a bound: counting a token per character refused single sentences behind a long request
#: whose exact tokens fitted; text that tokenizes denser than this is checked exactly once queued.
CHARS_PER_TOKEN = 4


def estimated_tokens(chars: int) -> int:
    """About how many tokens ``chars`` characters of text make (no special tokens)."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass
class EmbedRequest:
    """One embedding request, whichever API it came in, after validation."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    normalize: bool = True
    truncate: bool = True
    dimensions: int | None = None
    prompt_name: str | None = None

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


@dataclass(frozen=True)
class Limits:
    """What a request may ask of this model: validation checks requests against it."""

    max_inputs: int
    max_input_chars: int
    dimension: int
    vocab_size: int
    max_input_tokens: int
    prompts: dict = field(default_factory=dict)
    #: Documents per rerank request (rerankers).
    max_documents: int = 0


@dataclass
class Embeddings:
    vectors: np.ndarray
    tokens: int
    tokenize_seconds: float
    queue_seconds: float
    inference_seconds: float


class ModelService:
    """What every served model shares: its backend, its queue on the worker's scheduler, its
    worker start and its metrics' series."""

    #: "embedding" or "reranker": which routes serve it.
    kind = "embedding"

    def __init__(self, settings: Settings, model, backend, scheduler: Scheduler | None = None,
                 name: str | None = None):
        self.settings = settings
        self.model = model
        self.backend = backend
        #: The name requests give (``model``), /info and the metrics' ``model`` label use.
        self.model_id: str = name or model.model_id
        self.limits = Limits(max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars,
                             dimension=model.dimension, vocab_size=model.vocab_size,
                             max_input_tokens=model.max_input_tokens, prompts=dict(model.prompts),
                             max_documents=settings.max_documents)
        self.batcher = Batcher(backend.forward, dimension=model.dimension,
                               max_batch_size=settings.max_batch_size,
                               max_batch_tokens=settings.max_batch_tokens,
                               max_queued_inputs=settings.max_queued_inputs,
                               max_queued_tokens=settings.max_queued_tokens,
                               scheduler=scheduler, model=self.model_id)
        self._inputs = m.INPUTS.labels(self.model_id)
        self._tokens = m.INPUT_TOKENS.labels(self.model_id)

    def warmup_batch(self) -> list:
        """One input as this model reads it (what warm-up runs)."""
        raise NotImplementedError

    def probe_row(self, length: int) -> list:
        """One input of about ``length`` tokens (what the cost probe runs)."""
        raise NotImplementedError

    def prepare_worker(self, threads: int) -> float:
        """In a worker after fork: size the backend's threads, warm up, and measure how its pass time
        grows with inputs and length (the batcher splits queued inputs by length with it). Returns
        the milliseconds it took."""
        began = time.perf_counter()
        self.backend.start(threads)
        warmup = self.warmup_batch()
        for _ in range(2):  # straight to the backend: warm-up is not traffic, so not in the metrics
            self.backend.forward(warmup)
        self.batcher.cost = OnlineCost(probe(self.backend.forward, self.probe_row))
        m.MODEL_INFO.labels(self.model_id, self.kind, self.backend.name, str(self.model.dimension)).set(1)
        for reason in m.DROP_REASONS:  # zero series, so rate() and alerts see them from the start
            m.DROPPED_INPUTS.labels(reason, self.model_id)
        return (time.perf_counter() - began) * 1000

    def _counted(self, ids: list) -> int:
        tokens = sum(len(row) for row in ids)
        self._inputs.inc(len(ids))
        self._tokens.inc(tokens)
        return tokens


class EmbeddingService(ModelService):
    """An embedding model: vectors, tokens, decoding and similarity."""

    def __init__(self, settings: Settings, model, backend, scheduler: Scheduler | None = None,
                 name: str | None = None):
        super().__init__(settings, model, backend, scheduler, name)
        #: Token ids of GET /'s sentence, tokenized once.
        self.warmup_ids = model.token_ids([WARMUP_TEXT], truncate=True)

    def warmup_batch(self) -> list:
        return self.warmup_ids

    def probe_row(self, length: int) -> list:
        model = self.model
        token = self.warmup_ids[0][len(model.prefix_ids)]
        content = max(1, length - len(model.prefix_ids) - len(model.suffix_ids))
        return [*model.prefix_ids, *([token] * content), *model.suffix_ids]

    @contextmanager
    def tokens(self, texts: list[str], add_special_tokens: bool, prompt_name: str | None,
               gone=None) -> Iterator[list[tuple[str, list[tuple[int, str, bool, int, int]]]]]:
        """Every token of each text (prompt first, if named), untruncated: pairs of the text as
        tokenized and its tokens, ``(id, token, special, start, stop)`` with character offsets.
        A context manager: the caller builds its answer inside the block, while the tokens count
        against the worker's budget (``token_budget.py``).

        Under the same limits as :meth:`embed`, checked after each text, so a request over a limit
        stops there: AnswerTooLarge once the texts so far make more than EMBEDDER_MAX_TOKENIZE_TOKENS;
        Overloaded when the worker's answers would hold more than EMBEDDER_MAX_QUEUED_TOKENS with
        other requests' (a request alone is always let through); TimedOut past
        EMBEDDER_REQUEST_TIMEOUT; ClientGone when ``gone()`` says the client left."""
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout
        prompt = self.model.prompts[prompt_name] if prompt_name else ""
        tokenizer = self.model.tokenizer
        out, total = [], 0
        with WORKER.hold(settings.max_queued_tokens) as hold:
            for index, text in enumerate(texts):
                text = prompt + text
                tokens = tokenizer.tokens(text, add_special_tokens)
                total += len(tokens)
                if total > settings.max_tokenize_tokens:
                    raise AnswerTooLarge(total, settings.max_tokenize_tokens, index + 1, len(texts), param="inputs")
                hold.take(len(tokens))
                out.append((text, tokens))
                self._still_wanted(deadline, gone)
            yield out

    def decode(self, ids: list[list[int]], skip_special_tokens: bool, gone=None) -> list[str]:
        """The text of each list of token ids, as the tokenizer's decoder writes it. AnswerTooLarge
        for more than EMBEDDER_MAX_TOKENIZE_TOKENS ids in all (so the answer is at most that many
        tokens' text), checked first; then the worker's budget, the deadline and ``gone()`` as
        :meth:`tokens` checks them."""
        settings = self.settings
        total = sum(len(row) for row in ids)
        if total > settings.max_tokenize_tokens:
            count = inputs = 0
            while count <= settings.max_tokenize_tokens:  # where it crossed the limit, as /tokenize says
                count += len(ids[inputs])
                inputs += 1
            raise AnswerTooLarge(count, settings.max_tokenize_tokens, inputs, len(ids), param="ids")
        deadline = time.monotonic() + settings.request_timeout
        out = []
        with WORKER.hold(settings.max_queued_tokens) as hold:
            hold.take(total)
            for row in ids:
                out.append(self.model.tokenizer.decode(row, skip_special_tokens))
                self._still_wanted(deadline, gone)
        return out

    def _still_wanted(self, deadline: float, gone) -> None:
        """Between two inputs of a /tokenize or /decode request: TimedOut past its deadline,
        ClientGone once its client has left."""
        if time.monotonic() > deadline:
            raise TimedOut(f"request timed out: not done within {self.settings.request_timeout:g} s")
        if gone is not None and gone():
            raise ClientGone("the client closed its connection; its tokenizing stopped")

    def similarity(self, request: EmbedRequest, gone=None) -> tuple[list[float], Embeddings]:
        """The cosine similarity of the request's first text with each of the others, from one
        embedding request (same batching and limits)."""
        result = self.embed(EmbedRequest(texts=request.texts, truncate=request.truncate,
                                         prompt_name=request.prompt_name, normalize=True), gone)
        vectors = result.vectors
        return (vectors[1:] @ vectors[0]).astype(float).tolist(), result

    def _estimated_tokens(self, request: EmbedRequest) -> int:
        """The request's tokens as known before tokenizing: each text's characters (prompt
        included) as :func:`estimated_tokens` counts them, plus the special tokens, at most the
        model's limit each; token ids as they are. Only admission uses it: the exact count is
        checked again when the inputs are queued."""
        model = self.model
        prompt_name = request.prompt_name or model.default_prompt_name
        special, limit = len(model.prefix_ids) + len(model.suffix_ids), model.max_input_tokens
        if request.texts is None:
            return sum(min(len(ids) + special, limit) for ids in request.token_ids)
        prompt = len(model.prompts[prompt_name]) if prompt_name else 0
        return sum(min(estimated_tokens(prompt + len(text)) + special, limit) for text in request.texts)

    def _token_ids(self, request: EmbedRequest) -> list[list[int]]:
        texts = request.texts
        # A request that names no prompt gets the model's default, as sentence-transformers' encode does.
        prompt_name = request.prompt_name or self.model.default_prompt_name
        if texts is not None and prompt_name:
            prompt = self.model.prompts[prompt_name]
            texts = [prompt + text for text in texts]
        try:
            return (self.model.token_ids(texts, request.truncate) if texts is not None
                    else self.model.wrap_ids(request.token_ids, request.truncate))
        except TooManyTokens as exc:
            raise InputTooLong(exc.index, exc.tokens, exc.limit) from None

    def embed(self, request: EmbedRequest, gone=None) -> Embeddings:
        """Vectors of a validated request, in input order. Raises InputTooLong, Overloaded,
        TimedOut, Unavailable or, when ``gone()`` says the client left while it waited,
        ClientGone (``errors.py``)."""
        began = time.perf_counter()
        # Admitted by an estimate before tokenizing, counted as arriving until its inputs are queued.
        with self.batcher.scheduler.arrivals.pending(request.count, self._estimated_tokens(request)) as arrival:
            ids = self._token_ids(request)
            tokenized = time.perf_counter()
            result = self.batcher.submit(ids, self.settings.request_timeout, gone, arrival)
        vectors = result.vectors
        if request.dimensions:
            vectors = vectors[:, : request.dimensions]
        if request.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        tokens = self._counted(ids)
        return Embeddings(np.ascontiguousarray(vectors, dtype=np.float32), tokens,
                          tokenized - began, result.queue_seconds, result.inference_seconds)
