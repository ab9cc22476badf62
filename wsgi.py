"""The WSGI application for Gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from embedder.http.app import create_app

app = create_app()
