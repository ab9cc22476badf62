"""Command-line tools, each ``python -m bench.tools.<name>``: stall (stalled and slow clients
against a server), ceiling (the in-process sorted limit the sweep runs) and stsb_eval (STS-B
accuracy and the fidelity gate of a running server)."""
