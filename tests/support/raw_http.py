"""One raw HTTP exchange over a socket, for tests that send what no HTTP client would."""

from __future__ import annotations

import socket


def exchange(port: int, request: bytes, timeout: float = 60) -> tuple[int, dict, bytes]:
    """Send ``request`` to 127.0.0.1:``port`` and read until the server closes (each request here
    says Connection: close, or is refused): (status, lower-cased headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body
