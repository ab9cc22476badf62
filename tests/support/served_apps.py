"""What tests need to know about the apps that a real Gunicorn serves in place of ``wsgi:app``
(fault_wsgi.py, modules_wsgi.py in this folder) without importing them: importing one builds
``wsgi:app``, which loads the real model.

Gunicorn runs from the repository root and finds them on this folder, which ``--pythonpath``
puts on its ``sys.path`` (as pytest's ``pythonpath`` does for the tests)."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent

#: The two sentences whose forward pass fault_wsgi.py breaks.
HANG_TEXT = "fault injection: hang the forward pass"
DIE_TEXT = "fault injection: kill the batching thread"


def gunicorn_app(module: str) -> dict:
    """``Gunicorn(...)`` keyword arguments that serve ``<module>:app`` from this folder."""
    return {"app": f"{module}:app", "args": ("--pythonpath", str(SUPPORT))}
