"""The layers' import rules, enforced on the source (docs/architecture.md says why).

Each module of ``embedder/`` belongs to a layer (its folder: core, model, backends, http, edge;
``embedder/config.py`` is the settings registry every layer reads) and ``metrics/`` is a leaf. A
layer imports only the layers below it, plus the settings and metrics; the core, model and
backends import no web framework, validation or HTTP library; the edge reaches the app only through
the WSGI environ (it imports no other layer). There is no import cycle between modules, and an
import inside a function (the way to keep a heavy library out of the Gunicorn master) says why on
its line or the line above.

:func:`breaches` reads any tree laid out like this one, so the tests below also show that it
catches each kind of breach in a small made-up tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("embedder", "metrics")

#: Each layer, and the layers it may import (itself always).
MAY_IMPORT = {
    "config": set(),
    "metrics": set(),
    "package": set(),          # embedder/__init__.py: the version
    "model": {"config", "package"},
    "backends": {"model", "config", "package"},
    "core": {"model", "config", "metrics", "package"},
    "http": {"core", "model", "backends", "config", "metrics", "package"},
    "edge": {"config", "package"},
}
#: Libraries a layer must not import: HTTP belongs to the http and edge layers alone.
WEB = {"flask", "werkzeug", "pydantic", "http", "gunicorn", "orjson", "flask_swagger_ui"}
FORBIDDEN = {"core": WEB, "model": WEB, "backends": WEB, "config": WEB, "metrics": WEB - {"http"},
             "package": WEB, "http": {"gunicorn"}}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "metrics":
        return "metrics"
    if len(parts) == 1:
        return "package"
    if parts[1] == "config":
        return "config"
    return parts[1]


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under ``root``, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of a ``from ... import`` (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]):
    """``(line, imported module, inside a function)`` for each import in the module; ``from a
    import b`` counts as ``a.b`` when that is a module of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            yield node.lineno, name, id(node) in nested


def _commented(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the line above it (or above the run of imports it is in)."""
    above = lineno - 1
    while above > 0 and (not lines[above].strip() or lines[above].strip().startswith(("import ", "from "))):
        above -= 1
    return "#" in lines[lineno] or lines[above].strip().startswith("#")


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {m: {name for _, name, _ in imports(m, p, known) if name in known and name != m}
            for m, p in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def breaches(root: Path) -> list[str]:
    """Every breach of the rules in the tree at ``root``, one line each naming file and line."""
    known = modules(root)
    out = []
    for module, path in known.items():
        layer = layer_of(module)
        lines = [""] + path.read_text(encoding="utf-8").splitlines()
        where = path.relative_to(root)
        for lineno, name, nested in imports(module, path, known):
            top = name.split(".")[0]
            if name in known or top in PACKAGES:
                other = layer_of(name)
                if other != layer and other not in MAY_IMPORT[layer]:
                    out.append(f"{where}:{lineno}: the {layer} layer imports {name} (the {other} layer)")
            elif top in FORBIDDEN.get(layer, ()):
                out.append(f"{where}:{lineno}: the {layer} layer imports {name}")
            if nested and not _commented(lines, lineno):
                out.append(f"{where}:{lineno}: an import inside a function ({name}) without a comment saying why")
    for group in cycles(graph(root)):
        out.append("import cycle: " + " -> ".join(group))
    return out


def test_the_project_keeps_the_rules():
    found = breaches(ROOT)
    assert not found, "\n".join(found)


def test_every_module_has_a_known_layer():
    for module in modules(ROOT):
        assert layer_of(module) in MAY_IMPORT, module


# -- the checker catches each kind of breach --------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name in ("embedder/__init__.py", "embedder/config.py", "metrics/__init__.py",
                 *(f"embedder/{layer}/__init__.py" for layer in ("core", "model", "backends", "http", "edge"))):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"embedder/core/service.py": "import flask\n"}, "embedder/core/service.py:1: the core layer imports flask"),
    ({"embedder/core/service.py": "from pydantic import BaseModel\n"}, "the core layer imports pydantic"),
    ({"embedder/model/load.py": "from ..core import service\n"}, "the model layer imports embedder.core"),
    ({"embedder/backends/b.py": "from embedder.http import app\n"}, "the backends layer imports embedder.http"),
    ({"metrics/m.py": "from embedder.core.errors import X\n"}, "the metrics layer imports embedder.core.errors"),
    ({"embedder/edge/worker.py": "from ..http.app import create_app\n"}, "the edge layer imports embedder.http"),
    ({"embedder/core/a.py": "def f():\n    import torch\n"}, "inside a function (torch) without a comment"),
    ({"embedder/model/a.py": "from . import b\n", "embedder/model/b.py": "def f():\n    from . import a  # lazy\n"},
     "import cycle: embedder.model.a -> embedder.model.b"),
], ids=["core-flask", "core-pydantic", "model-core", "backends-http", "metrics-embedder", "edge-http",
        "uncommented-lazy", "cycle"])
def test_a_breach_is_caught(tmp_path, files, expected):
    found = breaches(_tree(tmp_path, files))
    assert any(expected in line for line in found), found


def test_allowed_imports_pass(tmp_path):
    files = {"embedder/http/app.py": "from ..core import service\nfrom ..backends import b\nimport flask\n",
             "embedder/core/service.py": "from ..model import load\nfrom metrics import definitions\n",
             "embedder/model/load.py": "def f():\n    # heavy: only when needed\n    import torch\n",
             "embedder/backends/b.py": "from ..model import load\n"}
    assert breaches(_tree(tmp_path, files)) == []
