"""Backpressure for ``/tokenize`` and ``/decode``: the tokens their answers hold in one worker.

An embedding request's tokens wait in its model's queue, where admission counts them
(``batching.py``); a ``/tokenize`` or ``/decode`` request never queues, but its answer holds a row
per token (id, text, offsets) while it is built and written. :data:`WORKER` counts those tokens
across every model of the worker, as each input is tokenized, until the answer is written, and
refuses (Overloaded, 429) a request whose next input would take the worker past its limit while
other requests hold tokens; a request alone is always let through (its own size is
``EMBEDDER_MAX_TOKENIZE_TOKENS``' to refuse, 422). So a few huge requests at once cannot make a
worker hold millions of rows.

One per process: a worker forked from the master has its own copy, which the master never touched
(the master tokenizes nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Overloaded


class Hold:
    """The tokens one request holds, taken input by input (:meth:`take`)."""

    __slots__ = ("budget", "limit", "tokens")

    def __init__(self, budget: TokenBudget, limit: int):
        self.budget, self.limit, self.tokens = budget, limit, 0

    def take(self, tokens: int) -> None:
        """Hold ``tokens`` more, or raise Overloaded when, with them, the worker would hold more
        than ``limit`` while other requests hold some."""
        self.budget.take(self, tokens)


class TokenBudget:
    """The tokens the ``/tokenize`` and ``/decode`` answers being built in one worker hold."""

    def __init__(self):
        self._lock = threading.Lock()
        #: Tokens held now, over every request.
        self.held = 0

    @contextmanager
    def hold(self, limit: int) -> Iterator[Hold]:
        """A request's hold on the budget: what it took is given back when the block ends."""
        hold = Hold(self, limit)
        try:
            yield hold
        finally:
            with self._lock:
                self.held -= hold.tokens
            hold.tokens = 0

    def take(self, hold: Hold, tokens: int) -> None:
        with self._lock:
            others = self.held - hold.tokens
            if others and self.held + tokens > hold.limit:
                raise Overloaded(f"server busy: this worker is already tokenizing or decoding {others} tokens "
                                 f"for other requests, {hold.tokens + tokens} with this one, more than its "
                                 f"{hold.limit}; retry shortly")
            self.held += tokens
            hold.tokens += tokens


#: This worker's budget.
WORKER = TokenBudget()
