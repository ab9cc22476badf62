"""Every bad-input class gets a clear 4xx JSON error in its API's shape, never a 500, and the
service keeps answering normally (right vectors) after each of them.

Fast tier: the real app, routes, validation, service and batcher through Flask's test client,
on the stand-in model of tests/support/fakes.py (one token per word, vocabulary 30,522, 384 dimensions, 256
tokens), so the limits below are the same as the real model's.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from fakes import expected, make_app

MAX_INPUTS, MAX_CHARS, MAX_BODY = 8, 2000, 65536
NATIVE, OPENAI = "/embed", "/v1/embeddings"
JSON_CT = {"Content-Type": "application/json"}
LONG_TEXT = "word " * 300  # 1500 characters, 300 tokens: over the model's 256


@pytest.fixture(scope="module")
def srv():
    # Token ids allowed, so that the rules after that one are tested too (test_tei_openai.py has
    # the default refusal).
    return make_app(max_inputs=MAX_INPUTS, max_input_chars=MAX_CHARS, max_body_bytes=MAX_BODY,
                    openai_token_ids=True)


@pytest.fixture(autouse=True)
def still_serving(srv, caplog):
    """After each test: a normal request gets the right vector, and nothing was logged as an error."""
    with caplog.at_level(logging.ERROR):
        yield
    r = send(srv, NATIVE, {"inputs": "hello world"})
    assert r.status_code == 200, r.text
    assert np.abs(np.array(r.get_json()[0]) - expected(srv, ["hello world"])[0]).max() < 1e-6
    assert srv.extensions["embedder"].healthy()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


def send(srv, path, body=None, *, raw: bytes | None = None, headers=JSON_CT, method="POST"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return srv.test_client().open(path, method=method, data=data, headers=headers)


def check_error(r, status: int, path: str, field: str | None = None) -> str:
    """Status, JSON content type and the error shape of the route's API; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    body = r.get_json()
    if path in ("/v1/embeddings", "/embeddings"):
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        message, code = body["error"]["message"], body["error"]["code"]
        assert body["error"]["type"] in ("invalid_request_error", "authentication_error",
                                         "rate_limit_error", "server_error")
        if field:
            assert body["error"]["param"] == field, body
    else:
        assert set(body) == {"error", "error_type"}, body
        message, code = body["error"], body["error_type"]
    assert isinstance(message, str) and message and isinstance(code, str) and code
    assert "Traceback" not in message and ".py" not in message, message
    if field:
        assert field in message, message
    return message


# -- the body is not JSON, or not JSON we read ----------------------------------------------

RAW_BAD_JSON = [
    b"{not json",
    b"",
    b'{"inputs": "a",}',
    b'{"inputs": "\xff\xfe bad utf-8"}',
    b'{"inputs": "caf\xc3"}',
    b'{"inputs": "x", "dimensions": NaN}',
    b'{"inputs": "x", "dimensions": Infinity}',
    b'{"inputs": "x", "dimensions": -Infinity}',
    b'{"inputs": "lone \\ud800 surrogate"}',
    b'{"inputs": "lone \\udfff low surrogate"}',
    b'{"inputs": "x", "dimensions": 1e400}',
    b'{"inputs": ' + b"[" * 30000 + b"]" * 30000 + b"}",  # under the body limit, too deep
]


@pytest.mark.parametrize("path", [NATIVE, OPENAI])
@pytest.mark.parametrize("raw", RAW_BAD_JSON, ids=lambda b: repr(b[:30]))
def test_malformed_json_is_400(srv, path, raw):
    raw = raw.replace(b'"inputs"', b'"input"') if path == OPENAI else raw
    check_error(send(srv, path, raw=raw), 400, path)


@pytest.mark.parametrize("path", [NATIVE, OPENAI, "/embeddings"])
@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"},
                                     {"Content-Type": "application/x-www-form-urlencoded"},
                                     {"Content-Type": "application/jsonx"}, {}], ids=str)
def test_wrong_or_missing_content_type_is_415(srv, path, headers):
    key = "input" if path != NATIVE else "inputs"
    r = send(srv, path, raw=json.dumps({key: "x"}).encode(), headers=headers)
    check_error(r, 415, path, "Content-Type")


def test_content_type_parameters_are_fine(srv):
    r = send(srv, NATIVE, {"inputs": "x"}, headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", [NATIVE, OPENAI])
@pytest.mark.parametrize("body", [[], ["inputs"], "inputs", 1, None, True], ids=repr)
def test_body_must_be_an_object(srv, path, body):
    check_error(send(srv, path, raw=json.dumps(body).encode()), 422, path)


# -- wrong types and values, field by field ---------------------------------------------------

NATIVE_CASES = [
    ({"text": "x"}, "inputs"),
    ({"inputs": None}, "inputs"),
    ({"inputs": 1}, "inputs"),
    ({"inputs": True}, "inputs"),
    ({"inputs": {"a": "b"}}, "inputs"),
    ({"inputs": []}, "inputs"),
    ({"inputs": ""}, "inputs"),
    ({"inputs": ["ok", ""]}, "inputs"),
    ({"inputs": " \t\n "}, "inputs"),
    ({"inputs": ["ok", "\u0000\u0000"]}, "inputs"),
    ({"inputs": "\u200b\u200d\ufeff"}, "inputs"),
    ({"inputs": "\u3000\u2028\u00a0"}, "inputs"),
    ({"inputs": [1, 2]}, "inputs"),
    ({"inputs": ["a", None]}, "inputs"),
    ({"inputs": [["a"]]}, "inputs"),
    ({"inputs": {"a": [1, {"b": [None, {"c": []}]}]}}, "inputs"),
    ({"inputs": ["x"] * (MAX_INPUTS + 1)}, "inputs"),
    ({"inputs": "x" * (MAX_CHARS + 1)}, "inputs"),
    ({"inputs": ["ok", "é" * (MAX_CHARS + 1)]}, "inputs"),
    ({"inputs": LONG_TEXT, "truncate": False}, "inputs"),
    ({"inputs": "x", "normalize": "yes"}, "normalize"),
    ({"inputs": "x", "normalize": 1}, "normalize"),
    ({"inputs": "x", "normalize": []}, "normalize"),
    ({"inputs": "x", "truncate": "false"}, "truncate"),
    ({"inputs": "x", "truncate": 0}, "truncate"),
    ({"inputs": "x", "dimensions": True}, "dimensions"),
    ({"inputs": "x", "dimensions": 64.5}, "dimensions"),
    ({"inputs": "x", "dimensions": "64"}, "dimensions"),
    ({"inputs": "x", "dimensions": [64]}, "dimensions"),
    ({"inputs": "x", "dimensions": 0}, "dimensions"),
    ({"inputs": "x", "dimensions": -1}, "dimensions"),
    ({"inputs": "x", "dimensions": 385}, "dimensions"),
    ({"inputs": "x", "dimensions": 10**30}, "dimensions"),
    ({"inputs": "x", "dimensions": 2**64 - 1}, "dimensions"),
    ({"inputs": "x", "dimensions": -(2**63) - 1}, "dimensions"),
    ({"inputs": "x", "dimensions": 1e300}, "dimensions"),
    ({"inputs": "x", "prompt_name": "unknown"}, "prompt_name"),
    ({"inputs": "x", "prompt_name": 5}, "prompt_name"),
    ({"inputs": "x", "prompt_name": ["query"]}, "prompt_name"),
]


@pytest.mark.parametrize("body,field", NATIVE_CASES, ids=lambda v: repr(v)[:60])
def test_native_bad_fields_are_422_naming_the_field(srv, body, field):
    check_error(send(srv, NATIVE, body), 422, NATIVE, field)


OPENAI_CASES = [
    ({"inputs": "x"}, "input"),
    ({"input": None}, "input"),
    ({"input": 1}, "input"),
    ({"input": False}, "input"),
    ({"input": {"text": "x"}}, "input"),
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": [""]}, "input"),
    ({"input": [1] * (MAX_CHARS + 1)}, "input"),
    ({"input": [[1], [2] * (MAX_CHARS + 1)]}, "input"),
    ({"input": "   "}, "input"),
    ({"input": ["a", "\u200b"]}, "input"),
    ({"input": ["a", 1]}, "input"),
    ({"input": [1, "a"]}, "input"),
    ({"input": [[1], ["a"]]}, "input"),
    ({"input": [[1], 2]}, "input"),
    ({"input": [[]]}, "input"),
    ({"input": [1.5, 2]}, "input"),
    ({"input": [True, False]}, "input"),
    ({"input": [None]}, "input"),
    ({"input": [[1, [2]]]}, "input"),
    ({"input": [30522]}, "input"),  # vocabulary is 0..30521
    ({"input": [-1]}, "input"),
    ({"input": [[101], [10**30]]}, "input"),
    ({"input": [[7592]] * (MAX_INPUTS + 1)}, "input"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, "input"),
    ({"input": "x" * (MAX_CHARS + 1)}, "input"),
    ({"input": "x", "model": 5}, "model"),
    ({"input": "x", "model": ["m"]}, "model"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "encoding_format": ""}, "encoding_format"),
    ({"input": "x", "encoding_format": False}, "encoding_format"),
    ({"input": "x", "encoding_format": 0}, "encoding_format"),
    ({"input": "x", "encoding_format": []}, "encoding_format"),
    ({"input": "x", "dimensions": False}, "dimensions"),
    ({"input": "x", "dimensions": "8"}, "dimensions"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 385}, "dimensions"),
    ({"input": "x", "dimensions": 10**30}, "dimensions"),
]


@pytest.mark.parametrize("path", [OPENAI, "/embeddings"])
@pytest.mark.parametrize("body,field", OPENAI_CASES, ids=lambda v: repr(v)[:60])
def test_openai_bad_fields_are_422_in_openai_shape(srv, path, body, field):
    r = send(srv, path, body)
    check_error(r, 422, path, field)
    assert r.get_json()["error"]["type"] == "invalid_request_error"
    assert r.get_json()["error"]["code"] == "validation"


def test_openai_client_raises_its_own_exceptions(srv):
    import httpx2
    import openai

    client = openai.OpenAI(base_url="http://embedder.test/v1", api_key="unused", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.WSGITransport(app=srv)))
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.embeddings.create(model="fake/whitespace-mean", input="x", dimensions=0)
    assert info.value.body["param"] == "dimensions" and "dimensions" in info.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="whitespace-mean", input=["x"] * (MAX_INPUTS + 1))


# -- at and just inside the limits: accepted ---------------------------------------------------

@pytest.mark.parametrize("text", [" a ", "\u200bhello\u200b", "\u0000x", "日本語", "🙂", "-", "\u0301"])
def test_text_with_any_visible_character_is_content(srv, text):
    import re

    from embedder.core.content import content_pattern

    assert re.search(content_pattern(), text)  # the rule the request models enforce
    r = send(srv, NATIVE, {"inputs": [text]})
    assert r.status_code == 200 and len(r.get_json()) == 1


def test_limits_are_inclusive(srv):
    r = send(srv, NATIVE, {"inputs": ["x"] * MAX_INPUTS})
    assert r.status_code == 200 and len(r.get_json()) == MAX_INPUTS
    r = send(srv, NATIVE, {"inputs": "é" * MAX_CHARS})
    assert r.status_code == 200, r.text
    for dims in (1, 384):
        r = send(srv, NATIVE, {"inputs": "x", "dimensions": dims})
        assert r.status_code == 200 and len(r.get_json()[0]) == dims
    r = send(srv, OPENAI, {"input": [[0], [30521]]})
    assert r.status_code == 200 and len(r.get_json()["data"]) == 2
    r = send(srv, OPENAI, {"input": [1000] * MAX_CHARS})  # at the cap, then truncated to the model's
    assert r.status_code == 200 and r.get_json()["usage"]["prompt_tokens"] == 256


def test_truncate_true_cuts_long_input_false_refuses_it(srv):
    cut = send(srv, NATIVE, {"inputs": LONG_TEXT, "truncate": True})
    assert cut.status_code == 200 and cut.headers["x-input-tokens"] == "256"
    default = send(srv, NATIVE, {"inputs": LONG_TEXT})
    assert default.status_code == 200 and np.allclose(default.get_json(), cut.get_json(), atol=1e-6)
    message = check_error(send(srv, NATIVE, {"inputs": LONG_TEXT, "truncate": False}), 422, NATIVE, "inputs")
    assert "256" in message and "truncate" in message
    openai_cut = send(srv, OPENAI, {"input": LONG_TEXT})
    assert openai_cut.status_code == 200 and openai_cut.get_json()["usage"]["prompt_tokens"] == 256


def test_nulls_mean_defaults(srv):
    plain = send(srv, NATIVE, {"inputs": "hello world"}).get_json()
    r = send(srv, NATIVE, {"inputs": "hello world", "normalize": None, "truncate": None,
                           "dimensions": None, "prompt_name": None, "unknown_field": [1, {}]})
    assert r.status_code == 200 and np.allclose(r.get_json(), plain, atol=1e-6)
    r = send(srv, OPENAI, {"input": "hello world", "model": None, "encoding_format": None,
                           "dimensions": None, "user": "someone"})
    assert r.status_code == 200 and np.allclose(r.get_json()["data"][0]["embedding"], plain[0], atol=1e-6)


def test_integral_floats_are_integers(srv):
    """JSON (and so JSON Schema) does not tell 64 from 64.0: accept both alike."""
    as_int = send(srv, NATIVE, {"inputs": "x", "dimensions": 64}).get_json()
    as_float = send(srv, NATIVE, {"inputs": "x", "dimensions": 64.0}).get_json()
    assert len(as_float[0]) == 64 and np.allclose(as_int, as_float)
    ids = send(srv, OPENAI, {"input": [7592, 2088]}).get_json()["data"][0]["embedding"]
    fids = send(srv, OPENAI, {"input": [7592.0, 2088.0]}).get_json()["data"][0]["embedding"]
    assert np.allclose(ids, fids)


# -- routes, methods, body size ----------------------------------------------------------------

@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("POST", "/v3/embeddings"), ("GET", "/embed/x"),
                                         ("DELETE", "/../etc/passwd")])
def test_unknown_route_is_404_json(srv, method, path):
    check_error(send(srv, path, raw=b"{}", method=method), 404, path)
    assert send(srv, path, raw=b"{}", method=method).get_json()["error_type"] == "not_found"


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", NATIVE, "POST"), ("PUT", NATIVE, "POST"), ("GET", OPENAI, "POST"),
    ("DELETE", "/embeddings", "POST"), ("POST", "/health", "GET"), ("PUT", "/", "POST"),
    ("PATCH", "/metrics", "GET"), ("POST", "/openapi.json", "GET")])
def test_wrong_method_is_405_json_with_allow(srv, method, path, allowed):
    r = send(srv, path, raw=b"{}", method=method)
    check_error(r, 405, path)
    assert allowed in r.headers["Allow"]


@pytest.mark.parametrize("path", [NATIVE, OPENAI])
@pytest.mark.parametrize("size", [MAX_BODY + 1, 4 * 1024 * 1024])
def test_body_over_the_limit_is_413_json(srv, path, size):
    key = b'"input"' if path == OPENAI else b'"inputs"'
    raw = b"{" + key + b': "' + b"x" * (size - len(key) - 6) + b'"}'
    assert len(raw) == size
    check_error(send(srv, path, raw=raw), 413, path)


@pytest.mark.parametrize("size,status", [(5000, 413), (1001, 413), (1000, 200), (20, 200)])
def test_a_chunked_body_over_the_limit_is_413_never_cut(size, status):
    """No Content-Length (Transfer-Encoding: chunked): read one byte past the limit, then refuse;
    never a 200 for a body cut at the limit."""
    client = make_app(max_body_bytes=1000).test_client()
    body = json.dumps({"inputs": "x " * ((size - 14) // 2)}).encode()
    body = body[:-2] + b" " * (size - len(body)) + body[-2:]  # exactly `size` bytes of valid JSON
    assert len(body) == size
    r = client.post("/embed", input_stream=io.BytesIO(body),  # as Gunicorn hands a chunked body on:
                    environ_overrides={"wsgi.input_terminated": True},
                    headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert r.status_code == status, r.get_json()
    if status == 413:
        assert r.get_json()["error_type"] == "request_entity_too_large"


def test_body_over_the_limit_is_413_and_closes():
    client = make_app(max_body_bytes=1000).test_client()
    r = client.post("/embed", data=b'{"inputs": "' + b"x" * 5000 + b'"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.get_json()["error_type"] == "request_entity_too_large"
    assert r.headers["Connection"] == "close"


def test_deep_nesting_under_the_body_limit_is_400_not_a_crash():
    """200,000 levels in 400 kB: under a 1 MiB body limit, so it is the nesting that is refused."""
    roomy = make_app(max_body_bytes=1024 * 1024)
    raw = b'{"inputs": ' + b"[" * 200000 + b"]" * 200000 + b"}"
    assert len(raw) < 1024 * 1024
    message = check_error(send(roomy, NATIVE, raw=raw), 400, NATIVE)
    assert "recursion" in message or "depth" in message or "nest" in message, message
