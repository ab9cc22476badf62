"""Every request and response body, typed once (pydantic): validation and the OpenAPI document's
schemas both come from these models.

The limits in them (inputs per request, characters per input, the model's dimension, vocabulary,
prompts and name) are this deployment's, so :class:`Schemas` builds the models for one service's
:class:`~embedder.service.Limits`. :meth:`Schemas.parse` validates a decoded JSON body and turns
pydantic's first error into the service's own message naming the field (``InvalidInput``, 422):
``'inputs[1]' is an empty string``, ``'dimensions' must be between 1 and 384``, ... Each field's
"must be" phrase is declared with it (``must_be`` in its ``Field``). Unknown fields are ignored,
as text-embeddings-inference and OpenAI ignore them.

JSON has one number type, so an integer field takes ``64.0`` as 64 (``Integer``) but never a
string or a boolean; booleans and strings are strict.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, RootModel, StrictBool,
                      StrictStr, StringConstraints, Tag, ValidationError)
from pydantic.json_schema import models_json_schema

from .errors import InvalidInput
from .text_content import content_pattern

NO_CONTENT = "has no content: only white space, control or invisible (zero-width) characters"
IDS_PHRASE = ("a string, a list of strings, a list of token ids or a list of lists of token ids, "
              "with nothing empty")
DECODE_PHRASE = "a non-empty list of token ids or a list of them"


def _not_text_or_bool(value):
    """An integer field takes 64 and 64.0 (JSON does not tell them apart), never "64" or true."""
    if isinstance(value, (str, bool)):
        raise ValueError("not a number")
    return value


Integer = Annotated[int, BeforeValidator(_not_text_or_bool)]


def _must_be(phrase: str, **kw) -> Any:
    """A field whose type errors read ``'<field>' must be <phrase>`` (kept out of the document)."""
    return Field(**kw, json_schema_extra={"must_be": phrase})


def _kind(value) -> str | None:
    """Which shape a JSON value takes, to pick the branch of a union by it (so errors come from
    that branch alone): a string, a list whose first item is a string (or an empty list), a
    list of lists, or a list of anything else (numbers: token ids)."""
    if isinstance(value, str):
        return "one"
    if isinstance(value, list):
        if not value or isinstance(value[0], str):
            return "many"
        return "id_lists" if isinstance(value[0], list) else "id_list"
    return None


def _ids_kind(value) -> str | None:
    """Token ids, or a list of lists of them."""
    if not isinstance(value, list):
        return None
    return "id_lists" if value and isinstance(value[0], list) else "id_list"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _example(body: dict) -> ConfigDict:
    """A request model's settings with an example body: the document shows it, and Swagger UI's
    "Try it out" starts from it."""
    return ConfigDict(extra="ignore", json_schema_extra={"examples": [body]})


class Schemas:
    """The request and response models for one service's limits, and :meth:`parse`."""

    def __init__(self, limits):
        self.limits = limits
        chars, count, vocab, dim = limits.max_input_chars, limits.max_inputs, limits.vocab_size, limits.dimension
        prompts = sorted(limits.prompts)

        Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=chars, pattern=content_pattern()),
                         Field(title="Text", description=(
                             f"At most {chars} characters (EMBEDDER_MAX_INPUT_CHARS), at least one of them "
                             "visible (not white space, control or zero-width: `pattern`); longer than "
                             f"{limits.max_input_tokens} tokens is cut or refused, see `truncate`."))]
        Texts = Annotated[list[Text], Field(min_length=1, max_length=count, description=(
            f"At most {count} inputs per request (EMBEDDER_MAX_INPUTS)."))]
        TokenId = Annotated[Integer, Field(ge=0, le=vocab - 1)]
        TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=chars, description=(
            f"One input as token ids: at most {chars} (EMBEDDER_MAX_INPUT_CHARS)."))]
        OneOrMany = Annotated[Union[Annotated[Text, Tag("one")], Annotated[Texts, Tag("many")]],
                              Discriminator(_kind)]
        Dimensions = Optional[Annotated[Integer, Field(ge=1, le=dim, description=(
            f"Keep the first N of {dim} dimensions (then normalize)."))]]
        PromptName = Optional[Literal[tuple(prompts)]] if prompts else None  # type: ignore[valid-type]
        prompt_phrase = f"one of the model's prompts ({', '.join(prompts) or 'none'})"
        Direction = Optional[Literal["right", "Right"]]
        direction_phrase = "'right': this server cuts long inputs at their end only"
        flag = "true or false"

        class EmbedRequest(_Body):
            """text-embeddings-inference's request (``POST /embed``, ``POST /``)."""
            model_config = _example({"inputs": ["What is Deep Learning?", "Deep Learning is a kind of "
                                                "machine learning."]})
            inputs: OneOrMany = _must_be("a string or a list of strings")
            normalize: Optional[StrictBool] = _must_be(flag, default=True,
                                                       description="Scale each vector to unit length.")
            truncate: Optional[StrictBool] = _must_be(flag, default=True, description=(
                f"Cut inputs over {limits.max_input_tokens} tokens; false refuses them with 422."))
            dimensions: Dimensions = _must_be("an integer", default=None)
            prompt_name: PromptName = _must_be(prompt_phrase, default=None)
            truncation_direction: Direction = _must_be(direction_phrase, default=None, description=(
                "Long inputs are cut at their end; `left` is refused."))

        openai_inputs = [Annotated[Text, Tag("one")], Annotated[Texts, Tag("many")]]
        if limits.openai_token_ids:
            openai_inputs += [Annotated[TokenIds, Tag("id_list")],
                              Annotated[list[TokenIds], Field(min_length=1, max_length=count), Tag("id_lists")]]

        class OpenAIEmbeddingRequest(_Body):
            """OpenAI's request (``POST /v1/embeddings``). Token ids are taken only when
            EMBEDDER_OPENAI_TOKEN_IDS is set (422 otherwise: OpenAI clients send tiktoken's ids,
            another vocabulary)."""
            model_config = _example({"input": ["What is Deep Learning?"], "model": limits.model_id or None,
                                     "encoding_format": "float"})
            input: Annotated[Union[tuple(openai_inputs)], Discriminator(_kind)] = _must_be(  # type: ignore
                "a string or a list of strings")
            model: Optional[StrictStr] = _must_be("a string", default=None, description=(
                f"The served model: {', '.join(sorted(limits.model_names))}; another is 404 `model_not_found`."))
            encoding_format: Optional[Literal["float", "base64"]] = _must_be(
                "'float' or 'base64'", default="float", description="base64: little-endian float32 bytes.")
            dimensions: Dimensions = _must_be("an integer", default=None)
            user: Optional[Any] = Field(default=None, description="Accepted and ignored.")

        class TokenizeRequest(_Body):
            """text-embeddings-inference's ``POST /tokenize``."""
            model_config = _example({"inputs": "What is Deep Learning?"})
            inputs: OneOrMany = _must_be("a string or a list of strings")
            add_special_tokens: Optional[StrictBool] = _must_be(flag, default=True)
            prompt_name: PromptName = _must_be(prompt_phrase, default=None)

        AnyIds = Annotated[list[TokenId], Field(min_length=1, max_length=chars, description=(
            f"Token ids, special tokens included if wanted: at most {chars}."))]

        class DecodeRequest(_Body):
            """text-embeddings-inference's ``POST /decode``."""
            model_config = _example({"ids": [[101, 2054, 2003, 2784, 4083, 1029, 102]]})
            ids: Annotated[Union[Annotated[AnyIds, Tag("id_list")],
                                 Annotated[list[AnyIds], Field(min_length=1, max_length=count), Tag("id_lists")]],
                           Discriminator(_ids_kind)] = _must_be(DECODE_PHRASE)
            skip_special_tokens: Optional[StrictBool] = _must_be(flag, default=True)

        class SimilarityInput(_Body):
            source_sentence: Text = _must_be("a string")
            sentences: Annotated[list[Text], Field(min_length=1, max_length=count - 1)] = _must_be(
                "a list of strings", description=(f"Compared with the source sentence; with it, at most "
                                                  f"{count} texts (EMBEDDER_MAX_INPUTS)."))

        class SimilarityParameters(_Body):
            truncate: Optional[StrictBool] = _must_be(flag, default=True)
            truncation_direction: Direction = _must_be(direction_phrase, default=None)
            prompt_name: PromptName = _must_be(prompt_phrase, default=None)

        class SimilarityRequest(_Body):
            """The sentence-similarity task's request (text-embeddings-inference,
            huggingface_hub's ``sentence_similarity``)."""
            model_config = _example({"inputs": {"source_sentence": "What is Deep Learning?", "sentences": [
                "Deep Learning is a kind of machine learning.", "The cat sat on the mat."]}})
            inputs: SimilarityInput = _must_be("an object with 'source_sentence' and 'sentences'")
            parameters: Optional[SimilarityParameters] = _must_be("an object", default=None)

        vector = Annotated[list[float], Field(min_length=1, max_length=dim)]

        class EmbedResponse(RootModel[Annotated[list[vector], Field(min_length=1, max_length=count)]]):
            """One vector per input, in input order."""

        class Embedding(BaseModel):
            object: Literal["embedding"]
            index: Annotated[int, Field(ge=0)]
            embedding: Union[vector, Annotated[str, Field(json_schema_extra={"contentEncoding": "base64"})]]

        class Usage(BaseModel):
            prompt_tokens: Annotated[int, Field(ge=1)]
            total_tokens: Annotated[int, Field(ge=1)]

        class OpenAIEmbeddingResponse(BaseModel):
            object: Literal["list"]
            data: Annotated[list[Embedding], Field(min_length=1, max_length=count)]
            model: str
            usage: Usage

        class Token(BaseModel):
            id: TokenId
            text: str
            special: bool
            start: Optional[Annotated[int, Field(ge=0)]]
            stop: Optional[Annotated[int, Field(ge=0)]]

        class TokenizeResponse(RootModel[Annotated[list[list[Token]], Field(min_length=1, max_length=count)]]):
            """Every token of each input, untruncated; `start`/`stop`: UTF-8 byte offsets into the
            input (null for special tokens)."""

        class DecodeResponse(RootModel[Annotated[list[str], Field(min_length=1, max_length=count)]]):
            """The text of each list of ids."""

        class SimilarityResponse(RootModel[Annotated[list[Annotated[float, Field(ge=-1.0001, le=1.0001)]],
                                                     Field(min_length=1, max_length=count - 1)]]):
            """Cosine similarity of the source sentence with each sentence."""

        class Model(BaseModel):
            id: str
            object: Literal["model"]
            created: int
            owned_by: str

        class ModelList(BaseModel):
            object: Literal["list"]
            data: Annotated[list[Model], Field(min_length=1, max_length=1)]

        class CostModel(BaseModel):
            """The worker's measured cost model of one forward pass (ms): fixed + inputs x length x
            (per_token + per_token_length x length)."""
            fixed: float
            per_token: float
            per_token_length: float

        class EmbeddingModelType(BaseModel):
            pooling: str

        class ModelType(BaseModel):
            embedding: EmbeddingModelType

        class Info(BaseModel):
            """The model, limits and worker layout in force, with text-embeddings-inference's fields."""
            model_id: str
            dimension: int
            max_input_tokens: int
            normalized_by_model: bool
            prompts: list[str]
            backend: str
            workers: int
            threads_per_worker: int
            pid: int
            max_batch_size: int
            max_batch_tokens: int
            batch_cost_ms: CostModel
            max_queued_inputs: int
            max_queued_tokens: int
            max_inputs: int
            max_input_chars: int
            max_body_bytes: int
            request_timeout: float
            version: str
            model_sha: None
            model_dtype: str
            served_model_name: str
            model_type: ModelType
            max_concurrent_requests: int
            max_input_length: int
            max_batch_requests: int
            max_client_batch_size: int
            auto_truncate: bool
            tokenization_workers: int
            sha: None
            docker_label: None

        class Health(BaseModel):
            status: Literal["ok"]

        self.requests = {m.__name__: m for m in (EmbedRequest, OpenAIEmbeddingRequest, TokenizeRequest,
                                                 DecodeRequest, SimilarityRequest)}
        self.responses = {m.__name__: m for m in (EmbedResponse, OpenAIEmbeddingResponse, TokenizeResponse,
                                                  DecodeResponse, SimilarityResponse, ModelList, Model, Info,
                                                  Health)}
        for name, model in {**self.requests, **self.responses}.items():
            setattr(self, name, model)
        self.SimilarityParameters = SimilarityParameters

    def parse(self, model: type[BaseModel], data: Any) -> BaseModel:
        """``data`` (a decoded JSON body) as ``model``, or InvalidInput naming the field at fault."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self._invalid(model, exc.errors(include_url=False)[0]) from None

    def _invalid(self, model: type[BaseModel], error: dict) -> InvalidInput:
        """Our message for pydantic's first ``error`` on ``model``. A constraint names the item at
        fault (``'inputs[1]' is an empty string``); a type error anywhere inside a field reads as
        that field's "must be" phrase (in a token-id branch, the token-id phrase)."""
        tags = [part for part in error["loc"] if part in _TAGS]
        loc = [part for part in error["loc"] if part not in _TAGS]
        fields = [part for part in loc if isinstance(part, str)]
        name = ".".join(fields)
        indexes = [0] if "one" in tags else [part for part in loc if isinstance(part, int)]
        kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
        ids = bool({"id_list", "id_lists"} & set(tags))
        row = indexes[0] if indexes else 0

        def invalid(message: str) -> InvalidInput:
            return InvalidInput(message, param=name or None)

        if kind == "missing":
            return invalid(f"missing field '{name}'")
        if not loc:
            return InvalidInput("request body must be a JSON object")
        if kind == "string_too_short":
            return invalid(f"'{name}[{row}]' is an empty string")
        if kind == "string_too_long":
            return invalid(f"'{name}[{row}]' has {len(value)} characters, more than the limit of {ctx['max_length']}")
        if kind == "string_pattern_mismatch":
            return invalid(f"'{name}[{row}]' {NO_CONTENT}")
        if kind == "too_long" and ids and (indexes or "id_list" in tags):
            return invalid(f"'{name}[{row}]' has {len(value)} token ids, more than the limit of {ctx['max_length']}")
        if kind == "too_long":
            return invalid(f"'{name}' has {len(value)} inputs, more than the limit of {ctx['max_length']} per request")
        if kind == "too_short" and not ids and not indexes:
            return invalid(f"'{name}' must not be empty")
        if kind in _RANGE and ids:
            return invalid(f"'{name}[{row}]' has a token id outside 0..{self.limits.vocab_size - 1}")
        if kind in _RANGE and name == "dimensions":
            return invalid(f"'dimensions' must be between 1 and {self.limits.dimension}")
        if ids:
            return invalid(f"'{name}' must be {IDS_PHRASE if name == 'input' else DECODE_PHRASE}")
        return invalid(f"'{name}' must be {_phrase(model, fields)}")

    @functools.cached_property
    def json_schemas(self) -> dict:
        """Every model's JSON schema, as OpenAPI ``components/schemas`` (validation mode for
        requests, serialization mode for responses)."""
        pairs = [(m, "validation") for m in self.requests.values()] + \
                [(m, "serialization") for m in self.responses.values()]
        _, document = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
        return _standard(document["$defs"])


#: JSON Schema's names of the bounds pydantic writes under its own names where a validator runs
#: before the type (``Integer``).
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard(node):
    """The schemas in JSON Schema's words: bounds by their standard names, and without our
    ``must_be`` phrases (they are for messages, not the document)."""
    if isinstance(node, dict):
        numeric = node.get("type") in ("integer", "number")
        return {(_BOUNDS.get(k, k) if numeric else k): _standard(v) for k, v in node.items() if k != "must_be"}
    if isinstance(node, list):
        return [_standard(v) for v in node]
    return node


_TAGS = ("one", "many", "id_list", "id_lists")
_RANGE = ("greater_than_equal", "less_than_equal", "int_parsing_size")


def _phrase(model: type[BaseModel], fields: list[str]) -> str:
    """The "must be" phrase of the innermost declared field on the path (``inputs.sentences``)."""
    phrase, node = "valid", model
    for name in fields:
        info = getattr(node, "model_fields", {}).get(name) if isinstance(node, type) else None
        if info is None:
            break
        phrase = (info.json_schema_extra or {}).get("must_be", phrase)
        node = info.annotation
        node = next((a for a in getattr(node, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)),
                    node)
    return phrase
