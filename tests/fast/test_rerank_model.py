"""Rerankers in the model layer (embedder/model/rerank.py): which directories are rerankers, the
activation CrossEncoder.predict applies (resolved from the files as sentence-transformers resolves
it, held to sentence-transformers itself), how pairs are cut (the query never), the scores in NumPy,
and what is refused at start.

Fast tier: tiny rerankers (tests/support/tiny_models.py) loaded in process with sentence-transformers;
the torch-free loader, its proof and the backends are tests/integration/test_reranker_backends.py's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tiny_models as tiny
from embedder.model import rerank
from embedder.model import tokenizer_proof as tp
from embedder.model.errors import QueryTooLong, TooManyTokens, UnsupportedModel
from embedder.model.load import load_model
from embedder.model.st_loader import load_cross_encoder
from embedder.model.tokenizer import TransformersTokenizer, load_tokenizer

SIGMOID, IDENTITY, TANH = (f"torch.nn.modules.{m}" for m in ("activation.Sigmoid", "linear.Identity",
                                                              "activation.Tanh"))
#: The limit of the truncation tests' model: short, so that a sentence crosses it.
LIMIT = 24


def write(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def edit(path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    write(path, data)


def encode(hf, query: str, document: str, **options) -> dict:
    """The pair as CrossEncoder's preprocess encodes it: in a batch (a lone ``hf(query, "")`` drops
    an empty document, where a batch keeps its separator)."""
    return {key: values[0] for key, values in hf([query], [document], **options).items()}


def copy_of(source, target):
    """The model directory with its JSON files copied (to edit), the rest linked."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.suffix == ".json":
            shutil.copy(entry, target / entry.name)
        else:
            (target / entry.name).symlink_to(entry)
    return target


# -- which directories are rerankers ----------------------------------------------------------------
@pytest.mark.parametrize(("files", "kind"), [
    ({"modules.json": [], "config_sentence_transformers.json": {"model_type": "CrossEncoder"}}, "reranker"),
    ({"config_sentence_transformers.json": {"model_type": "CrossEncoder"}}, "reranker"),
    ({"config.json": {"architectures": ["BertForSequenceClassification"]}}, "reranker"),
    ({"config.json": {"architectures": ["XLMRobertaForSequenceClassification"]}}, "reranker"),
    ({"modules.json": [], "config.json": {"architectures": ["BertForSequenceClassification"]}}, "embedding"),
    ({"modules.json": [], "config_sentence_transformers.json": {"model_type": "SentenceTransformer"}}, "embedding"),
    ({"modules.json": [], "config_sentence_transformers.json": {}}, "embedding"),
    ({"config.json": {"architectures": ["BertModel"]}}, "embedding"),
    ({"config.json": {"architectures": ["Qwen3ForCausalLM"]}}, "embedding"),
    ({"config.json": {"model_type": "bert"}}, "embedding"),
])
def test_model_kind_is_read_from_the_files(tmp_path, files, kind):
    for name, data in files.items():
        write(tmp_path / name, data)
    assert rerank.model_kind(tmp_path) == kind


def test_the_tiny_rerankers_are_rerankers_and_the_embedding_models_are_not(tiny_model_cache):
    assert rerank.model_kind(tiny_model_cache.get_reranker("bert-uncased")) == "reranker"
    assert rerank.model_kind(tiny_model_cache.get_reranker("bert-uncased", style="hf")) == "reranker"
    assert rerank.model_kind(tiny_model_cache.get("bert-uncased")) == "embedding"


# -- the activation ---------------------------------------------------------------------------------
#: (style, config_sentence_transformers.json's activation_fn, config.json's additions, the activation).
#: "custom.Scale" is a class outside torch: sentence-transformers skips it without trust_remote_code.
ACTIVATION_TABLE = [
    ("st", None, {}, "Sigmoid"),  # one label's default
    ("st", IDENTITY, {}, "Identity"),
    ("st", TANH, {"sentence_transformers": {"activation_fn": IDENTITY}}, "Tanh"),  # its own config first
    ("st", "custom.Scale", {"sentence_transformers": {"activation_fn": TANH}}, "Tanh"),  # untrusted: next
    ("st", "custom.Scale", {}, "Sigmoid"),  # untrusted, nothing else: the default
    ("hf", None, {}, "Sigmoid"),
    ("hf", None, {"sentence_transformers": {"activation_fn": IDENTITY}}, "Identity"),
    ("hf", None, {"sbert_ce_default_activation_function": TANH}, "Tanh"),  # before sentence-transformers 4
    ("hf", None, {"sentence_transformers": {"activation_fn": None},  # named (None): the old key unread
                  "sbert_ce_default_activation_function": IDENTITY}, "Sigmoid"),
    ("hf", None, {"sentence_transformers": {"activation_fn": "custom.Scale"},
                  "sbert_ce_default_activation_function": IDENTITY}, "Sigmoid"),
    ("hf", IDENTITY, {}, "Sigmoid"),  # its config file is read only with modules.json
]


@pytest.fixture(scope="module")
def bases(tiny_model_cache):
    """The two directory styles of one tiny reranker, no activation saved."""
    return {style: tiny_model_cache.get_reranker("bert-uncased", style=style) for style in ("st", "hf")}


@pytest.mark.parametrize(("style", "own", "config", "expected"), ACTIVATION_TABLE)
def test_the_activation_is_resolved_as_sentence_transformers_resolves_it(bases, tmp_path, style, own, config,
                                                                         expected):
    """The files' rule (rerank.activation_of) and sentence-transformers' CrossEncoder agree on each
    row, and the torch-free reading (read_reranker) is what the sentence-transformers loader serves."""
    from sentence_transformers import CrossEncoder

    path = copy_of(bases[style], tmp_path / "model")
    edit(path / "config.json", lambda c: c.update(config))
    st_file = path / "config_sentence_transformers.json"
    if style == "st":
        edit(st_file, lambda c: c.update(activation_fn=own))
    elif own is not None:
        write(st_file, {"model_type": "CrossEncoder", "activation_fn": own})
    assert rerank.read_reranker(path, "m").activation == expected
    assert type(CrossEncoder(str(path), device="cpu").activation_fn).__name__ == expected
    assert load_cross_encoder(path, "m").activation == expected


def test_the_default_activation_of_several_labels_is_identity_and_code_outside_torch_is_refused():
    assert rerank.activation_of({}, {}, False, "m", num_labels=3) == "Identity"
    assert rerank.activation_of({"activation_fn": "custom.Scale"}, {}, False, "m") == "Sigmoid"
    with pytest.raises(UnsupportedModel, match=r"m's CrossEncoder applies custom.Scale to its scores; rerank "
                                               r"applies the torch.nn activations Identity, Tanh"):
        rerank.activation_of({"activation_fn": "custom.Scale"}, {}, True, "m")  # trusted: it would run
    with pytest.raises(UnsupportedModel, match="torch.nn.modules.activation.Softmax"):
        rerank.activation_of({"activation_fn": "torch.nn.modules.activation.Softmax"}, {}, False, "m")


@pytest.mark.parametrize("name", ["Sigmoid", "Identity", "Tanh", "ReLU", "GELU"])
def test_activate_is_torchs_activation(name):
    import torch

    logits = np.linspace(-9, 9, 37, dtype=np.float32)
    want = getattr(torch.nn, name)()(torch.from_numpy(logits)).numpy()
    for shape in ((37, 1), (37,)):
        got = rerank.activate(name, logits.reshape(shape))
        assert got.dtype == np.float32 and got.shape == (37,)
        assert np.abs(got - want).max() < 1e-6
    with pytest.raises(ValueError, match="expected"):
        rerank.activate(name, np.zeros((3, 2), dtype=np.float32))


# -- pairs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short(tiny_model_cache):
    """A BERT reranker read LIMIT tokens a pair, and its CrossEncoder's tokenizer."""
    path = tiny_model_cache.get_reranker("bert-uncased", max_length=LIMIT)
    model = load_cross_encoder(path, "short")
    assert model.max_input_tokens == LIMIT
    return model, model.st_model.tokenizer


def test_a_short_query_pair_is_the_cross_encoders_encoding(short):
    """Under the limit, and cut (the query under half the room): CrossEncoder's tokenizer's ids and
    type ids exactly, "longest_first" and "only_second" alike."""
    model, hf = short
    query = "who plays the guitar?"
    documents = ["A man is playing a guitar.", "東京 🍕 café", " ".join(["soccer on the beach"] * 10), ""]
    pairs = model.pair_ids(query, documents, truncate=True)
    for document, pair in zip(documents, pairs):
        for strategy in ("longest_first", "only_second"):
            want = encode(hf, query, document, truncation=strategy, max_length=LIMIT)
            assert (list(pair), pair.type_ids) == (want["input_ids"], want["token_type_ids"]), (strategy, document)
    assert len(pairs[2]) == LIMIT and max(len(p) for p in pairs[:2]) < LIMIT


def test_the_query_is_never_cut(short):
    """A query over half the room: CrossEncoder ("longest_first") would cut it; serving cuts only the
    document ("only_second")."""
    model, hf = short
    query = "a man is playing a guitar on the beach at night"
    document = " ".join(["a group of men play soccer"] * 5)
    (pair,) = model.pair_ids(query, [document], truncate=True)
    assert list(pair) == encode(hf, query, document, truncation="only_second", max_length=LIMIT)["input_ids"]
    assert list(pair) != encode(hf, query, document, truncation="longest_first", max_length=LIMIT)["input_ids"]
    query_ids = hf(query, add_special_tokens=False)["input_ids"]
    assert list(pair)[1:1 + len(query_ids)] == query_ids


def test_max_tokens_per_doc_cuts_each_document_first(short):
    model, hf = short
    query, documents = "guitar", ["a man is playing a guitar", "a", " ".join(["soccer"] * 40)]
    pairs = model.pair_ids(query, documents, truncate=True, max_tokens_per_doc=3)
    fixed = len(encode(hf, query, "")["input_ids"])
    for document, pair in zip(documents, pairs):
        want = encode(hf, query, document, truncation="only_second", max_length=fixed + 3)
        assert list(pair) == want["input_ids"]
    assert [len(p) - fixed for p in pairs] == [3, 1, 3]
    # max_tokens_per_doc over the room: the limit cuts
    (pair,) = model.pair_ids(query, documents[2:], truncate=True, max_tokens_per_doc=1000)
    assert len(pair) == LIMIT


def test_a_document_over_the_room_is_refused_without_truncation(short):
    model, hf = short
    documents = ["fits", " ".join(["soccer"] * 40), " ".join(["beach"] * 40)]
    with pytest.raises(TooManyTokens) as info:
        model.pair_ids("guitar", documents, truncate=False)
    assert (info.value.index, info.value.tokens, info.value.limit) == \
        (1, len(encode(hf, "guitar", documents[1])["input_ids"]), LIMIT)
    # cut to max_tokens_per_doc first, it fits
    assert len(model.pair_ids("guitar", documents, truncate=False, max_tokens_per_doc=5)) == 3


def test_documents_are_tokenized_a_chunk_at_a_time_with_the_same_pairs(short, monkeypatch):
    """As embedding inputs: the documents a few at a time, each cut before the next are read (1,000
    documents of 20k characters never held whole); the same pairs, and a refusal names its index."""
    from embedder.model import loaded

    model, _ = short
    documents = ["a man is playing a guitar", " ".join(["soccer"] * 40), "東京 🍕 café", "", "a b c " * 30]
    whole = model.pair_ids("guitar", documents, truncate=True)
    monkeypatch.setattr(loaded, "TOKENIZE_CHUNK_CHARS", 30)
    assert len(list(loaded.chunks(documents))) > 2
    assert [(list(p), p.type_ids) for p in model.pair_ids("guitar", documents, truncate=True)] == \
        [(list(p), p.type_ids) for p in whole]
    with pytest.raises(TooManyTokens) as info:
        model.pair_ids("guitar", ["fits", "fits", *documents], truncate=False)
    assert info.value.index == 3


def test_a_query_that_leaves_no_room_is_refused(short):
    model, hf = short
    words = ["guitar"] * (LIMIT - 4)  # 3 special tokens: room for exactly one document token
    assert len(model.pair_ids(" ".join(words), ["a b c"], truncate=True)[0]) == LIMIT
    query = " ".join(words + ["guitar"])
    with pytest.raises(QueryTooLong) as info:
        model.pair_ids(query, ["a"], truncate=True)
    assert (info.value.tokens, info.value.limit) == (len(encode(hf, query, "")["input_ids"]), LIMIT)
    assert str(info.value) == (f"the query takes {LIMIT} tokens with the pair's special tokens, leaving no room "
                               f"for a document within the model's {LIMIT}")


def test_a_model_without_token_type_ids_has_none(tiny_model_cache):
    model = load_cross_encoder(tiny_model_cache.get_reranker("xlm-roberta"), "x")
    (pair,) = model.pair_ids("query", ["document"], truncate=True)
    assert pair.type_ids is None and not model.uses_token_type_ids
    assert list(pair) == model.st_model.tokenizer("query", "document")["input_ids"]


@pytest.mark.parametrize("kind", tiny.RERANKER_KINDS)
def test_the_files_tokenizer_has_transformers_pair_template(tiny_model_cache, kind):
    """The template from tokenizer.json alone (what the onnx backend serves, once proven:
    tests/integration/test_reranker_backends.py) is the one from transformers' tokenizer."""
    from transformers import AutoTokenizer

    path = tiny_model_cache.get_reranker(kind)
    reranker = rerank.read_reranker(path, kind)
    files = load_tokenizer(reranker.transformer_dir, reranker.transformer_config, reranker.model_config)
    template = rerank.pair_template(files.tokenizer)
    assert template is not None
    assert template == rerank.pair_template(TransformersTokenizer(AutoTokenizer.from_pretrained(str(path))))


def test_a_pair_proof_is_not_an_old_proof(bases):
    """A reranker's tokenizer proof (pairs included) has a key of its own: a proof of the texts alone
    does not answer for it."""
    assert tp.proof_key(bases["st"], {}, pairs=True) != tp.proof_key(bases["st"], {})
    assert tp.PROOF_VERSION == 2


def test_a_reranker_is_described_as_the_contract_says(short):
    model, _ = short
    assert (model.kind, model.dimension, model.activation, model.prompts, model.default_prompt_name) == \
        ("reranker", 1, "Sigmoid", {}, None)
    assert (model.architecture, model.modules, model.loaded_with) == \
        ("BertForSequenceClassification", ("Transformer",), "sentence-transformers")
    assert model.tokenizer_kind == "WordPiece (BertTokenizer)"


# -- refusals ---------------------------------------------------------------------------------------
def test_several_labels_are_refused(tiny_model_cache):
    path = tiny_model_cache.get_reranker("bert-uncased", num_labels=3)
    why = "gives 3 scores per pair \\(num_labels 3\\): rerank needs one score per pair"
    with pytest.raises(UnsupportedModel, match=why):
        rerank.read_reranker(path, "three")
    with pytest.raises(UnsupportedModel, match=why):
        load_model(path, "three", "torch")


@pytest.fixture
def st_copy(bases, tmp_path):
    return copy_of(bases["st"], tmp_path / "model")


def test_more_modules_than_the_transformer_are_refused(st_copy):
    edit(st_copy / "modules.json", lambda m: m.append(
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}))
    with pytest.raises(UnsupportedModel, match="m is a CrossEncoder of Transformer -> Dense: rerank serves"):
        rerank.read_reranker(st_copy, "m")


def test_causal_lm_rerankers_are_refused(st_copy, tmp_path):
    edit(st_copy / "modules.json", lambda m: m.append(
        {"idx": 1, "name": "1", "path": "1_LogitScore",
         "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"}))
    with pytest.raises(UnsupportedModel, match="m is a causal-LM reranker \\(Transformer -> LogitScore"):
        rerank.read_reranker(st_copy, "m")
    plain = tmp_path / "plain"
    plain.mkdir()
    write(plain / "config.json", {"architectures": ["Qwen3ForCausalLM"]})
    write(plain / "config_sentence_transformers.json", {"model_type": "CrossEncoder"})
    with pytest.raises(UnsupportedModel, match="plain is a causal-LM reranker \\(Qwen3ForCausalLM"):
        rerank.read_reranker(plain)


def test_a_transformer_without_its_classification_head_is_refused(st_copy):
    edit(st_copy / "config.json", lambda c: c.update(architectures=["BertModel"]))
    with pytest.raises(UnsupportedModel, match="no ...ForSequenceClassification architecture \\(BertModel\\): "
                                               "its classification head would be initialized at random"):
        rerank.read_reranker(st_copy, "m")


@pytest.mark.parametrize("change", [{"prompts": {"query": "query: "}}, {"default_prompt_name": "query"}])
def test_prompts_are_refused(st_copy, change):
    edit(st_copy / "config_sentence_transformers.json", lambda c: c.update(change))
    with pytest.raises(UnsupportedModel, match="a CrossEncoder with prompts"):
        load_model(st_copy, "m", "torch")


def test_empty_prompts_are_no_prompts(st_copy):
    edit(st_copy / "config_sentence_transformers.json", lambda c: c.update(prompts={"query": "", "document": ""}))
    assert rerank.read_reranker(st_copy, "m").activation == "Sigmoid"


def test_custom_code_is_refused_without_trust_remote_code(st_copy):
    edit(st_copy / "config.json", lambda c: c.update(auto_map={"AutoModelForSequenceClassification":
                                                               "modeling_custom.Ranker"}))
    with pytest.raises(UnsupportedModel, match="m runs code of its own"):
        load_model(st_copy, "m", "torch")
