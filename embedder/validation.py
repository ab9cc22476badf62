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

from .errors import InvalidInput, ModelNotFound
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
    if not limits.openai_token_ids:
        raise InvalidInput(
            "'input' is token ids, and this server does not take token ids on this route: OpenAI "
            "clients tokenize with tiktoken, another vocabulary than this model's, so the vectors "
            "would be of other words. Send the text instead (LangChain's OpenAIEmbeddings: "
            "check_embedding_ctx_length=False). To send ids of this model's own vocabulary, the "
            "server must be started with EMBEDDER_OPENAI_TOKEN_IDS=true.", param="input")
    return _checked_ids(lists, "input", limits)


def _checked_ids(lists: list[list[int]], name: str, limits: Limits) -> list[list[int]]:
    _check_count(len(lists), name, limits)
    for index, ids in enumerate(lists):
        if len(ids) > limits.max_input_chars:  # before any truncation: a cap on what is held
            raise InvalidInput(f"'{name}[{index}]' has {len(ids)} token ids, more than the limit of "
                               f"{limits.max_input_chars}", param=name)
        if any(not 0 <= v < limits.vocab_size for v in ids):
            raise InvalidInput(f"'{name}[{index}]' has a token id outside 0..{limits.vocab_size - 1}",
                               param=name)
    return lists


def _prompt_name(data: dict, limits: Limits) -> str | None:
    prompt_name = data.get("prompt_name")
    if prompt_name is not None and (not isinstance(prompt_name, str) or prompt_name not in limits.prompts):
        known = ", ".join(sorted(limits.prompts)) or "none"
        raise InvalidInput(f"'prompt_name' must be one of the model's prompts ({known})",
                           param="prompt_name")
    return prompt_name


def _truncation_direction(data: dict) -> None:
    """TEI's ``truncation_direction``: this server cuts long inputs at the end ("right") only, so
    "left" is refused rather than silently answered with the other end cut."""
    value = data.get("truncation_direction")
    if value is not None and (not isinstance(value, str) or value.lower() != "right"):
        raise InvalidInput("'truncation_direction' must be 'right': this server cuts long inputs at "
                           "their end only", param="truncation_direction")


def _required(data: dict, key: str, name: str | None = None):
    """``data[key]``, or 422 naming the field (``name``, when nested: ``inputs.sentences``)."""
    if key not in data:
        raise InvalidInput(f"missing field '{name or key}'", param=name or key)
    return data[key]


def parse_tei(data: dict, limits: Limits) -> EmbedRequest:
    """``POST /embed`` (and TEI's ``POST /``): text-embeddings-inference's request shape."""
    inputs = _required(data, "inputs")
    prompt_name = _prompt_name(data, limits)
    _truncation_direction(data)
    return EmbedRequest(
        texts=_texts(inputs, "inputs", limits),
        normalize=_bool(data, "normalize", True),
        truncate=_bool(data, "truncate", True),
        dimensions=_dimensions(data, limits.dimension),
        prompt_name=prompt_name,
    )


def parse_tokenize(data: dict, limits: Limits) -> tuple[list[str], bool, str | None]:
    """``POST /tokenize``: texts (as ``/embed``'s), ``add_special_tokens``, ``prompt_name``."""
    inputs = _required(data, "inputs")
    prompt_name = _prompt_name(data, limits)
    return _texts(inputs, "inputs", limits), _bool(data, "add_special_tokens", True), prompt_name


def parse_decode(data: dict, limits: Limits) -> tuple[list[list[int]], bool]:
    """``POST /decode``: ``ids`` (one list of token ids, or a list of them), ``skip_special_tokens``."""
    value = _required(data, "ids")
    single = _ids(value)
    lists = [single] if single is not None else (
        [_ids(ids) for ids in value] if isinstance(value, list) and value else [None])
    if any(ids is None for ids in lists):
        raise InvalidInput("'ids' must be a non-empty list of token ids or a list of them", param="ids")
    return _checked_ids(lists, "ids", limits), _bool(data, "skip_special_tokens", True)


def parse_similarity(data: dict, limits: Limits) -> EmbedRequest:
    """``POST /similarity``: ``{"inputs": {"source_sentence", "sentences"}, "parameters": {...}}``
    (the sentence-similarity task's shape); the texts are the source sentence, then the others."""
    inputs = _required(data, "inputs")
    if not isinstance(inputs, dict):
        raise InvalidInput("'inputs' must be an object with 'source_sentence' and 'sentences'", param="inputs")
    parameters = data.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object", param="parameters")
    source = _required(inputs, "source_sentence", "inputs.source_sentence")
    if not isinstance(source, str):
        raise InvalidInput("'inputs.source_sentence' must be a string", param="inputs.source_sentence")
    source = _texts(source, "inputs.source_sentence", limits)
    sentences = _required(inputs, "sentences", "inputs.sentences")
    if not isinstance(sentences, list):
        raise InvalidInput("'inputs.sentences' must be a list of strings", param="inputs.sentences")
    texts = source + _texts(sentences, "inputs.sentences", limits)
    _check_count(len(texts), "inputs", limits)
    _truncation_direction(parameters)
    return EmbedRequest(texts=texts, truncate=_bool(parameters, "truncate", True),
                        prompt_name=_prompt_name(parameters, limits))


def parse_openai(data: dict, limits: Limits) -> EmbedRequest:
    """``POST /v1/embeddings``: OpenAI's request shape. ``model``, if given, must name the served
    model (its id or the id's last part): vectors of another model than the one asked for would be
    a 200 with something else than what was asked."""
    if "input" not in data:
        raise InvalidInput("missing field 'input'", param="input")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must be a string", param="model")
    value = data["input"]
    if isinstance(value, list) and value and not isinstance(value[0], str):
        token_ids = _token_ids(value, limits)  # refused first: its message is the one that helps
    else:
        token_ids = None
    if model and model not in limits.model_names:
        raise ModelNotFound(f"The model '{model}' does not exist on this server; it serves "
                            f"'{max(limits.model_names, key=len)}' (GET /v1/models)", param="model")
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if not isinstance(encoding_format, str) or encoding_format not in ("float", "base64"):
        raise InvalidInput("'encoding_format' must be 'float' or 'base64'",
                           param="encoding_format")
    request = EmbedRequest(dimensions=_dimensions(data, limits.dimension), encoding_format=encoding_format)
    if token_ids is not None:
        request.token_ids = token_ids
    else:
        request.texts = _texts(value, "input", limits)
    return request
