"""Every request and response body, typed once (pydantic): validation, the responses the routes
build and the OpenAPI document's schemas all come from these models.

The models are declared here, at module level, generic in the few types whose limits are this
deployment's (inputs per request, characters per input, the model's dimension, vocabulary, token
limit, prompts and names): ``EmbedRequest[Inputs, Truncate, Dimensions, PromptName]`` and so on.
:class:`Schemas` binds them once per app to its service's limits (:meth:`Schemas.bind`), so the
limits live in pydantic's own constraints (validated in its core, shown in the document).

:meth:`Schemas.parse` validates a decoded JSON body and turns pydantic's first error into the
service's own message naming the field (``InvalidInput``, 422): ``'inputs[1]' is an empty string``,
``'dimensions' must be between 1 and 384``, ... Each field's "must be" phrase is declared with it
(``must_be`` in its ``Field``, or in its bound type's). Unknown fields are ignored, as
text-embeddings-inference and OpenAI ignore them.

JSON has one number type, so an integer field takes ``64.0`` as 64 (``Integer``) but never a
string or a boolean; booleans and strings are strict.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StrictBool,
    StrictStr,
    StringConstraints,
    Tag,
    ValidationError,
)
from pydantic.json_schema import models_json_schema

from ..core.content import content_pattern
from ..core.errors import InvalidInput
from ..core.service import Limits

NO_CONTENT = "has no content: only white space, control or invisible (zero-width) characters"
IDS_PHRASE = ("a string, a list of strings, a list of token ids or a list of lists of token ids, "
              "with nothing empty")
DECODE_PHRASE = "a non-empty list of token ids or a list of them"
FLAG = "true or false"
DIRECTION_PHRASE = "'right': this server cuts long inputs at their end only"
#: The model name text-embeddings-inference's OpenAI examples send (TEI ignores it): accepted as
#: "the served model" so that they work unchanged.
TEI_MODEL_NAME = "text-embeddings-inference"


def served_names(model_id: str) -> frozenset[str]:
    """Names a request may give as OpenAI's ``model``: the served id, its last path part, and the
    name TEI's examples send."""
    return frozenset({model_id, model_id.rpartition("/")[2], TEI_MODEL_NAME})


# -- shared types ------------------------------------------------------------------------------------
def _not_text_or_bool(value):
    """An integer field takes 64 and 64.0 (JSON does not tell them apart), never "64" or true."""
    if isinstance(value, (str, bool)):
        raise ValueError("not a number")
    return value


Integer = Annotated[int, BeforeValidator(_not_text_or_bool)]
Direction = Literal["right", "Right"] | None


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


def _document_kind(value) -> str | None:
    """A document: a string, or an object with its text."""
    if isinstance(value, str):
        return "one"
    return "object" if isinstance(value, dict) else None


def _ids_kind(value) -> str | None:
    """Token ids, or a list of lists of them."""
    if not isinstance(value, list):
        return None
    return "id_lists" if value and isinstance(value[0], list) else "id_list"


def _example(body: dict) -> ConfigDict:
    """A request model's settings with an example body: the document shows it, and Swagger UI's
    "Try it out" starts from it."""
    return ConfigDict(extra="ignore", json_schema_extra={"examples": [body]})


class _Named:
    """A bound model keeps its generic's name (the document's schema names) and docstring."""

    @classmethod
    def model_parametrized_name(cls, params) -> str:
        return cls.__name__


class _Body(_Named, BaseModel):
    model_config = ConfigDict(extra="ignore")


# Type parameters: each stands for a type whose limits are the deployment's (see Schemas.bind).
Inputs = TypeVar("Inputs")                  # a text or a list of texts
OpenAIInputs = TypeVar("OpenAIInputs")      # the same, and token ids where the settings allow them
Text = TypeVar("Text")                      # one text
Sentences = TypeVar("Sentences")            # the texts compared with a source sentence
Truncate = TypeVar("Truncate")              # the truncate flag (its description names the token limit)
Dimensions = TypeVar("Dimensions")          # 1..dimension, or null
PromptName = TypeVar("PromptName")          # one of the model's prompts, or null
ModelName = TypeVar("ModelName")            # OpenAI's model field (its description names the model)
DecodeIds = TypeVar("DecodeIds")            # token ids, or a list of them
TokenId = TypeVar("TokenId")                # 0..vocabulary size - 1
Vector = TypeVar("Vector")                  # one vector (at most dimension numbers)
Rows = TypeVar("Rows")                      # a response's list, one item per input
Params = TypeVar("Params")                  # a nested model bound to the same limits
Item = TypeVar("Item")
Documents = TypeVar("Documents")            # a rerank request's documents (EMBEDDER_MAX_DOCUMENTS)
TopN = TypeVar("TopN")                      # how many of the best documents to return
RerankerName = TypeVar("RerankerName")      # a rerank request's model field (its description names the rerankers)


# -- requests ------------------------------------------------------------------------------------
class EmbedRequest(_Body, Generic[Inputs, Truncate, Dimensions, PromptName, ModelName]):
    """text-embeddings-inference's request (``POST /embed``, ``POST /``)."""
    model_config = _example({"inputs": ["What is Deep Learning?", "Deep Learning is a kind of "
                                        "machine learning."]})
    inputs: Inputs = _must_be("a string or a list of strings")
    normalize: StrictBool | None = _must_be(FLAG, default=True, description="Scale each vector to unit length.")
    truncate: Truncate = _must_be(FLAG, default=True)
    dimensions: Dimensions = _must_be("an integer", default=None)
    prompt_name: PromptName = Field(default=None)
    truncation_direction: Direction = _must_be(DIRECTION_PHRASE, default=None, description=(
        "Long inputs are cut at their end; `left` is refused."))
    model: ModelName = _must_be("a string", default=None)


class OpenAIEmbeddingRequest(_Body, Generic[OpenAIInputs, ModelName, Dimensions]):
    """OpenAI's request (``POST /v1/embeddings``). Token ids are taken only when
    EMBEDDER_OPENAI_TOKEN_IDS is set (422 otherwise: OpenAI clients send tiktoken's ids,
    another vocabulary)."""
    # ``model`` is the served model's id: Schemas.json_schemas fills it in.
    model_config = _example({"input": ["What is Deep Learning?"], "model": None, "encoding_format": "float"})
    input: OpenAIInputs = _must_be("a string or a list of strings")
    model: ModelName = _must_be("a string", default=None)
    encoding_format: Literal["float", "base64"] | None = _must_be(
        "'float' or 'base64'", default="float", description="base64: little-endian float32 bytes.")
    dimensions: Dimensions = _must_be("an integer", default=None)
    user: Any | None = Field(default=None, description="Accepted and ignored.")


class TokenizeRequest(_Body, Generic[Inputs, PromptName, ModelName]):
    """text-embeddings-inference's ``POST /tokenize``."""
    model_config = _example({"inputs": "What is Deep Learning?"})
    inputs: Inputs = _must_be("a string or a list of strings")
    add_special_tokens: StrictBool | None = _must_be(FLAG, default=True)
    prompt_name: PromptName = Field(default=None)
    model: ModelName = _must_be("a string", default=None)


class DecodeRequest(_Body, Generic[DecodeIds, ModelName]):
    """text-embeddings-inference's ``POST /decode``."""
    model_config = _example({"ids": [[101, 2054, 2003, 2784, 4083, 1029, 102]]})
    ids: DecodeIds = _must_be(DECODE_PHRASE)
    skip_special_tokens: StrictBool | None = _must_be(FLAG, default=True)
    model: ModelName = _must_be("a string", default=None)


class SimilarityInput(_Body, Generic[Text, Sentences]):
    source_sentence: Text = _must_be("a string")
    sentences: Sentences = _must_be("a list of strings")


class SimilarityParameters(_Body, Generic[PromptName]):
    truncate: StrictBool | None = _must_be(FLAG, default=True)
    truncation_direction: Direction = _must_be(DIRECTION_PHRASE, default=None)
    prompt_name: PromptName = Field(default=None)


class SimilarityRequest(_Body, Generic[Item, Params, ModelName]):
    """The sentence-similarity task's request (text-embeddings-inference,
    huggingface_hub's ``sentence_similarity``)."""
    model_config = _example({"inputs": {"source_sentence": "What is Deep Learning?", "sentences": [
        "Deep Learning is a kind of machine learning.", "The cat sat on the mat."]}})
    inputs: Item = _must_be("an object with 'source_sentence' and 'sentences'")
    parameters: Params | None = _must_be("an object", default=None)
    model: ModelName = _must_be("a string", default=None)


RAW_SCORES = "The model's logits, without the activation sentence-transformers applies (e.g. its sigmoid)."
TOP_N = "Return only the best N (all when null or more than there are)."
TRUNCATE_DOCUMENTS = ("Cut a document that does not fit beside the query within the model's token limit (the "
                      "query is never cut); false refuses it with 422.")
RERANK_EXAMPLE = {"query": "What is Deep Learning?", "documents": [
    "Deep Learning is a kind of machine learning.", "The cat sat on the mat."]}


class TEIRerankRequest(_Body, Generic[Text, Documents, RerankerName]):
    """text-embeddings-inference's ``POST /rerank``: each text scored against the query, answered
    best first."""
    model_config = _example({"query": RERANK_EXAMPLE["query"], "texts": RERANK_EXAMPLE["documents"]})
    query: Text = _must_be("a string")
    texts: Documents = _must_be("a list of strings")
    truncate: StrictBool | None = _must_be(FLAG, default=True, description=TRUNCATE_DOCUMENTS)
    truncation_direction: Direction = _must_be(DIRECTION_PHRASE, default=None, description=(
        "Texts are cut at their end; `left` is refused."))
    raw_scores: StrictBool | None = _must_be(FLAG, default=False, description=RAW_SCORES)
    return_text: StrictBool | None = _must_be(FLAG, default=False, description="Include each text.")
    model: RerankerName = _must_be("a string", default=None)


class DocumentObject(_Body, Generic[Text]):
    """A document as an object (Cohere's v1 and Jina's requests take these beside strings)."""
    text: Text = _must_be("a string")


class RerankRequest(_Body, Generic[Text, Documents, TopN, RerankerName]):
    """Jina's, vLLM's and Cohere's v1 ``POST /v1/rerank`` (and Infinity's ``POST /rerank``, with
    ``documents``): each document scored against the query, results best first."""
    model_config = _example({"model": None, **RERANK_EXAMPLE, "top_n": 2, "return_documents": True})
    model: RerankerName = _must_be("a string", default=None)
    query: Text = _must_be("a string")
    documents: Documents = _must_be("a list of strings or of objects with 'text'")
    top_n: TopN = _must_be("a positive integer", default=None, description=TOP_N)
    return_documents: StrictBool | None = _must_be(FLAG, default=False, description=(
        "Include each document, as `{\"text\": ...}`."))
    max_tokens_per_doc: TopN = _must_be("a positive integer", default=None, description=(
        "Cut each document to this many tokens first."))
    raw_scores: StrictBool | None = _must_be(FLAG, default=False, description=RAW_SCORES)
    truncate: StrictBool | None = _must_be(FLAG, default=True, description=TRUNCATE_DOCUMENTS)


class CohereRerankRequest(_Body, Generic[Text, Documents, TopN, RerankerName]):
    """Cohere's v2 ``POST /v2/rerank`` (Cohere's SDK ``ClientV2.rerank``, LangChain's
    ``CohereRerank``)."""
    model_config = _example({"model": None, **RERANK_EXAMPLE, "top_n": 2})
    model: RerankerName = _must_be("a string", default=None)
    query: Text = _must_be("a string")
    documents: Documents = _must_be("a list of strings")
    top_n: TopN = _must_be("a positive integer", default=None, description=TOP_N)
    max_tokens_per_doc: TopN = _must_be("a positive integer", default=None, description=(
        "Cut each document to this many tokens first (it is also cut to fit the model's limit)."))
    return_documents: StrictBool | None = _must_be(FLAG, default=False, description=(
        "Include each document, as `{\"text\": ...}`."))
    raw_scores: StrictBool | None = _must_be(FLAG, default=False, description=RAW_SCORES + " (not Cohere's)")
    truncate: StrictBool | None = _must_be(FLAG, default=True, description=TRUNCATE_DOCUMENTS + " (not Cohere's)")


# -- responses -----------------------------------------------------------------------------------
class EmbedResponse(_Named, RootModel[Rows], Generic[Rows]):
    """One vector per input, in input order."""


class Embedding(_Named, BaseModel, Generic[Vector]):
    object: Literal["embedding"]
    index: Annotated[int, Field(ge=0)]
    embedding: Vector


class Usage(BaseModel):
    prompt_tokens: Annotated[int, Field(ge=1)]
    total_tokens: Annotated[int, Field(ge=1)]


class OpenAIEmbeddingResponse(_Named, BaseModel, Generic[Rows]):
    object: Literal["list"]
    data: Rows
    model: str
    usage: Usage


class Token(_Named, BaseModel, Generic[TokenId]):
    id: TokenId
    text: str
    special: bool
    start: Annotated[int, Field(ge=0)] | None
    stop: Annotated[int, Field(ge=0)] | None


class TokenizeResponse(_Named, RootModel[Rows], Generic[Rows]):
    """Every token of each input, untruncated; `start`/`stop`: UTF-8 byte offsets into the
    input (null for special tokens)."""


class DecodeResponse(_Named, RootModel[Rows], Generic[Rows]):
    """The text of each list of ids."""


class SimilarityResponse(_Named, RootModel[Rows], Generic[Rows]):
    """Cosine similarity of the source sentence with each sentence."""


class TEIRank(BaseModel):
    index: Annotated[int, Field(ge=0)]
    score: float


class TEIRankText(TEIRank):
    text: str


class TEIRerankResponse(_Named, RootModel[Rows], Generic[Rows]):
    """One item per text (`text` only when `return_text`), best score first."""


class DocumentText(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: Annotated[int, Field(ge=0)]
    relevance_score: float


class RerankResultDocument(RerankResult):
    document: DocumentText


class RerankUsage(BaseModel):
    total_tokens: Annotated[int, Field(ge=1)]
    prompt_tokens: Annotated[int, Field(ge=1)]


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class RerankMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class RerankResponse(_Named, BaseModel, Generic[Rows]):
    """Best first (`document` only when `return_documents`); Jina's `model` and `usage` and
    Cohere's `id` and `meta`, so both kinds of client read it."""
    id: str
    model: str
    results: Rows
    usage: RerankUsage
    meta: RerankMeta


class CohereRerankResponse(_Named, BaseModel, Generic[Rows]):
    """Best first (`document` only when `return_documents`)."""
    id: str
    results: Rows
    meta: RerankMeta


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    #: Not OpenAI's: what the model serves ("embedding" or "reranker").
    kind: Literal["embedding", "reranker"]


class ModelList(BaseModel):
    object: Literal["list"]
    data: Annotated[list[Model], Field(min_length=1)]


class CostModel(BaseModel):
    """The worker's measured cost model of one forward pass (ms): fixed + inputs x length x
    (per_token + per_token_length x length)."""
    fixed: float
    per_token: float
    per_token_length: float


class EmbeddingModelType(BaseModel):
    pooling: str


class EmbeddingType(BaseModel):
    embedding: EmbeddingModelType


class RerankerModelType(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class RerankerType(BaseModel):
    reranker: RerankerModelType


class ModelInfo(BaseModel):
    """One served model: what it is, how it is loaded and run."""
    model_id: str
    kind: Literal["embedding", "reranker"]
    architecture: str
    tokenizer: str
    modules: list[str]
    pooling: list[str]
    #: Of its vectors; 1 for a reranker (one score per pair).
    dimension: int
    max_input_tokens: int
    normalized_by_model: bool
    prompts: list[str]
    default_prompt_name: str | None
    #: A reranker's activation on its logit (CrossEncoder.predict's), e.g. Sigmoid.
    activation: str | None
    loaded_with: str
    loader_note: str | None
    backend: str
    batch_cost_ms: CostModel


class Info(ModelInfo):
    """Every served model (``models``), the limits and worker layout in force; the first model's
    fields also at the top level, with text-embeddings-inference's, for clients that read one."""
    models: list[ModelInfo]
    workers: int
    threads_per_worker: int
    pid: int
    max_batch_size: int
    max_batch_tokens: int
    max_queued_inputs: int
    max_queued_tokens: int
    max_inputs: int
    max_documents: int
    max_input_chars: int
    max_body_bytes: int
    request_timeout: float
    version: str
    model_sha: None
    model_dtype: str
    served_model_name: str
    model_type: EmbeddingType | RerankerType
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


REQUESTS = (EmbedRequest, OpenAIEmbeddingRequest, TokenizeRequest, DecodeRequest, SimilarityRequest,
            TEIRerankRequest, RerankRequest, CohereRerankRequest)
RESPONSES = (EmbedResponse, OpenAIEmbeddingResponse, TokenizeResponse, DecodeResponse, SimilarityResponse,
             TEIRerankResponse, RerankResponse, CohereRerankResponse, ModelList, Model, Info, Health)


# -- binding to a deployment's limits ----------------------------------------------------------------
@dataclass(eq=False)
class Schemas:
    """The models bound to one service's limits (:meth:`bind`), and :meth:`parse`."""

    limits: Limits
    #: The served model's id, and the names OpenAI's ``model`` may give for it.
    model_id: str
    model_names: frozenset[str]
    #: Whether token-id input on the OpenAI route is taken as the model's own vocabulary.
    openai_token_ids: bool
    #: Each model declared above -> its subclass bound to these limits.
    bound: dict[type, type[BaseModel]] = field(default_factory=dict)

    @classmethod
    def bind(cls, limits: Limits, model_id: str, openai_token_ids: bool = False,
             names: frozenset[str] | None = None, reranker_names: frozenset[str] = frozenset()) -> Schemas:
        """The models bound to ``limits`` (one model's); ``names``: what OpenAI's ``model`` may
        give for the server's embedding models (default: ``model_id``'s names), ``reranker_names``
        the rerank routes' (for the document's descriptions)."""
        schemas = cls(limits, model_id, names if names is not None else served_names(model_id), openai_token_ids)
        chars, count, vocab, dim = limits.max_input_chars, limits.max_inputs, limits.vocab_size, limits.dimension
        prompts = sorted(limits.prompts)

        text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=chars, pattern=content_pattern()),
                         Field(title="Text", description=(
                             f"At most {chars} characters (EMBEDDER_MAX_INPUT_CHARS), at least one of them "
                             "visible (not white space, control or zero-width: `pattern`); longer than "
                             f"{limits.max_input_tokens} tokens is cut or refused, see `truncate`."))]
        texts = Annotated[list[text], Field(min_length=1, max_length=count, description=(
            f"At most {count} inputs per request (EMBEDDER_MAX_INPUTS)."))]
        token_id = Annotated[Integer, Field(ge=0, le=vocab - 1)]
        token_ids = Annotated[list[token_id], Field(min_length=1, max_length=chars, description=(
            f"One input as token ids: at most {chars} (EMBEDDER_MAX_INPUT_CHARS)."))]
        inputs = Annotated[Annotated[text, Tag("one")] | Annotated[texts, Tag("many")], Discriminator(_kind)]
        dimensions = Annotated[Integer, Field(ge=1, le=dim, description=(
            f"Keep the first N of {dim} dimensions (then normalize)."))] | None
        prompt_name = Annotated[Literal[tuple(prompts)] | None if prompts else None,  # type: ignore[valid-type]
                                Field(json_schema_extra={"must_be": (f"one of the model's prompts "
                                                                     f"({', '.join(prompts) or 'none'})")})]
        truncate = Annotated[StrictBool | None, Field(description=(
            f"Cut inputs over {limits.max_input_tokens} tokens; false refuses them with 422."))]
        openai_inputs = Annotated[text, Tag("one")] | Annotated[texts, Tag("many")]
        if openai_token_ids:
            openai_inputs |= (Annotated[token_ids, Tag("id_list")]
                              | Annotated[list[token_ids], Field(min_length=1, max_length=count), Tag("id_lists")])
        model_name = Annotated[StrictStr | None, Field(description=(
            f"The embedding model: {', '.join(sorted(schemas.model_names))} (null: the first one); "
            "another is 404 `model_not_found`."))]
        reranker_name = Annotated[StrictStr | None, Field(description=(
            f"The reranker: {', '.join(sorted(reranker_names)) or 'none served'} (null: the first one); "
            "another is 404 `model_not_found`."))]
        most = limits.max_documents or 1
        documents = Annotated[list[text], Field(min_length=1, max_length=most, description=(
            f"At most {most} documents per request (EMBEDDER_MAX_DOCUMENTS)."))]
        document_objects = Annotated[list[Annotated[Annotated[text, Tag("one")]
                                                    | Annotated[DocumentObject[text], Tag("object")],
                                                    Discriminator(_document_kind)]],
                                     Field(min_length=1, max_length=most, description=(
                                         f"At most {most} documents per request (EMBEDDER_MAX_DOCUMENTS)."))]
        top_n = Annotated[Integer, Field(ge=1)] | None
        any_ids = Annotated[list[token_id], Field(min_length=1, max_length=chars, description=(
            f"Token ids, special tokens included if wanted: at most {chars}."))]
        id_lists = Annotated[list[any_ids], Field(min_length=1, max_length=count), Tag("id_lists")]
        decode_ids = Annotated[Annotated[any_ids, Tag("id_list")] | id_lists, Discriminator(_ids_kind)]
        sentences = Annotated[list[text], Field(min_length=1, max_length=count - 1, description=(
            f"Compared with the source sentence; with it, at most {count} texts (EMBEDDER_MAX_INPUTS)."))]
        vector = Annotated[list[float], Field(min_length=1, max_length=dim)]
        embedding = Embedding[vector | Annotated[str, Field(json_schema_extra={"contentEncoding": "base64"})]]
        parameters = SimilarityParameters[prompt_name]

        def per_input(item, most: int = count):
            """A response's list: one item per input (at least one, at most ``most``)."""
            return Annotated[list[item], Field(min_length=1, max_length=most)]

        bound = {
            EmbedRequest: EmbedRequest[inputs, truncate, dimensions, prompt_name, model_name],
            OpenAIEmbeddingRequest: OpenAIEmbeddingRequest[Annotated[openai_inputs, Discriminator(_kind)],
                                                           model_name, dimensions],
            TokenizeRequest: TokenizeRequest[inputs, prompt_name, model_name],
            DecodeRequest: DecodeRequest[decode_ids, model_name],
            SimilarityParameters: parameters,
            SimilarityRequest: SimilarityRequest[SimilarityInput[text, sentences], parameters, model_name],
            TEIRerankRequest: TEIRerankRequest[text, documents, reranker_name],
            DocumentObject: DocumentObject[text],
            RerankRequest: RerankRequest[text, document_objects, top_n, reranker_name],
            CohereRerankRequest: CohereRerankRequest[text, documents, top_n, reranker_name],
            TEIRerankResponse: TEIRerankResponse[per_input(TEIRank | TEIRankText, most)],
            RerankResponse: RerankResponse[per_input(RerankResult | RerankResultDocument, most)],
            CohereRerankResponse: CohereRerankResponse[per_input(RerankResult | RerankResultDocument, most)],
            EmbedResponse: EmbedResponse[per_input(vector)],
            Embedding: embedding,
            OpenAIEmbeddingResponse: OpenAIEmbeddingResponse[per_input(embedding)],
            Token: Token[token_id],
            TokenizeResponse: TokenizeResponse[per_input(list[Token[token_id]])],
            DecodeResponse: DecodeResponse[per_input(str)],
            SimilarityResponse: SimilarityResponse[per_input(Annotated[float, Field(ge=-1.0001, le=1.0001)],
                                                             count - 1)],
        }
        for generic, model in bound.items():
            model.__doc__ = generic.__doc__  # the document's descriptions
        schemas.bound = {**{m: m for m in RESPONSES}, **bound}
        return schemas

    def __getitem__(self, model: type) -> type[BaseModel]:
        """The bound model of a declared one: ``schemas[EmbedRequest]``."""
        return self.bound[model]

    def parse(self, model: type, data: Any) -> Any:
        """``data`` (a decoded JSON body) as the bound ``model``, or InvalidInput naming the field at fault."""
        bound = self.bound[model]
        try:
            return bound.model_validate(data)
        except ValidationError as exc:
            raise self._invalid(bound, exc.errors(include_url=False)[0]) from None

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

        if kind == "missing" and indexes:  # in an object of a list (a document without its text)
            parent, _, child = name.rpartition(".")
            return invalid(f"'{parent}[{row}]' has no '{child}'")
        if kind == "missing":
            return invalid(f"missing field '{name}'")
        if not loc:
            return InvalidInput("request body must be a JSON object")
        where = f"'{name}[{row}]'" if indexes else f"'{name}'"  # an item of a list, or a field (``query``)
        if kind == "string_too_short":
            return invalid(f"{where} is an empty string")
        if kind == "string_too_long":
            return invalid(f"{where} has {len(value)} characters, more than the limit of {ctx['max_length']}")
        if kind == "string_pattern_mismatch":
            return invalid(f"{where} {NO_CONTENT}")
        if kind == "too_long" and ids and (indexes or "id_list" in tags):
            return invalid(f"'{name}[{row}]' has {len(value)} token ids, more than the limit of {ctx['max_length']}")
        if kind == "too_long":
            noun = "documents" if name in ("texts", "documents") else "inputs"
            return invalid(f"'{name}' has {len(value)} {noun}, more than the limit of {ctx['max_length']} per request")
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
        requests, serialization mode for responses), each under its declared name."""
        pairs = [(self.bound[m], "validation") for m in REQUESTS] + \
                [(self.bound[m], "serialization") for m in RESPONSES]
        _, document = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
        defs = document["$defs"]
        # A bound model's key is pydantic's long generic name; its title is the declared name.
        names = {key: schema.get("title", key) for key, schema in defs.items()}
        defs = {names[key]: _renamed(schema, names) for key, schema in defs.items()}
        example = defs["OpenAIEmbeddingRequest"]["examples"][0]
        example["model"] = self.model_id or None
        return _standard(defs)


_REF = "#/components/schemas/"


def _renamed(node, names: dict):
    """``node`` with every ``$ref`` to a bound model's generic name pointing at its declared name."""
    if isinstance(node, dict):
        return {k: (_REF + names.get(v[len(_REF):], v[len(_REF):]) if k == "$ref" else _renamed(v, names))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v, names) for v in node]
    return node


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


_TAGS = ("one", "many", "id_list", "id_lists", "object")
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
