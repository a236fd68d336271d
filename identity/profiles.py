"""Changing and deleting one's own account (PATCH and DELETE /users/me)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from . import logs
from .accounts import Accounts
from .database import Database
from .errors import Conflict, InvalidRequest, NotFound
from .models import User, public_user, utc
from .verification import EmailVerification

Clock = Callable[[], float]
EDITABLE = ("name", "image", "email")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def validate_changes(body: dict[str, Any]) -> dict[str, str | None]:
    """Check every field before anything is written; InvalidRequest names the first bad one."""
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise InvalidRequest(f"unknown field: {_printable(unknown[0])}")
    changes: dict[str, str | None] = {}
    if "name" in body:
        name = body["name"]
        if name is not None and not isinstance(name, str):
            raise InvalidRequest("name: must be a string or null")
        if name is not None:
            name = name.strip()
            if len(name) > 200:
                raise InvalidRequest("name: at most 200 characters")
            if not name.isprintable():
                raise InvalidRequest("name: must not contain control characters")
        changes["name"] = name or None
    if "image" in body:
        image = body["image"]
        if image is not None and not isinstance(image, str):
            raise InvalidRequest("image: must be a string or null")
        if image is not None and not _web_url(image):
            raise InvalidRequest("image: must be an http(s) URL of at most 2048 characters")
        changes["image"] = image
    if "email" in body:
        email = body["email"]
        if not isinstance(email, str):
            raise InvalidRequest("email: must be a string")
        email = email.strip().lower()
        if len(email) > 320 or not _EMAIL.match(email) or not email.isprintable():
            raise InvalidRequest("email: not a valid email address")
        changes["email"] = email
    return changes


def _web_url(value: str) -> bool:
    if len(value) > 2048 or not value.isprintable() or any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    # Only http(s): javascript:, data: and the like would run or render in the app.
    # No user:password@ part either: it hides the real host from whoever reads the URL.
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def _printable(name: str) -> str:
    return name if len(name) <= 40 and name.isprintable() else "(unprintable)"


class Profiles:
    def __init__(
        self,
        database: Database,
        accounts: Accounts,
        verification: EmailVerification,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._accounts = accounts
        self._verification = verification
        self._clock = clock

    async def update(self, user_id: str, changes: dict[str, str | None]) -> dict[str, Any]:
        stamp = utc(self._clock())
        try:
            async with self._db.transaction() as tx:
                user = await tx.get(User, user_id)
                if user is None:
                    raise NotFound("no such user")
                if "name" in changes:
                    user.name, user.name_edited = changes["name"], True
                if "image" in changes:
                    user.image, user.image_edited = changes["image"], True
                new_email = changes.get("email")
                email_changed = new_email is not None and new_email != user.email
                if email_changed:
                    holder = (
                        await tx.execute(select(col(User.id)).where(col(User.email) == new_email))
                    ).first()
                    if holder is not None:
                        raise Conflict("this email address belongs to another account")
                    await self._verification.forget(tx, user.email)
                    user.email, user.email_verified, user.email_edited = new_email, None, True
                user.updated_at = stamp
                await tx.flush()
                if email_changed:
                    # Mail inside the transaction: if it cannot be sent, nothing changes.
                    await self._verification.send(tx, user)
                result = public_user(user, await self._accounts.accounts_of(tx, user.id))
        except IntegrityError:
            # Another account took the address between our check and our write.
            raise Conflict("this email address belongs to another account") from None
        logs.auth_event(
            event="profile_update",
            outcome="success",
            reason=",".join(sorted(changes)) or "none",
            user_id=user_id,
        )
        return result

    async def delete(self, user_id: str) -> None:
        """The user, accounts, sessions and verification tokens, gone in one transaction."""
        async with self._db.transaction() as tx:
            user = await tx.get(User, user_id)
            if user is None:
                raise NotFound("no such user")
            await self._verification.forget(tx, user.email)
            # Accounts, sessions and rotated refresh tokens go with the user (ON DELETE CASCADE).
            await tx.execute(delete(User).where(col(User.id) == user_id))
        logs.auth_event(event="user_deleted", outcome="success", reason="self", user_id=user_id)
