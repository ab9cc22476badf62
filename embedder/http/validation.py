"""Request bodies into the core's requests: JSON read by orjson, checked by the typed models of
``schemas.py`` (which name the field at fault, 422), then the few rules that are not about shape:
token ids on the OpenAI route, its ``model``. The results are the core's requests
(:class:`~embedder.core.service.EmbedRequest`) or plain values.

orjson rejects NaN, lone surrogates and invalid UTF-8 and refuses nesting deeper than 1024 levels.
"""

from __future__ import annotations

import orjson

from ..core.errors import InvalidInput
from ..core.rerank import RerankRequest
from ..core.service import EmbedRequest
from .error_table import MalformedJSON, UnsupportedMediaType
from .schemas import (
    CohereRerankRequest,
    DecodeRequest,
    OpenAIEmbeddingRequest,
    Schemas,
    SimilarityParameters,
    SimilarityRequest,
    TEIRerankRequest,
    TokenizeRequest,
)
from .schemas import EmbedRequest as EmbedBody
from .schemas import RerankRequest as RerankBody

TOKEN_IDS_REFUSED = (
    "'input' is token ids, and this server does not take token ids on this route: OpenAI clients "
    "tokenize with tiktoken, another vocabulary than this model's, so the vectors would be of other "
    "words. Send the text instead (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False). "
    "To send ids of this model's own vocabulary, the server must be started with "
    "EMBEDDER_OPENAI_TOKEN_IDS=true.")


def parse_json(body: bytes, content_type: str | None) -> dict:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json", param="Content-Type")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def _texts(value) -> list[str]:
    return [value] if isinstance(value, str) else value


def _default(value, default):
    return default if value is None else value


def parse_tei(data: dict, schemas: Schemas) -> EmbedRequest:
    """``POST /embed`` (and TEI's ``POST /``): text-embeddings-inference's request shape."""
    body = schemas.parse(EmbedBody, data)
    return EmbedRequest(texts=_texts(body.inputs), normalize=_default(body.normalize, True),
                        truncate=_default(body.truncate, True), dimensions=body.dimensions,
                        prompt_name=body.prompt_name)


def refuse_token_ids(data: dict, allowed: bool) -> None:
    """OpenAI's ``input`` as token ids, unless the settings say they are the model's own: refused
    before anything else (the ``model`` check included), as this is the message that helps."""
    value = data.get("input")
    if not allowed and isinstance(value, list) and value and not isinstance(value[0], str):
        raise InvalidInput(TOKEN_IDS_REFUSED, param="input")


def parse_openai(data: dict, schemas: Schemas) -> tuple[EmbedRequest, str]:
    """``POST /v1/embeddings``: OpenAI's request shape, once :func:`refuse_token_ids` has let it
    through and ``model`` has chosen the model (``routing.py``). Returns the core's request and the
    ``encoding_format`` asked for."""
    body = schemas.parse(OpenAIEmbeddingRequest, data)
    request = EmbedRequest(dimensions=body.dimensions)
    if isinstance(body.input, list) and body.input and isinstance(body.input[0], list):
        request.token_ids = body.input
    elif isinstance(body.input, list) and body.input and isinstance(body.input[0], int):
        request.token_ids = [body.input]
    else:
        request.texts = _texts(body.input)
    return request, body.encoding_format or "float"


def parse_tokenize(data: dict, schemas: Schemas) -> tuple[list[str], bool, str | None]:
    """``POST /tokenize``: texts (as ``/embed``'s), ``add_special_tokens``, ``prompt_name``."""
    body = schemas.parse(TokenizeRequest, data)
    return _texts(body.inputs), _default(body.add_special_tokens, True), body.prompt_name


def parse_decode(data: dict, schemas: Schemas) -> tuple[list[list[int]], bool]:
    """``POST /decode``: ``ids`` (one list of token ids, or a list of them), ``skip_special_tokens``."""
    body = schemas.parse(DecodeRequest, data)
    ids = body.ids if isinstance(body.ids[0], list) else [body.ids]
    return ids, _default(body.skip_special_tokens, True)


def parse_similarity(data: dict, schemas: Schemas) -> EmbedRequest:
    """``POST /similarity`` (or TEI's ``POST /`` with ``inputs`` an object): the texts are the
    source sentence, then the others. A body that also says ``input_type: feature-extraction`` is
    refused: litellm's ``huggingface/`` provider sends that for a model named
    ``sentence-transformers/...`` and then reads the scores as embeddings."""
    if data.get("input_type") == "feature-extraction":
        raise InvalidInput(
            "this is a sentence-similarity request ('inputs' has 'source_sentence') that asks for "
            "'input_type': 'feature-extraction', as litellm's huggingface/ provider sends for a model "
            "named sentence-transformers/...: its answer would be similarity scores, not embeddings. "
            "For embeddings, name the model without 'sentence-transformers' (huggingface/all-MiniLM-L6-v2) "
            "or use litellm's openai/ provider with api_base .../v1", param="input_type")
    body = schemas.parse(SimilarityRequest, data)
    parameters = body.parameters or schemas[SimilarityParameters]()
    return EmbedRequest(texts=[body.inputs.source_sentence, *body.inputs.sentences],
                        truncate=_default(parameters.truncate, True), prompt_name=parameters.prompt_name)


def parse_tei_rerank(data: dict, schemas: Schemas) -> tuple[RerankRequest, bool]:
    """``POST /rerank``: text-embeddings-inference's shape (``texts``); returns the core's request
    and ``return_text``."""
    body = schemas.parse(TEIRerankRequest, data)
    return (RerankRequest(body.query, body.texts, truncate=_default(body.truncate, True),
                          raw_scores=_default(body.raw_scores, False)), _default(body.return_text, False))


def parse_rerank(data: dict, schemas: Schemas) -> tuple[RerankRequest, bool]:
    """``POST /v1/rerank`` (Jina's, vLLM's, Cohere's v1; Infinity's ``/rerank``): documents as
    strings or ``{"text": ...}`` objects; returns the core's request and ``return_documents``."""
    body = schemas.parse(RerankBody, data)
    documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    return (RerankRequest(body.query, documents, truncate=_default(body.truncate, True),
                          max_tokens_per_doc=body.max_tokens_per_doc, raw_scores=_default(body.raw_scores, False),
                          top_n=body.top_n), _default(body.return_documents, False))


def parse_cohere_rerank(data: dict, schemas: Schemas) -> tuple[RerankRequest, bool]:
    """``POST /v2/rerank``: Cohere's v2 shape (``top_n`` and ``max_tokens_per_doc`` may be null, as
    LangChain's CohereRerank sends them), and our ``raw_scores`` and ``truncate`` as on the other
    routes (a client that asks for them gets them, not a silent default); returns the core's
    request and ``return_documents``."""
    body = schemas.parse(CohereRerankRequest, data)
    return (RerankRequest(body.query, body.documents, truncate=_default(body.truncate, True),
                          max_tokens_per_doc=body.max_tokens_per_doc, raw_scores=_default(body.raw_scores, False),
                          top_n=body.top_n), _default(body.return_documents, False))
