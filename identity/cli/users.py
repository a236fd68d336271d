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
from identity.accounts.services import DataServices, data_services
from identity.clock import parse_duration
from identity.errors import InvalidRequest, NotFound
from identity.settings import Settings
from identity.store.database import Database
from identity.store.shapes import AdminUser, AuditEventDetail, AuditEventPublic

from .command import command, group

T = TypeVar("T")
CLI_CLIENT = "cli"


def add_parsers(commands: Any) -> None:
    actions = group(command(commands, "users", "look up and manage users", None), "users_command")
    listing = command(actions, "list", "users, newest first", _list)
    listing.add_argument("--email", help="only the user with this address")
    listing.add_argument("--provider", help="only users with an account at this provider")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, handler, summary in (
        ("show", _show, "one user with accounts and live sessions"),
        ("disable", _disable, "disable a user and end every session at once"),
        ("enable", _enable, "enable a disabled user"),
        ("revoke-sessions", _revoke, "end every session of a user"),
        ("delete", _delete, "delete a user, their accounts and sessions"),
    ):
        action = command(actions, name, summary, handler)
        action.add_argument("user", metavar="ID|EMAIL", help="the user's id, or their address")
        action.add_argument("--json", action="store_true", help="print JSON instead of text")

    events = command(commands, "events", "the audit log, newest first", _events)
    events.add_argument(
        "id", nargs="?", metavar="ID", help="one event, with its notices' delivery attempts"
    )
    events.add_argument("--user", metavar="ID", help="only this user's events")
    events.add_argument(
        "--type",
        metavar="TYPE",
        choices=sorted(audit.TYPES),
        help=f"only events of this type: {', '.join(sorted(audit.TYPES))}",
    )
    events.add_argument("--since", metavar="AGE", help="only the last AGE (30m, 24h, 7d)")
    events.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    events.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run(settings: Settings, work: Callable[[DataServices], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(settings.database_url, pool_mode=settings.database_pool_mode)
        # A deleted user's Apple token revocations are outbox notices: the service's
        # delivery workers (or `identity outbox deliver`) send them.
        try:
            return await work(data_services(settings, database))
        finally:
            await database.close()

    return asyncio.run(run())


async def _user_id(services: DataServices, user: str) -> str:
    """The id of `user`, given as an id or as an address (ids never hold an '@')."""
    if "@" not in user:
        return user
    found = await services.admin.search(email=user, limit=1)
    if not found.users:
        raise NotFound("no user has this address")
    return found.users[0].id


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
    async def work(s: DataServices) -> AdminUser:
        return await s.admin.detail(await _user_id(s, args.user))

    _show_user(_run(settings, work), args.json)
    return 0


def _set_disabled(settings: Settings, args: argparse.Namespace, disabled: bool) -> int:
    context, detail = _context()

    async def work(s: DataServices) -> AdminUser:
        user_id = await _user_id(s, args.user)
        return await s.admin.set_disabled(user_id, disabled, context=context, **detail)

    _show_user(_run(settings, work), args.json)
    return 0


def _disable(settings: Settings, args: argparse.Namespace) -> int:
    return _set_disabled(settings, args, True)


def _enable(settings: Settings, args: argparse.Namespace) -> int:
    return _set_disabled(settings, args, False)


def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()

    async def work(s: DataServices) -> int:
        return await s.admin.revoke_sessions(
            await _user_id(s, args.user), context=context, **detail
        )

    ended = _run(settings, work)
    print(
        orjson.dumps({"sessions_ended": ended}).decode()
        if args.json
        else f"identity: {ended} session(s) ended"
    )
    return 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    context, detail = _context()

    async def work(s: DataServices) -> str:
        user_id = await _user_id(s, args.user)
        await s.admin.delete(user_id, context=context, **detail)
        return user_id

    deleted = _run(settings, work)
    print(
        orjson.dumps({"deleted": deleted}).decode()
        if args.json
        else f"identity: user {deleted} deleted"
    )
    return 0


def _events(settings: Settings, args: argparse.Namespace) -> int:
    if args.id is not None:
        wanted = event_id(args.id)
        show_event(_run(settings, lambda s: s.notice_log.event(wanted)), args.json)
        return 0
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


def show_event(event: AuditEventDetail, as_json: bool) -> None:
    if as_json:
        print(event.model_dump_json(indent=2))
        return
    detail = " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))
    print(f"{event.id}  {_time(event.created_at)}  {event.type}  {event.user_id or '-'}  {detail}")
    for n in event.notices:
        print(f"  notice {n.id}: {n.event} to {n.destination}, {n.state}")
        for d in n.deliveries:
            status = d.status_code if d.status_code is not None else d.error or "-"
            print(f"    {_time(d.attempted_at)}  {d.outcome}  {status}")


def event_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such event")
    return int(raw)
