"""Tokenizers: what serving needs of one (:class:`Tokenizer`), transformers' behind it
(:class:`TransformersTokenizer`), and the model's own ``tokenizer.json`` run through the
``tokenizers`` package, set up as transformers' tokenizer class and sentence-transformers'
Transformer module set it up (:func:`load_tokenizer`: no torch or transformers in the process).

:func:`load_tokenizer` raises NotReplicated for a set-up it does not read (a custom class, a
tokenizer from elsewhere, a class whose model is not the file's...); ``tokenizer_proof.py`` then
holds what it built to transformers' own tokenizer (once per model, in a child process) and raises
NotReplicated on a difference. The model is then loaded with sentence-transformers instead.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import tokenizers
from tokenizers import AddedToken, normalizers, pre_tokenizers, processors

from .errors import NotReplicated
from .pipeline import read_json

#: transformers' "no limit" model_max_length.
VERY_LARGE_INTEGER = int(1e30)
#: Tokenizer classes whose transformers set-up is reproduced here, and whether each takes
#: token_type_ids (the class's model_input_names).
BERT_CLASSES = {"BertTokenizer": True, "BertTokenizerFast": True,
                "DistilBertTokenizer": False, "DistilBertTokenizerFast": False}
#: Model types whose default tokenizer class (no tokenizer_class in the files) is BERT's.
BERT_MODEL_TYPES = {"bert": "BertTokenizer", "distilbert": "BertTokenizer"}
#: Other model types' default tokenizer classes (transformers' auto mapping), for files naming none.
MODEL_TYPE_CLASSES = {**BERT_MODEL_TYPES, "roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer",
                      "mpnet": "MPNetTokenizer", "qwen2": "Qwen2Tokenizer", "qwen3": "Qwen2Tokenizer"}
#: The tokenizer model (tokenizer.json's model type) each class with its own ``__init__`` rebuilds.
CLASS_MODELS = {"BertTokenizer": "WordPiece", "DistilBertTokenizer": "WordPiece", "MPNetTokenizer": "WordPiece",
                "RobertaTokenizer": "BPE", "Qwen2Tokenizer": "BPE", "XLMRobertaTokenizer": "Unigram"}
#: Special tokens of classes whose ``__init__`` has defaults for them (used when the configs name none).
_ROBERTA_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                   "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
CLASS_DEFAULTS = {"RobertaTokenizer": _ROBERTA_TOKENS, "XLMRobertaTokenizer": _ROBERTA_TOKENS,
                  "MPNetTokenizer": {**_ROBERTA_TOKENS, "unk_token": "[UNK]"},
                  "Qwen2Tokenizer": {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                     "pad_token": "<|endoftext|>"}}
#: Classes' model_input_names without token_type_ids (transformers' default has them).
CLASS_INPUT_NAMES = {name: ["input_ids", "attention_mask"] for name in
                     ("DistilBertTokenizer", "RobertaTokenizer", "XLMRobertaTokenizer", "MPNetTokenizer",
                      "Qwen2Tokenizer")}
#: Qwen2Tokenizer's pre-tokenizing pattern (transformers' models/qwen2/tokenization_qwen2.py).
QWEN2_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
#: Keys of the Transformer module's tokenizer arguments this loader understands.
TOKENIZER_ARGS = {"model_max_length", "do_lower_case", "strip_accents", "tokenize_chinese_chars",
                  "split_special_tokens", "model_input_names", "use_fast", "trust_remote_code"}
SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


class Tokenizer(Protocol):
    """What serving needs of a tokenizer (:class:`FileTokenizer`, :class:`TransformersTokenizer`,
    the fast tests' stand-in)."""

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, untruncated."""

    def wrapped_ids(self, text: str) -> list[int]:
        """Token ids of one text with the special tokens the tokenizer adds."""

    def pair_encoding(self, first: str, second: str) -> tuple[list[int], list[int]]:
        """Token ids and token type ids of a pair of texts with the special tokens the tokenizer
        adds, untruncated (what a cross-encoder reads; ``rerank.pair_template`` derives its template)."""

    def tokens(self, text: str, add_special_tokens: bool) -> list[tuple[int, str, bool, int, int]]:
        """``(id, token, special, start, stop)`` of each token of one text, untruncated; start and
        stop are character offsets into ``text``."""

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """The text of token ids, as the tokenizer's decoder writes it."""


class TransformersTokenizer:
    """A Hugging Face (transformers) tokenizer behind the :class:`Tokenizer` methods."""

    def __init__(self, hf):
        self.hf = hf

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False, truncation=False, return_attention_mask=False,
                       return_token_type_ids=False, verbose=False)["input_ids"]

    def wrapped_ids(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=True)["input_ids"]

    def pair_encoding(self, first: str, second: str) -> tuple[list[int], list[int]]:
        # a batch of one, as CrossEncoder encodes pairs (alone, an empty second text is no pair)
        out = self.hf([first], [second], add_special_tokens=True, truncation=False, return_token_type_ids=True,
                      return_attention_mask=False, verbose=False)
        return out["input_ids"][0], out["token_type_ids"][0]

    def tokens(self, text: str, add_special_tokens: bool) -> list[tuple[int, str, bool, int, int]]:
        out = self.hf(text, add_special_tokens=add_special_tokens, truncation=False, verbose=False,
                      return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = out["input_ids"]
        return [(i, token, bool(special), start, stop) for i, token, special, (start, stop)
                in zip(ids, self.hf.convert_ids_to_tokens(ids), out["special_tokens_mask"],
                       out["offset_mapping"])]

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)


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

    def pair_encoding(self, first: str, second: str) -> tuple[list[int], list[int]]:
        """Ids and type ids of a pair with the post-processor's special tokens, untruncated."""
        e = self.backend.encode(first, second, add_special_tokens=True)
        return e.ids, e.type_ids

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
    #: The transformers tokenizer class reproduced (its name without "Fast").
    class_name: str | None = None


def _class_name(settings: dict, model_config: dict) -> str | None:
    """The tokenizer class AutoTokenizer picks: tokenizer_config.json's, config.json's, else the
    model type's default (BERT's for BERT and DistilBERT models; others are read as written)."""
    name = settings.get("tokenizer_class") or model_config.get("tokenizer_class") \
        or MODEL_TYPE_CLASSES.get(model_config.get("model_type"))
    return name[:-4] if name and name.endswith("Fast") and name != "PreTrainedTokenizerFast" else name


def _settings(tokenizer_dir: Path, transformer_config: dict) -> tuple[dict, dict]:
    """tokenizer_config.json (with the legacy special_tokens_map.json) updated by the Transformer
    module's tokenizer arguments, and those arguments; NotReplicated for a set-up not read here."""
    if transformer_config.get("tokenizer_name_or_path"):
        raise NotReplicated("the tokenizer comes from another directory (tokenizer_name_or_path)")
    args = dict(transformer_config.get("processor_kwargs") or transformer_config.get("tokenizer_args") or {})
    unknown = sorted(set(args) - TOKENIZER_ARGS)
    if unknown:
        raise NotReplicated(f"tokenizer arguments {unknown} in the Transformer module's config")
    settings = read_json(tokenizer_dir / "tokenizer_config.json", {}) or {}
    if "auto_map" in settings:
        raise NotReplicated("a custom tokenizer class (auto_map)")
    if "added_tokens_decoder" not in settings:  # transformers' legacy special-tokens file
        for key, value in (read_json(tokenizer_dir / "special_tokens_map.json", {}) or {}).items():
            settings.setdefault(key, value)
    settings.update(args)
    return settings, args


def load_tokenizer(tokenizer_dir: Path, transformer_config: dict, model_config: dict) -> TokenizerSetup:
    """The model's tokenizer.json through ``tokenizers``, changed as transformers 5 changes it when it
    loads the model's tokenizer class (BERT's exactly, as BertTokenizer builds it: :func:`_bert_backend`;
    any other class from the file, with what that class (:func:`_class_components`,
    :func:`_post_processor`) and TokenizersBackend (:func:`_added_tokens`) change on top), plus
    sentence-transformers' changes (``do_lower_case``, ``max_seq_length``). NotReplicated for what
    this does not read; the result is proven against transformers' own tokenizer by
    ``tokenizer_proof.py`` before it is served."""
    settings, args = _settings(tokenizer_dir, transformer_config)
    model_type = model_config.get("model_type")
    class_name = _class_name(settings, model_config)
    if class_name is None:
        raise NotReplicated(f"no tokenizer class named for a {model_type} model")
    bert = class_name in BERT_CLASSES
    file = tokenizer_dir / "tokenizer.json"
    if not file.is_file():
        raise NotReplicated(f"no tokenizer.json in {tokenizer_dir}")
    raw = read_json(file)
    held = (raw.get("model") or {}).get("type")  # legacy files (DistilBERT's) name none
    if class_name in CLASS_MODELS and held not in (None, CLASS_MODELS[class_name]):
        raise NotReplicated(f"tokenizer class {class_name} (model type {model_type}) builds a "
                            f"{CLASS_MODELS[class_name]} model; tokenizer.json holds {held}")
    defaults = CLASS_DEFAULTS.get(class_name, {})
    tokens = {key: _content(settings[key]) if key in settings else defaults.get(key) for key in SPECIAL_TOKENS}
    if bert:
        tokenizer = _bert_backend(file, raw, settings, tokens)
    else:
        tokenizer = _from_file(file)
        _class_components(tokenizer, class_name, raw, settings)
    _added_tokens(tokenizer, settings, tokens, strict=bert)
    if class_name == "Qwen2Tokenizer":  # Qwen2Tokenizer.__init__: every special token added as special
        tokenizer.add_special_tokens([AddedToken(t, special=True) for t in tokens.values() if t])
    if bert:
        cls, sep = tokens["cls_token"] or "[CLS]", tokens["sep_token"] or "[SEP]"
        cls_id, sep_id = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, 2 if cls_id is None else cls_id), (sep, 3 if sep_id is None else sep_id)])
    else:
        _post_processor(tokenizer, class_name, settings, tokens)
    tokenizer.encode_special_tokens = bool(settings.get("split_special_tokens", False))
    tokenizer.no_truncation()  # transformers sets both per call; serving truncates ids itself
    tokenizer.no_padding()
    if transformer_config.get("do_lower_case"):
        # sentence-transformers' Transformer lowercases first unless a Lowercase normalizer is there.
        current = tokenizer.normalizer
        parts = list(current) if isinstance(current, normalizers.Sequence) else [] if current is None else [current]
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
    names = settings.get("model_input_names") or CLASS_INPUT_NAMES.get(class_name)
    uses_type_ids = "token_type_ids" in names if names else BERT_CLASSES.get(class_name, False)
    return TokenizerSetup(tokenizer=FileTokenizer(tokenizer), pad_id=0 if pad_id is None else pad_id,
                          vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                          model_max_length=max_length, uses_token_type_ids=uses_type_ids,
                          class_name=class_name)


def _from_file(file: Path):
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except BaseException as why:  # a Rust panic in tokenizers is pyo3's PanicException, a BaseException
        if not isinstance(why, Exception) and type(why).__name__ != "PanicException":
            raise
        raise NotReplicated(f"tokenizers cannot read {file}: {why}") from None


def _bert_backend(file: Path, raw: dict, settings: dict, tokens: dict):
    """BertTokenizer.__init__: WordPiece over the file's vocabulary (checked to be set up as it sets
    it up), normalizer and pre-tokenizer from its arguments (legacy files hold other ones)."""
    model = raw.get("model") or {}
    if model.get("type", "WordPiece") != "WordPiece":
        raise NotReplicated(f"a {model.get('type')} model in tokenizer.json for a BERT tokenizer")
    unk = tokens["unk_token"] or "[UNK]"
    if (model.get("unk_token", unk), model.get("continuing_subword_prefix", "##"),
            model.get("max_input_chars_per_word", 100)) != (unk, "##", 100):
        raise NotReplicated("tokenizer.json's WordPiece settings differ from BertTokenizer's "
                            f"(unk {unk!r}, prefix '##', 100 characters a word)")
    tokenizer = _from_file(file)
    tokenizer.normalizer = _bert_normalizer(settings)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def _bert_normalizer(settings: dict):
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))


def _precompiled(raw: dict):
    """tokenizer.json's SentencePiece Precompiled normalizer, which transformers passes on to the
    SentencePiece-style classes (the rest of the file's normalizer they drop)."""
    found = raw.get("normalizer") or {}
    parts = found.get("normalizers", []) if found.get("type") == "Sequence" else [found]
    for part in parts:
        if part.get("type") == "Precompiled" and part.get("precompiled_charsmap"):
            return normalizers.Precompiled(base64.b64decode(part["precompiled_charsmap"]))
    return None


def _class_components(tokenizer, class_name: str | None, raw: dict, settings: dict) -> None:
    """What the classes whose ``__init__`` rebuild the backend set in place of tokenizer.json's
    normalizer and pre-tokenizer (transformers 5 keeps the file's vocabulary and, until the class
    replaces it, post-processor). Classes not listed keep the file's (TokenizersBackend,
    PreTrainedTokenizerFast and other classes without their own ``__init__`` load the file as is);
    the proof catches a class that rebuilds more."""
    if class_name == "RobertaTokenizer":
        tokenizer.normalizer = None
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space")))
    elif class_name == "XLMRobertaTokenizer":
        tokenizer.normalizer = _precompiled(raw)
        scheme = "always" if settings.get("add_prefix_space", True) else "never"
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    elif class_name == "MPNetTokenizer":
        tokenizer.normalizer = _bert_normalizer(settings)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    elif class_name == "Qwen2Tokenizer":
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space")), use_regex=False)])


def _added_tokens(tokenizer, settings: dict, tokens: dict, strict: bool) -> None:
    """tokenizer_config.json's ``added_tokens_decoder`` and the named special tokens, as
    TokenizersBackend adds those the backend lacks (``strict``: BERT's exact set-up refuses a file
    whose added tokens disagree with its config instead)."""
    added = {token.content: token for token in tokenizer.get_added_tokens_decoder().values()}
    listed = settings.get("added_tokens_decoder") or {}
    for index, spec in sorted(listed.items(), key=lambda item: int(item[0])):
        existing = added.get(spec.get("content"))
        if existing is None and not strict and tokenizer.token_to_id(spec["content"]) in (None, int(index)):
            tokenizer.add_tokens([AddedToken(spec["content"], **{
                prop: spec[prop] for prop in ("lstrip", "rstrip", "single_word", "normalized", "special")
                if prop in spec})])
            continue
        if existing is None or tokenizer.token_to_id(existing.content) != int(index) or any(
                getattr(existing, prop) != spec.get(prop, getattr(existing, prop))
                for prop in ("lstrip", "rstrip", "single_word", "normalized", "special")):
            raise NotReplicated(f"tokenizer_config.json's added token {spec} differs from tokenizer.json's")
    if strict and listed:  # then transformers reads no added token from tokenizer.json
        contents = {spec.get("content") for spec in listed.values()}
        if set(added) - contents:
            raise NotReplicated(f"tokenizer.json adds tokens tokenizer_config.json does not: "
                                f"{sorted(set(added) - contents)}")
    present = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    extras = [_content(t) for key in ("additional_special_tokens", "extra_special_tokens")
              if isinstance(settings.get(key), list) for t in settings[key]]
    missing = list(dict.fromkeys(t for t in [*tokens.values(), *extras] if t and t not in present))
    if missing:  # transformers adds the named special tokens the backend does not have yet
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])


def _post_processor(tokenizer, class_name: str | None, settings: dict, tokens: dict) -> None:
    """The post-processor transformers ends with: the class's own for classes that set one after
    TokenizersBackend.__init__, else tokenizer.json's unless tokenizer_config.json names
    ``add_bos_token``/``add_eos_token`` or the file has none (then ``update_post_processor``'s)."""
    def token_id(name: str) -> tuple[str, int]:
        token = tokens[name]
        found = tokenizer.token_to_id(token) if token else None
        if found is None:
            raise NotReplicated(f"the {name} {token!r} of {class_name} is not in the vocabulary")
        return token, found

    if class_name in ("RobertaTokenizer", "MPNetTokenizer"):
        roberta = class_name == "RobertaTokenizer"
        tokenizer.post_processor = processors.RobertaProcessing(
            token_id("sep_token"), token_id("cls_token"),
            trim_offsets=bool(settings.get("trim_offsets", True)) if roberta else True,
            add_prefix_space=bool(settings.get("add_prefix_space")) if roberta else False)
    elif class_name == "XLMRobertaTokenizer":
        (bos, bos_id), (eos, eos_id) = token_id("bos_token"), token_id("eos_token")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
            special_tokens=[(bos, bos_id), (eos, eos_id)])
    elif "add_bos_token" in settings or "add_eos_token" in settings or tokenizer.post_processor is None:
        add_bos = bool(settings.get("add_bos_token")) and tokens["bos_token"] is not None
        add_eos = bool(settings.get("add_eos_token")) and tokens["eos_token"] is not None
        bos, eos = tokens["bos_token"], tokens["eos_token"]
        single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
        pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
        special = ([token_id("bos_token")] if add_bos else []) + ([token_id("eos_token")] if add_eos else [])
        tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Find the ids a tokenizer puts before and after a single sequence."""
    plain = tokenizer.content_ids(["a"])[0]
    full = tokenizer.wrapped_ids("a")
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


