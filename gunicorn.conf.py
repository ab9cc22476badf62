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
import signal

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
    if getattr(worker, "embedder_replaces", None):
        _replace_when_serving(worker)


def child_exit(server, worker):
    multiprocess.mark_dead(worker.pid)
    retiring = getattr(server, "embedder_retiring", {})
    if worker.pid in retiring:
        del retiring[worker.pid]
        if len(server.WORKERS) < server.num_workers:  # it was counted: replace it with none
            server.num_workers -= 1


# --- reload (SIGHUP) without a moment when no warmed-up worker serves ----------------------------
#
# Gunicorn's reload forks `workers` new workers, then stops every old one at once, seconds before
# the new ones have warmed up: meanwhile no worker accepts. Here the old ones stay, counted in
# `num_workers` so that Gunicorn's manage_workers keeps them, and each new worker, once warmed up
# and serving, stops its share of them itself (SIGTERM: they drain). The master keeps the count:
# an old worker that exits is not replaced, and `num_workers` is the configured count again once
# all have gone. A new worker that never gets ready stops none (the old ones keep serving); one
# that dies first leaves its share to the worker forked in its place. State lives on the arbiter:
# this file is read again on each SIGHUP.

def on_reload(server):
    """SIGHUP, in the master, settings read again, before the new workers are forked: every worker
    running now (those of an unfinished earlier reload too) is old; split them, oldest first,
    among the new workers."""
    old = [w.pid for w in sorted(server.WORKERS.values(), key=lambda w: w.age)]
    new = server.cfg.workers
    server.embedder_retiring = dict.fromkeys(old)  # old pid -> the new worker that stops it
    server.embedder_shares = [old[k::new] for k in range(new)]
    server.num_workers = new + len(old)
    server.log.info("reload: %d new workers; each stops its share of the %d old ones once it serves",
                    new, len(old))


def pre_fork(server, worker):
    """In the master, before each fork: a worker forked for a reload gets its share of the old
    workers; one forked in place of a new worker that died takes over what that one left."""
    retiring = getattr(server, "embedder_retiring", {})
    shares = getattr(server, "embedder_shares", [])
    if shares:
        share = shares.pop(0)
    else:
        share = [pid for pid, by in retiring.items()
                 if pid in server.WORKERS and (by is None or by.pid not in server.WORKERS)]
    for pid in share:
        retiring[pid] = worker
    worker.embedder_replaces = share


def _replace_when_serving(worker):
    """In a new worker, warmed up: once it listens (its event loop runs ``_serve`` next), stop the
    old workers it replaces, those still the master's children (a pid is not reused before the
    master has reaped it)."""
    if not getattr(worker, "servers", True):  # the edge worker, not listening yet
        worker.loop.call_later(0.05, _replace_when_serving, worker)
        return
    for pid in worker.embedder_replaces:
        if _parent_of(pid) in (worker.ppid, "unknown"):
            worker.log.info("worker %d serving: stopping worker %d (reload)", os.getpid(), pid)
            os.kill(pid, signal.SIGTERM)
    worker.embedder_replaces = []


def _parent_of(pid: int) -> int | str | None:
    """The parent pid of a process (Linux's /proc), None when it is gone, "unknown" without /proc."""
    if not os.path.isdir("/proc/self"):
        return "unknown"
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])  # after "(command name)": state, ppid
    except (OSError, IndexError, ValueError):
        return None


def on_exit(server):
    multiprocess.remove_dir()
