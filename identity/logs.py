"""Logging: one JSON object per line (uvicorn's own lines included), or plain text.

Structured fields travel in `extra={"event": {...}}`. JSON encoding escapes control
characters, so a hostile claim cannot forge a log line. Raw tokens never reach a logger: callers
pass `compact.fingerprint(token)` instead.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

AUTH = logging.getLogger("identity.auth")
ACCESS = logging.getLogger("identity.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(line, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        fields = ""
        if isinstance(event, dict):
            fields = " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in event.items())
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        message = json.dumps(record.getMessage())[1:-1]  # escapes control characters
        return f"{stamp} {record.levelname:<7} {record.name}: {message}{fields}"


def config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """A logging dictConfig for our loggers and uvicorn's (handed to uvicorn as log_config)."""
    formatter = (
        "identity.logs.JsonFormatter" if log_format == "json" else "identity.logs.TextFormatter"
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"default": handler},
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
