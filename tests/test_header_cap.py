"""The request-header cap of `identity serve`: a real server, a real socket, 5 MB of headers."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx

from identity.cli.protocol import MAX_HEADER_BYTES

from .servers import base_env, serve


def _send_headers(url: str, total: int) -> bytes:
    """Send a GET whose header block is about `total` bytes; what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        try:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            sent = 0
            while sent < total:
                conn.sendall(line * 8)
                sent += len(line) * 8
            conn.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we were done: what we want
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def test_five_megabytes_of_headers_get_431_and_a_closed_connection(tmp_path: Path) -> None:
    with serve(base_env(), tmp_path) as server:
        answer = _send_headers(server.url, 5 * 1024 * 1024)
        # A 431 with the JSON error body (or, had the write raced the close, nothing at all),
        # never the 200 the whole block used to get.
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        if answer:
            assert b'"error":"request_too_large"' in answer
            assert b"connection: close" in answer.lower()
        # Headers under the cap are served as always, and so is the next caller.
        under = _send_headers(server.url, MAX_HEADER_BYTES - 8 * 1024)
        assert under.startswith(b"HTTP/1.1 200 "), under[:200]
        assert httpx.get(server.url + "/healthz").status_code == 200
        # A body is not headers: small headers and 200 KB of body in one write get the body's
        # own 413, not a 431 (the read that completes the header block is never counted).
        for size in (70_000, 100_000, 150_000, 200_000) * 3:
            assert _post_body(server.url, size).startswith(b"HTTP/1.1 413 "), size


def _post_body(url: str, size: int) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    head = (
        "POST /revoke HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(head + b"t" * size)
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return answer
