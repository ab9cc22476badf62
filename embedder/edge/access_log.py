"""Gunicorn's access log without secrets: a logger class whose atoms hide what identifies a caller.

Gunicorn's own atoms print the Basic-auth user name (``%(u)s``), the whole request line with its
query string (``%(r)s``, ``%(q)s``, where clients put ``?api_key=...``), the referrer, and any
request header or environ variable an ``access_log_format`` names (``%({authorization}i)s``).
:class:`RedactingLogger` (``logger_class`` in ``gunicorn.conf.py``) keeps the format and every
other atom, but prints query values, user names and credential headers as ``[redacted]``. This API
takes nothing in query strings, so no value of one is needed to read the log.
"""

from __future__ import annotations

import re

from gunicorn import glogging

REDACTED = "[redacted]"
#: Request/response headers and environ variables that carry credentials (lower case, as atoms are).
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key"))
SECRET_ENVIRON = frozenset(("http_authorization", "http_proxy_authorization", "http_cookie",
                            "http_x_api_key", "http_api_key", "query_string", "raw_uri", "request_uri"))
_QUERY_VALUE = re.compile(r"([?&;][^=&;#\s]*=)[^&;#\s]*")
#: The user information of an absolute-form target or a referrer (``http://user:pw@host/``).
_USERINFO = re.compile(r"(//)[^/?#@\s]*@")


def redact_query(text: str | None) -> str | None:
    """``/x?api_key=abc&b=1 HTTP/1.1`` -> ``/x?api_key=[redacted]&b=[redacted] HTTP/1.1``, and
    ``http://user:pw@host/x`` -> ``http://[redacted]@host/x``."""
    if not text:
        return text
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    if "=" not in text:
        return text
    return _QUERY_VALUE.sub(r"\1" + REDACTED, text)


def redact_atoms(atoms: dict) -> dict:
    """The atoms with user names, query values and credential headers hidden."""
    if atoms.get("u") not in (None, "-"):
        atoms["u"] = REDACTED
    for key in ("r", "f"):
        atoms[key] = redact_query(atoms.get(key))
    if atoms.get("q"):
        atoms["q"] = redact_query("?" + atoms["q"])[1:]
    for key in list(atoms):
        if key.startswith("{") and (
                (key[-2:] in ("}i", "}o") and key[1:-2] in SECRET_HEADERS)
                or (key.endswith("}e") and key[1:-2] in SECRET_ENVIRON)):
            atoms[key] = REDACTED
    return atoms


class RedactingLogger(glogging.Logger):
    """Gunicorn's logger, its access-log atoms passed through :func:`redact_atoms`."""

    def atoms(self, resp, req, environ, request_time):
        return redact_atoms(super().atoms(resp, req, environ, request_time))
