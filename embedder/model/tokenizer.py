"""Tokenizers: what serving needs of one (:class:`Tokenizer`), transformers' behind it
(:class:`TransformersTokenizer`), and the model's own ``tokenizer.json`` run through the
``tokenizers`` package, set up as transformers' tokenizer class and sentence-transformers'
Transformer module set it up (:func:`load_tokenizer`: no torch or transformers in the process).

:func:`load_tokenizer` raises NotReplicated for a set-up it does not reproduce exactly (a tokenizer
class other than BERT's, a tokenizer from elsewhere...); the model is then loaded with
sentence-transformers instead.
"""

from __future__ import annotations

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
    if transformer_config.get("tokenizer_name_or_path"):
        raise NotReplicated("the tokenizer comes from another directory (tokenizer_name_or_path)")
    args = dict(transformer_config.get("processor_kwargs") or transformer_config.get("tokenizer_args") or {})
    unknown = sorted(set(args) - TOKENIZER_ARGS)
    if unknown:
        raise NotReplicated(f"tokenizer arguments {unknown} in the Transformer module's config")
    settings = read_json(tokenizer_dir / "tokenizer_config.json", {})
    if "auto_map" in settings:
        raise NotReplicated("a custom tokenizer class (auto_map)")
    if "added_tokens_decoder" not in settings:  # transformers' legacy special-tokens file
        for key, value in (read_json(tokenizer_dir / "special_tokens_map.json", {}) or {}).items():
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
    raw = read_json(file)
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
    tokenizer = tokenizers.Tokenizer.from_file(str(file))
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


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Find the ids a tokenizer puts before and after a single sequence."""
    plain = tokenizer.content_ids(["a"])[0]
    full = tokenizer.wrapped_ids("a")
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


