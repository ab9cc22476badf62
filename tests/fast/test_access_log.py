"""Secrets never reach the access log: Gunicorn's own logger class (the one gunicorn.conf.py names)
writes an access line for requests carrying a Basic-auth user, an API key in the query string and
credential headers, with every one of them hidden and everything else kept."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from embedder.edge.access_log import REDACTED, RedactingLogger, redact_query

SECRET = "sk-live-5b1e7c"
BASIC = "Basic " + __import__("base64").b64encode(f"alice-{SECRET}:pw".encode()).decode()


def access_line(tmp_path, fmt: str | None = None, query: str = f"api_key={SECRET}&x=1") -> str:
    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    if fmt:
        cfg.set("access_log_format", fmt)
    logger = RedactingLogger(cfg)
    try:
        return _log_one_request(logger, query, tmp_path / "access.log")
    finally:  # close the file it opened: the next logger's setup drops the handler without closing it
        for handler in list(logger.access_log.handlers):
            logger.access_log.removeHandler(handler)
            handler.close()


def _log_one_request(logger: RedactingLogger, query: str, path) -> str:
    headers = [("Authorization", BASIC), ("X-Api-Key", SECRET), ("Cookie", f"s={SECRET}"),
               ("User-Agent", "curl/8"), ("Referer", f"http://app/?token={SECRET}")]
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": f"/embed?{query}", "PATH_INFO": "/embed",
               "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_AUTHORIZATION": BASIC, "HTTP_REFERER": f"http://app/?token={SECRET}",
               "HTTP_USER_AGENT": "curl/8"}
    resp = SimpleNamespace(status="200 OK", headers=[("Content-Type", "application/json")], sent=42)
    logger.access(resp, SimpleNamespace(headers=headers), environ, datetime.timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    return path.read_text()


def test_default_format_hides_user_and_query_values(tmp_path):
    line = access_line(tmp_path)
    assert SECRET not in line and "alice" not in line
    assert f'"POST /embed?api_key={REDACTED}&x={REDACTED} HTTP/1.1" 200 42' in line
    assert f" - {REDACTED} [" in line and '"curl/8"' in line  # the user atom; the rest kept


def test_every_atom_that_can_carry_a_secret_is_hidden(tmp_path):
    fmt = ('%(u)s %(r)s %(q)s %(f)s %({authorization}i)s %({x-api-key}i)s %({cookie}i)s '
           '%({http_authorization}e)s %({query_string}e)s %({raw_uri}e)s %({user-agent}i)s %(U)s')
    line = access_line(tmp_path, fmt)
    assert SECRET not in line and "alice" not in line, line
    assert line.split() == [REDACTED, "POST", f"/embed?api_key={REDACTED}&x={REDACTED}", "HTTP/1.1",
                            f"api_key={REDACTED}&x={REDACTED}", f"http://app/?token={REDACTED}",
                            *[REDACTED] * 6, "curl/8", "/embed"]


@pytest.mark.parametrize("text,expected", [
    ("/embed", "/embed"),
    ("/embed?", "/embed?"),
    ("/e?a=1&b=&c", f"/e?a={REDACTED}&b={REDACTED}&c"),
    ("GET /e?key=s3cr3t;k2=x HTTP/1.1", f"GET /e?key={REDACTED};k2={REDACTED} HTTP/1.1"),
    (None, None),
])
def test_redact_query(text, expected):
    assert redact_query(text) == expected
