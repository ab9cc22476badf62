"""Parsing and checking request bodies of the TEI-style and OpenAI-style embedding routes.

Every problem becomes an :class:`ApiError` naming the field, so clients never see a 500 for
their own mistakes. JSON is parsed with orjson, which rejects NaN, lone surrogates and invalid
UTF-8 and does not recurse into a stack overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .config import Settings
from .errors import ApiError

UNPROCESSABLE = 422


@dataclass
class EmbedRequest:
    """One embedding request, either API, after validation."""

    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    normalize: bool = True
    truncate: bool = True
    dimensions: int | None = None
    prompt_name: str | None = None
    encoding_format: str = "float"

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


def parse_json(body: bytes, content_type: str | None) -> dict:
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json":
        raise ApiError(415, "Content-Type must be application/json", param="Content-Type")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(UNPROCESSABLE, "request body must be a JSON object")
    return data


def _bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(UNPROCESSABLE, f"'{name}' must be true or false", param=name)
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
        raise ApiError(UNPROCESSABLE, "'dimensions' must be an integer", param="dimensions")
    if not 1 <= value <= model_dimension:
        raise ApiError(UNPROCESSABLE, f"'dimensions' must be between 1 and {model_dimension}",
                       param="dimensions")
    return value


def _texts(value, name: str, settings: Settings) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ApiError(UNPROCESSABLE, f"'{name}' must be a string or a list of strings", param=name)
    _check_count(len(texts), name, settings)
    for index, text in enumerate(texts):
        if not text:
            raise ApiError(UNPROCESSABLE, f"'{name}[{index}]' is an empty string", param=name)
        if len(text) > settings.max_input_chars:
            raise ApiError(UNPROCESSABLE, f"'{name}[{index}]' has {len(text)} characters, more than "
                           f"the limit of {settings.max_input_chars}", param=name)
    return texts


def _check_count(count: int, name: str, settings: Settings) -> None:
    if count == 0:
        raise ApiError(UNPROCESSABLE, f"'{name}' must not be empty", param=name)
    if count > settings.max_inputs:
        raise ApiError(UNPROCESSABLE, f"'{name}' has {count} inputs, more than the limit of "
                       f"{settings.max_inputs} per request", param=name)


def _token_ids(value: list, settings: Settings, vocab_size: int) -> list[list[int]]:
    single = _ids(value)
    lists = [single] if single is not None else [_ids(ids) for ids in value]
    if any(ids is None for ids in lists):
        raise ApiError(UNPROCESSABLE, "'input' must be a string, a list of strings, a list of "
                       "token ids or a list of lists of token ids, with nothing empty", param="input")
    _check_count(len(lists), "input", settings)
    for index, ids in enumerate(lists):
        if any(not 0 <= v < vocab_size for v in ids):
            raise ApiError(UNPROCESSABLE, f"'input[{index}]' has a token id outside 0..{vocab_size - 1}",
                           param="input")
    return lists


def parse_tei(data: dict, settings: Settings, dimension: int, prompts: dict) -> EmbedRequest:
    """``POST /embed``: text-embeddings-inference's request shape."""
    if "inputs" not in data:
        raise ApiError(UNPROCESSABLE, "missing field 'inputs'", param="inputs")
    prompt_name = data.get("prompt_name")
    if prompt_name is not None and (not isinstance(prompt_name, str) or prompt_name not in prompts):
        known = ", ".join(sorted(prompts)) or "none"
        raise ApiError(UNPROCESSABLE, f"'prompt_name' must be one of the model's prompts ({known})",
                       param="prompt_name")
    return EmbedRequest(
        texts=_texts(data["inputs"], "inputs", settings),
        normalize=_bool(data, "normalize", True),
        truncate=_bool(data, "truncate", True),
        dimensions=_dimensions(data, dimension),
        prompt_name=prompt_name,
    )


def parse_openai(data: dict, settings: Settings, dimension: int, vocab_size: int) -> EmbedRequest:
    """``POST /v1/embeddings``: OpenAI's request shape (``model`` is accepted and ignored)."""
    if "input" not in data:
        raise ApiError(UNPROCESSABLE, "missing field 'input'", param="input")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(UNPROCESSABLE, "'model' must be a string", param="model")
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if not isinstance(encoding_format, str) or encoding_format not in ("float", "base64"):
        raise ApiError(UNPROCESSABLE, "'encoding_format' must be 'float' or 'base64'",
                       param="encoding_format")
    value = data["input"]
    request = EmbedRequest(dimensions=_dimensions(data, dimension), encoding_format=encoding_format)
    if isinstance(value, list) and value and not isinstance(value[0], str):
        request.token_ids = _token_ids(value, settings, vocab_size)
    else:
        request.texts = _texts(value, "input", settings)
    return request
