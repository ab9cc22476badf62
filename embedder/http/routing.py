"""Which served model a request names, and each model's typed request models.

A request's ``model`` (OpenAI's field, and optional on TEI's routes) names a served model by its
name, the name's last part (``all-MiniLM-L6-v2`` for ``sentence-transformers/all-MiniLM-L6-v2``,
unless two models share it) or, for the first embedding model, the name TEI's OpenAI examples
send; none means the first model of the route's kind. Each model's request models are bound to its
own limits (``schemas.Schemas.bind``): its dimension, vocabulary, prompts and token limit.
"""

from __future__ import annotations

from collections import Counter

from ..core.errors import InvalidInput
from ..core.models import ServedModels
from .schemas import TEI_MODEL_NAME, Schemas


def aliases(models: ServedModels) -> dict[str, str]:
    """Every name a request may give -> the served name it means."""
    names = list(models.services)
    out = {name: name for name in names}
    short = Counter(name.rpartition("/")[2] for name in names)
    for name in names:
        last = name.rpartition("/")[2]
        if short[last] == 1 and last not in out:
            out[last] = name
    embeddings = models.of_kind("embedding")
    if embeddings and TEI_MODEL_NAME not in out:
        out[TEI_MODEL_NAME] = embeddings[0].model_id
    return out


class Routing:
    def __init__(self, models: ServedModels, openai_token_ids: bool = False):
        self.models = models
        self.aliases = aliases(models)
        by_kind = {kind: frozenset(alias for alias, name in self.aliases.items()
                                   if models.services[name].kind == kind) for kind in ("embedding", "reranker")}
        #: Served name -> its bound request and response models.
        self.schemas = {name: Schemas.bind(service.limits, name, openai_token_ids, by_kind["embedding"],
                                           by_kind["reranker"])
                        for name, service in models.services.items()}
        first = (models.of_kind("embedding") or list(models.services.values()))[0]
        #: The models the OpenAPI document shows: the first embedding model's (its limits).
        self.default = self.schemas[first.model_id]

    def resolve(self, name) -> str | None:
        """The served name a request's ``model`` means (None: the first of the route's kind); an
        unknown name is left for the lookup to refuse (404)."""
        if name is None:
            return None
        if not isinstance(name, str):
            raise InvalidInput("'model' must be a string", param="model")
        return self.aliases.get(name, name)

    def embedding(self, data: dict):
        """The embedding model a request body names, and its models."""
        service = self.models.embedding(self.resolve(data.get("model")))
        return service, self.schemas[service.model_id]

    def reranker(self, data: dict):
        """The reranker a request body names, and its models."""
        service = self.models.reranker(self.resolve(data.get("model")))
        return service, self.schemas[service.model_id]
