"""What the bridge does with each partner event: know the sender by the topic it came on, refuse what
a partner may not say, lock the link, and hand the event to its one handler: a link event
(services/sync_bridge/links.py) or an item to mirror (services/sync_bridge/mirroring.py)."""
import logging

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge import links, mirroring, reconciliation
from services.sync_bridge.directory import Directory, partner_of
from services.sync_bridge.links import LinkEvent, send
from services.sync_bridge.models import Link, LinkFacts
from services.sync_bridge.onboarding import announce
from shared.contracts.envelope import Envelope, Payload
from shared.contracts.messages import (
    DirectoryRequested,
    ItemCreated,
    LinkUnknown,
    MirrorApplied,
    OutsourceRequested,
    ReconcileRequested,
)
from shared.platform.db import plain_sql
from shared.platform.inbox import Rejected
from shared.platform.messagebus import Ignored, MessageBus

log = logging.getLogger(__name__)


def sender_of(topic: str) -> str:
    """psa.<partner>.outbound -> <partner>. The topic, not the envelope, says who sent it."""
    partner = partner_of(topic)
    if partner is None or not topic.endswith(".outbound"):
        raise Rejected(f"the bridge does not read topic {topic}")
    return partner


class Bridge:
    def __init__(self, directory: Directory):
        self.directory = directory
        self.bus = MessageBus("bridge", {**links.HANDLERS, **mirroring.HANDLERS, **reconciliation.HANDLERS})

    def _sender(self, env: Envelope, topic: str):
        """Who sent it (the topic says), refused unless the envelope agrees and the partner is active."""
        sender = sender_of(topic)
        if env.source != sender:
            raise Rejected(f"event claims to come from {env.source!r} but arrived on {sender}'s topic")
        member = self.directory.get(sender)
        if member is None or member.status != "active":
            raise Rejected(f"partner removed: {sender} is not an active partner of this hub")
        return sender, member

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        sender, member = self._sender(env, topic)
        if isinstance(payload, DirectoryRequested):
            if not member.may("lead"):
                raise Rejected(f"{sender} is not a lead partner: it is sent no directory")
            await announce(session, self.directory, to=[sender])
            return
        link_id = getattr(payload, "link_id", None)
        if link_id is None or link_id != env.link_id:
            raise Rejected("the event's link id and its envelope's do not agree")
        # One statement both locks the link (its events apply one at a time) and records the event
        # (receipts and reconciliation are not events of the link).
        bookkeeping = payload.type.startswith("sync.") or payload.type == "mirror.applied"
        if type(payload) in mirroring.HANDLERS:
            # Items and their receipts, most of the traffic, only read the link: plain SQL (issue 11).
            row = await (await plain_sql(session)).fetchrow(
                "UPDATE links SET last_event_at = CASE WHEN $2 THEN last_event_at ELSE now() END WHERE id = $1"
                " RETURNING id, state, lead_partner_id, insourcing_partner_id, round_id", link_id, bookkeeping)
            link = LinkFacts(**row) if row is not None else None
        else:
            link = await session.scalar(
                update(Link)
                .where(Link.id == link_id)
                .values(last_event_at=Link.last_event_at if bookkeeping else func.now())
                .returning(Link)
                .execution_options(populate_existing=True)
            )
        if isinstance(payload, OutsourceRequested):
            try:
                await links.requested(session, sender, link, payload, self.directory)
            except Ignored as exc:
                log.warning("bridge: %s", exc)
            return
        if link is None and isinstance(payload, ReconcileRequested):
            # The link's first message never arrived: a lead is asked to send it again; an insourcing
            # partner has nothing to send (only a lead's request makes a link).
            if member.may("lead"):
                send(session, sender, LinkUnknown(link_id=link_id), link_id)
            else:
                log.warning("bridge: %s asked about link %s, which the bridge never heard of", sender, link_id)
            return
        if link is None:
            raise Rejected(f"unknown link {link_id}")
        if sender not in (link.lead_partner_id, link.insourcing_partner_id):
            raise Rejected(f"{sender} is not a party to link {link_id}")
        await self.bus.dispatch(session, payload, LinkEvent(link, sender, payload))

    async def receipts_together(self, session: AsyncSession, messages: list[tuple[Envelope, MirrorApplied, str]]) -> None:
        """Receipts (mirror.applied) that came together, set-based (issue 30), passed on by
        `mirroring.applied_together`."""
        await mirroring.applied_together(session, await self._events_together(session, messages, stamp=False))

    async def items_together(self, session: AsyncSession, messages: list[tuple[Envelope, ItemCreated, str]]) -> None:
        """New items (item.created) that came together, set-based (issue 30), passed on by
        `mirroring.created_together`."""
        await mirroring.created_together(session, await self._events_together(session, messages, stamp=True))

    async def _events_together(self, session: AsyncSession, messages: list[tuple[Envelope, Payload, str]],
                               stamp: bool) -> list[LinkEvent]:
        """Messages of the mirroring kind that came together, each checked as `handle` checks it, their
        links locked in one statement, in the order they came (as `handle` locks each), and with
        `stamp` their last event noted in one more. A refusal refuses the batch, whose messages the
        inbox then applies one at a time (the refused one is parked alone)."""
        senders = []
        for env, payload, topic in messages:
            sender, _ = self._sender(env, topic)
            if payload.link_id != env.link_id:
                raise Rejected("the event's link id and its envelope's do not agree")
            senders.append(sender)
        rows = await (await plain_sql(session)).fetch(
            "SELECT l.id, l.state, l.lead_partner_id, l.insourcing_partner_id, l.round_id"
            " FROM unnest($1::varchar[]) WITH ORDINALITY AS u(id, n) JOIN links AS l ON l.id = u.id"
            " ORDER BY u.n FOR NO KEY UPDATE OF l", list(dict.fromkeys(payload.link_id for _, payload, _ in messages)))
        links = {row["id"]: LinkFacts(**row) for row in rows}
        if stamp and links:
            await (await plain_sql(session)).execute("UPDATE links SET last_event_at = now() WHERE id = ANY($1::varchar[])",
                                                     list(links))
        events = []
        for sender, (_, payload, _) in zip(senders, messages):
            link = links.get(payload.link_id)
            if link is None:
                raise Rejected(f"unknown link {payload.link_id}")
            if sender not in (link.lead_partner_id, link.insourcing_partner_id):
                raise Rejected(f"{sender} is not a party to link {payload.link_id}")
            events.append(LinkEvent(link, sender, payload))
        return events

    def together(self) -> dict:
        """The messages the bridge applies set-based when several come together (`InboxConsumer`)."""
        return {MirrorApplied: self.receipts_together, ItemCreated: self.items_together}
