"""Gunicorn's own error answers, as embedder/gunicorn_errors.py writes them (fast: a socket pair;
tests/test_edge.py sends the real bad requests to a real server)."""

from __future__ import annotations

import json
import socket

from gunicorn import util

from embedder import gunicorn_errors


def answer(status: int, reason: str, mesg: str) -> tuple[str, dict, dict]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        gunicorn_errors.write_error(ours, status, reason, mesg)
        ours.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := theirs.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return lines[0], headers, json.loads(body)


def test_an_error_is_our_json_shape():
    status, headers, body = answer(431, "Request Header Fields Too Large", "Error parsing headers: 'x'")
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert body == {"error": "Request Header Fields Too Large: Error parsing headers: 'x'",
                    "error_type": "request_header_fields_too_large"}


def test_501_gets_its_own_reason_and_quotes_survive():
    status, _, body = answer(501, "Bad Request", 'Unsupported transfer coding: "</html>"')
    assert status == "HTTP/1.1 501 Not Implemented" and body["error_type"] == "not_implemented"
    assert body["error"] == 'Not Implemented: Unsupported transfer coding: "</html>"'
    assert answer(500, "Internal Server Error", "")[2] == {"error": "Internal Server Error",
                                                           "error_type": "internal_server_error"}


def test_install_replaces_gunicorns_html_writer():
    original = util.write_error
    try:
        gunicorn_errors.install()
        assert util.write_error is gunicorn_errors.write_error
    finally:
        util.write_error = original
