"""The model layer's two refusals, in its own terms (the core's InputTooLong is raised for inputs)."""

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
