"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Hand-maintained beside the code it describes (routes.py, validation.py): change one, change
this. Errors come from the one table in http_errors.py, so their statuses, codes and meanings
cannot drift. The limits in the schemas (inputs per request, characters per input,
``dimensions``, token ids) and the security requirements come from the running settings and
model, so the document is true for this deployment and Schemathesis can check the server
against the limits it really enforces (tests/test_openapi.py).
"""

from __future__ import annotations

import functools

import orjson

from . import __version__, http_errors
from .validation import content_pattern

JSON = "application/json"
NATIVE, OPENAI = "native", "openai"

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
    schema = _native_error(status) if shape == NATIVE else _openai_error(status)
    kinds = ERRORS_BY_STATUS[status]
    response = {"description": " ".join(kind.doc for kind in kinds), "content": {JSON: {"schema": schema}}}
    names = [name for kind in kinds for name in kind.headers] + (["Allow"] if status == 405 else [])
    if names:
        response["headers"] = {name: _HEADER_DOCS[name] for name in names}
    return response


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


def _body(schema_name: str) -> dict:
    return {"required": True, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def build(settings, limits, model_id: str) -> dict:
    """The document for these settings (API key), these limits (inputs, characters, the model's
    dimension and vocabulary) and this model."""
    dim, vocab, chars = limits.dimension, limits.vocab_size, limits.max_input_chars
    keyed = bool(settings.api_key)
    bearer = [{"bearerAuth": []}] if keyed else []
    metrics_keyed = keyed and settings.metrics_require_key
    embedding_errors = [400, 413, 415, 422, 429, 500, 503]

    text = {"type": "string", "minLength": 1, "maxLength": chars, "pattern": content_pattern(),
            "description": f"At most {chars} characters (EMBEDDER_MAX_INPUT_CHARS), at least one of "
                           "them visible (not white space, control or zero-width: `pattern`); "
                           f"longer than {limits.max_input_tokens} tokens is cut or refused, see `truncate`."}
    texts = {"type": "array", "minItems": 1, "maxItems": limits.max_inputs, "items": {"$ref": "#/components/schemas/Text"},
             "description": f"At most {limits.max_inputs} inputs per request (EMBEDDER_MAX_INPUTS)."}
    token_id = {"type": "integer", "minimum": 0, "maximum": vocab - 1}
    token_ids = {"type": "array", "minItems": 1, "maxItems": chars, "items": token_id,
                 "description": f"One input as token ids, without special tokens: at most {chars} "
                                "(EMBEDDER_MAX_INPUT_CHARS); cut to the model's limit."}
    dimensions = _nullable({"type": "integer", "minimum": 1, "maximum": dim,
                            "description": f"Keep the first N of {dim} dimensions (then normalize)."})
    prompts = sorted(limits.prompts)
    prompt_name = _nullable({"type": "string", "enum": prompts}) if prompts else {"type": "null"}
    vector = {"type": "array", "minItems": 1, "maxItems": dim, "items": {"type": "number"}}
    truncation_direction = _nullable({"type": "string", "enum": ["right", "Right"],
                                      "description": "Long inputs are cut at their end; `left` is refused."})
    any_ids = {"type": "array", "minItems": 1, "maxItems": chars, "items": token_id,
               "description": f"Token ids, special tokens included if wanted: at most {chars}."}
    model_card = {"type": "object", "required": ["id", "object", "created", "owned_by"],
                  "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                                 "created": {"type": "integer"}, "owned_by": {"type": "string"}}}
    openai_inputs = [{"$ref": "#/components/schemas/Text"}, texts]
    if limits.openai_token_ids:
        openai_inputs += [token_ids, {"type": "array", "minItems": 1, "maxItems": limits.max_inputs,
                                      "items": token_ids}]

    schemas = {
        "Text": text,
        "EmbedRequest": {
            "type": "object", "required": ["inputs"],
            "description": "text-embeddings-inference's request. Unknown fields are ignored.",
            "properties": {
                "inputs": {"anyOf": [{"$ref": "#/components/schemas/Text"}, texts]},
                "normalize": _nullable({"type": "boolean", "default": True,
                                        "description": "Scale each vector to unit length."}),
                "truncate": _nullable({"type": "boolean", "default": True,
                                       "description": f"Cut inputs over {limits.max_input_tokens} tokens; "
                                                      "false refuses them with 422."}),
                "dimensions": dimensions,
                "prompt_name": prompt_name,
                "truncation_direction": truncation_direction,
            },
        },
        "TokenizeRequest": {
            "type": "object", "required": ["inputs"],
            "description": "text-embeddings-inference's request. Unknown fields are ignored.",
            "properties": {
                "inputs": {"anyOf": [{"$ref": "#/components/schemas/Text"}, texts]},
                "add_special_tokens": _nullable({"type": "boolean", "default": True}),
                "prompt_name": prompt_name,
            },
        },
        "TokenizeResponse": {
            "type": "array", "minItems": 1, "maxItems": limits.max_inputs,
            "description": "Every token of each input, untruncated; `start`/`stop`: UTF-8 byte offsets "
                           "into the input (null for special tokens).",
            "items": {"type": "array", "items": {
                "type": "object", "required": ["id", "text", "special", "start", "stop"],
                "properties": {"id": token_id, "text": {"type": "string"}, "special": {"type": "boolean"},
                               "start": {"type": ["integer", "null"], "minimum": 0},
                               "stop": {"type": ["integer", "null"], "minimum": 0}}}}},
        "DecodeRequest": {
            "type": "object", "required": ["ids"],
            "description": "text-embeddings-inference's request. Unknown fields are ignored.",
            "properties": {
                "ids": {"anyOf": [any_ids, {"type": "array", "minItems": 1, "maxItems": limits.max_inputs,
                                            "items": any_ids}]},
                "skip_special_tokens": _nullable({"type": "boolean", "default": True}),
            },
        },
        "DecodeResponse": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs,
                           "items": {"type": "string"}, "description": "The text of each list of ids."},
        "SimilarityRequest": {
            "type": "object", "required": ["inputs"],
            "description": "The sentence-similarity task's request (text-embeddings-inference, "
                           "huggingface_hub's `sentence_similarity`). Unknown fields are ignored.",
            "properties": {
                "inputs": {"type": "object", "required": ["source_sentence", "sentences"], "properties": {
                    "source_sentence": {"$ref": "#/components/schemas/Text"},
                    "sentences": {**texts, "maxItems": limits.max_inputs - 1,
                                  "description": "Compared with the source sentence; with it, at most "
                                                 f"{limits.max_inputs} texts (EMBEDDER_MAX_INPUTS)."}}},
                "parameters": _nullable({"type": "object", "properties": {
                    "truncate": _nullable({"type": "boolean", "default": True}),
                    "truncation_direction": truncation_direction,
                    "prompt_name": prompt_name}}),
            },
        },
        "SimilarityResponse": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs - 1,
                               "items": {"type": "number", "minimum": -1.0001, "maximum": 1.0001},
                               "description": "Cosine similarity of the source sentence with each sentence."},
        "ModelList": {"type": "object", "required": ["object", "data"],
                      "properties": {"object": {"const": "list"},
                                     "data": {"type": "array", "minItems": 1, "maxItems": 1,
                                              "items": {"$ref": "#/components/schemas/Model"}}}},
        "Model": model_card,
        "OpenAIEmbeddingRequest": {
            "type": "object", "required": ["input"],
            "description": "OpenAI's request. `user` and other fields are accepted and ignored; inputs "
                           "over the token limit are cut. Token ids are taken only when "
                           "EMBEDDER_OPENAI_TOKEN_IDS is set (422 otherwise: OpenAI clients send "
                           "tiktoken's ids, another vocabulary).",
            "properties": {
                "input": {"anyOf": openai_inputs},
                "model": _nullable({"type": "string", "enum": sorted(limits.model_names),
                                    "description": "The served model (its id or the id's last part); "
                                                   "another is 404 `model_not_found`."}),
                "encoding_format": _nullable({"type": "string", "enum": ["float", "base64"], "default": "float",
                                              "description": "base64: little-endian float32 bytes."}),
                "dimensions": dimensions,
            },
        },
        "EmbedResponse": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs, "items": vector,
                          "description": "One vector per input, in input order."},
        "OpenAIEmbeddingResponse": {
            "type": "object", "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "minItems": 1, "maxItems": limits.max_inputs, "items": {
                    "type": "object", "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer", "minimum": 0},
                        "embedding": {"anyOf": [vector, {"type": "string", "contentEncoding": "base64"}]},
                    }}},
                "model": {"type": "string"},
                "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                          "properties": {"prompt_tokens": {"type": "integer", "minimum": 1},
                                         "total_tokens": {"type": "integer", "minimum": 1}}},
            },
        },
        "Info": {
            "type": "object",
            "required": ["model_id", "dimension", "max_input_tokens", "backend", "workers",
                         "threads_per_worker", "max_inputs", "max_input_chars", "max_body_bytes", "version"],
            "properties": {
                "model_id": {"type": "string"}, "dimension": {"type": "integer"},
                "max_input_tokens": {"type": "integer"}, "normalized_by_model": {"type": "boolean"},
                "prompts": {"type": "array", "items": {"type": "string"}}, "backend": {"type": "string"},
                "workers": {"type": "integer"}, "threads_per_worker": {"type": "integer"},
                "pid": {"type": "integer"}, "max_batch_size": {"type": "integer"},
                "max_batch_tokens": {"type": "integer"}, "max_queued_inputs": {"type": "integer"},
                "max_queued_tokens": {"type": "integer"},
                "batch_cost_ms": {
                    "type": "object",
                    "description": "The worker's measured cost model of one forward pass (ms): "
                                   "fixed + inputs x length x (per_token + per_token_length x length).",
                    "properties": {"fixed": {"type": "number"}, "per_token": {"type": "number"},
                                   "per_token_length": {"type": "number"}}},
                "max_inputs": {"type": "integer"}, "max_input_chars": {"type": "integer"},
                "max_body_bytes": {"type": "integer"}, "request_timeout": {"type": "number"},
                "version": {"type": "string"},
                "model_sha": {"type": "null"}, "model_dtype": {"type": "string"},
                "served_model_name": {"type": "string"},
                "model_type": {"type": "object", "required": ["embedding"],
                               "properties": {"embedding": {"type": "object", "required": ["pooling"],
                                                            "properties": {"pooling": {"type": "string"}}}}},
                "max_concurrent_requests": {"type": "integer"}, "max_input_length": {"type": "integer"},
                "max_batch_requests": {"type": "integer"}, "max_client_batch_size": {"type": "integer"},
                "auto_truncate": {"type": "boolean"}, "tokenization_workers": {"type": "integer"},
                "sha": {"type": "null"}, "docker_label": {"type": "null"},
            },
        },
    }
    responses = {f"{shape}{status}": _error_response(status, shape)
                 for shape in (NATIVE, OPENAI) for status in ERRORS_BY_STATUS}

    def op(summary, ok, errors, *, shape=NATIVE, secured=keyed, body=None):
        operation = {"summary": summary, "security": bearer if secured else [],
                     "responses": _responses(ok, errors, shape, auth=secured)}
        if body:
            operation["requestBody"] = _body(body)
        return operation

    openai_op = op("Embed texts or token ids (OpenAI's shape)",
                   _json_ok("The vectors.", {"$ref": "#/components/schemas/OpenAIEmbeddingResponse"},
                            _TIMING_HEADERS),
                   embedding_errors + [404], shape=OPENAI, body="OpenAIEmbeddingRequest")
    embed_op = op("Embed texts (text-embeddings-inference's shape)",
                  _json_ok("The vectors.", {"$ref": "#/components/schemas/EmbedResponse"}, _TIMING_HEADERS),
                  embedding_errors, body="EmbedRequest")
    parse_errors = [400, 413, 415, 422, 500]
    models_op = op("The served model (OpenAI's model list)",
                   _json_ok("One model.", {"$ref": "#/components/schemas/ModelList"}), [500], shape=OPENAI)
    model_op = op("The served model by name (OpenAI's model object)",
                  _json_ok("The model.", {"$ref": "#/components/schemas/Model"}), [404, 500], shape=OPENAI)
    model_op["parameters"] = [{"name": "model", "in": "path", "required": True,
                               "description": "The served model's id or the id's last part; another is 404.",
                               "schema": {"type": "string", "enum": sorted(limits.model_names)}}]
    paths = {
        "/": {"get": op('Encode "this is a test", as the original Flask benchmark did',
                        _text_ok("Always `ok`.", {"type": "string", "const": "ok"}), [429, 500, 503]),
              "post": {**embed_op, "summary": "Same as /embed (text-embeddings-inference's route for "
                                              "its model's task)"}},
        "/embed": {"post": embed_op},
        "/similarity": {"post": op("Cosine similarity of a source sentence with others",
                                   _json_ok("One score per sentence, in order.",
                                            {"$ref": "#/components/schemas/SimilarityResponse"}, _TIMING_HEADERS),
                                   embedding_errors, body="SimilarityRequest")},
        "/tokenize": {"post": op("The model's tokens of each text (text-embeddings-inference's shape)",
                                 _json_ok("The tokens.", {"$ref": "#/components/schemas/TokenizeResponse"}),
                                 parse_errors, body="TokenizeRequest")},
        "/decode": {"post": op("The text of token ids (text-embeddings-inference's shape)",
                               _json_ok("The texts.", {"$ref": "#/components/schemas/DecodeResponse"}),
                               parse_errors, body="DecodeRequest")},
        "/v1/embeddings": {"post": openai_op},
        "/embeddings": {"post": {**openai_op, "summary": "Same as /v1/embeddings"}},
        "/v1/models": {"get": models_op},
        "/models": {"get": {**models_op, "summary": "Same as /v1/models"}},
        "/v1/models/{model}": {"get": model_op},
        "/models/{model}": {"get": {**model_op, "summary": "Same as /v1/models/{model}"}},
        "/health": {"get": op("Liveness: the model is loaded and the batching thread runs",
                              _json_ok("Healthy.", {"type": "object", "required": ["status"],
                                                    "properties": {"status": {"const": "ok"}}}),
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "embedder",
            "version": __version__,
            "description": (
                f"Sentence embeddings from {model_id} ({dim} dimensions). Errors are JSON: "
                '`{"error": str, "error_type": str}` on native routes and OpenAI\'s '
                '`{"error": {"message", "type", "param", "code"}}` on OpenAI\'s routes (/v1/..., /embeddings, /models), '
                "also for unknown routes (404, `not_found`) and methods (405, `method_not_allowed`, "
                "with `Allow`)."
                + (" Every route but /health, /openapi.json"
                   + ("" if metrics_keyed else " and /metrics")
                   + " needs `Authorization: Bearer <EMBEDDER_API_KEY>`." if keyed else "")
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The key set in EMBEDDER_API_KEY; required only when it is set."}},
        },
    }


@functools.cache
def document_bytes(service) -> bytes:
    """The document as JSON, built once per worker's service (settings and model do not change)."""
    return orjson.dumps(build(service.settings, service.limits, service.model_id))
