"""Gunicorn's own error answers in the service's JSON error shape instead of HTML.

Some requests never reach the app: Gunicorn itself refuses a malformed request line (400), a URI
over ``limit_request_line`` (414), a header over ``limit_request_field_size`` or too many headers
(431), an unsupported transfer coding (501) and the like, answering with ``util.write_error``, an
HTML page. Gunicorn has no hook for that body, so :func:`install` (called by ``gunicorn.conf.py``)
replaces that one function with :func:`write_error`, which writes the native error shape
``{"error": "<reason>: <Gunicorn's message>", "error_type": "<reason in snake case>"}`` (the route
is not known yet, so never OpenAI's). Status codes, logging and the access log stay Gunicorn's.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import orjson
from gunicorn import util


def reason_of(status_int: int, reason: str) -> str:
    """Gunicorn's reason phrase, except where it does not fit the status (it answers an unsupported
    transfer coding with "501 Bad Request")."""
    return HTTPStatus(status_int).phrase if status_int == 501 else reason


def error_body(status_int: int, reason: str, mesg: str) -> bytes:
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"
    message = f"{reason}: {mesg}" if mesg else reason
    return orjson.dumps({"error": message, "error_type": code})


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """What ``gunicorn.util.write_error`` writes, as JSON: the same status and connection close."""
    reason = reason_of(status_int, reason)
    body = error_body(status_int, reason, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Make Gunicorn's error answers JSON (its workers call ``util.write_error`` at answer time)."""
    util.write_error = write_error
