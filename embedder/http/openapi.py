"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Request and response schemas are the typed models of ``schemas.py``, the same ones validation
runs and the routes answer with, so document and server cannot disagree; this module lists the
operations (routes, their models, errors and tags). Errors come from the one table in
``error_table.py``, so their statuses, codes and meanings cannot drift. The limits in the schemas
(inputs per request, characters per input, ``dimensions``, token ids) and the security
requirements come from the running settings and model, so the document is true for this
deployment and Schemathesis can check the server against the limits it really enforces.
"""

from __future__ import annotations

import functools

import orjson

from .. import __version__
from . import error_table as http_errors

JSON = "application/json"
NATIVE, OPENAI, COHERE = "native", "openai", "cohere"

#: Per status, its rows of the error table (http_errors.ERRORS): codes, OpenAI types, docs, headers.
ERRORS_BY_STATUS = http_errors.by_status()
OPENAI_TYPES = sorted({kind.openai_type for kind in http_errors.ERRORS.values()})


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _codes(status: int) -> list[str]:
    return sorted({kind.code for kind in ERRORS_BY_STATUS[status]})


def _native_error(status: int) -> dict:
    return {"type": "object", "required": ["error", "error_type"], "additionalProperties": False,
            "properties": {"error": {"type": "string", "minLength": 1},
                           "error_type": {"type": "string", "enum": _codes(status)}}}


def _openai_error(status: int) -> dict:
    inner = {"type": "object", "required": ["message", "type", "param", "code"],
             "additionalProperties": False,
             "properties": {"message": {"type": "string", "minLength": 1},
                            "type": {"type": "string", "enum": OPENAI_TYPES},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": "string", "enum": _codes(status)}}}
    return {"type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": inner}}


def _cohere_error(status: int) -> dict:
    return {"type": "object", "required": ["message"], "additionalProperties": False,
            "properties": {"message": {"type": "string", "minLength": 1}}}


def _header(description: str, pattern: str | None = None) -> dict:
    schema = {"type": "string"} if pattern is None else {"type": "string", "pattern": pattern}
    return {"description": description, "required": True, "schema": schema}


# What each header the error table sets (and 405's Allow) means, and its pattern.
_HEADER_DOCS = {
    "WWW-Authenticate": _header("The scheme to use: `Bearer`.", r"^Bearer"),
    "Allow": _header("The methods this route answers."),
    "Retry-After": _header("Seconds to wait before retrying.", r"^[0-9]+$"),
}
_MS = r"^[0-9]+(\.[0-9]+)?$"
_TIMING_HEADERS = {
    "x-total-time": _header("Milliseconds in the server for this request.", _MS),
    "x-tokenization-time": _header("Milliseconds spent tokenizing.", _MS),
    "x-queue-time": _header("Milliseconds waiting for the batching thread.", _MS),
    "x-inference-time": _header("Milliseconds in the forward pass.", _MS),
    "x-input-tokens": _header("Tokens read, special tokens included.", r"^[0-9]+$"),
}


def _error_response(status: int, shape: str) -> dict:
    schema = {NATIVE: _native_error, OPENAI: _openai_error, COHERE: _cohere_error}[shape](status)
    kinds = ERRORS_BY_STATUS[status]
    response = {"description": " ".join(kind.doc for kind in kinds), "content": {JSON: {"schema": schema}}}
    names = [name for kind in kinds for name in kind.headers] + (["Allow"] if status == 405 else [])
    if names:
        response["headers"] = {name: _HEADER_DOCS[name] for name in names}
    return response


#: The groups /docs shows, in its order, and each operation's group (by path; ``GET /`` is the
#: original benchmark's route, an operations check, while ``POST /`` is TEI's base route).
TEI, OPENAI_TAG, RERANK, OPERATIONS = "text-embeddings-inference", "OpenAI", "rerank", "operations"
TAGS = [
    {"name": TEI, "description": "text-embeddings-inference's routes and shapes (huggingface_hub, "
                                 "LangChain's and LlamaIndex's TEI clients)."},
    {"name": OPENAI_TAG, "description": "OpenAI's embeddings and models API (openai, litellm, LangChain, "
                                        "LlamaIndex)."},
    {"name": RERANK, "description": "Rerankers (cross-encoders): text-embeddings-inference's `/rerank`, "
                                    "Jina's, vLLM's and Cohere's v1 `/v1/rerank`, Cohere's v2 `/v2/rerank`; "
                                    "`model` names the reranker (null: the first)."},
    {"name": OPERATIONS, "description": "Health, the settings in force, metrics, this document, and the "
                                        "original benchmark's `GET /`."},
]


def tag_of(path: str, method: str) -> str:
    if path in ("/health", "/info", "/metrics", "/openapi.json") or (path == "/" and method == "get"):
        return OPERATIONS
    if path.endswith("/rerank"):
        return RERANK
    if path.startswith(("/v1/", "/models")) or path == "/embeddings":
        return OPENAI_TAG
    return TEI


def _responses(ok: dict, errors: list[int], shape: str = NATIVE, *, auth: bool = False) -> dict:
    responses = {"200": ok}
    for status in sorted(errors + ([401] if auth else [])):
        responses[str(status)] = {"$ref": f"#/components/responses/{shape}{status}"}
    return responses


def _json_ok(description: str, schema: dict, headers: dict | None = None) -> dict:
    ok = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        ok["headers"] = headers
    return ok


def _text_ok(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": schema}}}


def _body(names: str | list[str]) -> dict:
    """A JSON request body of the named model (or one of the named models)."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in ([names] if isinstance(names, str) else names)]
    return {"required": True, "content": {JSON: {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}}


def build(settings, schemas, model_id: str) -> dict:
    """The document for these settings (API key), these typed models (``schemas.Schemas``: their
    limits are this deployment's) and this model."""
    limits = schemas.limits
    dim = limits.dimension
    keyed = bool(settings.api_key)
    bearer = [{"bearerAuth": []}] if keyed else []
    metrics_keyed = keyed and settings.metrics_require_key
    # 404: the body's `model` names no served embedding model (TEI's routes take one too).
    embedding_errors = [400, 404, 413, 415, 422, 429, 500, 503]
    responses = {f"{shape}{status}": _error_response(status, shape)
                 for shape in (NATIVE, OPENAI, COHERE) for status in ERRORS_BY_STATUS}

    def op(summary, ok, errors, *, shape=NATIVE, secured=keyed, body=None):
        operation = {"summary": summary, "security": bearer if secured else [],
                     "responses": _responses(ok, errors, shape, auth=secured)}
        if body:
            operation["requestBody"] = _body(body)
        return operation

    openai_op = op("Embed texts or token ids (OpenAI's shape)",
                   _json_ok("The vectors.", {"$ref": "#/components/schemas/OpenAIEmbeddingResponse"},
                            _TIMING_HEADERS),
                   embedding_errors, shape=OPENAI, body="OpenAIEmbeddingRequest")
    embed_op = op("Embed texts (text-embeddings-inference's shape)",
                  _json_ok("The vectors.", {"$ref": "#/components/schemas/EmbedResponse"}, _TIMING_HEADERS),
                  embedding_errors, body="EmbedRequest")
    models_op = op("The served models, with their kind (OpenAI's model list)",
                   _json_ok("Every model.", {"$ref": "#/components/schemas/ModelList"}), [500], shape=OPENAI)
    rerank_errors = embedding_errors
    model_op = op("The served model by name (OpenAI's model object)",
                  _json_ok("The model.", {"$ref": "#/components/schemas/Model"}), [404, 500], shape=OPENAI)
    model_op["parameters"] = [{"name": "model", "in": "path", "required": True,
                               "description": "A served model's name or the name's last part; another is 404.",
                               "schema": {"type": "string", "enum": sorted(schemas.model_names)}}]
    # /tokenize and /decode: embedding's limits (deadline, 429), and one on the answer's tokens (422).
    most = settings.max_tokenize_tokens
    tokenize_op = op("The model's tokens of each text (text-embeddings-inference's shape)",
                     _json_ok("The tokens.", {"$ref": "#/components/schemas/TokenizeResponse"}),
                     embedding_errors, body="TokenizeRequest")
    tokenize_op["description"] = (
        f"At most {most} tokens in the whole answer, special tokens included (EMBEDDER_MAX_TOKENIZE_TOKENS): "
        "more is 422, found while tokenizing. 429 when the answers this worker is building would hold more "
        "than EMBEDDER_MAX_QUEUED_TOKENS tokens with this one's; 503 past EMBEDDER_REQUEST_TIMEOUT.")
    decode_op = op("The text of token ids (text-embeddings-inference's shape)",
                   _json_ok("The texts.", {"$ref": "#/components/schemas/DecodeResponse"}),
                   embedding_errors, body="DecodeRequest")
    decode_op["description"] = (
        f"At most {most} token ids in all the lists together (EMBEDDER_MAX_TOKENIZE_TOKENS): more is 422. "
        "429 and 503 as on /tokenize.")
    paths = {
        "/": {"get": op('Encode "this is a test", as the original Flask benchmark did',
                        _text_ok("Always `ok`.", {"type": "string", "const": "ok"}), [404, 429, 500, 503]),
              "post": op("text-embeddings-inference's base route: /embed's request, or /similarity's "
                         "(`inputs` an object), answered as that route answers it",
                         _json_ok("The vectors, or the similarity scores.", {"oneOf": [
                             {"$ref": "#/components/schemas/EmbedResponse"},
                             {"$ref": "#/components/schemas/SimilarityResponse"}]}, _TIMING_HEADERS),
                         embedding_errors, body=["EmbedRequest", "SimilarityRequest"])},
        "/embed": {"post": embed_op},
        "/similarity": {"post": op("Cosine similarity of a source sentence with others",
                                   _json_ok("One score per sentence, in order.",
                                            {"$ref": "#/components/schemas/SimilarityResponse"}, _TIMING_HEADERS),
                                   embedding_errors, body="SimilarityRequest")},
        "/tokenize": {"post": tokenize_op},
        "/decode": {"post": decode_op},
        "/rerank": {"post": op("Score texts against a query (text-embeddings-inference's shape); a body "
                               "with `documents` instead of `texts` is answered as /v1/rerank",
                               _json_ok("One item per text, best first; or /v1/rerank's answer.", {"oneOf": [
                                   {"$ref": "#/components/schemas/TEIRerankResponse"},
                                   {"$ref": "#/components/schemas/RerankResponse"}]}, _TIMING_HEADERS),
                               rerank_errors, body=["TEIRerankRequest", "RerankRequest"])},
        "/v1/rerank": {"post": op("Score documents against a query (Jina's, vLLM's and Cohere's v1 shape)",
                                  _json_ok("The results, best first.",
                                           {"$ref": "#/components/schemas/RerankResponse"}, _TIMING_HEADERS),
                                  rerank_errors, shape=OPENAI, body="RerankRequest")},
        "/v2/rerank": {"post": op("Score documents against a query (Cohere's v2 shape)",
                                  _json_ok("The results, best first.",
                                           {"$ref": "#/components/schemas/CohereRerankResponse"}, _TIMING_HEADERS),
                                  rerank_errors, shape=COHERE, body="CohereRerankRequest")},
        "/v1/embeddings": {"post": openai_op},
        "/embeddings": {"post": {**openai_op, "summary": "Same as /v1/embeddings"}},
        "/v1/models": {"get": models_op},
        "/models": {"get": {**models_op, "summary": "Same as /v1/models"}},
        "/v1/models/{model}": {"get": model_op},
        "/models/{model}": {"get": {**model_op, "summary": "Same as /v1/models/{model}"}},
        "/health": {"get": op("Liveness: the model is loaded and the batching thread runs",
                              _json_ok("Healthy.", {"$ref": "#/components/schemas/Health"}),
                              [500, 503], secured=False)},
        "/info": {"get": op("Model, limits and worker layout",
                            _json_ok("The settings in force.", {"$ref": "#/components/schemas/Info"}), [500])},
        "/metrics": {"get": op("Prometheus metrics, summed over all workers",
                               _text_ok("Prometheus text exposition format.", {"type": "string"}), [500],
                               secured=metrics_keyed)},
        "/openapi.json": {"get": op("This document",
                                    _json_ok("OpenAPI 3.1.", {"type": "object", "required": ["openapi", "paths"]}),
                                    [500], secured=False)},
    }
    for path, methods in paths.items():
        for method, operation in methods.items():
            operation["tags"] = [tag_of(path, method)]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "embedder",
            "version": __version__,
            "description": (
                f"Sentence embeddings from {model_id} ({dim} dimensions; the limits shown are this "
                "model's: the first embedding model's when the server serves several, see `/info`), and "
                "reranking. Errors are JSON: "
                '`{"error": str, "error_type": str}` on native routes, OpenAI\'s '
                '`{"error": {"message", "type", "param", "code"}}` on OpenAI\'s routes '
                "(/v1/..., /embeddings, /models), also for unknown routes (404, `not_found`) and methods "
                "(405, `method_not_allowed`, with `Allow`), and Cohere's `{\"message\": str}` under /v2/."
                + (" Every route but /health, /openapi.json"
                   + ("" if metrics_keyed else " and /metrics")
                   + " needs `Authorization: Bearer <EMBEDDER_API_KEY>`." if keyed else "")
            ),
        },
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": schemas.json_schemas,
            "responses": responses,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The key set in EMBEDDER_API_KEY; required only when it is set."}},
        },
    }


@functools.cache
def document_bytes(settings, schemas, model_id: str) -> bytes:
    """The document as JSON, built once per app (settings and model do not change)."""
    return orjson.dumps(build(settings, schemas, model_id))
