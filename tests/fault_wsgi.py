"""``wsgi:app`` whose forward pass can be made to hang or to kill the batching thread.

Fault tests run the real Gunicorn config with this module as the app; only the forward pass is
wrapped, and only two trigger sentences change its behaviour.
"""

import time

from wsgi import app

HANG_TEXT = "fault injection: hang the forward pass"
DIE_TEXT = "fault injection: kill the batching thread"

_service = app.extensions["embedder"]
_real_forward = _service.batcher._forward
_hang, _die = _service.model.token_ids([HANG_TEXT, DIE_TEXT], truncate=True)


def _forward(batch):
    if _hang in batch:
        time.sleep(300)
    if _die in batch:
        raise SystemExit("fault injection")  # not an Exception: the batching thread ends
    return _real_forward(batch)


_service.batcher._forward = _forward
