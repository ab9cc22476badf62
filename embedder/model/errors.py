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


class ModelUnavailable(Exception):
    """The configured model cannot be found: no such directory, or a hub model (or its revision)
    that is neither in the Hugging Face cache nor downloadable now. The message names the model and
    says how to get it; the server refuses to start with it."""
