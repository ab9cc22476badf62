"""Turning request bodies of the TEI-style and OpenAI-style embedding routes into the core's
:class:`EmbedRequest`, checked against the service's :class:`Limits`.

Every problem raises an error of the table in ``http_errors.py`` naming the field, so clients
never see a 500 for their own mistakes. JSON is parsed with orjson, which rejects NaN, lone
surrogates and invalid UTF-8 and refuses nesting deeper than 1024 levels.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

import orjson

from .errors import InvalidInput
from .http_errors import MalformedJSON, UnsupportedMediaType
from .service import EmbedRequest, Limits


def parse_json(body: bytes, content_type: str | None) -> dict:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json", param="Content-Type")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def _bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be true or false", param=name)
    return value


def _integer(value) -> int | None:
    """An int, or a float without fraction (JSON, and so JSON Schema, does not tell 64 from 64.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ids(value) -> list[int] | None:
    ids = [_integer(v) for v in value] if isinstance(value, list) and value else [None]
    return None if None in ids else ids


def _dimensions(data: dict, model_dimension: int) -> int | None:
    value = data.get("dimensions")
    if value is None:
        return None
    value = _integer(value)
    if value is None:
        raise InvalidInput("'dimensions' must be an integer", param="dimensions")
    if not 1 <= value <= model_dimension:
        raise InvalidInput(f"'dimensions' must be between 1 and {model_dimension}",
                           param="dimensions")
    return value


def _texts(value, name: str, limits: Limits) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidInput(f"'{name}' must be a string or a list of strings", param=name)
    _check_count(len(texts), name, limits)
    for index, text in enumerate(texts):
        if not text:
            raise InvalidInput(f"'{name}[{index}]' is an empty string", param=name)
        if not has_content(text):
            raise InvalidInput(f"'{name}[{index}]' has no content: only white space, control or "
                               "invisible (zero-width) characters", param=name)
        if len(text) > limits.max_input_chars:
            raise InvalidInput(f"'{name}[{index}]' has {len(text)} characters, more than "
                               f"the limit of {limits.max_input_chars}", param=name)
    return texts


#: Unicode categories that carry no content on their own: control (NUL, ...), format (zero-width
#: space and joiners, BOM, ...) and separators (spaces, line and paragraph separators).
_EMPTY_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))


@functools.lru_cache(maxsize=1)
def content_pattern() -> str:
    """A regular expression (JSON Schema ``pattern``, unanchored) that a text matches exactly when
    :func:`has_content` holds: one character outside the categories above. For the OpenAPI
    document, so that its schema and this check never disagree."""
    ranges, start, previous = [], None, None
    for code in range(sys.maxunicode + 1):
        empty = unicodedata.category(chr(code)) in _EMPTY_CATEGORIES
        if empty and start is None:
            start = code
        if not empty and start is not None:
            ranges.append((start, previous))
            start = None
        previous = code
    if start is not None:
        ranges.append((start, previous))

    def char(code: int) -> str:  # \uXXXX in the BMP (ECMA-262 and Python alike); beyond, the character
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "[^" + "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges) + "]"


def has_content(text: str) -> bool:
    """Whether anything but white space, control and invisible characters is in ``text`` (such a
    text would embed as the special tokens alone: one and the same vector for all of them). Stops
    at the first visible character, so ordinary text costs a character or two."""
    for char in text:
        if not char.isspace() and unicodedata.category(char) not in _EMPTY_CATEGORIES:
            return True
    return False


def _check_count(count: int, name: str, limits: Limits) -> None:
    if count == 0:
        raise InvalidInput(f"'{name}' must not be empty", param=name)
    if count > limits.max_inputs:
        raise InvalidInput(f"'{name}' has {count} inputs, more than the limit of "
                           f"{limits.max_inputs} per request", param=name)


def _token_ids(value: list, limits: Limits) -> list[list[int]]:
    single = _ids(value)
    lists = [single] if single is not None else [_ids(ids) for ids in value]
    if any(ids is None for ids in lists):
        raise InvalidInput("'input' must be a string, a list of strings, a list of "
                           "token ids or a list of lists of token ids, with nothing empty", param="input")
    _check_count(len(lists), "input", limits)
    for index, ids in enumerate(lists):
        if len(ids) > limits.max_input_chars:  # before any truncation: a cap on what is held
            raise InvalidInput(f"'input[{index}]' has {len(ids)} token ids, more than the limit of "
                               f"{limits.max_input_chars}", param="input")
        if any(not 0 <= v < limits.vocab_size for v in ids):
            raise InvalidInput(f"'input[{index}]' has a token id outside 0..{limits.vocab_size - 1}",
                               param="input")
    return lists


def parse_tei(data: dict, limits: Limits) -> EmbedRequest:
    """``POST /embed``: text-embeddings-inference's request shape."""
    if "inputs" not in data:
        raise InvalidInput("missing field 'inputs'", param="inputs")
    prompt_name = data.get("prompt_name")
    if prompt_name is not None and (not isinstance(prompt_name, str) or prompt_name not in limits.prompts):
        known = ", ".join(sorted(limits.prompts)) or "none"
        raise InvalidInput(f"'prompt_name' must be one of the model's prompts ({known})",
                           param="prompt_name")
    return EmbedRequest(
        texts=_texts(data["inputs"], "inputs", limits),
        normalize=_bool(data, "normalize", True),
        truncate=_bool(data, "truncate", True),
        dimensions=_dimensions(data, limits.dimension),
        prompt_name=prompt_name,
    )


def parse_openai(data: dict, limits: Limits) -> EmbedRequest:
    """``POST /v1/embeddings``: OpenAI's request shape (``model`` is accepted and ignored)."""
    if "input" not in data:
        raise InvalidInput("missing field 'input'", param="input")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must be a string", param="model")
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if not isinstance(encoding_format, str) or encoding_format not in ("float", "base64"):
        raise InvalidInput("'encoding_format' must be 'float' or 'base64'",
                           param="encoding_format")
    value = data["input"]
    request = EmbedRequest(dimensions=_dimensions(data, limits.dimension), encoding_format=encoding_format)
    if isinstance(value, list) and value and not isinstance(value[0], str):
        request.token_ids = _token_ids(value, limits)
    else:
        request.texts = _texts(value, "input", limits)
    return request
