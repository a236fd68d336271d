"""The services that work on the data without HTTP, built from the settings in one place: the
composition the service (`identity.app`) and the CLI share (docs/architecture.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from identity.accounts import housekeeping
from identity.accounts.admin import Admin
from identity.accounts.audit import AuditLog
from identity.accounts.email_verification import EmailVerification
from identity.accounts.limits import Counter
from identity.accounts.mail import LogMailer, Mailer, SmtpMailer
from identity.accounts.notices import NoticeLog
from identity.accounts.outbox import Notices
from identity.accounts.sessions import SessionPolicy, Sessions
from identity.accounts.users import Users
from identity.clock import Clock
from identity.settings import Settings
from identity.store.database import Database
from identity.tokens import apple_revocation
from identity.tokens.provider_tokens import Sealer

__all__ = ["DataServices", "data_services"]


@dataclass(frozen=True)
class DataServices:
    """What works on the data without HTTP: shared by the service and the CLI."""

    sessions: Sessions
    verification: EmailVerification
    users: Users
    audit_log: AuditLog
    admin: Admin
    janitor: housekeeping.Janitor
    notices: Notices
    notice_log: NoticeLog


def data_services(
    settings: Settings,
    database: Database,
    *,
    mailer: Mailer | None = None,
    clock: Clock = time.time,
) -> DataServices:
    policy = SessionPolicy(
        absolute_ttl=settings.refresh_token_ttl,
        idle_ttl=settings.refresh_idle_ttl,
        reuse_interval=settings.refresh_reuse_interval,
        clock_skew=settings.clock_skew,
    )
    notices = Notices(
        webhooks=settings.webhooks,
        backchannel=settings.backchannel_logout_uris,
        token_ttl=settings.access_token_ttl + settings.clock_skew,
        apple=apple_revocation.clients(settings, Sealer(settings.token_encryption_keys)),
    )
    sessions = Sessions(database, policy, clock=clock, notices=notices)
    if mailer is None:
        mailer = (
            SmtpMailer(settings.smtp_url)
            if settings.smtp_url and settings.mail_enabled
            else LogMailer()
        )
    verification = EmailVerification(
        database,
        mailer=mailer,
        budget=Counter(settings.rate_limit_mail, clock=clock),
        sender=settings.mail_from,
        link_base=settings.verification_link_base,
        enabled=settings.mail_enabled,
        clock=clock,
    )
    users = Users(database, verification, clock=clock, notices=notices)
    audit_log = AuditLog(database, retention=settings.audit_retention, clock=clock)
    return DataServices(
        sessions=sessions,
        verification=verification,
        users=users,
        audit_log=audit_log,
        admin=Admin(database, users, sessions, clock=clock),
        janitor=housekeeping.Janitor(database, sessions, audit_log, clock=clock),
        notices=notices,
        notice_log=NoticeLog(database),
    )
