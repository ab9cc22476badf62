"""Loading a sentence-transformers model from its directory's files alone, for the onnx backend.

No torch, transformers or sentence-transformers in the process: the pipeline comes from
``modules.json``, the maximum length from ``sentence_bert_config.json``, pooling from the Pooling
module's ``config.json``, prompts from ``config_sentence_transformers.json`` and the tokenizer from
``tokenizer.json`` through the ``tokenizers`` package, set up as transformers' tokenizer class and
sentence-transformers' Transformer module set it up (``tokenizer_config.json``, special tokens,
``do_lower_case``). The result is the LoadedModel that sentence-transformers' path would give, bar
``st_model``; tests/test_model_files.py holds the two to the same ids and metadata.

Two refusals: :class:`UnsupportedModel` for a pipeline the onnx backend cannot run (it needs
Transformer -> Pooling, optionally -> Normalize); :class:`NotReplicated` for a set-up this loader
does not reproduce exactly (a tokenizer class other than BERT's, a tokenizer from elsewhere...), on
which :func:`embedder.model.load_model` loads the model with sentence-transformers instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings

log = logging.getLogger("embedder.model")

#: Pooling modes in sentence-transformers' concatenation order, and its legacy boolean config keys.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: The Transformer module's config file, then the legacy names sentence-transformers still reads.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json",
                       "sentence_distilbert_config.json", "sentence_camembert_config.json",
                       "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                       "sentence_xlnet_config.json")
#: transformers' "no limit" model_max_length.
VERY_LARGE_INTEGER = int(1e30)
#: Tokenizer classes whose transformers set-up is reproduced here, and whether each takes
#: token_type_ids (the class's model_input_names).
BERT_CLASSES = {"BertTokenizer": True, "BertTokenizerFast": True,
                "DistilBertTokenizer": False, "DistilBertTokenizerFast": False}
#: Model types whose default tokenizer class (no tokenizer_class in the files) is BERT's.
BERT_MODEL_TYPES = {"bert": "BertTokenizer", "distilbert": "BertTokenizer"}
#: Keys of the Transformer module's tokenizer arguments this loader understands.
TOKENIZER_ARGS = {"model_max_length", "do_lower_case", "strip_accents", "tokenize_chinese_chars",
                  "split_special_tokens", "model_input_names", "use_fast", "trust_remote_code"}
SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


class UnsupportedModel(ValueError):
    """The model's pipeline has something the ONNX backend cannot reproduce."""


class NotReplicated(Exception):
    """This loader does not reproduce the model's set-up exactly; sentence-transformers must load it."""


@dataclass(frozen=True)
class Pipeline:
    """What modules.json and the modules' configs say about a Transformer -> Pooling (-> Normalize)
    model."""

    transformer_dir: Path
    pooling_modes: tuple[str, ...]
    #: The Pooling module's output size: token vector size x number of modes.
    dimension: int
    ends_with_normalize: bool
    #: The Transformer module's own config (sentence_bert_config.json or a legacy name).
    transformer_config: dict = field(default_factory=dict)


def _read_json(path: Path, default=None):
    if not path.is_file():
        return default
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _module_kind(type_ref: str) -> str:
    """``Transformer``, ``Pooling``, ``Normalize`` for sentence-transformers' own classes (old and new
    module paths), else the class name as modules.json writes it."""
    name = type_ref.rsplit(".", 1)[-1]
    if type_ref.startswith("sentence_transformers.") and name in ("Transformer", "Pooling", "Normalize"):
        return name
    return name if type_ref.startswith("sentence_transformers.") else type_ref


def _inside(root: Path, relative: str) -> Path:
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise UnsupportedModel(f"modules.json names a module path outside the model directory: {relative!r}")
    return root / path


def pooling_modes_of(config: dict) -> tuple[str, ...]:
    """The Pooling config's modes, from ``pooling_mode`` (a name or a list) or the legacy booleans."""
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in LEGACY_POOLING_KEYS.items() if config.get(key, False)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    return modes


def read_pipeline(model_dir: str | Path, model_id: str = "") -> Pipeline:
    """The model's pipeline from its files; UnsupportedModel unless it is Transformer -> Pooling
    (-> Normalize) with a transformer whose text output is its token vectors (last_hidden_state)."""
    root = Path(model_dir)
    model_id = model_id or root.name
    modules = _read_json(root / "modules.json")
    if modules is None:
        # sentence-transformers would wrap a plain transformers model in mean pooling; not reproduced.
        raise NotReplicated(f"{root} has no modules.json (not a sentence-transformers model)")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [_module_kind(str(m.get("type", ""))) for m in modules]
    ends_with_normalize = bool(kinds) and kinds[-1] == "Normalize"
    core = kinds[:-1] if ends_with_normalize else kinds
    if core != ["Transformer", "Pooling"]:
        raise UnsupportedModel(f"the onnx backend runs Transformer -> Pooling (-> Normalize) models; "
                               f"{model_id} has {' -> '.join(kinds) or 'no modules'}: use EMBEDDER_BACKEND=torch")
    transformer_dir = _inside(root, modules[0].get("path", ""))
    config = {}
    for name in TRANSFORMER_CONFIGS:
        config = _read_json(transformer_dir / name)
        if config is not None:
            break
    config = config or {}
    task = config.get("transformer_task", "feature-extraction")
    text = (config.get("modality_config") or {}).get("text", {"method": "forward",
                                                              "method_output_name": "last_hidden_state"})
    output = text.get("method_output_name")
    if task != "feature-extraction" or text.get("method", "forward") != "forward" or \
            (output[0] if isinstance(output, list) and len(output) == 1 else output) != "last_hidden_state":
        raise UnsupportedModel(f"the onnx backend needs a transformer whose text output is last_hidden_state; "
                               f"{model_id} has task {task!r} and text {text}: use EMBEDDER_BACKEND=torch")
    pooling = _read_json(_inside(root, modules[1].get("path", "")) / "config.json", {})
    modes = pooling_modes_of(pooling)
    width = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if width is None:
        raise UnsupportedModel(f"{model_id}'s Pooling config has no embedding_dimension")
    return Pipeline(transformer_dir=transformer_dir, pooling_modes=modes, dimension=int(width) * len(modes),
                    ends_with_normalize=ends_with_normalize, transformer_config=config)


# -- the tokenizer ----------------------------------------------------------------------------------
def _content(token) -> str | None:
    """A special token as tokenizer configs write it: a string, or an AddedToken dict."""
    if isinstance(token, dict):
        return token.get("content")
    return token


class FileTokenizer:
    """A ``tokenizers.Tokenizer`` set up as transformers sets up the model's tokenizer class."""

    def __init__(self, tokenizer):
        self.backend = tokenizer

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, untruncated."""
        return [encoding.ids for encoding in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def wrapped_ids(self, text: str) -> list[int]:
        """Token ids of one text with the special tokens the tokenizer adds."""
        return self.backend.encode(text, add_special_tokens=True).ids

    def tokens(self, text: str, add_special_tokens: bool) -> list[tuple[int, str, bool, int, int]]:
        """``(id, token, special, start, stop)`` of each token, character offsets into ``text``."""
        e = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return [(i, token, bool(special), start, stop) for i, token, special, (start, stop)
                in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets)]

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)


@dataclass
class TokenizerSetup:
    tokenizer: FileTokenizer
    pad_id: int
    vocab_size: int
    model_max_length: int
    uses_token_type_ids: bool


def load_tokenizer(tokenizer_dir: Path, transformer_config: dict, model_config: dict) -> TokenizerSetup:
    """BERT's tokenizer as transformers 5 builds BertTokenizer (vocabulary and post-processor from
    tokenizer.json, normalizer from tokenizer_config.json) plus sentence-transformers' changes
    (``do_lower_case``, ``max_seq_length``); NotReplicated for anything else."""
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors

    if transformer_config.get("tokenizer_name_or_path"):
        raise NotReplicated("the tokenizer comes from another directory (tokenizer_name_or_path)")
    args = dict(transformer_config.get("processor_kwargs") or transformer_config.get("tokenizer_args") or {})
    unknown = sorted(set(args) - TOKENIZER_ARGS)
    if unknown:
        raise NotReplicated(f"tokenizer arguments {unknown} in the Transformer module's config")
    settings = _read_json(tokenizer_dir / "tokenizer_config.json", {})
    if "auto_map" in settings:
        raise NotReplicated("a custom tokenizer class (auto_map)")
    if "added_tokens_decoder" not in settings:  # transformers' legacy special-tokens file
        for key, value in (_read_json(tokenizer_dir / "special_tokens_map.json", {}) or {}).items():
            settings.setdefault(key, value)
    settings.update(args)
    model_type = model_config.get("model_type")
    class_name = settings.get("tokenizer_class") or model_config.get("tokenizer_class") \
        or BERT_MODEL_TYPES.get(model_type)
    if class_name not in BERT_CLASSES or model_type not in BERT_MODEL_TYPES:
        raise NotReplicated(f"tokenizer class {class_name} (model type {model_type}); this loader reproduces "
                            f"{', '.join(sorted(BERT_CLASSES))} for {', '.join(BERT_MODEL_TYPES)} models")
    file = tokenizer_dir / "tokenizer.json"
    if not file.is_file():
        raise NotReplicated(f"no tokenizer.json in {tokenizer_dir}")
    raw = _read_json(file)
    model = raw.get("model") or {}
    if model.get("type", "WordPiece") != "WordPiece":
        raise NotReplicated(f"a {model.get('type')} model in tokenizer.json for a BERT tokenizer")

    tokens = {key: _content(settings.get(key)) for key in SPECIAL_TOKENS}
    unk = tokens["unk_token"] or "[UNK]"
    cls, sep = tokens["cls_token"] or "[CLS]", tokens["sep_token"] or "[SEP]"
    if (model.get("unk_token", unk), model.get("continuing_subword_prefix", "##"),
            model.get("max_input_chars_per_word", 100)) != (unk, "##", 100):
        raise NotReplicated("tokenizer.json's WordPiece settings differ from BertTokenizer's "
                            f"(unk {unk!r}, prefix '##', 100 characters a word)")
    tokenizer = Tokenizer.from_file(str(file))
    # BertTokenizer.__init__: WordPiece over the file's vocabulary (checked above to be set up as it
    # sets it up), normalizer and pre-tokenizer from its arguments, post-processor below.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    added = {token.content: token for token in tokenizer.get_added_tokens_decoder().values()}
    for index, spec in (settings.get("added_tokens_decoder") or {}).items():
        existing = added.get(spec.get("content"))
        if existing is None or tokenizer.token_to_id(existing.content) != int(index) or any(
                getattr(existing, prop) != spec.get(prop, getattr(existing, prop))
                for prop in ("lstrip", "rstrip", "single_word", "normalized", "special")):
            raise NotReplicated(f"tokenizer_config.json's added token {spec} differs from tokenizer.json's")
    if "added_tokens_decoder" in settings:  # then transformers reads no added token from tokenizer.json
        listed = {spec.get("content") for spec in settings["added_tokens_decoder"].values()}
        if set(added) - listed:
            raise NotReplicated(f"tokenizer.json adds tokens tokenizer_config.json does not: "
                                f"{sorted(set(added) - listed)}")
    missing = [t for t in tokens.values() if t and t not in added]
    if missing:  # transformers adds the named special tokens the backend does not have yet
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    cls_id, sep_id = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, 2 if cls_id is None else cls_id), (sep, 3 if sep_id is None else sep_id)])
    tokenizer.encode_special_tokens = bool(settings.get("split_special_tokens", False))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if transformer_config.get("do_lower_case"):
        # sentence-transformers' Transformer lowercases first unless a Lowercase normalizer is there.
        current = tokenizer.normalizer
        parts = list(current) if isinstance(current, normalizers.Sequence) else [current]
        if not any(isinstance(n, normalizers.Lowercase) for n in parts):
            tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *parts])

    # model_max_length: sentence-transformers' max_seq_length, else the tokenizer's capped by the
    # model's position embeddings (its Transformer module does exactly this).
    if "model_max_length" in args:
        max_length = int(args["model_max_length"])
    elif transformer_config.get("max_seq_length") is not None:
        max_length = int(transformer_config["max_seq_length"])
    else:
        max_length = int(settings.get("model_max_length") or VERY_LARGE_INTEGER)
        positions = model_config.get("max_position_embeddings")
        if positions is not None and positions != -1:
            max_length = min(max_length, int(positions))
    pad = tokens["pad_token"] or _content((raw.get("padding") or {}).get("pad_token"))
    pad_id = tokenizer.token_to_id(pad) if pad else None
    names = settings.get("model_input_names")
    uses_type_ids = "token_type_ids" in names if names else BERT_CLASSES[class_name]
    return TokenizerSetup(tokenizer=FileTokenizer(tokenizer), pad_id=0 if pad_id is None else pad_id,
                          vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                          model_max_length=max_length, uses_token_type_ids=uses_type_ids)


def prompts_of(model_dir: Path) -> dict[str, str]:
    """SentenceTransformer's prompts: query and document (empty unless the model names them) and
    whatever config_sentence_transformers.json adds."""
    prompts: dict[str, str | None] = {"query": None, "document": None}
    saved = (_read_json(model_dir / "config_sentence_transformers.json", {}) or {}).get("prompts") or {}
    for name, text in saved.items():
        if prompts.get(name) is None:
            prompts[name] = text
    return {name: "" if text is None else text for name, text in prompts.items()}


def load_model_files(settings: Settings):
    """The configured model as a LoadedModel (``st_model`` None) from its files alone."""
    from .model import LoadedModel, special_tokens

    path = settings.model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    model_id = settings.resolved_model_id()
    log.info("loading model from %s (its files: tokenizer and settings; the onnx backend maps the weights)", path)
    pipeline = read_pipeline(path, model_id)
    model_config = _read_json(pipeline.transformer_dir / "config.json", {}) or {}
    setup = load_tokenizer(pipeline.transformer_dir, pipeline.transformer_config, model_config)
    prefix, suffix = special_tokens(setup.tokenizer)
    loaded = LoadedModel(
        st_model=None,
        tokenizer=setup.tokenizer,
        model_id=model_id,
        path=str(path),
        dimension=pipeline.dimension,
        max_input_tokens=setup.model_max_length,
        vocab_size=setup.vocab_size,
        ends_with_normalize=pipeline.ends_with_normalize,
        prompts=prompts_of(path),
        prefix_ids=prefix,
        suffix_ids=suffix,
        pad_id=setup.pad_id,
        uses_token_type_ids=setup.uses_token_type_ids,
        pooling_modes=pipeline.pooling_modes,
    )
    log.info("model %s read from its files (no torch): dimension %d, max %d tokens", model_id,
             loaded.dimension, loaded.max_input_tokens)
    return loaded
