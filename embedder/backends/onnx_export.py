"""Getting the ONNX files the onnx backend runs: shipped with the model, cached, or made now.

The Gunicorn master calls :func:`onnx_files`, which never imports torch, transformers or
onnxruntime there:

1. The source graph: ``onnx/model.onnx`` (or ``model.onnx``) in the model directory, else the
   model's transformer exported once into the cache, under a key of the model directory's files
   and the exporter's versions (read from package metadata, so without importing them); optionally
   quantized to int8. An embedding model's graph gives token vectors (``last_hidden_state``); a
   reranker's is its sequence-classification model, giving each pair's ``logits``, under keys of
   its own.
2. Its serving form: the source optimized by ONNX Runtime and saved with every weight, the
   pre-packed (kernel-layout) copies included, in one data file next to the graph. Workers open it
   by path; ONNX Runtime maps that file, so forked workers share its pages instead of each keeping
   a private copy of the weights. Pre-packed layouts are specific to the CPU, so its key includes
   the CPU's instruction sets and ONNX Runtime's version. If it cannot be made (say, a read-only
   cache made on another CPU), workers open the source graph instead, with a warning.

Exporting, quantizing and preparing run in a child process (this module, with hidden flags), so
the master never runs the model nor imports onnxruntime. Every file is written atomically. The
session side is ``onnx_backend.py``; ``openvino_backend.py`` reads the same source graph.

``python -m embedder.backends.onnx_export`` fills the cache ahead of time (e.g. in an image build).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..config import Settings
from ..model.errors import ModelUnavailable
from ..model.load import load_model
from ..model.loaded import LoadedModel
from ..model.pipeline import chain, check_text_output, module_kinds
from ..model.rerank import EMBEDDING, RERANKER, model_kind
from ..model.source import resolve_model
from ..model.st_loader import load_cross_encoder, load_sentence_transformer

log = logging.getLogger("embedder.onnx")

#: This module as ``python -m`` runs it: the cache-filling CLI and the export/quantize/prepare child.
CLI_MODULE = "embedder.backends.onnx_export"
#: Bump when the export, quantization or preparation code changes what it writes, so old cache
#: files are not reused. 2: keys from the model's files; serving forms. 3: decoders exported
#: without their key/value cache; the example's token id within the vocabulary.
EXPORT_VERSION = 3
#: The same for a reranker's export (logits out), whose keys are apart from embedding models'.
RERANKER_EXPORT_VERSION = 1
OPSET = 17
#: Shipped-model locations checked before exporting, relative to the model directory.
SHIPPED = ("onnx/model.onnx", "model.onnx")
#: Dynamic int8 settings; per-channel weight scales kept STS-B within 0.3 points (docs/benchmarks.md).
INT8_OPTIONS = {"per_channel": True, "reduce_range": False}
#: The packages whose versions decide what an export writes.
EXPORTERS = ("torch", "transformers", "sentence-transformers", "onnx")
#: A serving form: a directory holding the optimized graph and its one data file.
SERVING_GRAPH, SERVING_DATA = "model.onnx", "model.onnx.data"
#: Its saving options (ONNX Runtime session config entries); part of its key.
SERVING_OPTIONS = {
    "session.optimized_model_external_initializers_file_name": SERVING_DATA,
    "session.optimized_model_external_initializers_min_size_in_bytes": "1024",
    "session.save_external_prepacked_constant_initializers": "1",
}
#: CPU features (/proc/cpuinfo flags) that choose ONNX Runtime's kernels, hence pre-packed layouts.
ISA_FLAGS = re.compile(r"^(sse|ssse|avx|amx|fma|f16c|vnni|bf16|fp16|asimd|sve|sme|i8mm|dotprod|neon)")


def pipeline_parts(model: LoadedModel):
    """The Transformer and Pooling modules, held to the module rule (``model/pipeline.py``): the
    export covers the transformer and the backend pools and runs any Dense layers in NumPy, so
    nothing else may run."""
    modules = list(model.st_model.children())
    chain(module_kinds(modules), model.model_id)
    transformer, pooling = modules[:2]
    check_text_output(getattr(transformer, "modality_config", {}).get("text", {}), model.model_id)
    return transformer, pooling


# -- where the file is, and its cache key -----------------------------------------------------------
def shipped_onnx(model_path: str | Path) -> Path | None:
    for name in SHIPPED:
        path = Path(model_path) / name
        if path.is_file():
            return path
    return None


def _versions(packages) -> str:
    out = []
    for name in packages:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} absent")
    return ", ".join(out)


def _digest_file(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def model_files_key(model_path: str | Path) -> str:
    """Hash of a model directory's files (names, sizes, bytes), less those no export reads: other
    backends' copies (onnx/, openvino/), hidden files and Markdown."""
    root = Path(model_path)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        relative = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and not (relative == Path(".") and d in ("onnx", "openvino"))]
        found += [((relative / name).as_posix(), Path(folder) / name) for name in files
                  if not name.startswith(".") and not name.lower().endswith(".md")]
    digest = hashlib.sha256()
    for name, path in sorted(found):
        digest.update(f"{name} {path.stat().st_size}".encode() + b"\0")
        _digest_file(digest, path)
    return digest.hexdigest()


def export_key(model_path: str | Path, kind: str = EMBEDDING) -> str:
    """Hash of what an exported graph depends on: the model's kind and files, the exporter's
    versions (read from package metadata: nothing imported) and this module's export code
    (EXPORT_VERSION, or RERANKER_EXPORT_VERSION for a reranker)."""
    code = f"export-v{EXPORT_VERSION}" if kind == EMBEDDING else f"{kind}-export-v{RERANKER_EXPORT_VERSION}"
    parts = (code, f"opset{OPSET}", _versions(EXPORTERS), model_files_key(model_path))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def file_key(path: Path) -> str:
    """Hash of a shipped graph's bytes and of the external-data files beside it that share its name."""
    digest = hashlib.sha256()
    _digest_file(digest, path)
    for data in sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path):
        if data.is_file():
            digest.update(data.name.encode() + b"\0")
            _digest_file(digest, data)
    return digest.hexdigest()


def cpu_fingerprint() -> str:
    """The machine's architecture, CPU vendor and instruction-set flags: what selects ONNX Runtime's
    kernels and so the layout of pre-packed weights."""
    parts = [platform.machine()]
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = platform.processor()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("vendor_id", "cpu implementer", "cpu architecture"):
            parts.append(value.strip())
        elif key in ("flags", "features"):
            parts.append(" ".join(sorted(f for f in value.split() if ISA_FLAGS.match(f))))
            break  # the first processor's; they are alike
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def serving_key(source_key: str) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted(SERVING_OPTIONS.items()))
    return hashlib.sha256(f"serving v{EXPORT_VERSION} {source_key} {_versions(['onnxruntime'])} "
                          f"cpu {cpu_fingerprint()} {options}".encode()).hexdigest()


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


def _atomic_dir(final: Path, write) -> Path:
    """Run ``write(tmp_dir)`` to fill a fresh directory, then rename it to ``final``; if another
    process renamed its own there first, keep that one (a served data file is never replaced)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        work = tmp_root / final.name
        work.mkdir()  # umask permissions (mkdtemp's 0700 would lock other users out of an image's cache)
        write(work)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / SERVING_GRAPH).is_file():
                raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


# -- writing the files -------------------------------------------------------------------------------
def export_onnx(model_path: str | Path, path: Path) -> None:
    """Export the model's Hugging Face transformer with dynamic batch and length axes: token vectors
    out (``last_hidden_state``), or a reranker's ``logits`` (pairs x labels). Loads it with
    sentence-transformers (torch), so it runs in a child process or the CLI."""
    import torch  # runs in a child process or the CLI, never in a server's master (see _run_child)

    if model_kind(model_path) == RERANKER:
        model = load_cross_encoder(Path(model_path))  # held to rerank's rule: one Transformer module
        hf, output, output_axes = next(model.st_model.children()).auto_model, "logits", {0: "batch"}
    else:
        model = load_sentence_transformer(Path(model_path))
        transformer, _ = pipeline_parts(model)
        hf, output, output_axes = transformer.auto_model, "last_hidden_state", {0: "batch", 1: "tokens"}
    if getattr(hf.config, "use_cache", False):  # a decoder (Qwen3...): token vectors, no key/value cache
        hf.config.use_cache = False
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model.uses_token_type_ids else [])

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, *inputs):
            return getattr(self.hf(**dict(zip(names, inputs)), return_dict=True), output)

    # A padded example, so tracing keeps the attention-mask path (an all-ones mask may be skipped).
    vocab = hf.get_input_embeddings().num_embeddings
    token = next(t for t in (1000, vocab - 1, vocab - 2) if 0 <= t < vocab and t != model.pad_id)
    ids = torch.full((2, 8), model.pad_id, dtype=torch.long)
    ids[0, :] = token
    ids[1, :5] = token
    mask = (torch.arange(8)[None, :] < torch.tensor([[8], [5]])).long()
    example = (ids, mask, torch.zeros_like(ids))[: len(names)]
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {output: output_axes}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: deprecated in torch 2.9+ but exports in ~2 s against ~12 s and
        # runs ~10% faster here than the torch.export one, with no onnxscript dependency.
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph().eval(), example, str(path), dynamo=False, input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET)


def quantize_int8(source: Path, path: Path) -> None:
    """Dynamic int8 weights (activations quantized at run time), per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # a child process (see _run_child)

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, **INT8_OPTIONS)


def prepare_serving(source: Path, directory: Path) -> None:
    """Optimize ``source`` as a worker's session would (ORT_ENABLE_ALL) and save it into
    ``directory``: the graph, and one data file with every weight of 1 KiB or more and their
    pre-packed copies, which workers' sessions then map instead of copying."""
    import onnxruntime as ort  # a child process (see _run_child)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # not the warning that an ENABLE_ALL graph suits this machine only
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(directory / SERVING_GRAPH)
    for key, value in SERVING_OPTIONS.items():
        options.add_session_config_entry(key, value)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    if not (directory / SERVING_DATA).is_file():
        raise RuntimeError(f"ONNX Runtime wrote no {SERVING_DATA} for {source}")


def _run_child(what: str, args: list[str]) -> None:
    """Run this module in a fresh Python process. In a Gunicorn master, exporting (which traces,
    i.e. runs, the model) would start torch's OpenMP pool before fork, and even importing
    onnxruntime starts a thread there; forked workers inherit such pools without their threads and
    hang (seen here: an int8 worker hung at exit until graceful_timeout, then aborted)."""
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


def prepare_in_child(source: Path, directory: Path) -> None:
    _run_child(f"preparing {source.name} for serving", ["--prepare-to", str(directory), "--source", str(source)])


@dataclass(frozen=True)
class OnnxFiles:
    #: The graph as shipped, exported or quantized.
    source: Path
    #: What workers open: the serving form's graph, or ``source`` if there is none.
    serving: Path
    #: Whether ``serving`` is a serving form (optimized already: sessions skip optimizing).
    prepared: bool


def onnx_files(model: LoadedModel, cache_dir: Path, quantize: str = "", in_process: bool = False,
               prepare: bool = True) -> OnnxFiles:
    """The float32 (or int8) graph for this model, shipped, cached or exported into the cache now,
    and its serving form, cached or prepared now (in child processes unless ``in_process``, so that a
    server's master never imports torch or onnxruntime nor runs the model). ``prepare=False``: the
    source graph alone (what the openvino backend reads), no serving form made or looked for."""
    cache = Path(cache_dir) / "onnx"
    shipped = shipped_onnx(model.path)
    if shipped is not None:
        log.info("using the ONNX file shipped with the model: %s", shipped)
        source, key = shipped, file_key(shipped)
    else:
        key = export_key(model.path, model.kind)
        source = cache / f"{_slug(model.model_id)}-{key[:20]}.onnx"
        if source.is_file():
            log.info("using cached ONNX export %s", source)
        else:
            began = time.perf_counter()
            _atomic_write(source, lambda tmp: export_onnx(model.path, tmp) if in_process
                          else export_in_child(model, tmp))
            log.info("exported %s to %s in %.1f s", model.model_id, source, time.perf_counter() - began)
    if quantize:
        if quantize != "int8":
            raise ValueError(f"unknown quantization {quantize!r}")
        options = ",".join(f"{k}={v}" for k, v in sorted(INT8_OPTIONS.items()))
        key = hashlib.sha256(f"{key} int8 {options} v{EXPORT_VERSION} {_versions(['onnxruntime'])}"
                             .encode()).hexdigest()
        int8 = cache / f"{_slug(model.model_id)}-{key[:20]}-int8.onnx"
        if int8.is_file():
            log.info("using cached int8 model %s", int8)
        else:
            began = time.perf_counter()
            fp32 = source
            _atomic_write(int8, lambda tmp: (quantize_int8 if in_process else quantize_in_child)(fp32, tmp))
            log.info("quantized %s to int8 in %.1f s: %s", fp32.name, time.perf_counter() - began, int8)
        source = int8
    if not prepare:
        return OnnxFiles(source, source, False)
    serving = cache / f"{_slug(model.model_id)}-{serving_key(key)[:20]}-serving"
    if (serving / SERVING_GRAPH).is_file():
        log.info("using the cached serving form %s", serving)
        return OnnxFiles(source, serving / SERVING_GRAPH, True)
    began = time.perf_counter()
    try:
        _atomic_dir(serving, lambda tmp: (prepare_serving if in_process else prepare_in_child)(source, tmp))
    except (OSError, RuntimeError) as exc:
        log.warning("could not prepare %s for serving (%s); workers open it as it is, each with its own "
                    "copy of the weights (make EMBEDDER_CACHE_DIR writable, or fill it on a machine with "
                    "this CPU)", source.name, str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
        return OnnxFiles(source, source, False)
    log.info("prepared %s for serving in %.1f s: %s", source.name, time.perf_counter() - began, serving)
    return OnnxFiles(source, serving / SERVING_GRAPH, True)


def main(argv=None) -> None:
    """Fill the cache for the configured model (EMBEDDER_* settings) and print the path of the
    graph workers will open; or, with --export-to / --quantize-to / --prepare-to (used by
    :func:`_run_child`), write just that one file or directory."""
    parser = argparse.ArgumentParser(prog=f"python -m {CLI_MODULE}", description=main.__doc__)
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quantize-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.export_to:
        export_onnx(args.model or resolve_model(Settings()).path, args.export_to)
        return
    if args.quantize_to:
        quantize_int8(args.source, args.quantize_to)
        return
    if args.prepare_to:
        prepare_serving(args.source, args.prepare_to)
        return
    settings = Settings.from_env()
    try:
        source = resolve_model(settings)
    except ModelUnavailable as why:
        raise SystemExit(str(why)) from None
    model = load_model(source.path, source.model_id, settings.backend)
    files = onnx_files(model, settings.resolved_cache_dir(), settings.quantize, in_process=True,
                       prepare=settings.backend == "onnx")
    print(files.serving)


if __name__ == "__main__":
    main()
