"""``wsgi:app`` whose forward pass can be made to hang or to kill the batching thread.

Fault tests run the real Gunicorn config with this module as the app (``fault_wsgi:app``, see
served_apps.py); only the forward pass is wrapped, and only two trigger sentences
(served_apps.HANG_TEXT and DIE_TEXT) change its behaviour.
"""

import time

from served_apps import DIE_TEXT, HANG_TEXT
from wsgi import app

_service = app.extensions["embedder"].embedding()
_real_forward = _service.batcher._forward
_hang, _die = _service.model.token_ids([HANG_TEXT, DIE_TEXT], truncate=True)


def _forward(batch):
    if _hang in batch:
        time.sleep(300)
    if _die in batch:
        raise SystemExit("fault injection")  # not an Exception: the batching thread ends
    return _real_forward(batch)


_service.batcher._forward = _forward
