"""The OpenAPI document (embedder/http/openapi.py), without a server: it is valid OpenAPI 3.1 for
every combination of the key settings, and every request example it shows (what "Try it out"
starts from) is answered 200 through Flask's test client on the stand-in model of
tests/support/fakes.py. tests/integration/test_openapi_server.py has Schemathesis against a live
server.
"""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from embedder.config import Settings
from embedder.core.service import Limits
from embedder.http import openapi
from embedder.http.schemas import Schemas
from fakes import make_app

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_limits(settings: Settings) -> Limits:
    """all-MiniLM-L6-v2 as the document sees it (the real model is what the live tests serve)."""
    return Limits(max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars, dimension=384,
                  vocab_size=30522, max_input_tokens=256, prompts={"query": "", "document": ""})


@pytest.mark.parametrize("settings", [Settings(), Settings(api_key="k"),
                                      Settings(api_key="k", metrics_require_key=True, max_inputs=3)],
                         ids=["open", "keyed", "keyed-metrics"])
def test_document_is_valid_openapi(settings):
    document = openapi.build(settings, Schemas.bind(minilm_limits(settings), MODEL_ID), MODEL_ID)
    validate(document)
    embed = document["paths"]["/embed"]["post"]
    assert ("401" in embed["responses"]) == bool(settings.api_key)
    assert ("401" in document["paths"]["/metrics"]["get"]["responses"]) == settings.metrics_require_key
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["components"]["schemas"]["EmbedRequest"]["properties"]["inputs"]["oneOf"][1]["maxItems"] \
        == settings.max_inputs


@pytest.fixture(scope="module")
def client():
    return make_app().test_client()


@pytest.mark.parametrize("path,model", [("/embed", "EmbedRequest"), ("/", "EmbedRequest"),
                                        ("/v1/embeddings", "OpenAIEmbeddingRequest"),
                                        ("/tokenize", "TokenizeRequest"), ("/decode", "DecodeRequest"),
                                        ("/similarity", "SimilarityRequest"), ("/", "SimilarityRequest")])
def test_every_documented_example_is_answered_200(client, path, model):
    """The request models' examples (what the document shows and "Try it out" starts from) are
    requests the server takes."""
    document = client.get("/openapi.json").get_json()
    for example in document["components"]["schemas"][model]["examples"]:
        r = client.post(path, json=example)
        assert r.status_code == 200, (path, example, r.get_json())
