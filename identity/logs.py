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
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

AUTH = logging.getLogger("identity.auth")


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update({k: v for k, v in event.items() if k not in line})
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: a library's message can echo the input that broke it.
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO  identity.auth  auth exchange success  user_id=… reason=created`."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        fields = ""
        if isinstance(event, dict):
            fields = "  " + " ".join(f"{k}={_plain(v)}" for k, v in event.items() if v is not None)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        message = json.dumps(record.getMessage())[1:-1]  # escapes control characters
        if record.exc_info and record.exc_info[0] is not None:
            fields += f"  exception={record.exc_info[0].__name__}"
        return f"{stamp} {record.levelname:<7} {record.name:<16} {message}{fields}"


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
