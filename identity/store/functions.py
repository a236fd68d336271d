"""The PostgreSQL functions of the hot paths: where their SQL lives, and how they are called.

`sql/<function>.sql` beside this module is the living definition of each function
(`identity_sign_in`, `identity_refresh`); migrations install frozen copies of it, one per
revision that changes it (docs/architecture.md, "The SQL functions", has the recipe).

A `Call` is built once, at import, from one ordered definition of (parameter name, getter)
pairs kept beside the request record it reads. Its statement passes every argument by name
(`identity_sign_in(p_replay_key => $1, …)`), so two arguments cannot trade places unnoticed: a
name the function lacks is an error from PostgreSQL, and a test holds the definition's names
equal to the installed function's parameters, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .database import Row, Sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
_NAME = re.compile(r"[a-z][a-z0-9_]*")

Request = TypeVar("Request")
# One parameter: its name in the function, and how its value is read from the request.
Arguments = tuple[tuple[str, Callable[[Request], object]], ...]


class Call(Generic[Request]):
    """`SELECT <columns> FROM <function>(name => $1, …)`, the values read from a request."""

    def __init__(self, function: str, arguments: Arguments[Request], columns: str = "*") -> None:
        self.function = function
        self.names = tuple(name for name, _ in arguments)
        self._getters = tuple(getter for _, getter in arguments)
        if not all(_NAME.fullmatch(name) for name in (function, *self.names)):
            raise ValueError(f"{function}: not an SQL identifier among {self.names}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{function}: a parameter named twice in {self.names}")
        named = ", ".join(f"{name} => ${n}" for n, name in enumerate(self.names, start=1))
        # Identifiers checked above, all from constant definitions; values are bound parameters.
        self.query = f"SELECT {columns} FROM {function}({named})"  # noqa: S608

    def values(self, request: Request) -> tuple[object, ...]:
        return tuple(get(request) for get in self._getters)

    async def fetchone(self, sql: Sql, request: Request) -> Row:
        """The function's one row for this request (one statement: one round trip)."""
        return await sql.fetchone(self.query, *self.values(request))
