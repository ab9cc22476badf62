"""Refusals made below the Flask app, in the service's JSON error shape instead of plain text.

Some requests never reach the app: Gunicorn's HTTP parser refuses a malformed request line (400), a
URI over ``limit_request_line`` (414), a header over ``limit_request_field_size`` or too many headers
(431), an unsupported transfer coding (501); the edge worker (``edge_worker.py``) refuses headers or
a body that arrive too slowly (408) and a body over the limit (413). They all answer with
:func:`error_body`'s shape, ``{"error": "<reason>: <message>", "error_type": "<reason in snake
case>"}`` (the route is not known yet, so never OpenAI's), and close the connection.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import orjson

#: Phrases fixed here where Python's table changed between versions (3.13 renamed 413 and 414), so
#: that ``error_type`` stays the same; 413's matches the app's own refusal of a long body.
_REASONS = {413: "Request Entity Too Large", 414: "URI Too Long"}


def reason_of(status: int) -> str:
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, message: str) -> bytes:
    reason = reason_of(status)
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"
    return orjson.dumps({"error": f"{reason}: {message}" if message else reason, "error_type": code})


def error_response(status: int, message: str, extra_headers=()) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for a refusal written to the socket."""
    body = error_body(status, message)
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
    head = (f"HTTP/1.1 {status} {reason_of(status)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + body
