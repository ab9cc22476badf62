"""embedder: a sentence-embedding HTTP service for Gunicorn (see README.md)."""

__version__ = "0.1.0"
