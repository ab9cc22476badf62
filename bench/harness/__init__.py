"""What tests and the sweep import to start and observe servers: servers.py (the one Gunicorn,
Flask and Caddy launcher, ``free_port``, the repository ``ROOT``), procstats.py (CPU and memory from
/proc) and stsb.py (the STS-B test split shipped in bench/data/)."""
