"""Prometheus metrics for embedder: definitions (``definitions``) and multiprocess plumbing (``multiprocess``)."""
