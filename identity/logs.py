"""Logging: one JSON object per line (uvicorn's own lines included), or short text on a terminal.

The format: IDENTITY_LOG_FORMAT when set; otherwise text when the log stream (stderr) is a
terminal and JSON everywhere else — always JSON in production. Structured fields travel in
`extra={"event": {...}}`. Both formats escape control characters, so a hostile claim cannot
forge a line. Raw tokens never reach a logger: callers pass `jws.fingerprint(token)` instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

import orjson

AUTH = logging.getLogger("identity.auth")


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _timestamp(created: float) -> str:
    """`2026-12-01T18:00:01.234+00:00`; the date and time part is formatted once a second."""
    second = int(created)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((created - second) * 1000):03d}+00:00"


def lighten() -> None:
    """Stop the logging module collecting what no formatter here prints: the caller's file and
    line (a stack walk per record), thread, process and multiprocessing names (the Logging
    HOWTO's "Optimization"). Process-wide; called once by the service's entry point."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def json_line(created: float, level: str, name: str, message: str, event: Any) -> str:
    line: dict[str, Any] = {
        "ts": _timestamp(created),
        "level": level,
        "logger": name,
        "msg": message,
    }
    if isinstance(event, dict):
        line.update({k: v for k, v in event.items() if k not in line})
    return orjson.dumps(line, default=str).decode()


def text_line(created: float, level: str, name: str, message: str, event: Any) -> str:
    """`12:00:01 INFO    identity.auth    auth exchange success  user_id=… reason=created`."""
    fields = ""
    if isinstance(event, dict):
        fields = "  " + " ".join(f"{k}={_plain(v)}" for k, v in event.items() if v is not None)
    stamp = time.strftime("%H:%M:%S", time.localtime(created))
    message = json.dumps(message)[1:-1]  # escapes control characters
    return f"{stamp} {level.upper():<7} {name:<16} {message}{fields}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: a library's message can echo the input that broke it.
            event = {
                **(event if isinstance(event, dict) else {}),
                "exception": record.exc_info[0].__name__,
            }
        return json_line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), event
        )


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        if record.exc_info and record.exc_info[0] is not None:
            event = {
                **(event if isinstance(event, dict) else {}),
                "exception": record.exc_info[0].__name__,
            }
        return text_line(record.created, record.levelname, record.name, record.getMessage(), event)


ACCESS = logging.getLogger("identity.access")


class AccessLog:
    """The one line per request, on the `identity.access` logger.

    By default it goes through `logging`. `identity serve` builds it with `direct=` its log
    format: the same line the formatter would print, written straight to stderr without a
    LogRecord, a handler lock and a flush call (about 20 µs a request, docs/performance.md).
    The logger's level still decides whether it is written.
    """

    def __init__(self, *, direct: str | None = None, stream: TextIO | None = None) -> None:
        self._line = {"json": json_line, "text": text_line}.get(direct or "")
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        if not ACCESS.isEnabledFor(logging.INFO):
            return
        if self._line is None:
            ACCESS.info("request", extra={"event": event})
            return
        line = self._line(time.time(), "info", ACCESS.name, "request", event)
        (self._stream or sys.stderr).write(line + "\n")


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    escaped = json.dumps(text)[1:-1]
    return escaped if escaped and " " not in escaped else f'"{escaped}"'


def resolve(log_format: str | None, *, production: bool, stream: TextIO | None = None) -> str:
    """The format to use: the configured one, else text on a terminal and JSON elsewhere."""
    if production:
        return "json"
    if log_format is not None:
        return log_format
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


def config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """A logging dictConfig for our loggers and uvicorn's (handed to uvicorn as log_config)."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
        "loggers": {
            "identity": {"level": level},
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            # Replaced by our own per-request line, which carries the request id.
            "uvicorn.access": {"level": "WARNING"},
        },
    }


def auth_event(**fields: Any) -> None:
    """One line per authentication event (outcome, reason, user, client, request, fingerprint)."""
    level = logging.INFO if fields.get("outcome") == "success" else logging.WARNING
    AUTH.log(
        level, "auth %s %s", fields.get("event"), fields.get("outcome"), extra={"event": fields}
    )
