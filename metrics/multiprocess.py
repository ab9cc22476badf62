"""prometheus_client multiprocess mode for a Gunicorn master and its workers.

prometheus_client picks multiprocess mode when it is first imported, and with ``preload_app``
the app (and so prometheus_client) is imported before any server hook runs. So
``gunicorn.conf.py`` calls :func:`prepare_dir` at its top: each master gets a fresh directory of
its own (under the ``metrics_dir`` setting, ``PROMETHEUS_MULTIPROC_DIR``, if set, else the temp
dir), which its workers inherit and which is removed when the master exits.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWNER = "EMBEDDER_METRICS_MASTER_PID"


def prepare_dir(base: str = "") -> str:
    """Give this master an empty metrics directory under ``base`` (the ``metrics_dir`` setting;
    empty means the temp dir) and point prometheus_client at it.

    Idempotent within one master, so re-reading the config on SIGHUP keeps the counts.
    """
    if os.environ.get(_OWNER) == str(os.getpid()) and os.path.isdir(os.environ.get(ENV, "")):
        return os.environ[ENV]
    base = base or None
    if base:
        os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"embedder-{os.getpid()}-", dir=base)
    os.environ[ENV] = path
    os.environ[_OWNER] = str(os.getpid())
    return path


def remove_dir() -> None:
    """Delete this master's directory (``on_exit``)."""
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ.get(ENV, ""), ignore_errors=True)


def mark_dead(pid: int) -> None:
    """Forget a dead worker's live gauges; its counters and histograms keep counting."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def render() -> tuple[bytes, str]:
    """The aggregate of every worker of this server, in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:  # a single process (tests with Flask's client): the default registry is the truth
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
