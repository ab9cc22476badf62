"""Load benchmark of embedder against the original Flask and Caddy setups, by role (bench/README.md):
``bench.sweep`` the wrk sweep and its report (``python -m bench.sweep``), ``bench.harness`` what tests
and the sweep use to start and observe servers, ``bench.tools`` command-line tools."""
