"""Start and stop the servers under test, each in its own process group, with bounded waits.

Every process started here is registered, and :func:`stop_all` (run at exit and on SIGTERM)
kills the process groups of any still running, so an interrupted benchmark leaves none behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import Server, free_port  # noqa: E402  (the test suite's Gunicorn launcher)

_live: list[subprocess.Popen] = []


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
    """The original single-process Flask server (bench/baseline_flask.py)."""

    name = "flask"

    def __init__(self, start_timeout: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(f"flask-{self.port}", [sys.executable, "-m", "bench.baseline_flask",
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
            template = string.Template((Path(__file__).with_name("Caddyfile.template")).read_text())
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


class _TrackedServer(Server):
    """The test suite's Server, registered for cleanup as soon as its master has started."""

    def wait_ready(self, timeout: float = 180) -> None:
        _live.append(self.proc)
        super().wait_ready(timeout)


class Embedder:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` with one sweep row's settings."""

    name = "embedder"
    #: Backend labels, as /info reports them, and the EMBEDDER_BACKEND / EMBEDDER_QUANTIZE that select each.
    BACKENDS = {"torch": ("torch", ""), "onnx": ("onnx", ""), "onnx-int8": ("onnx", "int8")}

    def __init__(self, backend: str, workers: int, torch_threads: int | None, http_threads: int | None,
                 start_timeout: float):
        name, quantize = self.BACKENDS[backend]
        # Both set, always: the user's own EMBEDDER_BACKEND / EMBEDDER_QUANTIZE must not leak in.
        env = {"EMBEDDER_BACKEND": name, "EMBEDDER_QUANTIZE": quantize,
               "EMBEDDER_TORCH_THREADS": str(torch_threads or 0)}
        if http_threads is not None:
            env["EMBEDDER_HTTP_THREADS"] = str(http_threads)
        self.server = _TrackedServer(workers=workers, env=env)
        self.url = self.server.url
        try:
            self.server.start(timeout=start_timeout)
            self.info = requests.get(self.url + "/info", timeout=10).json()
            if self.info.get("backend") != backend:
                raise RuntimeError(f"server started with backend {self.info.get('backend')!r}, "
                                   f"not the requested {backend!r}")
        except BaseException:
            self.stop()
            raise

    def root_pids(self) -> list[int]:
        return [self.server.pid]

    def log(self) -> str:
        return self.server.log()[-3000:]

    def stop(self) -> None:
        proc = self.server.proc
        if proc is not None:
            try:
                self.server.stop(timeout=60)
            finally:
                _kill_group(proc, grace=0)
                if proc in _live:
                    _live.remove(proc)
        Path(self.server._log.name).unlink(missing_ok=True)
