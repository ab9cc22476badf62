"""Start and stop real ``gunicorn -c gunicorn.conf.py wsgi:app`` servers for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


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


class Server:
    """One Gunicorn master with its workers, on a free port on 127.0.0.1, logging to a file."""

    def __init__(self, workers: int = 2, env: dict | None = None, args: tuple = (), app: str = "wsgi:app"):
        self.workers = workers
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDER_WORKERS": str(workers),
                    "EMBEDDER_BIND": f"127.0.0.1:{self.port}", **(env or {})}
        self.args = tuple(args)
        self._log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "Server":
        self.proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", *self.args, self.app],
                                     cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the expected number of workers are up and /health answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            if len(self.worker_pids()) == self.workers and self.log().count(" ready: ") >= self.workers:
                try:
                    if requests.get(self.url + "/health", timeout=5).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"gunicorn not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self, timeout: float = 60) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
