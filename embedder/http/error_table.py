"""The one table from errors to HTTP: status, the error's code in both API shapes, the metrics
reason, fixed headers and the words the OpenAPI document uses. The core raises its own errors
(``errors.py``); the HTTP layer raises the few below (and werkzeug's); ``app.py`` answers every
one of them through :func:`kind_of`, and ``openapi.py`` documents the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from ..core.errors import (
    AnswerTooLarge,
    ClientGone,
    EmbedderError,
    InputTooLong,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    TimedOut,
    Unavailable,
)


class MalformedJSON(EmbedderError):
    """The body is not JSON that orjson reads."""


class UnsupportedMediaType(EmbedderError):
    """The body is not declared as ``application/json``."""


class Unauthorized(EmbedderError):
    """An API key is configured and the request did not carry it."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    #: ``error_type`` on native routes, ``error.code`` on OpenAI routes.
    code: str
    #: OpenAI's ``error.type``.
    openai_type: str
    #: ``embedder_failures_total{reason}``, or None when not counted (unknown routes and methods).
    reason: str | None
    #: What the OpenAPI document says this error means.
    doc: str
    headers: dict = field(default_factory=dict)


ERRORS: dict[type[BaseException], ErrorKind] = {
    MalformedJSON: ErrorKind(
        400, "validation", "invalid_request_error", "validation",
        "Malformed JSON: invalid syntax, invalid UTF-8, NaN/Infinity, lone surrogates, numbers out of "
        "range or nesting deeper than 1024 levels."),
    Unauthorized: ErrorKind(
        401, "auth", "authentication_error", "auth",
        "Missing or wrong API key (only when EMBEDDER_API_KEY is set).",
        {"WWW-Authenticate": 'Bearer realm="embedder"'}),
    NotFound: ErrorKind(404, "not_found", "invalid_request_error", None, "No such route."),
    ModelNotFound: ErrorKind(404, "model_not_found", "invalid_request_error", "validation",
                             "`model` names a model this server does not serve (`GET /v1/models` lists "
                             "the one it does)."),
    MethodNotAllowed: ErrorKind(405, "method_not_allowed", "invalid_request_error", None,
                                "Method not allowed on this route; `Allow` lists the methods that are."),
    RequestEntityTooLarge: ErrorKind(413, "request_entity_too_large", "invalid_request_error", "validation",
                                     "Request body larger than EMBEDDER_MAX_BODY_BYTES."),
    UnsupportedMediaType: ErrorKind(415, "validation", "invalid_request_error", "validation",
                                    "Content-Type is missing or not application/json."),
    InvalidInput: ErrorKind(
        422, "validation", "invalid_request_error", "validation",
        "Well-formed JSON that breaks a rule: a missing field, a wrong type, an empty list or string, a "
        "limit (EMBEDDER_MAX_INPUTS, EMBEDDER_MAX_INPUT_CHARS; on `/tokenize` and `/decode` "
        "EMBEDDER_MAX_TOKENIZE_TOKENS, the tokens of the whole answer), `dimensions` out of range, an unknown "
        "`prompt_name`, a token id outside the vocabulary, token ids on the OpenAI route (unless "
        "EMBEDDER_OPENAI_TOKEN_IDS is set), or an input over the model's token limit with "
        "`truncate: false`. The message names the field."),
    Overloaded: ErrorKind(429, "overloaded", "rate_limit_error", "overloaded",
                          "This worker's queue is full (EMBEDDER_MAX_QUEUED_INPUTS), or the work queued "
                          "in it would not finish within EMBEDDER_REQUEST_TIMEOUT; on `/tokenize` and "
                          "`/decode`, the answers this worker is building hold EMBEDDER_MAX_QUEUED_TOKENS "
                          "tokens with this one's; retry after `Retry-After` seconds.", {"Retry-After": "1"}),
    TimedOut: ErrorKind(503, "timeout", "server_error", "timeout",
                        "Waited (or, on `/tokenize` and `/decode`, took) longer than "
                        "EMBEDDER_REQUEST_TIMEOUT (`timeout`)."),
    Unavailable: ErrorKind(503, "unavailable", "server_error", "unavailable",
                           "The worker is not serving: its batching thread died or hung; or, on `/metrics`, "
                           "the metrics directory is full or not writable (`unavailable`)."),
    ClientGone: ErrorKind(499, "client_gone", "invalid_request_error", "client_gone",
                          "The client closed its connection while its request waited (nobody reads "
                          "this answer; it is counted, as nginx's 499)."),
    Exception: ErrorKind(500, "internal", "server_error", "internal", "Internal error (no details are exposed)."),
}


def kind_of(error: BaseException) -> ErrorKind:
    """The table's row for an error: its class or the nearest base class listed. A werkzeug error
    the table does not list keeps its own status, with its name as the code."""
    for cls in type(error).__mro__:
        if cls in ERRORS and (cls is not Exception or not isinstance(error, HTTPException)):
            return ERRORS[cls]
    status = error.code or 500
    return ErrorKind(status, error.name.lower().replace(" ", "_"), "invalid_request_error",
                     "validation" if status < 500 else "internal", error.description or error.name)


def message_of(error: BaseException) -> str:
    """What the client reads: the error's own message, in the API's field names where the core's
    does not know them; never a traceback or a path for a 500."""
    if isinstance(error, HTTPException):
        return f"{error.name}: {error.description}" if error.description else error.name
    if kind_of(error).status == 500:
        return "internal server error"
    if isinstance(error, InputTooLong):  # only TEI's routes let a request refuse truncation
        return (f"'{param_of(error)}[{error.index}]' has {error.tokens} tokens, more than the model's "
                f"{error.limit}; send truncate=true to cut it")
    if isinstance(error, AnswerTooLarge):  # /tokenize's texts or /decode's lists of ids
        decode = error.param == "ids"
        what = (f"more than the {error.limit} token ids one request may send" if decode
                else f"more than the {error.limit} tokens one answer may hold")
        so_far = (f"its one {'list holds' if decode else 'input makes'} {error.tokens}" if error.of == 1 else
                  f"its first {error.inputs} of {error.of} {'lists' if decode else 'inputs'} "
                  f"{'hold' if decode else 'make'} {error.tokens}")
        return (f"'{error.param}': {what} (EMBEDDER_MAX_TOKENIZE_TOKENS): {so_far}; send "
                f"{'fewer ids' if decode else 'fewer or shorter inputs'}")
    return getattr(error, "message", None) or str(error)


def param_of(error: BaseException) -> str | None:
    """The request field at fault, if known (OpenAI's ``error.param``)."""
    param = getattr(error, "param", None)
    return (param or "inputs") if isinstance(error, InputTooLong) else param


def by_status() -> dict[int, list[ErrorKind]]:
    """The table grouped by status, in status order (what the OpenAPI document lists)."""
    out: dict[int, list[ErrorKind]] = {}
    for kind in sorted(ERRORS.values(), key=lambda k: k.status):
        out.setdefault(kind.status, []).append(kind)
    return out


def native_body(error: BaseException) -> dict:
    return {"error": message_of(error), "error_type": kind_of(error).code}


def openai_body(error: BaseException) -> dict:
    kind = kind_of(error)
    return {"error": {"message": message_of(error), "type": kind.openai_type,
                      "param": param_of(error), "code": kind.code}}


def cohere_body(error: BaseException) -> dict:
    """Cohere's error shape (its SDK raises the exception of the status, with this as ``body``)."""
    return {"message": message_of(error)}
