"""E-mail notifications. A notification is a row written in the same transaction as the change it
announces; a sender sends it over SMTP and marks it sent. While the server is down each row is
retried with a backoff of its own (tenacity for a blip, then the row is set aside in the database),
so no row holds up the others. A sender claims a row with a lease (FOR UPDATE SKIP LOCKED, then
`claimed_until`), so replicas never send the same row at once, and a sender that dies hands its row
on when the lease ends."""
import asyncio
import logging
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from tenacity import AsyncRetrying, retry_if_exception, retry_if_exception_type, stop_after_attempt, wait_exponential

from shared.platform.db import Base, transient

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)  # how long a claimed row is this sender's to send
QUICK_ATTEMPTS = 3  # tries in a row before a row is set aside
MAX_BACKOFF = timedelta(seconds=60)  # the longest a row waits between rounds while SMTP is down
SMTP_ERRORS = (OSError, aiosmtplib.SMTPException, asyncio.TimeoutError)


class Notification(Base):
    __tablename__ = "notifications"
    # The sender reads only what is still to send.
    __table_args__ = (Index("ix_notifications_unsent", "id", postgresql_where=text("sent_at IS NULL")),)
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    to: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    ticket_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def notify(session: AsyncSession, kind: str, to: str, subject: str, body: str, ticket_id: str | None) -> None:
    session.add(Notification(kind=kind, to=to, subject=subject[:255], body=body, ticket_id=ticket_id))


async def list_notifications(session: AsyncSession, limit: int = 200) -> list[Notification]:
    rows = await session.scalars(select(Notification).order_by(Notification.id.desc()).limit(limit))
    return list(rows.all())


class NotificationSender:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], smtp_host: str, smtp_port: int, sender: str,
                 domain: str):
        self._sessions = sessions
        self._host, self._port = smtp_host, smtp_port
        self._from = sender
        self._domain = domain
        self.sent_total = 0

    async def run(self) -> None:
        while True:
            try:
                if not await self.send_one():
                    await asyncio.sleep(0.3)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification sender failed; retrying")
                await asyncio.sleep(1.0)

    async def send_one(self) -> bool:
        row = await self._claim()
        if row is None:
            return False
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = row.to
        message["Subject"] = row.subject
        # A stable id: should a crash come between the server's "250" and our commit, the resend
        # carries the same Message-ID, which mail systems de-duplicate on.
        message["Message-ID"] = f"<notification-{row.id}@{self._domain}>"
        message.set_content(row.body)

        async def record_failure(state) -> None:
            error = state.outcome.exception()
            log.warning("notification %s not sent (attempt %d): %r", row.id, state.attempt_number, error)
            await self._update(row.id, attempts=Notification.attempts + 1, last_error=repr(error)[:2000],
                               claimed_until=func.now() + LEASE)

        try:
            # A blip is retried at once; a server that stays down sets the row aside (below).
            async for attempt in AsyncRetrying(
                wait=wait_exponential(multiplier=0.25, max=1),
                stop=stop_after_attempt(QUICK_ATTEMPTS),
                retry=retry_if_exception_type(SMTP_ERRORS),
                before_sleep=record_failure,
                reraise=True,
            ):
                with attempt:
                    await aiosmtplib.send(message, hostname=self._host, port=self._port, timeout=10)
        except SMTP_ERRORS as error:
            # Back off per row, in the database: the row is due again when its claim lapses, and the
            # rows behind it are not held up meanwhile.
            rounds = row.attempts // QUICK_ATTEMPTS + 1
            delay = timedelta(seconds=min(0.5 * 2**rounds, MAX_BACKOFF.total_seconds()))
            log.warning("notification %s not sent; next try in %s: %r", row.id, delay, error)
            await self._update(row.id, attempts=Notification.attempts + 1, last_error=repr(error)[:2000],
                               claimed_until=func.now() + delay)
            return True
        # The mail is out: recording that must outlast a database blip (a connection that died while
        # we were talking SMTP), or the lease would run out and the mail go twice.
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.25, max=5), retry=retry_if_exception(transient), reraise=True
        ):
            with attempt:
                await self._update(row.id, attempts=Notification.attempts + 1, sent_at=func.now(), last_error=None)
        self.sent_total += 1
        return True

    async def _claim(self) -> Notification | None:
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(Notification)
                .where(
                    Notification.sent_at.is_(None),
                    or_(Notification.claimed_until.is_(None), Notification.claimed_until < func.now()),
                )
                .order_by(Notification.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is not None:
                row.claimed_until = func.now() + LEASE
            return row

    async def _update(self, notification_id: int, **values) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(Notification).where(Notification.id == notification_id).values(**values))
