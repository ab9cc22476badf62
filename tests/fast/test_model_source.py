"""Where the model comes from (embedder/model/source.py): a hub id resolved in a Hugging Face cache
made on disk as huggingface_hub lays it out (tests/support/hub_cache.py; no hub is reached), a local
directory, or the bundled model; and the refusal when a hub model or its revision is not cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embedder.config import DEFAULT_MODEL_ID, Settings
from embedder.http.app import create_app
from embedder.model.errors import ModelUnavailable
from embedder.model.load import load_model
from embedder.model.source import hub_cache_dir, is_hub_id, resolve_model, resolve_models
from hub_cache import COMMIT, OTHER_COMMIT, add_snapshot, bundled_model


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache of this test's own, offline, as HF_HUB_CACHE."""
    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # a relative org/name must not find a folder of the repository
    return folder


def refusal(**settings) -> str:
    with pytest.raises(ModelUnavailable) as caught:
        resolve_model(Settings(**settings))
    return str(caught.value)


def test_a_hub_id_resolves_to_its_snapshot_folder(cache):
    snapshot = add_snapshot(cache, "org/name")
    source = resolve_model(Settings(model="org/name"))
    assert source.path == snapshot
    assert (source.model_id, source.origin, source.revision, source.commit) == ("org/name", "hub", "main", COMMIT)
    assert (source.path / "modules.json").is_symlink()
    model = load_model(source.path, source.model_id, "onnx")  # the loaders read it as any directory
    assert (model.model_id, model.dimension) == ("org/name", 384)


def test_a_name_without_org_is_a_hub_id_too(cache):
    snapshot = add_snapshot(cache, "all-MiniLM-L6-v2")
    assert resolve_model(Settings(model="all-MiniLM-L6-v2")).path == snapshot


def test_a_revision_by_commit_hash(cache):
    add_snapshot(cache, "org/name")
    older = add_snapshot(cache, "org/name", OTHER_COMMIT, refs=())
    source = resolve_model(Settings(model="org/name", revision=OTHER_COMMIT))
    assert (source.path, source.revision, source.commit) == (older, OTHER_COMMIT, OTHER_COMMIT)


def test_a_revision_by_branch_or_tag_name(cache):
    add_snapshot(cache, "org/name")
    tagged = add_snapshot(cache, "org/name", OTHER_COMMIT, refs=("v2", "pr/7"))
    for revision in ("v2", "pr/7"):
        source = resolve_model(Settings(model="org/name", revision=revision))
        assert (source.path, source.revision, source.commit) == (tagged, revision, OTHER_COMMIT)
    assert resolve_model(Settings(model="org/name")).commit == COMMIT


def test_a_model_not_in_the_cache_is_refused_with_how_to_fetch_it(cache):
    message = refusal(model="org/missing")
    assert message.startswith(f"model org/missing (revision main) is not in the Hugging Face cache {cache}")
    assert "HF_HUB_OFFLINE is set, so it is not downloaded" in message
    assert "`hf download org/missing --revision main`" in message
    assert "with HF_HUB_OFFLINE unset, on a machine that reaches the hub" in message
    assert "set EMBEDDER_MODEL to a local model directory" in message


def test_a_revision_not_in_the_cache_is_refused_naming_what_is(cache):
    add_snapshot(cache, "org/name")
    for revision in ("v9", OTHER_COMMIT):
        message = refusal(model="org/name", revision=revision)
        assert message.startswith(f"model org/name is in the Hugging Face cache {cache}, but not its "
                                  f"revision {revision} (cached: branches and tags main ({COMMIT[:12]}); "
                                  f"commits {COMMIT[:12]})")
        assert f"`hf download org/name --revision {revision}`" in message
        assert "HF_HUB_OFFLINE is set" in message


def test_the_server_refuses_to_start_with_the_message(cache):
    with pytest.raises(SystemExit) as caught:
        create_app(Settings(model="org/missing", revision="v2"))
    assert str(caught.value).startswith("embedder cannot start: model org/missing (revision v2) is not in "
                                        "the Hugging Face cache")


def test_an_existing_directory_wins_over_a_hub_id(cache, tmp_path):
    add_snapshot(cache, "org/name")
    shutil.copytree(bundled_model(), tmp_path / "org" / "name")
    source = resolve_model(Settings(model="org/name"))
    assert (source.path, source.model_id, source.origin) == (Path("org/name"), "name", "directory")


def test_a_directory_is_served_by_its_name_or_embedder_model_id(cache):
    model = str(bundled_model())
    assert resolve_model(Settings(model=model)).model_id == bundled_model().resolve().name
    assert resolve_model(Settings(model=model, model_id="mine")).model_id == "mine"
    add_snapshot(cache, "org/name")
    assert resolve_model(Settings(model="org/name", model_id="mine")).model_id == "mine"


def test_empty_is_the_bundled_model(cache):
    source = resolve_model(Settings())
    assert (source.path, source.model_id, source.origin) == (bundled_model(), DEFAULT_MODEL_ID, "bundled")


@pytest.mark.parametrize("model, expected", [
    ("./org/name", "no such directory"), ("/nowhere/at/all", "no such directory"),
    ("a/b/c", "no such directory"), ("modules.json", "not a directory"),
])
def test_a_path_that_is_no_model_directory_is_refused(cache, model, expected):
    (cache.parent / "modules.json").write_text("[]")
    message = refusal(model=model)
    assert message.startswith(f"EMBEDDER_MODEL={model}: {expected}")


def test_a_hub_id_huggingface_hub_refuses(cache):
    assert refusal(model="org--x/name").startswith("EMBEDDER_MODEL=org--x/name is neither an existing "
                                                   "directory nor a valid hub model id")


@pytest.mark.parametrize("model", ["", str(bundled_model())])
def test_a_revision_without_a_hub_id_is_refused(cache, model):
    assert refusal(model=model, revision="v2").startswith("EMBEDDER_REVISION=v2 is for a hub model, but ")


@pytest.mark.parametrize("text, hub", [
    ("org/name", True), ("name", True), ("BAAI/bge-small-en-v1.5", True), ("org_1/a.b-c", True),
    ("./name", False), ("/abs/path", False), ("a/b/c", False), ("org/", False), ("~/models/x", False),
    ("-org/name", False), ("", False),
])
def test_the_shape_of_a_hub_id(text, hub):
    assert is_hub_id(text) is hub


def test_settings_read_the_revision():
    assert Settings.from_env({"EMBEDDER_MODEL": "org/name", "EMBEDDER_REVISION": " v2 "}).revision == "v2"
    assert Settings.from_env({}).revision == ""


def test_the_cache_folder_follows_huggingface_hubs_variables(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_a_model_list_resolves_each_entry_under_its_name(cache):
    add_snapshot(cache, "org/name")
    model = str(bundled_model())
    sources = resolve_models(Settings(models=f"minilm=,org/name,local={model}"))
    assert [(s.model_id, s.origin) for s in sources] == [("minilm", "bundled"), ("org/name", "hub"),
                                                         ("local", "directory")]
    with pytest.raises(ModelUnavailable, match="EMBEDDER_MODELS entry /no/such/dir: no such directory"):
        resolve_models(Settings(models="a=,/no/such/dir"))
