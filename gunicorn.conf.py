"""Gunicorn settings and server hooks for embedder.

The master loads the model once (``preload_app``) and never runs it; each worker, after fork,
sizes its intra-op threads so that workers x threads = cores, starts its batching thread and warms
up before it accepts traffic. Every value read from the environment comes from the settings
registry (``embedder/config.py``). Command-line flags and ``GUNICORN_CMD_ARGS`` override what is
set here, as usual.
"""

import gc
import logging
import os

from embedder.config import Settings

try:
    _settings = Settings.from_env()
except ValueError as why:  # a bad setting: its one-line reason, not Gunicorn's traceback of this file
    raise SystemExit(f"embedder cannot start: {why}") from None

# prometheus_client chooses multiprocess mode when first imported, and preload_app imports the
# app before any hook runs: prepare the metrics directory here, first.
from metrics import multiprocess  # noqa: E402

multiprocess.prepare_dir(_settings.metrics_dir)

loglevel = _settings.log_level
logging.basicConfig(level=loglevel.upper(),
                    format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")

bind = _settings.bind
workers = _settings.layout().workers
# Connections are read in an asyncio loop; a request gets one of `threads` threads only when it has
# fully arrived, so stalled or slow clients hold no thread (embedder/edge_worker.py).
worker_class = "embedder.edge.worker.EdgeWorker"
threads = _settings.http_threads
worker_connections = _settings.max_connections
preload_app = True
# A forward pass can be long on a busy machine; the heartbeat comes from the worker's main thread.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Two servers on one host must not share the default control socket path.
control_socket_disable = True
accesslog = _settings.access_log or None
# HTTPS with Gunicorn's own TLS when both are set (Settings refuses one without the other).
certfile = _settings.tls_cert or None
keyfile = _settings.tls_key or None
# Gunicorn's logger, with user names, query values and credential headers hidden in the access log.
logger_class = "embedder.edge.access_log.RedactingLogger"


def _models(worker):
    return worker.wsgi.extensions["embedder"]


def when_ready(server):
    """The app is loaded (preload): freeze it so forked workers keep sharing its pages."""
    gc.collect()
    gc.freeze()
    server.log.info("embedder master %d ready with model loaded; forking %d workers",
                    os.getpid(), server.cfg.workers)


def post_worker_init(worker):
    """In the worker, after fork: threads, batching thread, warm-up. Runs before accepting."""
    def exit_worker():  # as SIGTERM would: stop accepting, finish what is in flight, exit
        worker.alive = False

    multiprocess.ensure_dir()  # deleted while the server ran? a new worker's metric files need it
    _models(worker).start_worker(workers=worker.cfg.workers, on_failure=exit_worker)
    multiprocess.start_keeper()


def child_exit(server, worker):
    multiprocess.mark_dead(worker.pid)


def on_exit(server):
    multiprocess.remove_dir()
