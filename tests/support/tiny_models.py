"""Tiny random-weight sentence-transformers models of common architectures, built at test time.

``build(kind, directory, **options)`` writes a model directory with ``SentenceTransformer.save``:
a transformers model made from a tiny config (hidden 32, 2 layers, seeded random weights) and a
tokenizer trained with the ``tokenizers`` package on ``data/corpus.txt`` (origin in its README),
wrapped in the transformers tokenizer class the architecture's hub models use. Nothing comes from
a model hub. ``Cache`` builds each (kind, options) once per pytest session.

Kinds (:data:`KINDS`): BERT uncased and cased (WordPiece), DistilBERT (WordPiece), RoBERTa
(byte-level BPE), XLM-RoBERTa (Unigram, SentencePiece-style), MPNet (WordPiece), ModernBERT
(byte-level BPE in a PreTrainedTokenizerFast, as its hub models) and Qwen3 (byte-level BPE, EOS
appended and left padding as Qwen3-Embedding, last-token pooling).

``build_reranker(kind, directory, **options)`` writes a cross-encoder (a sequence-classification
model of the same tiny configs, :data:`RERANKER_KINDS`) with ``CrossEncoder.save``, or as the plain
transformers directory older hub cross-encoders are; ``Cache.get_reranker`` builds each once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
KINDS = ("bert-uncased", "bert-cased", "distilbert", "roberta", "xlm-roberta", "mpnet", "modernbert", "qwen3")
#: The tokenizer model each kind's tokenizer.json holds.
TOKENIZER_KIND = {"bert-uncased": "WordPiece", "bert-cased": "WordPiece", "distilbert": "WordPiece",
                  "roberta": "BPE (byte-level)", "xlm-roberta": "Unigram", "mpnet": "WordPiece",
                  "modernbert": "BPE (byte-level)", "qwen3": "BPE (byte-level)"}
#: Each kind's pooling unless told otherwise (Qwen3-Embedding pools the last token).
DEFAULT_POOLING = {kind: "mean" for kind in KINDS} | {"qwen3": "lasttoken"}
VOCAB = 800
#: Rerankers: BERT uncased (as cross-encoder/ms-marco-MiniLM-L6-v2), XLM-RoBERTa (as
#: BAAI/bge-reranker-base), RoBERTa and ModernBERT.
RERANKER_KINDS = ("bert-uncased", "xlm-roberta", "roberta", "modernbert")
#: Rerankers' initializer_range: at transformers' 0.02 a tiny model's logits are ~1e-5 from 0 (every
#: Sigmoid score 0.5000, so parity at 1e-5 would prove nothing); at 0.3 they spread over about +-2.
RERANKER_INIT_RANGE = 0.3
HIDDEN = 32
POSITIONS = 128
QWEN_EOS = "<|endoftext|>"


def _lines() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").splitlines()


def _wordpiece(lowercase: bool, specials: list[str], unk: str) -> dict[str, int]:
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None if lowercase else False,
                                     unk_token=unk)
    trainer.train_from_iterator(_lines(), vocab_size=VOCAB, special_tokens=specials, show_progress=False)
    return trainer.get_vocab()


def _byte_bpe(specials: list[str]) -> tuple[dict[str, int], list[str]]:
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(_lines(), vocab_size=VOCAB, special_tokens=specials, show_progress=False)
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _tokenizer(kind: str):
    """The kind's transformers tokenizer, trained on the bundled corpus."""
    import transformers as tf

    if kind in ("bert-uncased", "bert-cased", "distilbert"):
        lower = kind != "bert-cased"
        vocab = _wordpiece(lower, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]")
        cls = tf.DistilBertTokenizerFast if kind == "distilbert" else tf.BertTokenizerFast
        return cls(vocab=vocab, do_lower_case=lower)
    if kind == "mpnet":
        vocab = _wordpiece(True, ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"], "[UNK]")
        return tf.MPNetTokenizerFast(vocab=vocab, do_lower_case=True)
    if kind == "roberta":
        vocab, merges = _byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return tf.RobertaTokenizerFast(vocab=vocab, merges=merges)
    if kind == "xlm-roberta":
        from tokenizers import SentencePieceUnigramTokenizer

        trainer = SentencePieceUnigramTokenizer()
        trainer.train_from_iterator(_lines(), vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                    unk_token="<unk>", show_progress=False)
        pieces = [tuple(p) for p in json.loads(trainer._tokenizer.to_str())["model"]["vocab"]]
        return tf.XLMRobertaTokenizerFast(vocab=pieces + [("<mask>", 0.0)])
    if kind == "modernbert":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
        tok.train_from_iterator(_lines(), trainers.BpeTrainer(
            vocab_size=VOCAB, special_tokens=specials, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        return tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
            pad_token="[PAD]", mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"])
    if kind == "qwen3":
        vocab, merges = _byte_bpe([QWEN_EOS, "<|im_start|>", "<|im_end|>"])
        tok = tf.Qwen2TokenizerFast(vocab=vocab, merges=merges, padding_side="left")
        return tok
    raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")


def _config(kind: str, tokenizer):
    import transformers as tf

    vocab = len(tokenizer)
    common = {"vocab_size": vocab, "hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64}
    if kind in ("bert-uncased", "bert-cased"):
        return tf.BertConfig(**common, max_position_embeddings=POSITIONS, pad_token_id=tokenizer.pad_token_id)
    if kind == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=64,
                                   max_position_embeddings=POSITIONS, pad_token_id=tokenizer.pad_token_id)
    if kind in ("roberta", "xlm-roberta"):  # positions start after padding_idx (1): 2 more
        cls = tf.RobertaConfig if kind == "roberta" else tf.XLMRobertaConfig
        return cls(**common, max_position_embeddings=POSITIONS + 2, pad_token_id=1, bos_token_id=0,
                   eos_token_id=2, type_vocab_size=1)
    if kind == "mpnet":
        return tf.MPNetConfig(**common, max_position_embeddings=POSITIONS + 2, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2)
    if kind == "modernbert":
        ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
               (("pad_token_id", "[PAD]"), ("cls_token_id", "[CLS]"), ("sep_token_id", "[SEP]"),
                ("bos_token_id", "[CLS]"), ("eos_token_id", "[SEP]"))}
        return tf.ModernBertConfig(**common, max_position_embeddings=POSITIONS, global_attn_every_n_layers=2,
                                   local_attention=16, **ids)
    if kind == "qwen3":
        eos = tokenizer.convert_tokens_to_ids(QWEN_EOS)
        return tf.Qwen3Config(**common, num_key_value_heads=2, head_dim=8, max_position_embeddings=POSITIONS,
                              bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")


def build(kind: str, directory: str | Path, *, pooling: str | tuple | None = None, dense: int | None = None,
          normalize: bool = True, prompts: dict | None = None, default_prompt_name: str | None = None,
          max_seq_length: int | None = None, seed: int = 0) -> Path:
    """A sentence-transformers model of ``kind`` saved in ``directory`` (created; must not exist or
    be empty): Transformer -> Pooling(``pooling``, the kind's default if None) (-> Dense(``dense``
    outputs, tanh)) (-> Normalize if ``normalize``), with ``prompts`` and ``default_prompt_name``
    in config_sentence_transformers.json and ``max_seq_length`` in sentence_bert_config.json (left
    unset when None, so sentence-transformers takes the tokenizer's and model's limits)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = _tokenizer(kind)
    if kind == "qwen3":  # as Qwen3-Embedding's tokenizer.json: EOS after every text
        from tokenizers import processors

        eos_id = tokenizer.convert_tokens_to_ids(QWEN_EOS)
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {QWEN_EOS}:0", pair=f"$A:0 {QWEN_EOS}:0 $B:1 {QWEN_EOS}:1",
            special_tokens=[(QWEN_EOS, eos_id)])
    config = _config(kind, tokenizer)
    model = AutoModel.from_config(config, attn_implementation="eager")
    model.eval()
    with tempfile.TemporaryDirectory(prefix=f"tiny-{kind}-") as raw:
        model.save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        transformer = Transformer(raw, max_seq_length=max_seq_length)
        modules = [transformer, Pooling(HIDDEN, pooling_mode=pooling or DEFAULT_POOLING[kind])]
        if dense:
            modules.append(Dense(modules[-1].get_embedding_dimension(), dense))
        if normalize:
            modules.append(Normalize())
        st = SentenceTransformer(modules=modules, device="cpu", prompts=prompts,
                                 default_prompt_name=default_prompt_name)
        directory.mkdir(parents=True, exist_ok=True)
        st.save(str(directory))
    if max_seq_length is None:  # save writes the tokenizer's limit; leave it unset as many hub models do
        config_file = directory / "sentence_bert_config.json"
        settings = json.loads(config_file.read_text())
        settings.pop("max_seq_length", None)
        config_file.write_text(json.dumps(settings, indent=2))
    return directory


def build_reranker(kind: str, directory: str | Path, *, activation: str | None = None, num_labels: int = 1,
                   style: str = "st", seed: int = 0, max_length: int | None = None) -> Path:
    """A cross-encoder of ``kind`` (:data:`RERANKER_KINDS`, or any of :data:`KINDS` with a
    sequence-classification head) with seeded random weights, saved in ``directory`` (created):
    ``style`` "st" by ``CrossEncoder.save`` (modules.json, config_sentence_transformers.json), "hf" as
    a plain transformers directory. ``activation`` (a torch.nn class name, e.g. "Identity") is saved
    as the activation CrossEncoder.predict applies (config.json's ``sentence_transformers`` for "hf");
    None leaves sentence-transformers' default (Sigmoid for one label). ``max_length`` is the
    tokenizer's model_max_length (unset: the model's positions, as sentence-transformers caps it)."""
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import fullname
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if style not in ("st", "hf"):
        raise ValueError(f"unknown style {style!r}; 'st' or 'hf'")
    hf_logging.disable_progress_bar()
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = _tokenizer(kind)
    if max_length is not None:
        tokenizer.model_max_length = max_length
    config = _config(kind, tokenizer)
    config.num_labels = num_labels
    config.initializer_range = RERANKER_INIT_RANGE
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    model.eval()
    activation_fn = getattr(torch.nn, activation)() if activation else None
    if style == "hf":
        if activation_fn is not None:
            model.config.sentence_transformers = {"activation_fn": fullname(activation_fn)}
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory
    with tempfile.TemporaryDirectory(prefix=f"tiny-reranker-{kind}-") as raw:
        model.save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        cross_encoder = CrossEncoder(raw, device="cpu", activation_fn=activation_fn)
        directory.mkdir(parents=True, exist_ok=True)
        cross_encoder.save(str(directory))
    return directory


def options_key(kind: str, options: dict) -> str:
    return kind + "-" + json.dumps(options, sort_keys=True)


class Cache:
    """Models built once per session, keyed by kind and options, under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.built: dict[str, Path] = {}

    def get(self, kind: str, **options) -> Path:
        key = options_key(kind, options)
        if key not in self.built:
            target = self.root / f"{kind}-{len(self.built)}"
            shutil.rmtree(target, ignore_errors=True)
            self.built[key] = build(kind, target, **options)
        return self.built[key]

    def get_reranker(self, kind: str, **options) -> Path:
        """``build_reranker(kind, ..., **options)``, built once per session."""
        key = "reranker:" + options_key(kind, options)
        if key not in self.built:
            target = self.root / f"reranker-{kind}-{len(self.built)}"
            shutil.rmtree(target, ignore_errors=True)
            self.built[key] = build_reranker(kind, target, **options)
        return self.built[key]


#: Prompts of the parity models (config_sentence_transformers.json); Qwen3's as Qwen3-Embedding's.
PROMPTS = {"query": "query: ", "passage": "passage: "}
QWEN_PROMPTS = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: ", "document": ""}
#: One model of each kind for the parity tests, the options spread over the kinds: every pooling
#: mode, a Dense layer, Normalize absent, max_seq_length set or left unset (RoBERTa and XLM-R: then
#: sentence-transformers' own limit is max_position_embeddings, 2 past what the model takes).
PARITY_CASES = {
    "bert-uncased": {"pooling": "cls", "max_seq_length": 32, "prompts": PROMPTS},
    "bert-cased": {"pooling": "max", "normalize": False, "prompts": PROMPTS},
    "distilbert": {"pooling": "mean_sqrt_len_tokens", "dense": 16, "prompts": PROMPTS},
    "roberta": {"pooling": "weightedmean", "prompts": PROMPTS},
    "xlm-roberta": {"pooling": "mean", "prompts": PROMPTS},
    "mpnet": {"pooling": "mean", "max_seq_length": 64, "dense": 24, "normalize": False, "prompts": PROMPTS},
    "modernbert": {"pooling": ["cls", "mean"], "prompts": PROMPTS},
    "qwen3": {"pooling": "lasttoken", "max_seq_length": 48, "prompts": QWEN_PROMPTS},
}


def token_limit(kind: str) -> int:
    """The token limit a parity model is served at: its max_seq_length, else the positions the
    model takes (``POSITIONS``; sentence-transformers' own is 2 more for RoBERTa and XLM-R)."""
    return PARITY_CASES[kind].get("max_seq_length") or POSITIONS


#: Texts the parity tests send: CJK, emoji, accents, markup, leading and trailing spaces, and one
#: longer than every parity model's limit.
TEXTS = ["A man is playing a guitar.", "東京は日本の首都です。 我喜欢学习新的语言。",
         "I love pizza 🍕 and coffee ☕ 👨‍👩‍👧‍👦", "   leading and trailing spaces   ",
         "Ça va très bien, Zürich café crème brûlée",
         "<p>Hello <b>world</b> &amp; friends</p>", "short",
         " ".join(["A group of men play soccer on the beach."] * 40)]
