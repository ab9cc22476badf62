"""The edge worker's contract with Gunicorn, checked against the installed Gunicorn.

``embedder/edge/worker.py`` subclasses Gunicorn's ``ASGIWorker`` and ``ASGIProtocol`` and relies on
members Gunicorn does not document as API (``_request_ready``, ``_serve``, ...). Its
``GUNICORN_CONTRACT`` declares each one; here each declared member must still exist on the
installed Gunicorn with the declared kind and signature, and still be used where declared; and
every member of Gunicorn's classes that worker.py uses (found in its source with ``ast``) must be
declared. A Gunicorn upgrade that breaks the worker fails here, naming the member, instead of in a
server under load. Fast: imports and source reading, no server, no process.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import textwrap
import types
from pathlib import Path

import gunicorn
import pytest
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.config import Config
from gunicorn.sock import BaseSocket
from gunicorn.workers.gasgi import ASGIWorker

from embedder.edge import worker as edge

CONTRACT = edge.GUNICORN_CONTRACT
KINDS = {"method", "coroutine", "classmethod", "attribute"}
USES = {"override", "override+super", "call", "read", "set", "read+set"}


def _resolve(dotted: str):
    """The object a dotted path names: the longest importable module, then attributes (static
    lookup, so a classmethod or a function comes back as defined)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = inspect.getattr_static(obj, name)
        return obj
    raise ImportError(dotted)


def _function(obj):
    return obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj


def _tree(obj) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


def _assigned_on_self(cls: type) -> set[str]:
    """Names a class's own source assigns as ``self.<name>``."""
    return {node.attr for node in ast.walk(_tree(cls))
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name) and node.value.id == "self"}


def _gunicorn_members(cls: type) -> dict[str, type]:
    """Every member name an instance of ``cls`` has from Gunicorn (or asyncio, object) -> the
    class that defines it: class attributes along the MRO, and ``self.<name>`` assignments in the
    source of each Gunicorn class in it."""
    members: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        found = set(vars(klass))
        if klass.__module__.startswith("gunicorn."):
            found |= _assigned_on_self(klass)
        members.update(dict.fromkeys(found, klass))
    return members


def _label(entry) -> str:
    return f"{entry['cls'].rsplit('.', 1)[1]}.{entry['name']}"


def _declared_on(cls: type, name: str) -> bool:
    return any(entry["name"] == name and _resolve(entry["cls"]) in cls.__mro__
               for entry in CONTRACT)


# --- the declaration itself ---------------------------------------------------------------------

def test_contract_is_well_formed():
    keys = [(entry["cls"], entry["name"]) for entry in CONTRACT]
    assert len(keys) == len(set(keys)), "a member is declared twice"
    parents = [*edge.EdgeProtocol.__mro__, *edge.EdgeWorker.__mro__, BaseSocket]
    for entry in CONTRACT:
        label = _label(entry)
        assert set(entry) == {"cls", "name", "kind", "use", "signature", "used_by", "why"}, label
        assert entry["kind"] in KINDS, label
        assert entry["use"] in USES, label
        assert (entry["signature"] is None) == (entry["kind"] == "attribute"), label
        assert entry["why"], label
        cls = _resolve(entry["cls"])
        assert isinstance(cls, type) and cls.__module__.startswith("gunicorn."), label
        assert cls in parents, f"{label}: {entry['cls']} is not a class the edge worker builds on"


# --- each declared member against the installed Gunicorn ----------------------------------------

@pytest.mark.parametrize("entry", CONTRACT, ids=_label)
def test_declared_member_still_there(entry):
    label, name = _label(entry), entry["name"]
    cls = _resolve(entry["cls"])
    where = f"{label}: Gunicorn {gunicorn.__version__}'s {entry['cls']}"
    if entry["kind"] == "attribute":
        owners = [k for k in cls.__mro__ if k.__module__.startswith("gunicorn.")]
        assert any(name in _assigned_on_self(k) for k in owners), (
            f"{where} no longer sets self.{name} (declared: attribute we {entry['use']}; "
            f"{entry['why']})")
        return
    raw = inspect.getattr_static(cls, name, None)
    assert raw is not None, (f"{where} has no {name} any more (declared: {entry['kind']} we "
                             f"{entry['use']}; {entry['why']})")
    func = _function(raw)
    if entry["kind"] == "classmethod":
        assert isinstance(raw, classmethod), f"{where}.{name} is no longer a classmethod"
    else:
        assert inspect.isfunction(raw), f"{where}.{name} is no longer a plain method: {raw!r}"
    is_coroutine = inspect.iscoroutinefunction(func)
    assert is_coroutine == (entry["kind"] == "coroutine"), (
        f"{where}.{name} is {'now' if is_coroutine else 'no longer'} a coroutine function "
        f"(declared: {entry['kind']})")
    signature = str(inspect.signature(func))
    assert signature == entry["signature"], (
        f"{where}.{name} has signature {signature}, declared {entry['signature']} "
        f"({entry['why']})")


USED_BY = [(entry, user) for entry in CONTRACT for user in entry["used_by"]]


@pytest.mark.parametrize(
    "entry, user", USED_BY,
    ids=[f"{_label(entry)}@{user.rsplit('.', 2)[-2]}.{user.rsplit('.', 1)[1]}"
         for entry, user in USED_BY])
def test_gunicorn_still_uses_it_there(entry, user):
    """An override Gunicorn no longer calls, or an attribute it no longer sets or waits on, would
    be silently dead: the Gunicorn function named in ``used_by`` must still mention it."""
    try:
        func = _function(_resolve(user))
    except (ImportError, AttributeError):
        pytest.fail(f"{_label(entry)}: {user} (declared to use .{entry['name']}) no longer exists")
    names = {node.attr for node in ast.walk(_tree(func)) if isinstance(node, ast.Attribute)}
    assert entry["name"] in names, (
        f"{_label(entry)}: {user} no longer uses .{entry['name']} (declared: {entry['kind']} "
        f"we {entry['use']}; {entry['why']})")


def test_attributes_on_fresh_instances():
    """Built cheaply, as Gunicorn builds them: each attribute we read is there, and
    ``_request_ready`` is None until HTTP/1 starts (how EdgeProtocol tells HTTP/1 apart)."""
    cfg, log = Config(), logging.getLogger("test_edge_contract")
    app = types.SimpleNamespace(wsgi=lambda: "the app")
    worker = ASGIWorker(0, os.getpid(), [], app, 30, cfg, log)
    try:
        worker.load_wsgi()
        protocol = ASGIProtocol(worker)
        for entry in CONTRACT:
            if entry["kind"] != "attribute" or "read" not in entry["use"]:
                continue
            cls = _resolve(entry["cls"])
            instance = (protocol if issubclass(ASGIProtocol, cls)
                        else worker if issubclass(ASGIWorker, cls) else None)
            if instance is not None:
                assert hasattr(instance, entry["name"]), (
                    f"{_label(entry)}: a fresh {type(instance).__name__} has no {entry['name']}")
        assert protocol.worker is worker and protocol.app == "the app" == worker.asgi
        assert protocol._request_ready is None and protocol._closed is False
        assert worker.servers == [] and worker.alive is True
    finally:
        worker.tmp.close()


# --- nothing used without being declared --------------------------------------------------------

# What a name in worker.py stands for, per class (besides self, cls and super()).
_RECEIVERS = {
    "EdgeProtocol": {},
    "EdgeWorker": {"connection": edge.EdgeProtocol, "oldest": edge.EdgeProtocol,
                   "sock": BaseSocket},
    None: {"connection": edge.EdgeProtocol},  # WSGIBridge and the module's functions
}
_EDGE = {"EdgeProtocol": edge.EdgeProtocol, "EdgeWorker": edge.EdgeWorker}


def _uses_in_worker():
    """(line, text, class or None, name) for each attribute worker.py uses or defines on an edge
    protocol, edge worker or Gunicorn listener, and each other underscore name it uses; plus the
    names each edge class defines itself and every name the module defines anywhere."""
    tree = ast.parse(Path(edge.__file__).read_text())
    uses, own = [], {name: set() for name in _EDGE}
    module_names = {node.name for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    module_names |= {node.attr for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)}
    for scope in tree.body:
        clsname = scope.name if isinstance(scope, ast.ClassDef) and scope.name in _EDGE else None
        cls = _EDGE.get(clsname)
        receivers = {**_RECEIVERS[clsname], **({"self": cls, "cls": cls} if cls else {})}
        if cls is not None:
            for item in scope.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    uses.append((item.lineno, f"def {item.name}", cls, item.name))
                    own[clsname].add(item.name)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            value, target = node.value, None
            if isinstance(value, ast.Name):
                target = receivers.get(value.id)
            elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                  and value.func.id == "super"):
                target = cls
            elif (cls is edge.EdgeProtocol and isinstance(value, ast.Attribute)
                  and value.attr == "worker" and isinstance(value.value, ast.Name)
                  and value.value.id == "self"):
                target = edge.EdgeWorker
            if target is None and not (node.attr.startswith("_")
                                       and node.attr not in module_names):
                continue
            uses.append((node.lineno, ast.unparse(node), target, node.attr))
            if (target is cls and cls is not None and isinstance(node.ctx, ast.Store)
                    and isinstance(value, ast.Name)):
                own[clsname].add(node.attr)
    return uses, own


def test_every_gunicorn_member_used_is_declared():
    """An override, call or attribute of Gunicorn's classes that worker.py uses must be in
    GUNICORN_CONTRACT; so must one of our own names that Gunicorn's class also has (an
    accidental override)."""
    uses, own = _uses_in_worker()
    problems = []
    for line, text, target, name in uses:
        if target is None:  # an underscore name on something we cannot place
            if not any(entry["name"] == name for entry in CONTRACT):
                problems.append(f"worker.py:{line}: {text}: .{name} is not defined in worker.py "
                                f"nor declared in GUNICORN_CONTRACT")
            continue
        ours = target in _EDGE.values()
        gunicorn_members = _gunicorn_members(target.__mro__[1] if ours else target)
        if name in gunicorn_members:
            if not _declared_on(target, name):
                owner = gunicorn_members[name]
                problems.append(f"worker.py:{line}: {text}: {owner.__module__}.{owner.__name__}."
                                f"{name} is Gunicorn's but not declared in GUNICORN_CONTRACT")
        elif not ours or name not in own[target.__name__]:
            problems.append(f"worker.py:{line}: {text}: {target.__name__}.{name} is defined "
                            f"neither by Gunicorn's classes nor by ours")
    assert not problems, "\n".join(problems)


def test_every_declared_member_is_used():
    """A declaration nothing in worker.py uses any more is stale (``__init__`` of ASGIProtocol is
    used by calling EdgeProtocol(...))."""
    uses, _ = _uses_in_worker()
    used = {(target, name) for _, _, target, name in uses if target is not None}
    stale = [_label(entry) for entry in CONTRACT
             if not any(name == entry["name"] and _resolve(entry["cls"]) in target.__mro__
                        for target, name in used)
             and (entry["cls"], entry["name"]) != ("gunicorn.asgi.protocol.ASGIProtocol",
                                                   "__init__")]
    assert not stale, f"declared in GUNICORN_CONTRACT but not used by worker.py: {stale}"
