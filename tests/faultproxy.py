"""A TCP proxy for fault injection: refuse connections, cut live ones, cut on a byte pattern,
or answer new connections as a PostgreSQL server at `max_connections` does."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.down = False
        self.cut_on: bytes | None = None  # cut a connection when the client sends this
        self.full = False  # new connections get PostgreSQL's "too many clients" (53300)
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut_all(self) -> None:
        """Drop every live connection, as a database restart or a network fault would."""
        self._loop.call_soon_threadsafe(self._cut_all)

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Let the aborted connections' handlers finish before the loop stops.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        if self.full:
            await _too_many_clients(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, inspect: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if inspect and self.cut_on is not None and self.cut_on in data:
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


SSL_REQUEST = 80877103  # the protocol's code for "may we use TLS?"


async def _too_many_clients(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What PostgreSQL answers a client's startup message when every connection slot is taken:
    an ErrorResponse (FATAL, SQLSTATE 53300), then the connection closes."""
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if length == 8 and code == SSL_REQUEST:
            writer.write(b"N")  # no TLS here; the client sends its startup message next
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            await reader.readexactly(length - 4)
        else:
            await reader.readexactly(length - 8)
        fields = b"".join(
            kind + text + b"\0"
            for kind, text in (
                (b"S", b"FATAL"),
                (b"V", b"FATAL"),
                (b"C", b"53300"),
                (b"M", b"sorry, too many clients already"),
            )
        )
        writer.write(b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0")
        await writer.drain()
    writer.transport.close()


@contextmanager
def fault_proxy(host: str, port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(host, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
