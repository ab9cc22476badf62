"""deploy/ is valid and consistent, checked offline with the real tools: hadolint (Dockerfile),
systemd-analyze (unit), kubernetes-validate and kubectl kustomize (manifests), promtool (config,
rules, alert unit tests), and the metric names of every dashboard query and rule checked against
a live server's /metrics, with a real Prometheus evaluating them on its scrapes.

Each validator is also shown a broken copy and must reject it, so a validator that silently does
nothing fails here too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import requests
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.servers import ROOT, Gunicorn, free_port

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
ALERT_TESTS = PROM / "tests" / "embedder-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "embedder-dashboard.json"
SYSTEMD_UNIT = DEPLOY / "systemd" / "embedder.service"
SYSTEMD_ENV = DEPLOY / "systemd" / "embedder.env"
pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
# The Kubernetes version the manifests are validated against (kubectl in the image is 1.32).
K8S_VERSION = "1.32.0"
# Kinds from the Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Series Prometheus makes itself for every target, not exported by the service.
PROMETHEUS_SERIES = {"up"}


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


def graceful_timeout() -> int:
    """Gunicorn's graceful_timeout, read from gunicorn.conf.py without running it."""
    for node in ast.parse((ROOT / "gunicorn.conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "graceful_timeout":
            return ast.literal_eval(node.value)
    raise AssertionError("gunicorn.conf.py sets no graceful_timeout")


# -- Dockerfile ------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for parts in (line.strip().split(None, 1) for line in logical)]


def with_arg_defaults(text: str) -> str:
    """The Dockerfile as built without --build-arg: each ${ARG} that has a default replaced by it."""
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    return re.sub(r'"?\$\{(\w+)\}"?', lambda m: defaults.get(m.group(1), m.group(0)), text)


DOCKERFILE = dockerfile_instructions(with_arg_defaults((DEPLOY / "Dockerfile").read_text()))


def instruction(name: str) -> list[str]:
    return [args for inst, args in DOCKERFILE if inst == name]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for args in instruction("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def hadolint(path: Path) -> subprocess.CompletedProcess:
    # Any finding at all (style included) fails; ignore pragmas in the file do not count.
    return run([str(BIN / "hadolint"), "--no-color", "--disable-ignore-pragma", "-t", "style", str(path)])


def test_hadolint_passes():
    result = hadolint(DEPLOY / "Dockerfile")
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path):
    text = (DEPLOY / "Dockerfile").read_text()
    assert "torch==" in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(re.sub(r"torch==\S+", "torch", text).replace("FROM ${BASE}", "FROM python"))
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3013" in result.stdout and "DL3006" in result.stdout, result.stdout


def test_dockerfile_builds_the_service_as_documented():
    assert instruction("FROM") == ["python:3.11-slim"]
    # CPU-only torch, the same version requirements.txt pins, installed before the requirements.
    torch_pin = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    runs = " && ".join(instruction("RUN"))
    cpu_install = re.search(r"pip install [^&]*--index-url https://download\.pytorch\.org/whl/cpu "
                            r"[^&]*torch==(\S+)", runs)
    assert cpu_install and cpu_install.group(1) == torch_pin
    assert runs.index("download.pytorch.org/whl/cpu") < runs.index("-r requirements.txt")
    assert instruction("COPY")[0] == "requirements.txt ./"  # deps cached apart from the code
    user = instruction("USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert json.loads(instruction("CMD")[-1]) == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    env = dockerfile_env()
    assert env["EMBEDDER_BIND"] == "0.0.0.0:8000"
    assert instruction("EXPOSE") == ["8000"]
    assert "/health" in instruction("HEALTHCHECK")[0]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_build_context_holds_what_the_dockerfile_copies():
    patterns = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = run(["git", "ls-files"], cwd=ROOT).stdout.split()
    for args in instruction("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), source
            files = [f for f in tracked if f == source.rstrip("/") or f.startswith(source.rstrip("/") + "/")]
            assert files, source
            assert not [f for f in files if dockerignore_excludes(f, patterns) and not f.endswith(".pyc")], source
    for kept_out in (".venv/bin/python", "tests/integration/test_api.py", "embedder/__pycache__/app.cpython-311.pyc",
                     ".git/HEAD"):
        assert dockerignore_excludes(kept_out, patterns), kept_out
    assert not dockerignore_excludes("embedder/app.py", patterns)


# -- systemd ---------------------------------------------------------------------------------

def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value)]}, keeping repeated keys (Environment=) in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def unit_value(sections, section, key):
    values = [v for k, v in sections[section] if k == key]
    assert values, f"{key}= missing in [{section}]"
    return values[-1]


def systemd_root(tmp_path: Path, unit_text: str) -> Path:
    """A filesystem root with the host's system units, the unit, and its commands (as stubs):
    `verify` checks that commands exist, and the service is installed elsewhere."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/embedder.service").write_text(unit_text)
    for key, value in unit_sections(unit_text)["Service"]:
        if key.startswith("Exec"):
            command = root / value.lstrip("-@:+!").split()[0].lstrip("/")
            command.parent.mkdir(parents=True, exist_ok=True)
            command.write_text("#!/bin/sh\n")
            command.chmod(0o755)
    return root


def systemd_verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess:
    root = systemd_root(tmp_path, unit_text)
    return run(["systemd-analyze", "verify", f"--root={root}", "embedder.service"])


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (Debian package systemd)")


@needs_systemd
def test_systemd_unit_verifies(tmp_path):
    result = systemd_verify(tmp_path, SYSTEMD_UNIT.read_text())
    # verify exits 0 on unknown keys or bad values too (it only warns): any output is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@needs_systemd
@pytest.mark.parametrize("change", [
    ("Restart=on-failure", "Restart=sometimes"),
    ("TimeoutStopSec=", "TimeoutStpSec="),
    ("After=network-online.target", "After=network-online.target\nRequires=no-such.target"),
])
def test_systemd_verify_rejects_a_broken_unit(tmp_path, change):
    text = SYSTEMD_UNIT.read_text()
    assert change[0] in text
    result = systemd_verify(tmp_path, text.replace(change[0], change[1]))
    assert result.returncode != 0 or (result.stdout + result.stderr).strip()


@needs_systemd
def test_systemd_unit_is_hardened(tmp_path):
    root = systemd_root(tmp_path, SYSTEMD_UNIT.read_text())
    # --threshold is exposure x 10: fail above 3.0 ("OK" in systemd's words).
    result = run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--threshold=30",
                  "--no-pager", "embedder.service"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_systemd_unit_restarts_and_drains():
    sections = unit_sections(SYSTEMD_UNIT.read_text())
    assert unit_value(sections, "Service", "ExecStart").endswith("/gunicorn -c gunicorn.conf.py wsgi:app")
    assert unit_value(sections, "Service", "Restart") == "on-failure"
    assert unit_value(sections, "Service", "Type") == "notify"  # Gunicorn sends READY=1
    assert unit_value(sections, "Service", "KillMode") == "mixed"  # SIGTERM to the master, which drains
    assert int(unit_value(sections, "Service", "TimeoutStopSec")) > graceful_timeout()
    assert unit_value(sections, "Service", "User") not in ("root", "0")
    assert unit_value(sections, "Install", "WantedBy") == "multi-user.target"


# -- settings in every deployment file -------------------------------------------------------

def systemd_env() -> dict[str, str]:
    env = dict(item.split("=", 1) for k, v in unit_sections(SYSTEMD_UNIT.read_text())["Service"]
               if k == "Environment" for item in shlex.split(v))
    for line in SYSTEMD_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def k8s_docs(*paths: Path) -> list[dict]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resource(kind: str, directory: Path = K8S / "base") -> dict:
    found = [doc for path in sorted(directory.glob("*.yaml")) for doc in k8s_docs(path) if doc.get("kind") == kind]
    assert len(found) == 1, (kind, directory)
    return found[0]


def container() -> dict:
    return k8s_resource("Deployment")["spec"]["template"]["spec"]["containers"][0]


def deployment_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container().get("env", []) if "value" in e}


@pytest.mark.parametrize("source", ["Dockerfile", "systemd", "kubernetes"])
def test_shipped_settings_are_real_and_valid(source):
    from embedder.config import PREFIX, Settings, specs

    env = {"Dockerfile": dockerfile_env, "systemd": systemd_env, "kubernetes": deployment_env}[source]()
    known = {name for spec in specs() for name in (spec.env, *spec.aliases)}
    ours = {k: v for k, v in env.items() if k.startswith(PREFIX) or k in known}
    assert ours and not set(ours) - known, set(ours) - known
    Settings.from_env(ours)  # raises on a value it cannot use


# -- Kubernetes ------------------------------------------------------------------------------

def validate_k8s(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


K8S_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_kubernetes_validate_accepts_the_manifests(path):
    docs = k8s_docs(path)
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue  # checked below against the CRD's structure
        validate_k8s(doc)


def test_kubernetes_validate_rejects_broken_manifests():
    deployment = k8s_resource("Deployment")
    bad_type = json.loads(json.dumps(deployment))
    bad_type["spec"]["replicas"] = "two"
    unknown_field = json.loads(json.dumps(deployment))
    unknown_field["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    no_port = json.loads(json.dumps(k8s_resource("Service")))
    del no_port["spec"]["ports"][0]["port"]
    for doc in (bad_type, unknown_field, no_port):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_k8s(doc)


def kustomize(directory: Path) -> list[dict]:
    result = run(["kubectl", "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl not installed: `kubectl kustomize` builds the overlays")


def test_kustomizations_list_every_manifest():
    for directory in (K8S / "base", K8S / "request-rate"):
        listed = yaml.safe_load((directory / "kustomization.yaml").read_text())
        files = set(listed.get("resources", [])) | {p["path"] for p in listed.get("patches", [])}
        local = {f for f in files if (directory / f).is_file()}
        assert {f for f in files if not (directory / f).is_dir()} == local
        not_applied = {"kustomization.yaml", "prometheus-adapter-config.yaml"}  # the adapter's, applied apart
        expected = {p.name for p in directory.glob("*.yaml")} - not_applied
        assert local == expected, directory


@needs_kubectl
def test_kustomize_builds_valid_base_and_request_rate_overlay():
    base = kustomize(K8S / "base")
    assert sorted(d["kind"] for d in base) == sorted(["Deployment", "Service", "HorizontalPodAutoscaler",
                                                      "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"])
    overlay = kustomize(K8S / "request-rate")
    for doc in base + overlay:
        if doc["kind"] not in CRD_KINDS:
            validate_k8s(doc)
    cpu_hpa = next(d for d in base if d["kind"] == "HorizontalPodAutoscaler")
    rate_hpa = next(d for d in overlay if d["kind"] == "HorizontalPodAutoscaler")
    assert [m["type"] for m in cpu_hpa["spec"]["metrics"]] == ["Resource"]
    assert [m["type"] for m in rate_hpa["spec"]["metrics"]] == ["Pods"]  # replaced, not merged


# The parts of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) these manifests use,
# with the operator's field names, types and duration pattern; unknown fields are rejected.
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def closed(required=(), **properties) -> dict:
    return {"type": "object", "required": list(required), "additionalProperties": False, "properties": properties}


def crd_object(kind: str, spec: dict) -> dict:
    metadata = {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": STRING_MAP}}
    return closed(["apiVersion", "kind", "metadata", "spec"], apiVersion={"const": "monitoring.coreos.com/v1"},
                  kind={"const": kind}, metadata=metadata, spec=spec)


ENDPOINT = closed(port={"type": "string"}, path={"type": "string", "pattern": "^/"},
                  scheme={"enum": ["http", "https"]}, interval=DURATION, scrapeTimeout=DURATION,
                  honorLabels={"type": "boolean"}, authorization={"type": "object"})
RULE = {**closed(["expr"], record={"type": "string"}, alert={"type": "string"},
                 expr={"type": ["string", "integer"]}, labels=STRING_MAP, annotations=STRING_MAP),
        "oneOf": [{"required": ["record"]}, {"required": ["alert"]}]}
RULE["properties"]["for"] = DURATION
CRD_SCHEMAS = {
    "ServiceMonitor": crd_object("ServiceMonitor", closed(
        ["selector", "endpoints"], jobLabel={"type": "string"}, namespaceSelector={"type": "object"},
        selector=closed(matchLabels=STRING_MAP, matchExpressions={"type": "array"}),
        endpoints={"type": "array", "minItems": 1, "items": ENDPOINT})),
    "PrometheusRule": crd_object("PrometheusRule", closed(
        groups={"type": "array", "items": closed(["name"], name={"type": "string", "minLength": 1},
                                                  interval=DURATION, rules={"type": "array", "items": RULE})})),
}


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_operator_resources_match_their_crd_structure(kind):
    doc = k8s_resource(kind)
    # Why kubernetes-validate is not used for these: it only knows the built-in kinds.
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        validate_k8s(doc)
    jsonschema.validate(doc, CRD_SCHEMAS[kind])
    broken = json.loads(json.dumps(doc))
    broken["spec"]["selectr" if kind == "ServiceMonitor" else "group"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CRD_SCHEMAS[kind])


def test_prometheus_rule_carries_exactly_the_rule_files():
    groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert sorted(k8s_resource("PrometheusRule")["spec"]["groups"], key=lambda g: g["name"]) == \
        sorted(groups, key=lambda g: g["name"])


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_manifests_agree_with_each_other_and_the_service():
    deployment, service = k8s_resource("Deployment"), k8s_resource("Service")
    pod = deployment["spec"]["template"]
    spec, main = pod["spec"], container()
    port = {p["name"]: p["containerPort"] for p in main["ports"]}["http"]
    env = deployment_env()
    # Bound where the port says, on all interfaces; the image's port and user.
    assert env["EMBEDDER_BIND"] == f"0.0.0.0:{port}" == dockerfile_env()["EMBEDDER_BIND"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == instruction("USER")[-1].split(":")[0]
    # Probes on /health; the startup probe allows for loading the model.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # Whole CPUs, requests = limits: the CFS quota gives the worker count (next test).
    assert main["resources"]["requests"] == main["resources"]["limits"]
    assert re.fullmatch(r"[1-9][0-9]*", str(main["resources"]["limits"]["cpu"]))
    # Draining: preStop sleep, then SIGTERM and Gunicorn's graceful_timeout, within the grace period.
    sleep = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + graceful_timeout()
    # The multiprocess metrics directory is on an emptyDir (fresh with each pod).
    mounts = sorted(main["volumeMounts"], key=lambda m: len(m["mountPath"]), reverse=True)
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"] + "/"
    volume = next(m["name"] for m in mounts if metrics_dir.startswith(m["mountPath"] + "/"))
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == volume)
    # With a read-only root filesystem, HF_HOME must be writable too.
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert any((env["HF_HOME"] + "/").startswith(m["mountPath"] + "/") for m in mounts)
    # Service -> pods -> port; ServiceMonitor -> Service -> port; HPA, PDB -> the Deployment's pods.
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = k8s_resource("ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert selects(k8s_resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    for directory in (K8S / "base", K8S / "request-rate"):
        target = k8s_resource("HorizontalPodAutoscaler", directory)["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # The ServiceMonitor's job label is the Service's name: the one the alerts select.
    alerts = "\n".join(p.read_text() for p in RULE_FILES)
    assert f'up{{job="{service["metadata"]["name"]}"}}' in alerts


def test_cpu_limit_gives_one_worker_per_cpu(monkeypatch):
    """The pod's CPU limit becomes the CFS quota the config reads: workers x threads = limit."""
    from embedder import config

    cpus = int(container()["resources"]["limits"]["cpu"])
    quota = f"{cpus * 100000} 100000"
    monkeypatch.setattr(config, "_read_first_line", lambda path: quota if path.endswith("cpu.max") else None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)  # a big node
    layout = config.Settings.from_env(deployment_env()).layout()
    assert (layout.workers, layout.threads) == (cpus, 1)


def adapter_rules() -> list[dict]:
    configmap = k8s_resource("ConfigMap", K8S / "request-rate")
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


def render_adapter_query(rule: dict) -> str:
    """prometheus-adapter's metricsQuery template, filled as it would for one pod."""
    series = promql_parser.parse(rule["seriesQuery"]).name
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="default",pod="embedder-0"').replace("<<.GroupBy>>", "pod"))


def test_request_rate_hpa_uses_the_adapter_metric():
    rules = adapter_rules()
    names = set()
    for rule in rules:
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        series = promql_parser.parse(rule["seriesQuery"]).name
        names.add(re.sub(rule["name"]["matches"], rule["name"]["as"], series))
    metrics = k8s_resource("HorizontalPodAutoscaler", K8S / "request-rate")["spec"]["metrics"]
    assert {m["pods"]["metric"]["name"] for m in metrics} <= names


# -- Prometheus ------------------------------------------------------------------------------

def promtool(*args) -> subprocess.CompletedProcess:
    return run(["promtool", *map(str, args)])


def test_promtool_checks_the_config_and_its_rule_files():
    result = promtool("check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_broken_config_and_rules(tmp_path):
    for path in RULE_FILES:
        text = path.read_text()
        for good, bad in (("rate(", "rate(("), ("for: ", "for: ten"), ("record: ", "record: 1")):
            if good in text:
                rules = tmp_path / path.name
                rules.write_text(text.replace(good, bad, 1))
                assert promtool("check", "rules", rules).returncode != 0, (path.name, bad)
    config = tmp_path / "prometheus.yml"
    text = (PROM / "prometheus.yml").read_text()
    assert "scrape_timeout: 10s" in text
    config.write_text(text.replace("scrape_timeout: 10s", "scrape_timeout: 10 seconds"))
    assert promtool("check", "config", config).returncode != 0


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def alert_names() -> list[str]:
    return [r["alert"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    names = alert_names()
    assert len(names) >= 6
    for name in names:
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never expected to fire"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} never expected quiet"


@pytest.mark.parametrize("alert", alert_names())
def test_alert_unit_tests_catch_a_wrong_alert(alert, tmp_path):
    """Replaced by one that never fires, then one that always does, each alert fails its tests."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    for mutant in ("vector(0) > 1", "vector(1)"):
        for path in (copy / "rules").glob("*.yml"):
            doc = yaml.safe_load(path.read_text())
            for rule in (r for g in doc["groups"] for r in g["rules"]):
                if rule.get("alert") == alert:
                    rule["expr"] = mutant
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = promtool("test", "rules", copy / "tests" / ALERT_TESTS.name)
        assert result.returncode != 0 and alert in result.stdout + result.stderr, (mutant, result.stdout)
        shutil.rmtree(copy / "rules")
        shutil.copytree(PROM / "rules", copy / "rules")


# -- every metric a query uses, against the live service --------------------------------------

GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$")


def grafana_promql(expr: str, variables: dict[str, str]) -> str:
    """A panel query as Grafana sends it: intervals and template variables filled in."""
    for name, value in {**GRAFANA_INTERVALS, **variables}.items():
        expr = expr.replace("${" + name.lstrip("$") + "}", value).replace(name, value)
    assert "$" not in expr, expr
    return expr


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(variables=None) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    variables = variables or {"$job": "embedder", "$instance": ".*"}
    board, queries = dashboard(), []
    panels = [p for top in board["panels"] for p in [top, *top.get("panels", [])]]
    for panel in panels:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", grafana_promql(target["expr"], variables)))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = LABEL_VALUES.match(query)
            queries.append((f"variable {var['name']}", grafana_promql(inner.group(1) if inner else query, variables)))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('record') or r.get('alert')}", r["expr"]) for path in RULE_FILES
            for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def all_queries() -> list[tuple[str, str]]:
    adapter = [(f"prometheus-adapter {r['name']['as']}", render_adapter_query(r)) for r in adapter_rules()]
    return dashboard_queries() + rule_queries() + adapter


def recorded_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects, from Prometheus' grammar (promql-parser)."""
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unknown_names(queries, exported: set[str]) -> dict[str, set[str]]:
    allowed = exported | recorded_names() | PROMETHEUS_SERIES
    return {where: missing for where, expr in queries if (missing := metric_names(expr) - allowed)}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One real server, started with the Deployment's settings, that has served some traffic."""
    env = {k: v for k, v in deployment_env().items() if k != "EMBEDDER_BIND"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path_factory.mktemp("metrics"))
    env["HF_HOME"] = str(tmp_path_factory.mktemp("hf"))
    with Gunicorn(workers=2, env=env) as srv:
        send_traffic(srv)
        yield srv


def send_traffic(srv) -> None:
    for i in range(6):
        assert requests.post(srv.url + "/embed", json={"inputs": [f"deploy check {i}", "another one"]},
                             timeout=60).status_code == 200
    assert requests.post(srv.url + "/v1/embeddings", json={"input": "openai shape"}, timeout=60).status_code == 200
    assert requests.post(srv.url + "/embed", json={"inputs": 5}, timeout=60).status_code == 422


def exported_names(srv) -> set[str]:
    text = requests.get(srv.url + "/metrics", timeout=10).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_docker_healthcheck_command_probes_health(live):
    """The image's HEALTHCHECK, run here: 0 against a healthy server, non-zero with none there."""
    args = instruction("HEALTHCHECK")[0]
    command = json.loads(args[args.index("CMD") + 3:].strip())
    assert command[0] == "python"
    command[0] = sys.executable
    port = live.url.rpartition(":")[2]
    assert run(command, env={**os.environ, "EMBEDDER_BIND": f"0.0.0.0:{port}"}).returncode == 0
    assert run(command, env={**os.environ, "EMBEDDER_BIND": f"0.0.0.0:{free_port()}"}).returncode != 0


def test_metric_name_check_finds_a_wrong_name():
    exported = {"embedder_requests_total", "embedder_request_duration_seconds_bucket"}
    queries = [("good", 'sum(rate(embedder_requests_total{route="/embed"}[1m]))'),
               ("typo", "rate(embedder_request_total[1m]) / on(job) group_left up"),
               ("suffix", "histogram_quantile(0.9, rate(embedder_request_duration_seconds[1m]))")]
    assert unknown_names(queries, exported) == {"typo": {"embedder_request_total"},
                                                "suffix": {"embedder_request_duration_seconds"}}


def test_queries_only_use_metrics_the_service_exports(live):
    exported = exported_names(live)
    # The definitions' metrics are all there (histograms as _bucket/_sum/_count).
    from metrics import definitions

    for metric in vars(definitions).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + {"counter": "_total", "histogram": "_bucket"}.get(metric._type, "")
            assert name in exported, name
    queries = all_queries()
    used = set().union(*(metric_names(expr) for _, expr in queries))
    assert len(queries) > 30 and "embedder_inputs_total" in used
    assert unknown_names(queries, exported) == {}


def test_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    ids, cells = set(), set()
    for panel in board["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, used - variables
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("requests/s", "sentences/s", "latency", "batch", "queue", "reason", "workers"):
        assert topic in titles, topic


# -- a real Prometheus evaluates the rules and the dashboard on the live service ---------------

@pytest.fixture(scope="module")
def prometheus(live, tmp_path_factory):
    """Prometheus with deploy/prometheus/prometheus.yml, scraping the live server every second."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROM / f) for f in config["rule_files"]]
    job = config["scrape_configs"][0]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [live.url.removeprefix("http://")]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        # Traffic between scrapes, until the recorded rates see it.
        while time.monotonic() < deadline:
            send_traffic(live)
            if (prom_query(url, "job:embedder_inputs:rate1m > 0") and prom_query(url, "job:embedder_batch_size:mean5m")
                    and prom_query(url, "job_route:embedder_request_duration_seconds:p99_5m")):
                break
            time.sleep(1)
        else:
            raise TimeoutError("Prometheus never recorded the traffic")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def prom_query(url: str, expr: str):
    """The result list, or None if Prometheus is not answering yet."""
    try:
        body = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_prometheus_evaluates_every_rule_without_error(prometheus):
    groups = requests.get(prometheus + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r.get("name") for r in rules} == recorded_names() | set(alert_names())
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    for name in recorded_names():
        assert prom_query(prometheus, name), f"{name} recorded nothing"
    assert not prom_query(prometheus, 'ALERTS{alertstate="firing"}')


def test_prometheus_answers_every_dashboard_query(prometheus):
    for where, expr in dashboard_queries():
        assert prom_query(prometheus, expr), f"{where}: no series for {expr}"
