"""Every model one server serves, by the name requests give, sharing one scheduler per worker.

Built in the Gunicorn master with the loaded models (``http/app.py``'s ``build_models``); each
worker, after fork, calls :meth:`ServedModels.start_worker` (from Gunicorn's ``post_worker_init``),
which sizes every model's backend to the worker's threads, warms each up, starts the worker's one
scheduling thread (``scheduler.py``) and a watchdog. Embedding models and rerankers are looked up
by name (:meth:`embedding`, :meth:`reranker`); no name means the first of the kind.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from metrics import definitions as m

from ..config import Settings
from .errors import ModelNotFound
from .scheduler import Scheduler
from .service import EmbeddingService, ModelService

log = logging.getLogger("embedder.service")


#: What each kind of model is called in messages.
NOUNS = {"embedding": "embedding model", "reranker": "reranker"}


def _called(kind: str) -> str:
    noun = NOUNS[kind]
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class DuplicateName(ValueError):
    """Two configured models would be served under one name."""


def check_names(names: list[str]) -> None:
    """DuplicateName when two models would be served under one name (checked before loading)."""
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DuplicateName(f"two models would be served as {', '.join(map(repr, twice))}: give each its "
                            "own name (name=model in EMBEDDER_MODELS)")


class ServedModels:
    def __init__(self, settings: Settings, services: list[ModelService]):
        if not services:
            raise ValueError("a server serves at least one model")
        self.settings = settings
        #: Served name -> service, in the configured order.
        check_names([service.model_id for service in services])
        self.services: dict[str, ModelService] = {service.model_id: service for service in services}
        schedulers = {id(service.batcher.scheduler) for service in services}
        if len(schedulers) != 1:
            raise ValueError("the models of one server must share one scheduler")
        self.scheduler: Scheduler = services[0].batcher.scheduler
        #: The first model of each kind: what a request that names none gets.
        self._first = {kind: self.of_kind(kind)[0] for kind in NOUNS if self.of_kind(kind)}
        #: When this server loaded its models (in the master, so every worker says the same).
        self.created = int(time.time())
        self.layout = settings.layout()
        self.ready = False
        self.started_pid: int | None = None

    @classmethod
    def of(cls, service: ModelService) -> ServedModels:
        """One model alone (the fast tests' apps)."""
        return cls(service.settings, [service])

    # -- lookup --------------------------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[ModelService]:
        return [service for service in self.services.values() if service.kind == kind]

    def embedding(self, name: str | None = None) -> EmbeddingService:
        """The embedding model served as ``name`` (the first one when None); ModelNotFound otherwise."""
        return self._find("embedding", name)

    def reranker(self, name: str | None = None):
        """The reranker served as ``name`` (the first one when None); ModelNotFound otherwise."""
        return self._find("reranker", name)

    def _find(self, kind: str, name: str | None):
        if name is None:
            first = self._first.get(kind)
            if first is None:
                raise ModelNotFound(f"this server serves no {NOUNS[kind]}; it serves "
                                    f"{self._listing()} (GET /v1/models)", param="model")
            return first
        service = self.services.get(name)
        if service is None:
            raise ModelNotFound(f"The model '{name}' does not exist on this server; it serves "
                                f"{self._listing()} (GET /v1/models)", param="model")
        if service.kind != kind:
            raise ModelNotFound(f"The model '{name}' is {_called(service.kind)}, not {_called(kind)}; "
                                f"this server serves {self._listing()}", param="model")
        return service

    def _listing(self) -> str:
        return ", ".join(f"'{name}' ({service.kind})" for name, service in self.services.items())

    # -- the worker ----------------------------------------------------------------------------------
    def start_worker(self, workers: int | None = None, on_failure=None) -> None:
        """In a worker after fork: size every model's threads, warm each up, start the scheduling
        thread, then report ready. ``workers`` is the count Gunicorn really runs. ``on_failure`` is
        called once if the scheduling thread dies or hangs (Gunicorn passes a callback that makes
        the worker exit, so the master replaces it)."""
        if self.started_pid == os.getpid():
            return
        self.layout = self.settings.layout(workers)
        for service in self.services.values():
            took = service.prepare_worker(self.layout.threads)
            log.info("worker %d: %s %s ready: %d threads, warm-up %.0f ms, pass cost (ms) %s", os.getpid(),
                     service.kind, service.model_id, self.layout.threads, took,
                     service.batcher.cost.model.as_dict())
        self.scheduler.start()
        self.started_pid = os.getpid()
        self.ready = True
        threading.Thread(target=self._watch, args=(on_failure,), name="embedder-watchdog", daemon=True).start()
        m.WORKERS.set(1)
        for reason in m.FAILURE_REASONS:  # zero series, so rate() and alerts see them from the start
            m.FAILURES.labels(reason, "")

    def healthy(self) -> bool:
        return (self.ready and self.scheduler.running()
                and self.scheduler.stalled_for() < self.settings.stall_timeout)

    def _watch(self, on_failure) -> None:
        """Turn a dead or hung scheduling thread into failed requests and a worker restart."""
        while True:
            time.sleep(min(1.0, self.settings.stall_timeout / 4))
            if self.healthy():
                continue
            scheduler = self.scheduler
            if scheduler.broken is not None:
                reason = f"batcher given up: {scheduler.broken}"
            elif not scheduler.running():
                reason = "batching thread died"
            else:
                reason = f"forward pass running for over {self.settings.stall_timeout:g} s"
            log.error("worker %d unhealthy: %s; failing its requests and exiting", os.getpid(), reason)
            self.ready = False
            m.WORKERS.set(0)
            scheduler.fail_all(reason)
            if on_failure is not None:
                on_failure()
            return
