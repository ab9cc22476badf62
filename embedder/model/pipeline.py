"""The module rule, stated once: which sentence-transformers pipelines are served as they are.

A model is served torch-free (the onnx backend: the transformer as a graph, pooling and Dense
layers in NumPy) when its modules are Transformer -> Pooling, then any number of Dense, optionally
-> Normalize, and its transformer's text output is its token vectors (``last_hidden_state``).
:func:`chain` checks the module kinds, read from ``modules.json`` (:func:`read_pipeline`) or from a
loaded SentenceTransformer's modules (:func:`module_kinds`); :func:`check_text_output` the
transformer's output. A reranker's rule (one Transformer module for sequence classification) is
``rerank.py``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NotReplicated, UnsupportedModel
from .pooling import pooling_modes

#: The Transformer module's config file, then the legacy names sentence-transformers still reads.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json",
                       "sentence_distilbert_config.json", "sentence_camembert_config.json",
                       "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                       "sentence_xlnet_config.json")
#: sentence-transformers' own module classes the rule names.
OWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
TORCH_HINT = "use EMBEDDER_BACKEND=torch"
#: The rule in words, for refusals.
RULE = "Transformer -> Pooling (-> Dense ...) (-> Normalize)"


def chain(kinds: list[str], model_id: str) -> bool:
    """Whether the pipeline ends with Normalize, if it is Transformer -> Pooling -> Dense* (->
    Normalize) (the Dense modules are ``kinds[2:]`` up to the Normalize); UnsupportedModel naming its
    modules otherwise."""
    ends_with_normalize = bool(kinds) and kinds[-1] == "Normalize"
    core = kinds[:-1] if ends_with_normalize else kinds
    if core[:2] != ["Transformer", "Pooling"] or any(kind != "Dense" for kind in core[2:]):
        raise UnsupportedModel(f"the onnx backend runs {RULE} models; "
                               f"{model_id} has {' -> '.join(kinds) or 'no modules'}: {TORCH_HINT}")
    return ends_with_normalize


def check_text_output(text: dict, model_id: str, task: str = "feature-extraction") -> None:
    """UnsupportedModel unless the transformer's text output is its token vectors."""
    output = text.get("method_output_name", "last_hidden_state")
    if isinstance(output, (list, tuple)) and len(output) == 1:
        output = output[0]
    if task != "feature-extraction" or text.get("method", "forward") != "forward" or output != "last_hidden_state":
        raise UnsupportedModel(f"the onnx backend needs a transformer whose text output is last_hidden_state; "
                               f"{model_id} has task {task!r} and text {text}: {TORCH_HINT}")


def module_kinds(modules: list) -> list[str]:
    """The rule's names for a loaded SentenceTransformer's modules (imports sentence-transformers)."""
    # sentence-transformers imports torch: only for a model it loaded (never on the torch-free path).
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    own = {Transformer: "Transformer", Pooling: "Pooling", Dense: "Dense", Normalize: "Normalize"}
    return [next((name for cls, name in own.items() if isinstance(module, cls)), type(module).__name__)
            for module in modules]


def module_name(type_ref: str) -> str:
    """The rule's name for a module as modules.json writes its class: sentence-transformers' own
    (old and new module paths) by class name, anything else by its full reference."""
    name = type_ref.rsplit(".", 1)[-1]
    return name if type_ref.startswith("sentence_transformers.") else type_ref


@dataclass(frozen=True)
class Pipeline:
    """What modules.json and the modules' configs say about a Transformer -> Pooling -> Dense* (->
    Normalize) model."""

    transformer_dir: Path
    pooling_modes: tuple[str, ...]
    #: The pipeline's output size: the last Dense's out_features, else the Pooling module's (token
    #: vector size x number of modes).
    dimension: int
    ends_with_normalize: bool
    #: The Transformer module's own config (sentence_bert_config.json or a legacy name).
    transformer_config: dict = field(default_factory=dict)
    #: The Dense modules' folders, in order (``dense.read_dense`` reads them).
    dense_dirs: tuple[Path, ...] = ()


def read_json(path: Path, default=None):
    if not path.is_file():
        return default
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def inside(root: Path, relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise UnsupportedModel(f"modules.json names a module path outside the model directory: {relative!r}")
    return root / path


def transformer_config(folder: Path) -> dict:
    """The Transformer module's own config in ``folder`` (sentence_bert_config.json or a legacy
    name); empty when there is none."""
    for name in TRANSFORMER_CONFIGS:
        config = read_json(folder / name)
        if config is not None:
            return config
    return {}


def read_pipeline(model_dir: str | Path, model_id: str = "") -> Pipeline:
    """The model's pipeline from its files, held to :func:`chain` and :func:`check_text_output`."""
    root = Path(model_dir)
    model_id = model_id or root.name
    modules = read_json(root / "modules.json")
    if modules is None:
        # sentence-transformers would wrap a plain transformers model in mean pooling; not reproduced.
        raise NotReplicated(f"{root} has no modules.json (not a sentence-transformers model)")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    ends_with_normalize = chain([module_name(str(m.get("type", ""))) for m in modules], model_id)
    transformer_dir = inside(root, modules[0].get("path", ""))
    config = transformer_config(transformer_dir)
    check_text_output((config.get("modality_config") or {}).get("text", {}), model_id,
                      config.get("transformer_task", "feature-extraction"))
    pooling = read_json(inside(root, modules[1].get("path", "")) / "config.json", {})
    modes = pooling_modes(pooling)
    width = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if width is None:
        raise UnsupportedModel(f"{model_id}'s Pooling config has no embedding_dimension")
    dimension = int(width) * len(modes)
    dense_dirs = tuple(inside(root, m.get("path", "")) for m in modules[2:len(modules) - ends_with_normalize])
    for folder in dense_dirs:
        dense_config = read_json(folder / "config.json", {}) or {}
        if dense_config.get("in_features") != dimension or "out_features" not in dense_config:
            raise UnsupportedModel(f"{model_id}'s Dense module {folder.name} takes {dense_config.get('in_features')} "
                                   f"features where {dimension} come in (config.json: {dense_config})")
        dimension = int(dense_config["out_features"])
    return Pipeline(transformer_dir=transformer_dir, pooling_modes=modes, dimension=dimension,
                    ends_with_normalize=ends_with_normalize, transformer_config=config, dense_dirs=dense_dirs)


def code_it_runs(model_dir: str | Path, model_id: str = "") -> list[str]:
    """What in the model would run code of its own rather than sentence-transformers' and
    transformers' (each a line naming it): a module in modules.json that is not one of
    sentence-transformers' classes, and an ``auto_map`` in the transformer's or tokenizer's config
    (classes loaded with ``trust_remote_code``)."""
    root = Path(model_dir)
    model_id = model_id or root.name
    found = []
    for module in read_json(root / "modules.json") or []:
        kind = str(module.get("type", ""))
        if not kind.startswith("sentence_transformers."):
            found.append(f"module {module.get('name', module.get('idx'))} is {kind or 'of no type'}, "
                         "not one of sentence-transformers' modules")
    folders = [root] + [root / str(m.get("path", "")) for m in (read_json(root / "modules.json") or [])
                        if m.get("path")]
    for folder in dict.fromkeys(folders):
        for name in ("config.json", "tokenizer_config.json"):
            auto_map = (read_json(folder / name, {}) or {}).get("auto_map") or {}
            values = auto_map.values() if isinstance(auto_map, dict) else auto_map
            # A reference to code is "module.Class" (or "repo--module.Class"); a bare class name is
            # transformers' own.
            classes = sorted({v for value in values for v in (value if isinstance(value, list) else [value])
                              if isinstance(v, str) and "." in v})
            if classes:
                found.append(f"{(folder / name).relative_to(root)} maps to the model's own code "
                             f"({', '.join(classes)})")
    return found


def check_code(model_dir: str | Path, model_id: str, trust_remote_code: bool) -> None:
    """UnsupportedModel naming each piece of the model's own code unless the operator allows it
    (EMBEDDER_TRUST_REMOTE_CODE, as sentence-transformers' ``trust_remote_code``)."""
    found = code_it_runs(model_dir, model_id)
    if found and not trust_remote_code:
        raise UnsupportedModel(f"{model_id or Path(model_dir).name} runs code of its own: " + "; ".join(found)
                               + ". embedder serves only what sentence-transformers' and transformers' own "
                                 "classes compute unless EMBEDDER_TRUST_REMOTE_CODE=true allows the model's "
                                 "code to run (read it first: it runs in the server)")
