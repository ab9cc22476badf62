"""text-embeddings-inference's other routes (``POST /``, ``/tokenize``, ``/decode``, ``/similarity``,
its ``/info`` fields) and OpenAI's model list, model check and token-id refusal, on the stand-in
model of tests/support/fakes.py (tests/integration/test_api.py has them against real servers with
the real tokenizer and model)."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import CLS, SEP, expected, make_app, word_id

SERVED = "fake/whitespace-mean"


@pytest.fixture(scope="module")
def client():
    return make_app().test_client()


def test_post_root_is_embed(client):
    body = {"inputs": ["one two", "three"], "dimensions": 8}
    root = client.post("/", json=body)
    assert root.status_code == 200 and root.get_json() == client.post("/embed", json=body).get_json()
    assert client.get("/").data == b"ok"  # GET / stays the original benchmark's route


def test_tokenize_gives_every_token_with_byte_offsets(client):
    r = client.post("/tokenize", json={"inputs": ["héllo  world", "x"]})
    assert r.status_code == 200
    first, second = r.get_json()
    assert first == [
        {"id": CLS, "text": "[CLS]", "special": True, "start": None, "stop": None},
        {"id": word_id("héllo"), "text": "héllo", "special": False, "start": 0, "stop": 6},  # é: 2 bytes
        {"id": word_id("world"), "text": "world", "special": False, "start": 8, "stop": 13},
        {"id": SEP, "text": "[SEP]", "special": True, "start": None, "stop": None},
    ]
    assert [t["text"] for t in second] == ["[CLS]", "x", "[SEP]"]
    plain = client.post("/tokenize", json={"inputs": "find me", "add_special_tokens": False,
                                           "prompt_name": "query"}).get_json()
    assert [t["text"] for t in plain[0]] == ["query:", "find", "me"]


def test_decode_one_or_many_lists(client):
    ids = [CLS, word_id("one"), word_id("two"), SEP]
    client.post("/tokenize", json={"inputs": "one two"})  # the stand-in decodes words it has seen
    assert client.post("/decode", json={"ids": ids}).get_json() == ["one two"]
    assert client.post("/decode", json={"ids": [ids, ids[1:2]], "skip_special_tokens": False}).get_json() \
        == ["[CLS] one two [SEP]", "one"]


def test_post_root_with_a_similarity_body_is_similarity(client):
    """huggingface_hub's sentence_similarity posts /similarity's body to TEI's base route."""
    body = {"inputs": {"source_sentence": "a b c", "sentences": ["a b", "x y z"]}, "parameters": {}}
    root = client.post("/", json=body)
    assert root.status_code == 200 and root.get_json() == client.post("/similarity", json=body).get_json()


def test_litellms_similarity_body_asking_for_embeddings_is_refused(client):
    """litellm's huggingface/ provider sends this for a model named sentence-transformers/... and
    would read the scores as embeddings."""
    body = {"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}, "input_type": "feature-extraction"}
    for path in ("/", "/similarity"):
        r = client.post(path, json=body)
        assert r.status_code == 422 and "litellm" in r.get_json()["error"], r.get_json()


def test_similarity_is_the_cosine_of_the_vectors(client):
    app = make_app()
    sentences = ["a b c", "a b", "x y z"]
    r = app.test_client().post("/similarity", json={"inputs": {"source_sentence": "a b c", "sentences": sentences}})
    assert r.status_code == 200 and float(r.headers["x-input-tokens"]) > 0
    vectors = expected(app, ["a b c", *sentences])
    assert np.allclose(r.get_json(), vectors[1:] @ vectors[0], atol=1e-6)
    assert r.get_json()[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("body,field", [
    ({"inputs": {"sentences": ["a"]}}, "inputs"),
    ({"inputs": {"source_sentence": "a"}}, "inputs"),
    ({"inputs": {"source_sentence": ["a"], "sentences": ["b"]}}, "inputs.source_sentence"),
    ({"inputs": {"source_sentence": "a", "sentences": []}}, "inputs.sentences"),
    ({"inputs": {"source_sentence": "a", "sentences": "b"}}, "inputs.sentences"),
    ({"inputs": {"source_sentence": "a", "sentences": [" "]}}, "inputs.sentences"),
    ({"inputs": "a"}, "inputs"),
    ({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncation_direction": "left"}},
     "truncation_direction"),
    ({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"prompt_name": "nope"}},
     "prompt_name"),
])
def test_similarity_bad_requests_are_422_naming_the_field(client, body, field):
    r = client.post("/similarity", json=body)
    assert r.status_code == 422, r.get_json()
    assert field in r.get_json()["error"]


def test_similarity_counts_the_source_in_the_input_limit():
    client = make_app(max_inputs=3).test_client()
    ok = {"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}}
    assert client.post("/similarity", json=ok).status_code == 200
    ok["inputs"]["sentences"].append("d")
    assert client.post("/similarity", json=ok).status_code == 422


@pytest.mark.parametrize("path,body", [
    ("/decode", {"ids": []}), ("/decode", {"ids": [[1], []]}), ("/decode", {"ids": [30522]}),
    ("/decode", {"ids": "1 2"}), ("/decode", {"idz": [1]}),
    ("/tokenize", {"inputs": []}), ("/tokenize", {"inputs": ""}), ("/tokenize", {"inputs": 5}),
    ("/embed", {"inputs": "x", "truncation_direction": "left"}),
])
def test_tokenize_and_decode_bad_requests_are_422(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 422 and r.get_json()["error_type"] == "validation", r.get_json()


def test_embed_takes_truncation_direction_right(client):
    assert client.post("/embed", json={"inputs": "x", "truncation_direction": "Right"}).status_code == 200


def test_info_has_teis_fields(client):
    info = client.get("/info").get_json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} or "embedding" in info["model_type"]
    assert info["max_input_length"] == info["max_input_tokens"] == 256
    assert info["max_client_batch_size"] == info["max_inputs"]
    assert info["served_model_name"] == info["model_id"] == SERVED
    for field in ("model_sha", "model_dtype", "max_concurrent_requests", "max_batch_requests",
                  "auto_truncate", "tokenization_workers", "sha", "docker_label"):
        assert field in info


def test_openai_model_list_and_model(client):
    listed = client.get("/v1/models").get_json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [SERVED]
    assert listed["data"][0]["object"] == "model" and isinstance(listed["data"][0]["created"], int)
    assert client.get("/models").get_json() == listed
    assert client.get(f"/v1/models/{SERVED}").get_json() == listed["data"][0]
    missing = client.get("/v1/models/gpt-4")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "model_not_found"


def test_another_model_is_refused_in_openais_shape(client):
    r = client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    assert r.status_code == 404
    error = r.get_json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model" and SERVED in error["message"]
    for name in (SERVED, "whitespace-mean", None):
        assert client.post("/v1/embeddings", json={"input": "x", "model": name}).status_code == 200


def test_unknown_v1_routes_are_404_in_openais_shape(client):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    assert client.get("/nothing-here").get_json()["error_type"] == "not_found"


def test_token_ids_are_refused_by_default_with_what_to_do(client):
    r = client.post("/v1/embeddings", json={"input": [[15339, 1917]], "model": "text-embedding-ada-002"})
    assert r.status_code == 422  # before the model check: this is the message that helps
    error = r.get_json()["error"]
    assert error["param"] == "input"
    assert "token ids" in error["message"] and "check_embedding_ctx_length=False" in error["message"]
    assert "EMBEDDER_OPENAI_TOKEN_IDS" in error["message"]
    allowed = make_app(openai_token_ids=True).test_client()
    assert allowed.post("/v1/embeddings", json={"input": [[15339, 1917]]}).status_code == 200
