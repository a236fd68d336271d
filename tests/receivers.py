"""A real local HTTP receiver for notices: it records every request and answers each with the
next status of its script (the last one repeated), after `delay` seconds if asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the receiver answered
    at: float = field(default_factory=time.time)  # when it arrived (a failure's message shows it)


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> int:
        with self.lock:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            request.status = status
            self.received.append(request)
            return status


class _Server(ThreadingHTTPServer):
    # The standard 5 pending connections overflow when replicas' workers send a batch at once:
    # connections then reset, failures that are the receiver's, not the sender's.
    request_queue_size = 128


@contextmanager
def receiver(*statuses: int, delay: float = 0.0) -> Iterator[Receiver]:
    state = Receiver("", list(statuses) or [200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = state.answer(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            time.sleep(delay)
            self.send_response(status)
            if status in (301, 302, 307, 308):
                self.send_header("Location", state.url + "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
