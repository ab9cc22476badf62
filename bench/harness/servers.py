"""Start and stop the servers that the benchmark measures and the tests talk to, each in its own
process group, with bounded waits: the one launcher both use.

Every process started here is registered, and :func:`stop_all` (run at exit and on SIGTERM)
kills the process groups of any still running, so an interrupted benchmark leaves none behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

#: The repository root (bench/harness/servers.py is three levels down).
ROOT = Path(__file__).resolve().parents[2]
#: The sweep's files this launcher starts servers from: the Flask baseline and Caddy's config.
SWEEP_DIR = ROOT / "bench" / "sweep"
CADDYFILE_TEMPLATE = SWEEP_DIR / "Caddyfile.template"
FLASK_BASELINE_MODULE = "bench.sweep.baseline_flask"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))

_live: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct child pids of a process (Gunicorn's workers, for the master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process, then SIGKILL its whole group if it is not gone within ``grace`` s."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) too; the group is the session
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def stop_all() -> None:
    while _live:
        _kill_group(_live.pop(), grace=5)


atexit.register(stop_all)


def _tail(path: str, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Process:
    """One server process started in a new session, logging to a temp file."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: Path = ROOT):
        self.name = name
        self.log_path = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log",
                                                    delete=False).name
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})},
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _live.append(self.proc)

    def wait_http(self, url: str, timeout: float) -> None:
        """Until ``url`` answers 200, the process exits (error), or ``timeout`` passes (error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(url, timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready within {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return _tail(self.log_path)

    def stop(self, grace: float = 30) -> None:
        _kill_group(self.proc, grace)
        if self.proc in _live:
            _live.remove(self.proc)
        Path(self.log_path).unlink(missing_ok=True)


class FlaskBaseline:
    """The original single-process Flask server (bench/sweep/baseline_flask.py)."""

    name = "flask"

    def __init__(self, start_timeout: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(f"flask-{self.port}", [sys.executable, "-m", FLASK_BASELINE_MODULE,
                                                      str(self.port)], env={"HF_HUB_OFFLINE": "1"})
        try:
            self.process.wait_http(self.url + "/", start_timeout)
        except BaseException:
            self.process.stop(grace=5)
            raise

    def root_pids(self) -> list[int]:
        return [self.process.proc.pid]

    def stop(self) -> None:
        self.process.stop()


class CaddyFanout:
    """Caddy on one port, reverse-proxying round-robin to two Flask baseline servers."""

    name = "caddy"

    def __init__(self, start_timeout: float):
        self.backends: list[FlaskBaseline] = []
        self.caddy: Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="bench-caddy-")
        try:
            for _ in range(2):
                self.backends.append(FlaskBaseline(start_timeout))
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            template = string.Template(CADDYFILE_TEMPLATE.read_text())
            config = Path(self._dir.name) / "Caddyfile"
            config.write_text(template.substitute(port=self.port, backend_a=self.backends[0].port,
                                                  backend_b=self.backends[1].port))
            home = self._dir.name  # Caddy's data and config dirs, not the user's
            self.caddy = Process(f"caddy-{self.port}",
                                 ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
                                 env={"HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home})
            self.caddy.wait_http(self.url + "/", start_timeout)
        except BaseException:
            self.stop()
            raise

    def root_pids(self) -> list[int]:
        return [self.caddy.proc.pid] + [pid for b in self.backends for pid in b.root_pids()]

    def stop(self) -> None:
        if self.caddy:
            self.caddy.stop(grace=10)
        for backend in self.backends:
            backend.stop()
        self._dir.cleanup()


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` on a free port on 127.0.0.1, logging to a file.

    Ready means what the server itself says: ``/health`` answers 200 and ``embedder_workers``
    (each worker sets it once it has warmed up) counts every worker the master has.
    """

    def __init__(self, workers: int = 2, env: dict | None = None, args: tuple = (), app: str = "wsgi:app"):
        self.workers = workers
        self.app = app
        self.port = free_port()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDER_WORKERS": str(workers),
                    "EMBEDDER_BIND": f"127.0.0.1:{self.port}", **(env or {})}
        #: With EMBEDDER_TLS_CERT set the server speaks HTTPS only; its certificate is the CA to trust.
        self.verify = self.env.get("EMBEDDER_TLS_CERT") or True
        scheme = "https" if self.env.get("EMBEDDER_TLS_CERT") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        key = self.env.get("EMBEDDER_API_KEY")
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.args = tuple(args)
        self._log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> Gunicorn:
        if self._log.closed:  # started again after stop(): append to the same log
            self._log = open(self._log.name, "ab")  # closed by stop()
        self.proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", *self.args, self.app],
                                     cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _live.append(self.proc)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(timeout=10)
            raise
        return self

    def ready_workers(self) -> int | None:
        """Workers that report themselves serving (the ``embedder_workers`` gauge), or None."""
        try:
            if requests.get(self.url + "/health", timeout=5, verify=self.verify).status_code != 200:
                return None
            text = requests.get(self.url + "/metrics", headers=self._auth, timeout=5, verify=self.verify).text
        except requests.RequestException:
            return None
        for line in text.splitlines():
            if line.startswith("embedder_workers "):
                return int(float(line.split()[1]))
        return None

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the master has its workers, /health answers 200 and every worker says it serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            if len(self.worker_pids()) == self.workers and self.ready_workers() == self.workers:
                return
            time.sleep(0.2)
        raise TimeoutError(f"gunicorn not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def root_pids(self) -> list[int]:
        return [self.proc.pid]

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (Gunicorn drains), then SIGKILL to the whole group after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc, grace=0)
        if proc in _live:
            _live.remove(proc)
        self._log.close()  # the server's own copy went with it; log() reads the file by name
        return proc.returncode

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        Path(self._log.name).unlink(missing_ok=True)


def start_embedder(backend: str, workers: int, threads: int | None, http_threads: int | None,
                   start_timeout: float) -> Gunicorn:
    """One benchmark row's server; its /info must report the backend asked for."""
    from embedder.config import BACKEND_LABELS

    name, precision = BACKEND_LABELS[backend]
    # All set, always: the user's own EMBEDDER_BACKEND / EMBEDDER_PRECISION / EMBEDDER_QUANTIZE must
    # not leak in. No API key: wrk and the probes send none, and the benchmark measures the open service.
    env = {"EMBEDDER_BACKEND": name, "EMBEDDER_PRECISION": precision, "EMBEDDER_QUANTIZE": "",
           "EMBEDDER_THREADS": str(threads or 0),
           "EMBEDDER_API_KEY": ""}
    if http_threads is not None:
        env["EMBEDDER_HTTP_THREADS"] = str(http_threads)
    server = Gunicorn(workers=workers, env=env)
    server.start(timeout=start_timeout)
    try:
        server.info = requests.get(server.url + "/info", timeout=10).json()
        if server.info.get("backend") != backend:
            raise RuntimeError(f"server started with backend {server.info.get('backend')!r}, "
                               f"not the requested {backend!r}")
    except BaseException:
        server.stop()
        raise
    return server
