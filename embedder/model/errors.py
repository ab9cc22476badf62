"""The model layer's refusals, in its own terms (the core's InputTooLong is raised for inputs)."""

from __future__ import annotations


class UnsupportedModel(ValueError):
    """The model's pipeline has something the chosen backend cannot reproduce."""


class NotReplicated(Exception):
    """The torch-free loader does not reproduce the model's set-up exactly; sentence-transformers
    must load it."""


class TooManyTokens(ValueError):
    """An input has more tokens than the model reads and truncation was not allowed."""

    def __init__(self, index: int, tokens: int, limit: int):
        super().__init__(f"input {index} has {tokens} tokens, more than the model's {limit}")
        self.index, self.tokens, self.limit = index, tokens, limit


class QueryTooLong(ValueError):
    """A rerank query that, with the pair's special tokens, leaves no room for one document token:
    the query is never cut (a cut query would score every document against another question)."""

    def __init__(self, tokens: int, limit: int):
        super().__init__(f"the query takes {tokens} tokens with the pair's special tokens, leaving no room "
                         f"for a document within the model's {limit}")
        self.tokens, self.limit = tokens, limit


class ModelUnavailable(Exception):
    """The configured model cannot be found: no such directory, or a hub model (or its revision)
    that is neither in the Hugging Face cache nor downloadable now. The message names the model and
    says how to get it; the server refuses to start with it."""
