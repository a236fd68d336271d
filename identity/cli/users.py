"""`identity users …` and `identity events`: the admin API's operations, straight on the
database through the same service code (docs/admin.md). Tables by default, `--json` for tools;
each action's audit event names the client `cli` and the operator's login."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from sqlmodel import SQLModel

from identity.accounts import audit
from identity.app import DataServices, data_services
from identity.clock import parse_duration
from identity.errors import InvalidRequest
from identity.settings import Settings
from identity.store.database import Database
from identity.store.models import AdminUser, AuditEventPublic

T = TypeVar("T")
CLI_CLIENT = "cli"


def add_parsers(commands: Any) -> None:
    users = commands.add_parser("users", help="look up and manage users")
    actions = users.add_subparsers(dest="users_command", required=True)
    listing = actions.add_parser("list", help="users, newest first")
    listing.add_argument("--email")
    listing.add_argument("--provider")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    for name, handler, help_text in (
        ("show", _show, "one user with accounts and live sessions"),
        ("disable", _disable, "disable a user and end every session at once"),
        ("enable", _enable, "enable a disabled user"),
        ("revoke-sessions", _revoke, "end every session of a user"),
        ("delete", _delete, "delete a user, their accounts and sessions"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("id")
        action.add_argument("--json", action="store_true")
        action.set_defaults(handler=handler)

    events = commands.add_parser("events", help="the audit log, newest first")
    events.add_argument("--user")
    events.add_argument("--type")
    events.add_argument("--since", metavar="AGE", help="e.g. 24h or 7d")
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true")
    events.set_defaults(handler=_events)


def _run(settings: Settings, work: Callable[[DataServices], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(settings.database_url, pool_mode=settings.database_pool_mode)
        try:
            return await work(data_services(settings, database))
        finally:
            await database.close()

    return asyncio.run(run())


def _context() -> tuple[audit.Context, dict[str, str]]:
    try:
        operator = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container with an unnamed uid)
        operator = "unknown"
    return audit.Context(client_id=CLI_CLIENT), {"by": "cli", "operator": operator[:64]}


def _list(settings: Settings, args: argparse.Namespace) -> int:
    result = _run(
        settings,
        lambda s: s.admin.search(email=args.email, provider=args.provider, limit=args.limit),
    )
    if args.json:
        _print_json(result)
    else:
        rows: list[tuple[str, ...]] = [
            ("ID", "EMAIL", "VERIFIED", "NAME", "ACCOUNTS", "DISABLED", "CREATED")
        ]
        rows += [_user_row(u) for u in result.users]
        print_table(rows)
    return 0


def _user_row(u: AdminUser) -> tuple[str, ...]:
    return (
        u.id,
        u.email or "-",
        "yes" if u.email_verified else "no",
        u.name or "-",
        ",".join(a.provider for a in u.accounts) or "-",
        _time(u.disabled_at) if u.disabled_at else "-",
        _time(u.created_at),
    )


def _show_user(user: AdminUser, as_json: bool) -> None:
    if as_json:
        _print_json(user)
        return
    for label, value in (
        ("id", user.id),
        ("name", user.name),
        ("email", user.email),
        ("email verified", _time(user.email_verified) if user.email_verified else None),
        ("pending email", user.pending_email),
        ("disabled", _time(user.disabled_at) if user.disabled_at else None),
        ("last sign-in", _time(user.last_sign_in_at) if user.last_sign_in_at else None),
        ("created", _time(user.created_at)),
    ):
        print(f"{label:<15} {value if value is not None else '-'}")
    print("accounts:")
    for account in user.accounts:
        since = _time(account.created_at)
        print(f"  {account.provider:<12} {account.provider_account_id}  (since {since})")
    print("sessions:")
    for session in user.sessions or []:
        print(
            f"  {session.id}  client {session.client_id}  last used {_time(session.last_used_at)}"
        )


def _show(settings: Settings, args: argparse.Namespace) -> int:
    _show_user(_run(settings, lambda s: s.admin.detail(args.id)), args.json)
    return 0


def _disable(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()
    user = _run(settings, lambda s: s.admin.set_disabled(args.id, True, context=context, **detail))
    _show_user(user, args.json)
    return 0


def _enable(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()
    user = _run(settings, lambda s: s.admin.set_disabled(args.id, False, context=context, **detail))
    _show_user(user, args.json)
    return 0


def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()
    ended = _run(settings, lambda s: s.admin.revoke_sessions(args.id, context=context, **detail))
    print(
        orjson.dumps({"sessions_ended": ended}).decode()
        if args.json
        else f"identity: {ended} session(s) ended"
    )
    return 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()
    _run(settings, lambda s: s.admin.delete(args.id, context=context, **detail))
    print(
        orjson.dumps({"deleted": args.id}).decode()
        if args.json
        else f"identity: user {args.id} deleted"
    )
    return 0


def _events(settings: Settings, args: argparse.Namespace) -> int:
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as error:
            raise InvalidRequest(f"--since: {error}") from None
    events, _ = _run(
        settings,
        lambda s: s.audit_log.query(
            user_id=args.user, type_=args.type, since=since, limit=args.limit
        ),
    )
    if args.json:
        print(orjson.dumps([e.model_dump(mode="json") for e in events]).decode())
        return 0
    rows: list[tuple[str, ...]] = [("ID", "TIME", "TYPE", "USER", "CLIENT", "DETAIL")]
    rows += [_event_row(e) for e in events]
    print_table(rows)
    return 0


def _event_row(e: AuditEventPublic) -> tuple[str, ...]:
    detail = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
    return (str(e.id), _time(e.created_at), e.type, e.user_id or "-", e.client_id or "-", detail)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_json(model: SQLModel) -> None:
    print(model.model_dump_json(indent=2))


def _time(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M:%SZ"))
