"""The one exception type the HTTP layer turns into a JSON error, in the shape of each API."""

from __future__ import annotations


class ApiError(Exception):
    """A client-visible failure: HTTP status, message naming the field, and a metrics reason.

    ``error_type`` is the native ``error_type`` (validation, overloaded, ...); OpenAI routes map
    it to OpenAI's ``type``. ``param`` names the offending field where there is one.
    """

    def __init__(self, status: int, message: str, error_type: str = "validation", *,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.headers = headers or {}


# OpenAI's error "type" for each native error_type.
OPENAI_TYPES = {
    "validation": "invalid_request_error",
    "auth": "authentication_error",
    "not_found": "invalid_request_error",
    "overloaded": "rate_limit_error",
    "timeout": "server_error",
    "unavailable": "server_error",
    "internal": "server_error",
}


def native_body(error: ApiError) -> dict:
    return {"error": error.message, "error_type": error.error_type}


def openai_body(error: ApiError) -> dict:
    return {"error": {"message": error.message,
                      "type": OPENAI_TYPES.get(error.error_type, "invalid_request_error"),
                      "param": error.param, "code": error.error_type}}
