"""The errors the core (model, batcher, service) raises, in its own terms.

The core knows nothing of HTTP: ``embedder/http/error_table.py`` holds the one table that maps each of
these classes to a status, the error shapes of both APIs, a metrics reason and its documentation,
as text-embeddings-inference's core raises core errors that its HTTP layer maps in one place.
"""

from __future__ import annotations


class EmbedderError(Exception):
    """A failure a client should hear about; ``param`` names the request field at fault, if any."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(EmbedderError):
    """The request breaks a rule: a wrong type, an empty or missing input, a limit, a range."""


class InputTooLong(InvalidInput):
    """An input has more tokens than the model reads and truncation was not allowed. The HTTP layer
    words the message in its API's field names (``index``-th input, ``tokens``, ``limit``)."""

    def __init__(self, index: int, tokens: int, limit: int):
        super().__init__(f"input {index} has {tokens} tokens, more than the model's {limit}; "
                         "allow truncation to cut it")
        self.index, self.tokens, self.limit = index, tokens, limit


class ModelNotFound(EmbedderError):
    """The request names a model this server does not serve."""


class Overloaded(EmbedderError):
    """The worker's queue is full; the client should retry shortly."""


class TimedOut(EmbedderError):
    """The request waited longer than its deadline; its inputs were dropped."""


class Unavailable(EmbedderError):
    """The worker is not serving: its batching thread has not started, died or hung."""


class ClientGone(EmbedderError):
    """The client closed its connection while its request waited: its inputs were dropped before
    they reached the model (nobody would read the answer)."""


class QueryTooLong(InvalidInput):
    """A rerank query leaves no room for a document within the model's token limit (the query is
    never cut: a cut query would rank documents for another question)."""

    def __init__(self, tokens: int, limit: int):
        super().__init__(f"'query' has {tokens} tokens, leaving no room for a document within the "
                         f"model's limit of {limit} tokens per query-document pair; send a shorter query",
                         param="query")
        self.tokens, self.limit = tokens, limit


class AnswerTooLarge(InvalidInput):
    """A ``/tokenize`` answer would hold more tokens than one answer may, or a ``/decode`` request
    sends more token ids than one may decode (``limit``). Found while tokenizing: ``tokens`` counts
    the tokens of the first ``inputs`` of the request's ``of`` inputs, the one that crossed the
    limit included (the rest are never tokenized). The HTTP layer words the message with the
    setting's name."""

    def __init__(self, tokens: int, limit: int, inputs: int, of: int, *, param: str):
        super().__init__(f"'{param}' make more than the {limit} tokens one request may: its first {inputs} "
                         f"of {of} make {tokens}", param=param)
        self.tokens, self.limit, self.inputs, self.of = tokens, limit, inputs, of
