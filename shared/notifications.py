"""E-mail notifications. A notification is a row written in the same transaction as the change it
announces; a sender sends it over SMTP, retrying with backoff while the server is down, and marks
it sent. Replicas do not send the same row: each claims rows with FOR UPDATE SKIP LOCKED."""
import asyncio
import logging
from datetime import datetime
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import BigInteger, DateTime, Identity, Integer, String, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from shared.db import Base

log = logging.getLogger(__name__)


class Notification(Base):
    __tablename__ = "notifications"
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
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(Notification)
                .where(Notification.sent_at.is_(None))
                .order_by(Notification.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return False
            message = EmailMessage()
            message["From"] = self._from
            message["To"] = row.to
            message["Subject"] = row.subject
            # A stable id: should a crash come between the server's "250" and our commit, the
            # resend carries the same Message-ID, which mail systems de-duplicate on.
            message["Message-ID"] = f"<notification-{row.id}@{self._domain}>"
            message.set_content(row.body)
            async for attempt in AsyncRetrying(
                wait=wait_exponential(multiplier=0.2, max=10), retry=retry_if_exception_type(Exception), reraise=True
            ):
                with attempt:
                    row.attempts += 1
                    try:
                        await aiosmtplib.send(message, hostname=self._host, port=self._port, timeout=10)
                    except Exception as exc:
                        row.last_error = repr(exc)[:2000]
                        log.warning("notification %s not sent (attempt %d): %r", row.id, row.attempts, exc)
                        raise
            row.sent_at = func.now()
            row.last_error = None
        self.sent_total += 1
        return True
