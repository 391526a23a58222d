"""The hub's directory on the lead partner (SPEC section 10): the insourcing partners it may outsource
to, as the bridge last sent them. The lead asks for it at each start (a fresh database knows none)."""
import asyncio
import logging

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.lead_partner import wording
from services.lead_partner.models import PartnerDirectory
from shared.contracts.envelope import envelope
from shared.contracts.messages import DirectoryChanged, DirectoryEntry, DirectoryRequested
from shared.platform.errors import NotFound
from shared.platform.messagebus import Ignored
from shared.platform.outbox import add_to_outbox

log = logging.getLogger(__name__)

_ROW = 1  # one hub, one directory: its latest version
_NAMED_IN_A_REFUSAL = 20  # a refusal names this many of the partners it could have been


class HubDirectory:
    def __init__(self, partner_id: str, outbound_topic: str):
        self.partner_id = partner_id
        self.outbound_topic = outbound_topic

    async def partners(self, session: AsyncSession) -> list[DirectoryEntry]:
        """The active insourcing partners of the hub, in the order it sent them (none before it answered)."""
        stored = await session.scalar(select(PartnerDirectory.partners).where(PartnerDirectory.id == _ROW))
        return [DirectoryEntry.model_validate(entry) for entry in stored or []]

    async def partner(self, session: AsyncSession, partner_id: str) -> DirectoryEntry:
        """The partner the lead chose, or NotFound naming those it may choose."""
        partners = await self.partners(session)
        chosen = next((p for p in partners if p.id == partner_id), None)
        if chosen is None:
            raise NotFound(wording.unknown_partner(partner_id, [p.id for p in partners[:_NAMED_IN_A_REFUSAL]],
                                                   len(partners)))
        return chosen

    async def on_changed(self, session: AsyncSession, payload: DirectoryChanged) -> None:
        """directory.partners from the bridge: kept whole when its version is higher than the one held."""
        partners = [entry.model_dump() for entry in payload.partners]
        stored = await session.scalar(
            insert(PartnerDirectory)
            .values(id=_ROW, version=payload.version, partners=partners)
            .on_conflict_do_update(
                index_elements=[PartnerDirectory.id],
                set_={"version": payload.version, "partners": partners, "received_at": func.now()},
                where=PartnerDirectory.version < payload.version,
            )
            .returning(PartnerDirectory.version)
        )
        if stored is not None:
            log.info("the hub's directory is at version %d: %d insourcing partners", payload.version, len(partners))
            return
        held = await session.scalar(select(PartnerDirectory.version).where(PartnerDirectory.id == _ROW))
        if held == payload.version:
            return  # the same directory again: the bridge's answer to this lead's request at start
        raise Ignored(f"directory version {payload.version} ignored: version {held} arrived first and is kept")

    def ask(self, session: AsyncSession) -> None:
        """Stage directory.requested for the bridge (it belongs to no link: no key)."""
        add_to_outbox(session, self.outbound_topic, envelope(DirectoryRequested(), source=self.partner_id, link_id=None))

    async def ask_at_start(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Once per start: ask the hub for its directory, through the outbox (published once Kafka is
        reached). Tried again until the database takes it."""
        delay = 0.5
        while True:
            try:
                async with sessions() as session, session.begin():
                    self.ask(session)
                log.info("asked the hub for its directory of insourcing partners")
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not ask the hub for its directory; trying again in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
