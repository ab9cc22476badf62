"""Getting the ONNX file the onnx backend runs: shipped with the model, cached, or exported now.

The Gunicorn master calls :func:`onnx_file`: it prefers ``onnx/model.onnx`` (or ``model.onnx``) in
the model directory, else exports the model's transformer once into the cache under a key of the
weights and the exporter versions, optionally quantizes it to int8, and writes every file
atomically. Exporting and quantizing run in a child process (this module, with hidden flags), so
the master never runs the model nor imports onnxruntime. The session side is ``onnx_backend.py``.

``python -m embedder.backends.onnx_export`` fills the cache ahead of time (e.g. in an image build).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from ..model import LoadedModel

log = logging.getLogger("embedder.onnx")

#: This module as ``python -m`` runs it: the cache-filling CLI and the export/quantize child.
CLI_MODULE = "embedder.backends.onnx_export"
#: Bump when the export or quantization code changes what it writes, so old cache files are not reused.
EXPORT_VERSION = 1
OPSET = 17
#: Shipped-model locations checked before exporting, relative to the model directory.
SHIPPED = ("onnx/model.onnx", "model.onnx")
#: Dynamic int8 settings; per-channel weight scales kept STS-B within 0.3 points (README).
INT8_OPTIONS = {"per_channel": True, "reduce_range": False}


class UnsupportedModel(ValueError):
    """The model's pipeline has something the ONNX backend cannot reproduce."""


def pipeline_parts(model: LoadedModel):
    """The Transformer and Pooling modules, checked to be the whole pipeline (bar a final Normalize):
    the export covers the transformer and the backend pools in NumPy, so nothing else may run."""
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    modules = list(model.st_model.children())
    if model.ends_with_normalize:
        modules = modules[:-1]
    kinds = [type(module).__name__ for module in modules]
    if len(modules) != 2 or not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
        raise UnsupportedModel(f"the onnx backend runs Transformer -> Pooling (-> Normalize) models; "
                               f"{model.model_id} has {' -> '.join(kinds)}: use EMBEDDER_BACKEND=torch")
    transformer, pooling = modules
    text = getattr(transformer, "modality_config", {}).get("text", {})
    if text.get("method", "forward") != "forward" or text.get("method_output_name", "last_hidden_state") \
            not in ("last_hidden_state", ("last_hidden_state",), ["last_hidden_state"]):
        raise UnsupportedModel(f"the onnx backend needs a transformer whose text output is "
                               f"last_hidden_state; {model.model_id} uses {text}")
    return transformer, pooling


# -- where the file is, and its cache key -----------------------------------------------------------
def shipped_onnx(model_path: str | Path) -> Path | None:
    for name in SHIPPED:
        path = Path(model_path) / name
        if path.is_file():
            return path
    return None


def export_key(model: LoadedModel) -> str:
    """Hash of what the exported graph depends on: the loaded weights, config and exporter versions."""
    import torch
    import transformers

    transformer, _ = pipeline_parts(model)
    digest = hashlib.sha256()
    for part in (f"export-v{EXPORT_VERSION}", f"opset{OPSET}", f"torch {torch.__version__}",
                 f"transformers {transformers.__version__}", f"token_type_ids {model.uses_token_type_ids}",
                 transformer.auto_model.config.to_json_string()):
        digest.update(part.encode() + b"\0")
    for name, tensor in transformer.auto_model.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode() + b"\0")
        digest.update(tensor.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_key(path: Path) -> str:
    """Hash of a shipped file's bytes: the int8 cache key of a graph that was not exported here."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"


def _atomic_write(final: Path, write) -> Path:
    """Run ``write(tmp_path)`` in the cache directory, then rename: racing masters never see half a file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        tmp = tmp_dir / final.name
        write(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


# -- writing the file -------------------------------------------------------------------------------
def export_onnx(model: LoadedModel, path: Path) -> None:
    """Export the Hugging Face transformer (token vectors out) with dynamic batch and length axes."""
    import torch

    transformer, _ = pipeline_parts(model)
    hf = transformer.auto_model
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model.uses_token_type_ids else [])

    class TokenVectors(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, *inputs):
            return self.hf(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    # A padded example, so tracing keeps the attention-mask path (an all-ones mask may be skipped).
    ids = torch.full((2, 8), model.pad_id, dtype=torch.long)
    ids[0, :] = 1000
    ids[1, :5] = 1000
    mask = (torch.arange(8)[None, :] < torch.tensor([[8], [5]])).long()
    example = (ids, mask, torch.zeros_like(ids))[: len(names)]
    axes = {name: {0: "batch", 1: "tokens"} for name in names + ["last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: deprecated in torch 2.9+ but exports in ~2 s against ~12 s and
        # runs ~10% faster here than the torch.export one, with no onnxscript dependency.
        warnings.simplefilter("ignore")
        torch.onnx.export(TokenVectors().eval(), example, str(path), dynamo=False, input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET)


def quantize_int8(source: Path, path: Path) -> None:
    """Dynamic int8 weights (activations quantized at run time), per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, **INT8_OPTIONS)


def _run_child(what: str, args: list[str]) -> None:
    """Run this module in a fresh Python process. In a Gunicorn master, exporting (which traces,
    i.e. runs, the model) would start torch's OpenMP pool before fork, and even importing
    onnxruntime starts a thread there; forked workers inherit such pools without their threads and
    hang (seen here: an int8 worker hung at exit until graceful_timeout, then aborted)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", CLI_MODULE, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def export_in_child(model: LoadedModel, path: Path) -> None:
    _run_child(f"ONNX export of {model.model_id}", ["--export-to", str(path), "--model", model.path])


def quantize_in_child(source: Path, path: Path) -> None:
    _run_child(f"int8 quantization of {source.name}", ["--quantize-to", str(path), "--source", str(source)])


def onnx_file(model: LoadedModel, cache_dir: Path, quantize: str = "", in_process: bool = False) -> Path:
    """The float32 (or int8) ONNX file for this model: shipped, cached, or exported into the cache now
    (in a child process unless ``in_process``, so that a server's master never runs the model)."""
    cache = Path(cache_dir) / "onnx"
    shipped = shipped_onnx(model.path)
    if shipped is not None:
        log.info("using the ONNX file shipped with the model: %s", shipped)
        fp32, key = shipped, file_key(shipped)
    else:
        key = export_key(model)
        fp32 = cache / f"{_slug(model.model_id)}-{key[:20]}.onnx"
        if fp32.is_file():
            log.info("using cached ONNX export %s", fp32)
        else:
            began = time.perf_counter()
            _atomic_write(fp32, lambda tmp: (export_onnx if in_process else export_in_child)(model, tmp))
            log.info("exported %s to %s in %.1f s", model.model_id, fp32, time.perf_counter() - began)
    if not quantize:
        return fp32
    if quantize != "int8":
        raise ValueError(f"unknown quantization {quantize!r}")
    from importlib.metadata import version  # onnxruntime's version, without importing it here

    options = ",".join(f"{k}={v}" for k, v in sorted(INT8_OPTIONS.items()))
    qkey = hashlib.sha256(f"{key} int8 {options} v{EXPORT_VERSION} ort {version('onnxruntime')}"
                          .encode()).hexdigest()
    int8 = cache / f"{_slug(model.model_id)}-{qkey[:20]}-int8.onnx"
    if int8.is_file():
        log.info("using cached int8 model %s", int8)
    else:
        began = time.perf_counter()
        _atomic_write(int8, lambda tmp: (quantize_int8 if in_process else quantize_in_child)(fp32, tmp))
        log.info("quantized %s to int8 in %.1f s: %s", fp32.name, time.perf_counter() - began, int8)
    return int8


def main(argv=None) -> None:
    """Fill the cache for the configured model (EMBEDDER_* settings) and print the file's path; or,
    with --export-to / --quantize-to (used by :func:`_run_child`), write just that one file."""
    import argparse

    from ..config import Settings
    from ..model import load_model

    parser = argparse.ArgumentParser(prog=f"python -m {CLI_MODULE}", description=main.__doc__)
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quantize-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.export_to:
        export_onnx(load_model(Settings(model=args.model or "")), args.export_to)
        return
    if args.quantize_to:
        quantize_int8(args.source, args.quantize_to)
        return
    settings = Settings.from_env()
    print(onnx_file(load_model(settings), settings.resolved_cache_dir(), settings.quantize, in_process=True))


if __name__ == "__main__":
    main()
