"""``/tokenize`` and ``/decode`` under ``/embed``'s limits, on the stand-in model of
tests/support/fakes.py (one token per word, plus [CLS] and [SEP]): the cap on an answer's tokens
(EMBEDDER_MAX_TOKENIZE_TOKENS, 422 naming it, found while tokenizing), the worker's budget for the
answers being built (EMBEDDER_MAX_QUEUED_TOKENS, 429), the deadline (503) and a client that left
(499); under the limits the answer is what it was. tests/integration/test_tokenize_limits.py sends
the huge requests to a real server and measures its workers' memory."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from embedder.core.token_budget import WORKER
from embedder.http import openapi
from fakes import CLS, SEP, make_app, word_id


def counting(app, hold: str | None = None, delay: float = 0.0):
    """Count the texts the stand-in tokenizes (a list, appended to as each is tokenized); a text
    equal to ``hold`` waits for the returned event; each text takes ``delay`` seconds."""
    tokenizer = app.service.model.tokenizer
    real = tokenizer.tokens
    seen: list[str] = []
    release = threading.Event()

    def tokens(text, add_special_tokens):
        seen.append(text)
        if text == hold:
            release.wait(10)
        time.sleep(delay)
        return real(text, add_special_tokens)

    tokenizer.tokens = tokens
    return seen, release


@pytest.fixture(autouse=True)
def _budget_given_back():
    """Whatever a test's requests did, every token they held is given back."""
    yield
    assert WORKER.held == 0


# -- the cap on one answer ---------------------------------------------------------------------

def test_an_answer_at_the_cap_is_the_answer_without_it():
    texts = ["a b c", "héllo wörld ünd", "x"]  # 5 + 5 + 3 = 13 tokens
    body = {"inputs": texts}
    unlimited = make_app().test_client().post("/tokenize", json=body)
    capped = make_app(max_tokenize_tokens=13).test_client().post("/tokenize", json=body)
    assert unlimited.status_code == capped.status_code == 200
    assert capped.get_json() == unlimited.get_json()
    assert [len(row) for row in capped.get_json()] == [5, 5, 3]


def test_byte_offsets_of_a_long_text_with_multibyte_characters():
    """The offsets are counted on from token to token: they are the UTF-8 byte offsets of each
    token in the text, as counting each one from the start gives."""
    words = ["é", "a", "日本語", "😀x", "ß", "plain"] * 50
    text = " ".join(words) + "  tail"
    r = make_app().test_client().post("/tokenize", json={"inputs": text, "add_special_tokens": False})
    assert r.status_code == 200
    row = r.get_json()[0]
    assert [t["text"] for t in row] == [*words, "tail"]
    raw = text.encode("utf-8")
    at = 0
    for token in row:
        at = text.index(token["text"], at)
        end = at + len(token["text"])
        assert (token["start"], token["stop"]) == (len(text[:at].encode()), len(text[:end].encode()))
        assert raw[token["start"]:token["stop"]].decode() == token["text"]
        at = end


def test_an_answer_over_the_cap_is_422_naming_the_limit_and_stops_tokenizing():
    app = make_app(max_tokenize_tokens=10)
    seen, _ = counting(app)
    texts = ["a b c d", "e f g h", "i j", "k", "l"]  # 6 + 6 crosses 10 at the second input
    r = app.test_client().post("/tokenize", json={"inputs": texts})
    assert r.status_code == 422, r.get_json()
    assert r.get_json() == {
        "error": "'inputs': more than the 10 tokens one answer may hold (EMBEDDER_MAX_TOKENIZE_TOKENS): "
                 "its first 2 of 5 inputs make 12; send fewer or shorter inputs",
        "error_type": "validation"}
    assert seen == texts[:2]  # the rest were never tokenized


def test_one_input_over_the_cap_and_the_cap_counts_special_tokens():
    client = make_app(max_tokenize_tokens=4).test_client()
    r = client.post("/tokenize", json={"inputs": "a b c"})  # [CLS] a b c [SEP]
    assert r.status_code == 422
    assert "its one input makes 5" in r.get_json()["error"] and "EMBEDDER_MAX_TOKENIZE_TOKENS" in r.get_json()["error"]
    assert client.post("/tokenize", json={"inputs": "a b c", "add_special_tokens": False}).status_code == 200


def test_the_prompt_counts_toward_the_cap():
    client = make_app(max_tokenize_tokens=4).test_client()
    assert client.post("/tokenize", json={"inputs": "a b"}).status_code == 200
    r = client.post("/tokenize", json={"inputs": "a b", "prompt_name": "query"})  # "query:" is a word
    assert r.status_code == 422 and "makes 5" in r.get_json()["error"]


def test_decode_caps_the_ids_of_a_request():
    client = make_app(max_tokenize_tokens=6).test_client()
    client.post("/tokenize", json={"inputs": "one two"})  # the stand-in decodes words it has seen
    ids = [CLS, word_id("one"), word_id("two"), SEP]
    r = client.post("/decode", json={"ids": [ids, ids[1:3]]})  # 6 ids: at the cap
    assert r.status_code == 200 and r.get_json() == ["one two", "one two"]
    r = client.post("/decode", json={"ids": [ids, ids[1:3], [SEP]]})
    assert r.status_code == 422
    assert r.get_json()["error"] == ("'ids': more than the 6 token ids one request may send "
                                     "(EMBEDDER_MAX_TOKENIZE_TOKENS): its first 3 of 3 lists hold 7; send fewer ids")
    r = client.post("/decode", json={"ids": [SEP] * 7})
    assert r.status_code == 422 and "its one list holds 7" in r.get_json()["error"]


# -- the worker's budget, the deadline, a client that left -------------------------------------

def test_answers_being_built_hold_the_workers_budget_429_beyond():
    app = make_app(max_queued_tokens=10)
    seen, release = counting(app, hold="HOLD")
    client = app.test_client()
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/tokenize", json={"inputs": ["a b c d e f", "HOLD"]})
        deadline = time.monotonic() + 10
        while "HOLD" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert WORKER.held == 8  # the first input's 6 words and 2 special tokens
        busy = client.post("/tokenize", json={"inputs": "a b c"})  # 8 + 5 > 10
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
        assert busy.get_json()["error_type"] == "overloaded" and "retry" in busy.get_json()["error"]
        decode = client.post("/decode", json={"ids": [CLS, SEP, CLS]})  # 8 + 3 > 10
        assert decode.status_code == 429
        assert client.post("/decode", json={"ids": [CLS, SEP]}).status_code == 200  # 8 + 2 fits
        release.set()
        assert first.result(timeout=10).status_code == 200
    assert WORKER.held == 0
    assert client.post("/tokenize", json={"inputs": "a b c"}).status_code == 200


def test_a_request_alone_gets_through_whatever_the_budget():
    client = make_app(max_queued_tokens=3).test_client()
    r = client.post("/tokenize", json={"inputs": ["a b c d", "e f"]})
    assert r.status_code == 200 and [len(row) for row in r.get_json()] == [6, 4]
    assert client.post("/decode", json={"ids": [CLS] * 5}).status_code == 200


def test_tokenizing_past_the_deadline_is_503_and_stops():
    app = make_app(request_timeout=0.05)
    seen, _ = counting(app, delay=0.1)
    r = app.test_client().post("/tokenize", json={"inputs": ["a", "b", "c", "d"]})
    assert r.status_code == 503 and r.get_json()["error_type"] == "timeout", r.get_json()
    assert seen == ["a"]


def test_a_client_that_left_stops_its_tokenizing_and_decoding():
    app = make_app()
    seen, _ = counting(app)
    client = app.test_client()
    gone = {"embedder.client_gone": lambda: True}
    r = client.post("/tokenize", json={"inputs": ["a", "b", "c"]}, environ_base=gone)
    assert r.status_code == 499 and r.get_json()["error_type"] == "client_gone"
    assert seen == ["a"]
    decoded = []
    real = app.service.model.tokenizer.decode
    app.service.model.tokenizer.decode = lambda ids, skip: decoded.append(ids) or real(ids, skip)
    r = client.post("/decode", json={"ids": [[CLS], [SEP], [CLS]]}, environ_base=gone)
    assert r.status_code == 499 and decoded == [[CLS]]
    stays = {"embedder.client_gone": lambda: False}
    assert client.post("/tokenize", json={"inputs": ["a", "b"]}, environ_base=stays).status_code == 200


def test_the_document_lists_the_new_refusals_and_the_cap():
    app = make_app(max_tokenize_tokens=1234)
    document = openapi.build(app.service.settings, app.extensions["embedder.routing"].default, "m")
    for path in ("/tokenize", "/decode"):
        operation = document["paths"][path]["post"]
        assert {"422", "429", "503"} <= set(operation["responses"]), path
        assert "1234" in operation["description"] and "EMBEDDER_MAX_TOKENIZE_TOKENS" in operation["description"]
