"""What a reranker (a sentence-transformers CrossEncoder) is to serving, stated once.

- :func:`model_kind`: which model directories are rerankers, from their files alone.
- :func:`read_reranker`: what is served of one (a single Transformer module of sequence
  classification: the model's logit is the pair's score) and what is refused, from its files; both
  loaders hold a model to it before loading it.
- :func:`activation_of`: the activation ``CrossEncoder.predict`` applies to the logit, resolved from
  the files as sentence-transformers 6.2 resolves it, and applied here in NumPy (:func:`activate`).
- :class:`PairTemplate`: how the model's tokenizer encodes a (query, document) pair, derived once
  (:func:`pair_template`) so that serving cuts documents, never the query, and counts tokens
  without encoding each pair again; :class:`PairIds` is one pair's ids as the backends take them.

No torch here: the torch-free loader (``files.py``) and sentence-transformers' (``st_loader.py``)
both use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dense import ACTIVATIONS
from .errors import UnsupportedModel
from .pipeline import inside, module_name, read_json, transformer_config

log = logging.getLogger("embedder.model")

EMBEDDING, RERANKER = "embedding", "reranker"
#: config_sentence_transformers.json's ``model_type`` of a CrossEncoder.
CROSS_ENCODER = "CrossEncoder"
#: What is served, for refusals.
SERVED = ("rerank serves sentence-transformers CrossEncoder models of one Transformer module for sequence "
          "classification, one score (logit) per pair")
#: The Transformer module's tasks of causal-LM rerankers (scored by LogitScore on "yes"/"no" tokens).
CAUSAL_TASKS = ("text-generation", "any-to-any")
#: The Transformer module's text output a sequence-classification CrossEncoder has.
CLASSIFIER_OUTPUT = {"method": "forward", "method_output_name": "logits"}
#: Pairs the template is derived from (the first) and checked on (all).
TEMPLATE_PAIRS = (("a", "b"), ("What is the capital of France?", "Paris est la capitale 東京 🍕 of France."),
                  ("  spaced  query ", "x"))


def model_kind(path: str | Path) -> str:
    """``"reranker"`` or ``"embedding"``, from the files: config_sentence_transformers.json's
    ``model_type`` CrossEncoder, or a plain transformers directory (no modules.json) whose
    config.json's first architecture is ``...ForSequenceClassification`` (older hub
    cross-encoders); anything else is an embedding model."""
    root = Path(path)
    if (read_json(root / "config_sentence_transformers.json", {}) or {}).get("model_type") == CROSS_ENCODER:
        return RERANKER
    if not (root / "modules.json").is_file():
        architectures = (read_json(root / "config.json", {}) or {}).get("architectures") or []
        if architectures and str(architectures[0]).endswith("ForSequenceClassification"):
            return RERANKER
    return EMBEDDING


# -- what is served of a reranker --------------------------------------------------------------------
@dataclass(frozen=True)
class Reranker:
    """What a reranker's files say, once held to the rule."""

    #: The Transformer module's folder (the model directory for a plain transformers directory).
    transformer_dir: Path
    #: The Transformer module's own config (sentence_bert_config.json); empty for a plain directory.
    transformer_config: dict
    #: The transformer's config.json.
    model_config: dict
    #: The activation CrossEncoder.predict applies, by torch.nn class name (:data:`ACTIVATIONS`).
    activation: str


def _causal(model_id: str, what: str) -> UnsupportedModel:
    return UnsupportedModel(f"{model_id} is a causal-LM reranker ({what}: a score from its 'yes' and 'no' "
                            f"token logits, LogitScore), not served: {SERVED}")


def read_reranker(model_dir: str | Path, model_id: str = "", trust_remote_code: bool = False) -> Reranker:
    """The reranker in ``model_dir`` from its files; UnsupportedModel, saying why, for one that is
    not served: a pipeline of more than the one Transformer module, a causal-LM reranker, a
    transformer without a trained classification head, more than one label (score) per pair, prompts,
    or an activation not applied here."""
    root = Path(model_dir)
    model_id = model_id or root.name
    modules = read_json(root / "modules.json")
    st_config: dict = {}
    if modules is None:  # a plain transformers directory: CrossEncoder's default module
        transformer_dir, module_config = root, {}
    else:
        st_config = read_json(root / "config_sentence_transformers.json", {}) or {}
        modules = sorted(modules, key=lambda m: m.get("idx", 0))
        kinds = [module_name(str(m.get("type", ""))) for m in modules]
        if "LogitScore" in kinds:
            raise _causal(model_id, " -> ".join(kinds))
        if kinds != ["Transformer"]:
            raise UnsupportedModel(f"{model_id} is a CrossEncoder of {' -> '.join(kinds) or 'no modules'}: {SERVED}")
        transformer_dir = inside(root, modules[0].get("path", ""))
        module_config = transformer_config(transformer_dir)
        task = module_config.get("transformer_task", "feature-extraction")
        if task in CAUSAL_TASKS:
            raise _causal(model_id, f"transformer_task {task!r}")
        text = (module_config.get("modality_config") or {"text": CLASSIFIER_OUTPUT}).get("text")
        output = module_config.get("module_output_name", "scores")
        if task != "sequence-classification" or text != CLASSIFIER_OUTPUT or output != "scores":
            raise UnsupportedModel(f"{model_id}'s Transformer module has task {task!r}, text {text} and output "
                                   f"{output!r}, where a CrossEncoder's is sequence-classification, "
                                   f"{CLASSIFIER_OUTPUT} and 'scores': {SERVED}")
        check_prompts(st_config.get("prompts") or {}, st_config.get("default_prompt_name"), model_id)
    model_config = read_json(transformer_dir / "config.json", {}) or {}
    architectures = [str(a) for a in model_config.get("architectures") or []]
    if modules is None and architectures and architectures[0].endswith("ForCausalLM"):
        raise _causal(model_id, architectures[0])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UnsupportedModel(f"{model_id}'s config.json names no ...ForSequenceClassification architecture "
                               f"({', '.join(architectures) or 'none'}): its classification head would be "
                               f"initialized at random, a different one at each load: {SERVED}")
    check_labels(num_labels_of(model_config, module_config), model_id)
    activation = activation_of(st_config, model_config, trust_remote_code, model_id)
    return Reranker(transformer_dir, module_config, model_config, activation)


def num_labels_of(model_config: dict, module_config: dict) -> int:
    """The classifier's outputs per pair, as transformers reads config.json (``id2label``'s length,
    else ``num_labels``, else 2), unless the Transformer module's ``config_kwargs`` set it."""
    forced = (module_config.get("config_kwargs") or module_config.get("config_args") or {}).get("num_labels")
    if forced is not None:
        return int(forced)
    labels = model_config.get("id2label")
    return len(labels) if labels else int(model_config.get("num_labels") or 2)


def check_labels(num_labels: int, model_id: str) -> None:
    if num_labels != 1:
        raise UnsupportedModel(f"{model_id} gives {num_labels} scores per pair (num_labels {num_labels}): rerank "
                               f"needs one score per pair; {SERVED}")


def check_prompts(prompts: dict, default_prompt_name: str | None, model_id: str) -> None:
    """UnsupportedModel for a reranker with prompts: rerank scores the query and documents as sent."""
    named = sorted(name for name, text in prompts.items() if text)
    if named or default_prompt_name:
        raise UnsupportedModel(f"{model_id} is a CrossEncoder with prompts ({', '.join(named) or 'none'}; default "
                               f"prompt {default_prompt_name!r}): rerank scores the query and documents as sent, "
                               f"so a reranker with prompts is not served")


# -- the activation ------------------------------------------------------------------------------------
def _saved_activations(st_config: dict, model_config: dict):
    """``(file, class path)`` of each activation the configs name, in the order CrossEncoder reads
    them: its own config's (``_parse_model_config``), then config.json's (``get_default_activation_fn``:
    ``sentence_transformers.activation_fn``, else the pre-v4 ``sbert_ce_default_activation_function``)."""
    if st_config.get("activation_fn") is not None:
        yield "config_sentence_transformers.json", str(st_config["activation_fn"])
    saved = model_config.get("sentence_transformers")
    if isinstance(saved, dict) and "activation_fn" in saved:
        if saved["activation_fn"] is not None:
            yield "config.json", str(saved["activation_fn"])
    elif model_config.get("sbert_ce_default_activation_function") is not None:
        yield "config.json", str(model_config["sbert_ce_default_activation_function"])


def activation_of(st_config: dict, model_config: dict, trust_remote_code: bool, model_id: str,
                  num_labels: int = 1) -> str:
    """The activation CrossEncoder.predict applies, by torch.nn class name: the first class the
    configs name (:func:`_saved_activations`) that sentence-transformers would import (one under
    ``torch.``, or any with trust_remote_code; others it skips with a warning, as here), else its
    default: Sigmoid for one label, Identity for more. UnsupportedModel for a class not in
    :data:`ACTIVATIONS`."""
    for file, path in _saved_activations(st_config, model_config):
        if trust_remote_code or path.startswith("torch."):
            return activation_name(path, model_id)
        log.warning("model %s: activation %s in %s is not trusted (sentence-transformers ignores it without "
                    "trust_remote_code)", model_id, path, file)
    return "Sigmoid" if num_labels == 1 else "Identity"


def activation_name(path: str, model_id: str) -> str:
    """The torch.nn class name of an activation's class path; UnsupportedModel for one not applied here."""
    name = path.rsplit(".", 1)[-1]
    if not path.startswith("torch.nn.") or name not in ACTIVATIONS:
        raise UnsupportedModel(f"{model_id}'s CrossEncoder applies {path} to its scores; rerank applies the "
                               f"torch.nn activations {', '.join(ACTIVATIONS)}")
    return name


def activate(activation: str, logits: np.ndarray) -> np.ndarray:
    """Scores (n,) float32 from a one-label model's logits, (n, 1) or (n,): the activation in float64,
    rounded once (within float32 rounding of torch's float32 result)."""
    values = np.asarray(logits, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"logits of shape {np.shape(logits)}; expected (n, 1) or (n,)")
    return np.asarray(ACTIVATIONS[activation](values), dtype=np.float32)


# -- pairs ---------------------------------------------------------------------------------------------
class PairIds(list):
    """One pair's token ids, special tokens included (a list: what the batcher counts, sorts and
    pads), with its token type ids (``type_ids``; None when the model takes none)."""

    __slots__ = ("type_ids",)

    def __init__(self, ids=(), type_ids: list[int] | None = None):
        super().__init__(ids)
        self.type_ids = type_ids


@dataclass(frozen=True)
class PairTemplate:
    """How the tokenizer encodes a pair: prefix + query + middle + document + suffix (a fast
    tokenizer encodes each text alone, then its post-processor adds these), with each part's token
    type ids."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    query_type: int
    middle_types: tuple[int, ...]
    document_type: int
    suffix_types: tuple[int, ...]

    @property
    def special(self) -> int:
        """The special tokens a pair takes."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def assemble(self, query: list[int], document: list[int], type_ids: bool) -> PairIds:
        """The pair's ids from its texts' content ids (and type ids when ``type_ids``)."""
        ids = [*self.prefix, *query, *self.middle, *document, *self.suffix]
        types = None
        if type_ids:
            types = [*self.prefix_types, *[self.query_type] * len(query), *self.middle_types,
                     *[self.document_type] * len(document), *self.suffix_types]
        return PairIds(ids, types)


def _find(ids: list[int], part: list[int], start: int) -> int:
    for at in range(start, len(ids) - len(part) + 1):
        if ids[at:at + len(part)] == part:
            return at
    return -1


def pair_template(tokenizer) -> PairTemplate | None:
    """The tokenizer's pair template (a ``tokenizer.Tokenizer``), located in its encoding of a known
    pair and checked on the others of :data:`TEMPLATE_PAIRS` (ids and type ids); None when its pairs
    are not encoded so."""
    (first, second), *_ = TEMPLATE_PAIRS
    query, document = tokenizer.content_ids([first, second])
    ids, types = tokenizer.pair_encoding(first, second)
    q = _find(ids, query, 0)
    d = _find(ids, document, q + len(query)) if q >= 0 and query and document else -1
    if d < 0 or len(set(types[q:q + len(query)])) != 1 or len(set(types[d:d + len(document)])) != 1:
        return None
    end = d + len(document)
    template = PairTemplate(prefix=tuple(ids[:q]), middle=tuple(ids[q + len(query):d]), suffix=tuple(ids[end:]),
                            prefix_types=tuple(types[:q]), query_type=types[q],
                            middle_types=tuple(types[q + len(query):d]), document_type=types[d],
                            suffix_types=tuple(types[end:]))
    for first, second in TEMPLATE_PAIRS:
        query, document = tokenizer.content_ids([first, second])
        pair = template.assemble(query, document, type_ids=True)
        if (list(pair), pair.type_ids) != tuple(list(x) for x in tokenizer.pair_encoding(first, second)):
            return None
    return template
