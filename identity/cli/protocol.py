"""The HTTP protocol `identity serve` runs: uvicorn's httptools protocol with a header cap.

httptools has no limit of its own: 5 MB of headers were read, held and answered 200. Here the
bytes received while a request's header block is still incomplete are counted, and past
`MAX_HEADER_BYTES` (64 KiB: far above any browser's or proxy's, which send under 16 KiB) the
request is answered 431 with the usual JSON error body and the connection closed, so the block is
never held whole (docs/security.md, "Request headers"). The count is one addition per chunk read
while headers are incomplete; a request whose headers arrive in one chunk pays nothing more.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from identity.errors import HeadersTooLarge, render

MAX_HEADER_BYTES = 64 * 1024


def _refusal() -> bytes:
    status, headers, body = render(HeadersTooLarge("the request headers exceed 64 KiB"))
    lines = [
        f"HTTP/1.1 {status} Request Header Fields Too Large",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{name.lower()}: {value}" for name, value in headers.items()),
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


_REFUSAL = _refusal()


class CappedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_headers = True  # a connection starts with a request's header block
        self._header_bytes = 0
        self._completed = False  # a header block was completed in the chunk being parsed
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: nothing more is parsed or held
        counting = self._in_headers
        self._completed = False
        super().data_received(data)
        if counting and not self._completed and not self._refused:
            # This chunk began inside a header block and did not finish it. (A chunk that
            # finished one — its body, even the next request's start, may follow in the same
            # read — is never counted: at most one read of a block goes uncounted.)
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._completed = True
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True  # the next request on this connection starts its own count

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # after a 431 the connection is already closing
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        self.transport.write(_REFUSAL)
        self.transport.close()
