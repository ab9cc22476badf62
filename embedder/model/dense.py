"""sentence-transformers' Dense module, stated once in NumPy: a linear layer and an activation
(optionally with a residual connection) applied to the pooled vectors, as the onnx backend runs it.

A Dense module's folder holds ``config.json`` (``in_features``, ``out_features``, ``bias``,
``activation_function`` as the full name of a ``torch.nn`` class, ``use_residual``) and its weights
in ``model.safetensors`` (read here with safetensors' NumPy loader: no torch) or, in older saves,
``pytorch_model.bin`` (a pickle only torch reads: refused for the torch-free loader). The
sentence-transformers loader turns its loaded modules into the same layers (:func:`from_module`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from .errors import NotReplicated, UnsupportedModel
from .pipeline import TORCH_HINT

#: sentence-transformers' default when the config names no activation.
DEFAULT_ACTIVATION = "Tanh"


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch.nn.GELU() (exact, erf-based) in float64: erf by Abramowitz and Stegun 7.1.26 (absolute
    error under 1.5e-7), so the result is within float32 rounding of torch's."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


#: The activations served, by torch.nn class name; each computed in float64, returned as float32.
ACTIVATIONS = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0.0),
    "GELU": _gelu,
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def activation_name(reference: str | None, model_id: str) -> str:
    """The activation's class name from config.json's ``activation_function`` (e.g.
    ``torch.nn.modules.activation.Tanh``); UnsupportedModel naming any other."""
    if reference is None:
        return DEFAULT_ACTIVATION
    name = str(reference).rsplit(".", 1)[-1]
    if not str(reference).startswith("torch.nn.") or name not in ACTIVATIONS:
        raise UnsupportedModel(f"{model_id}'s Dense layer uses activation {reference}; the onnx backend runs "
                               f"{', '.join(ACTIVATIONS)}: {TORCH_HINT}")
    return name


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One Dense module: ``activation(x @ weight.T + bias)`` (+ the residual)."""

    weight: np.ndarray  # (out_features, in_features), float32
    bias: np.ndarray | None  # (out_features,)
    activation: str
    #: None: no residual; "identity": x itself is added (in == out); else the (out, in) projection.
    residual: np.ndarray | str | None = None

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float32, copy=False) @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        y = ACTIVATIONS[self.activation](y.astype(np.float64)).astype(np.float32)
        if isinstance(self.residual, np.ndarray):
            y = y + x @ self.residual.T
        elif self.residual is not None:
            y = y + x
        return y.astype(np.float32, copy=False)


def apply(layers, x: np.ndarray) -> np.ndarray:
    """The Dense layers in order on pooled vectors (batch, dim)."""
    for layer in layers:
        x = layer(x)
    return x


def _layer(config: dict, tensors: dict, activation: str, where: str, model_id: str) -> DenseLayer:
    names = (config.get("module_input_name", "sentence_embedding"),
             config.get("module_output_name") or config.get("module_input_name", "sentence_embedding"))
    if names != ("sentence_embedding", "sentence_embedding"):
        raise UnsupportedModel(f"{model_id}'s Dense layer {where} reads or writes {names}, not the "
                               f"sentence embedding: {TORCH_HINT}")
    weight = np.ascontiguousarray(tensors["linear.weight"], dtype=np.float32)
    if config.get("in_features") is not None and weight.shape != (config["out_features"], config["in_features"]):
        raise UnsupportedModel(f"{model_id}'s Dense layer {where}: weights of shape {weight.shape}, config "
                               f"{config.get('in_features')} -> {config.get('out_features')}")
    bias = tensors.get("linear.bias") if config.get("bias", True) else None
    residual = None
    if config.get("use_residual", False):
        residual = "identity" if weight.shape[0] == weight.shape[1] \
            else np.ascontiguousarray(tensors["residual.weight"], dtype=np.float32)
    return DenseLayer(weight, None if bias is None else np.asarray(bias, dtype=np.float32), activation, residual)


def read_dense(folder: Path, model_id: str) -> DenseLayer:
    """A Dense module from its folder's files, without torch."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise UnsupportedModel(f"{model_id}'s Dense module {folder} has no config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    activation = activation_name(config.get("activation_function"), model_id)
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        if (Path(folder) / "pytorch_model.bin").is_file():
            raise NotReplicated(f"{model_id}'s Dense module {folder} stores its weights only in "
                                "pytorch_model.bin, which needs torch to read")
        raise UnsupportedModel(f"{model_id}'s Dense module {folder} has no model.safetensors")
    return _layer(config, load_file(str(weights)), activation, str(folder), model_id)


def from_module(module, model_id: str) -> DenseLayer:
    """A loaded sentence-transformers Dense module (torch) as a DenseLayer."""
    activation = activation_name(type(module.activation_function).__module__ + "."
                                 + type(module.activation_function).__name__, model_id)
    tensors = {name: value.detach().cpu().float().numpy() for name, value in module.state_dict().items()}
    config = {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias,
              "use_residual": getattr(module, "use_residual", False),
              "module_input_name": getattr(module, "module_input_name", "sentence_embedding"),
              "module_output_name": getattr(module, "module_output_name", None)}
    return _layer(config, tensors, activation, type(module).__name__, model_id)
