"""The onnx backend's Dense layers in NumPy (embedder/model/dense.py) against torch's nn.Linear and
activation, and sentence-transformers' own Dense module, on random data; and the module rule
(embedder/model/pipeline.py's ``chain``) taking Transformer -> Pooling -> Dense* (-> Normalize)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from embedder.model.dense import ACTIVATIONS, DenseLayer, apply, from_module, read_dense
from embedder.model.errors import NotReplicated, UnsupportedModel
from embedder.model.pipeline import chain

TOL = 1e-6


def torch_activation(name: str):
    import torch

    return getattr(torch.nn, name)()


def save_dense(folder, weight, bias, activation: str | None, **config):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"linear.weight": weight} | ({"linear.bias": bias} if bias is not None else {})
    save_file(tensors, str(folder / "model.safetensors"))
    settings = {"in_features": weight.shape[1], "out_features": weight.shape[0], "bias": bias is not None} | config
    if activation is not None:
        settings["activation_function"] = activation
    (folder / "config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_numpy_dense_equals_torch_linear_and_activation(tmp_path, activation, bias):
    import torch

    rng = np.random.default_rng(7)
    weight = rng.normal(0, 0.5, (16, 24)).astype(np.float32)
    bias_values = rng.normal(0, 0.5, 16).astype(np.float32) if bias else None
    x = rng.normal(0, 2, (5, 24)).astype(np.float32)
    linear = torch.nn.Linear(24, 16, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        if bias:
            linear.bias.copy_(torch.from_numpy(bias_values))
        want = torch_activation(activation)(linear(torch.from_numpy(x))).numpy()
    layer = read_dense(save_dense(tmp_path / "2_Dense", weight, bias_values,
                                  f"torch.nn.modules.activation.{activation}"), "m")
    got = layer(x)
    assert got.dtype == np.float32 and got.shape == (5, 16)
    assert np.abs(got - want).max() < TOL, np.abs(got - want).max()


@pytest.mark.parametrize("activation", ["Tanh", "GELU", "Identity"])
@pytest.mark.parametrize("shape", [(12, 12), (12, 8)])
def test_sentence_transformers_dense_read_from_its_files_and_its_module(tmp_path, activation, shape):
    """Dense.save's folder read without torch, and the loaded module turned into the same layer,
    give the module's own output (with a residual connection too)."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    torch.manual_seed(0)
    for residual in (False, True):
        module = Dense(shape[0], shape[1], activation_function=torch_activation(activation), use_residual=residual)
        folder = tmp_path / f"{activation}-{residual}"
        folder.mkdir()
        module.save(str(folder))
        x = np.random.default_rng(1).normal(0, 1, (3, shape[0])).astype(np.float32)
        with torch.no_grad():
            want = module({"sentence_embedding": torch.from_numpy(x)})["sentence_embedding"].numpy()
        for layer in (read_dense(folder, "m"), from_module(module, "m")):
            assert (layer.in_features, layer.out_features) == shape
            assert np.abs(layer(x) - want).max() < TOL


def test_layers_run_in_order():
    first = DenseLayer(np.eye(3, dtype=np.float32) * 2, np.ones(3, dtype=np.float32), "Identity")
    second = DenseLayer(np.ones((1, 3), dtype=np.float32), None, "ReLU")
    x = np.array([[1.0, -2.0, 0.5]], dtype=np.float32)
    assert apply((first, second), x).tolist() == [[2.0]]  # relu(3 - 3 + 2)
    assert apply((), x) is x


def test_no_activation_named_is_tanh_as_sentence_transformers(tmp_path):
    weight = np.eye(2, dtype=np.float32)
    layer = read_dense(save_dense(tmp_path / "d", weight, None, None), "m")
    assert layer.activation == "Tanh"
    assert np.allclose(layer(np.array([[1.0, -1.0]], dtype=np.float32)), np.tanh([[1.0, -1.0]]))


def test_refusals_name_what_is_not_served(tmp_path):
    weight = np.eye(2, dtype=np.float32)
    with pytest.raises(UnsupportedModel, match=r"torch.nn.modules.activation.SiLU.*EMBEDDER_BACKEND=torch"):
        read_dense(save_dense(tmp_path / "silu", weight, None, "torch.nn.modules.activation.SiLU"), "m")
    with pytest.raises(UnsupportedModel, match="my_pkg.Swish"):
        read_dense(save_dense(tmp_path / "own", weight, None, "my_pkg.Swish"), "m")
    with pytest.raises(UnsupportedModel, match="not the sentence embedding"):
        read_dense(save_dense(tmp_path / "io", weight, None, None, module_input_name="token_embeddings"), "m")
    legacy = save_dense(tmp_path / "bin", weight, None, None)
    (legacy / "model.safetensors").rename(legacy / "pytorch_model.bin")
    with pytest.raises(NotReplicated, match="pytorch_model.bin"):
        read_dense(legacy, "m")


@pytest.mark.parametrize("kinds, normalized", [
    (["Transformer", "Pooling"], False), (["Transformer", "Pooling", "Normalize"], True),
    (["Transformer", "Pooling", "Dense"], False), (["Transformer", "Pooling", "Dense", "Dense", "Normalize"], True)])
def test_the_rule_takes_dense_layers_after_pooling(kinds, normalized):
    assert chain(kinds, "m") is normalized


@pytest.mark.parametrize("kinds", [
    ["Transformer", "Dense", "Pooling"], ["Transformer", "Pooling", "Normalize", "Dense"],
    ["Transformer", "Pooling", "Dense", "LayerNorm"], ["Transformer"], []])
def test_the_rule_refuses_anything_else(kinds):
    with pytest.raises(UnsupportedModel, match="Transformer -> Pooling .*EMBEDDER_BACKEND=torch"):
        chain(kinds, "m")
