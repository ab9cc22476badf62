"""``wsgi:app`` plus ``GET /_test/modules`` (served as ``modules_wsgi:app``, see served_apps.py):
which heavy packages the Gunicorn master had imported
once it had built the app (model loaded, backend ready: this module is imported there, with
``preload_app``, before any fork) and which the answering worker has imported now."""

import os
import sys

from wsgi import app

HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime")


def _imported() -> list[str]:
    return sorted(name for name in HEAVY if name in sys.modules)


MASTER = {"pid": os.getpid(), "modules": _imported()}


@app.get("/_test/modules")
def modules():
    return {"master": MASTER, "worker": {"pid": os.getpid(), "modules": _imported()}}
