"""Load benchmark of embedder against the original Flask and Caddy setups: ``python -m bench.run``."""
