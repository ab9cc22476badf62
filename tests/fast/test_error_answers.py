"""Every error answer has the service's JSON shape. Every row of the error table
(embedder/http/error_table.py) is reached through Flask's test client on the stand-in model of
tests/support/fakes.py and answered with its status, codes and headers in both API shapes, and
documented in the OpenAPI document; the refusals made below the app, as embedder/edge/refusals.py
writes them, have the same shape (tests/integration/test_edge.py sends the real bad requests to a
real server; test_validation.py has each bad input's answer)."""

from __future__ import annotations

import json

import pytest

from embedder.core.errors import ClientGone, InputTooLong, InvalidInput, Overloaded, TimedOut, Unavailable
from embedder.edge import refusals as gunicorn_errors
from embedder.http import error_table as http_errors
from embedder.http import openapi
from fakes import make_app
from metrics import definitions as m


@pytest.fixture()
def app():
    app = make_app()
    yield app
    app.backend.gate.set()  # never leave a request thread waiting on a held pass


# -- every row of the error table --------------------------------------------------------------

def _answer(app, path: str, raise_error: BaseException):
    """Make the service raise ``raise_error`` and return the response to a request on ``path``."""
    def fail(request, gone=None):
        raise raise_error
    app.service.embed = fail
    body = {"inputs": "x"} if path == "/embed" else {"input": "x"}
    return app.test_client().post(path, json=body)


@pytest.mark.parametrize("error", [InvalidInput("bad", param="inputs"), InputTooLong(0, 300, 256),
                                   Overloaded("queue full"), TimedOut("too slow"), Unavailable("dead"),
                                   ClientGone("left"), RuntimeError("secret detail /srv/x.py")],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("path", ["/embed", "/v1/embeddings"])
def test_core_errors_map_through_the_table(app, error, path):
    kind = http_errors.kind_of(error)
    before = m.FAILURES.labels(kind.reason, app.service.model_id)._value.get()
    r = _answer(app, path, error)
    assert r.status_code == kind.status and r.headers["Content-Type"] == "application/json"
    for name, value in kind.headers.items():
        assert r.headers[name] == value
    body = r.get_json()
    if path == "/embed":
        assert body == {"error": http_errors.message_of(error), "error_type": kind.code}
    else:
        assert body["error"]["code"] == kind.code and body["error"]["type"] == kind.openai_type
    assert "secret detail" not in r.text and ".py" not in r.text
    assert m.FAILURES.labels(kind.reason, app.service.model_id)._value.get() == before + 1


def test_every_status_in_the_table_is_documented():
    app = make_app()
    document = openapi.build(app.service.settings, app.extensions["embedder.routing"].default, "m")
    responses = document["components"]["responses"]
    for status, kinds in http_errors.by_status().items():
        for shape in ("native", "openai"):
            schema = responses[f"{shape}{status}"]["content"]["application/json"]["schema"]
            codes = (schema["properties"]["error_type"] if shape == "native"
                     else schema["properties"]["error"]["properties"]["code"])["enum"]
            assert codes == sorted({k.code for k in kinds})
    assert {k.reason for k in http_errors.ERRORS.values()} - {None} <= set(m.FAILURE_REASONS)


# -- refusals made below the app (embedder/edge/refusals.py) -----------------------------------

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
