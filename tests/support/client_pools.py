"""For the client-library tests only: the libraries' own connection pools (cohere's, litellm's,
huggingface_hub's, langchain-openai's and LlamaIndex's httpx clients) are made and kept by the
library, used as its docs say, and never closed, so the garbage collector finds their sockets and
asyncio transports open. A module that drives such clients takes ``ALLOWED`` into its
``pytestmark`` and imports ``collect_client_pools`` (autouse: each test's leftovers are collected
while the allowance applies, so no later test meets their ResourceWarnings)."""

from __future__ import annotations

import gc

import pytest

ALLOWED = [
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed transport:ResourceWarning"),
]


@pytest.fixture(autouse=True)
def collect_client_pools():
    yield
    gc.collect()
