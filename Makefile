# Two commands: `make serve` (install, then run the service) and `make test` (install, then run
# every test). Both work on a fresh Debian machine as root (or with sudo for apt-get).
# `make test-fast` runs the fast tier alone (tests/fast/: no servers, no Debian tools; well under a
# minute); `make test` runs tests/, both tiers (tests/integration/ starts the real processes).
# `make tune` measures backends, precisions and worker layouts on this machine (bench/tools/tune.py,
# under 5 minutes on 2 cores) and writes the fastest that passes its fidelity gate to $(ENV_FILE),
# which `make serve` then reads (docs/tuning.md).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian tools the tests and benchmark drive: wrk (load), caddy (baseline proxy), prometheus
# (promtool, server), systemd (systemd-analyze verify of the unit file), openssl (a self-signed
# certificate) and curl (an HTTPS client) for the TLS tests; chromium and chromium-driver (a real
# headless browser, driven by selenium) for the Swagger UI page at /docs.
APT_PACKAGES := wrk caddy prometheus systemd openssl curl chromium chromium-driver
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The tuner's settings file; `make serve` reads it when it exists (make serve ENV_FILE=other.env).
ENV_FILE ?= embedder.env

.PHONY: serve test test-fast install install-test apt bench tune

# With $(ENV_FILE) present its variables are exported first, and the environment's own (e.g.
# `EMBEDDER_WORKERS=1 make serve`) are put back over them: the file fills in, it never overrides.
serve: install
	@if [ -f "$(abspath $(ENV_FILE))" ]; then \
	  echo "make serve: settings from $(ENV_FILE) (variables already set win)"; \
	  own=$$(export -p); set -a; . "$(abspath $(ENV_FILE))"; set +a; eval "$$own"; fi; \
	echo "$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app"; \
	exec $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

test: install-test apt
	$(PY) -m pytest -q tests

test-fast: install-test
	$(PY) -m pytest -q tests/fast

bench: install-test apt
	$(PY) -m bench.sweep

tune: install-test apt
	$(PY) -m bench.tools.tune --env-file $(ENV_FILE)

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt requirements.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
