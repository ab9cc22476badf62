"""Refusals made below the app, as embedder/gunicorn_errors.py writes them (fast; tests/test_edge.py
sends the real bad requests to a real server)."""

from __future__ import annotations

import json

from embedder.edge import refusals as gunicorn_errors


def answer(status: int, message: str, extra=()) -> tuple[str, dict, dict]:
    data = gunicorn_errors.error_response(status, message, extra)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return lines[0], headers, json.loads(body)


def test_an_error_is_our_json_shape_and_closes_the_connection():
    status, headers, body = answer(431, "Error parsing headers: 'x'", [("X-Extra", "1")])
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert headers["x-extra"] == "1"
    assert body == {"error": "Request Header Fields Too Large: Error parsing headers: 'x'",
                    "error_type": "request_header_fields_too_large"}


def test_quotes_survive_and_an_empty_message_is_the_reason_alone():
    status, _, body = answer(501, 'Unsupported transfer coding: "</html>"')
    assert status == "HTTP/1.1 501 Not Implemented" and body["error_type"] == "not_implemented"
    assert body["error"] == 'Not Implemented: Unsupported transfer coding: "</html>"'
    assert answer(408, "")[2] == {"error": "Request Timeout", "error_type": "request_timeout"}
    assert gunicorn_errors.reason_of(599) == "Error"
