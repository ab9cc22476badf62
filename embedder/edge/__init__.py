"""The edge: the Gunicorn worker that faces clients (``worker.py``), its refusals below the app
(``refusals.py``) and the access log (``access_log.py``). It reaches the app only through the WSGI
environ."""
