"""What the bridge does with each partner event: keep the link registry, refuse what a partner may
not say, and mirror items onto the other ticket through that partner's inbound topic."""
import logging
import uuid

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge.models import ItemMirror, Link
from shared.contracts import Envelope, Payload
from shared.db import utcnow
from shared.inbox import Rejected
from shared.kafka import inbound_topic
from shared.messages import (
    CHUNK_BYTES,
    AttachmentChunk,
    InsourceAccepted,
    InsourceCompletionRequested,
    InsourceDeclined,
    ItemBody,
    ItemCreated,
    ItemDeleted,
    ItemUnshared,
    ItemUpdated,
    MirrorChunk,
    MirrorDelete,
    MirrorRefused,
    MirrorUpsert,
    OutsourceCanceled,
    OutsourceCompleted,
    OutsourceRejected,
    OutsourceRequested,
    WorkAccepted,
    WorkCanceled,
    WorkCompleted,
    WorkDeclined,
    WorkRejected,
    WorkRequested,
    WorkWaitingApproval,
)
from shared.outbox import Publisher
from shared.tickets.schemas import MAX_ATTACHMENT_BYTES, AttachmentFields, ChargeCreate, NoteCreate, TimeEntryCreate

log = logging.getLogger(__name__)
MIRROR_NAMESPACE = uuid.UUID("6f1c2a52-8d7e-4d0b-9a51-2f0b6c1d9e11")

PENDING, ACTIVE, SUSPENDED, TERMINATED = "pending", "active", "suspended", "terminated"


def sender_of(topic: str) -> str:
    """psa.<partner>.outbound -> <partner>. The topic, not the envelope, says who sent it."""
    parts = topic.split(".")
    if len(parts) != 3 or parts[0] != "psa" or parts[2] != "outbound":
        raise Rejected(f"the bridge does not read topic {topic}")
    return parts[1]


_FIELDS = {
    "note": NoteCreate,
    "time_entry": TimeEntryCreate,
    "charge": ChargeCreate,
    "attachment": AttachmentFields,
}


def check_fields(payload: ItemBody) -> None:
    """A partner's item must be what the other partner's API would accept: a partner cannot plant
    an item the other side could not display, edit or bill (or an attachment over the limit)."""
    model = _FIELDS[payload.kind]
    try:
        model.model_validate(payload.fields)
    except ValidationError as exc:
        raise Rejected(f"invalid {payload.kind} fields: {exc.errors(include_url=False)}") from exc
    if payload.kind == "attachment" and payload.chunk_count > MAX_ATTACHMENT_BYTES // CHUNK_BYTES + 1:
        raise Rejected(f"an attachment of {payload.chunk_count} chunks is over the 10 MiB limit")


def lead_time_entry_as_note(fields: dict) -> dict:
    billable = "billable" if fields.get("billable", True) else "non-billable"
    return {
        "title": f"Time entry by {fields['resource']}",
        "body": f"{fields['resource']} worked {fields['hours']} h on {fields['date_worked']} ({billable}): {fields['summary']}",
    }


class Bridge:
    def __init__(self, partners: list[str]):
        self.partners = set(partners)

    async def handle(self, session: AsyncSession, env: Envelope, payload: Payload, topic: str) -> None:
        sender = sender_of(topic)
        if env.source != sender:
            raise Rejected(f"event claims to come from {env.source!r} but arrived on {sender}'s topic")
        link_id = getattr(payload, "link_id", None)
        if link_id is None or link_id != env.link_id:
            raise Rejected("the event's link id and its envelope's do not agree")
        # One statement both locks the link (its events apply one at a time) and records the event.
        link = await session.scalar(
            update(Link)
            .where(Link.id == link_id)
            .values(last_event_at=func.now())
            .returning(Link)
            .execution_options(populate_existing=True)
        )

        if isinstance(payload, OutsourceRequested):
            await self._requested(session, sender, link, payload)
            return
        if link is None:
            raise Rejected(f"unknown link {link_id}")
        if sender not in (link.lead_partner_id, link.insourcing_partner_id):
            raise Rejected(f"{sender} is not a party to link {link_id}")
        is_lead = sender == link.lead_partner_id

        if isinstance(payload, OutsourceCanceled):
            self._require(is_lead, sender, env)
            if link.state == PENDING:
                link.state = TERMINATED
                self._send(session, link.insourcing_partner_id, WorkCanceled(link_id=link.id), link.id)
            else:
                log.warning("cancel of link %s ignored: the link is already %s", link.id, link.state)
        elif isinstance(payload, InsourceAccepted):
            self._require(not is_lead, sender, env)
            if link.state == PENDING:
                link.state, link.insourcing_ticket_id = ACTIVE, payload.insourcing_ticket_id
                self._send(
                    session,
                    link.lead_partner_id,
                    WorkAccepted(link_id=link.id, partner_ticket_number=payload.insourcing_ticket_number),
                    link.id,
                )
            else:
                log.warning("acceptance of link %s ignored: the link is already %s", link.id, link.state)
        elif isinstance(payload, InsourceDeclined):
            self._require(not is_lead, sender, env)
            if link.state == PENDING:
                link.state = TERMINATED
                self._send(session, link.lead_partner_id, WorkDeclined(link_id=link.id, reason=payload.reason), link.id)
        elif isinstance(payload, InsourceCompletionRequested):
            self._require(not is_lead, sender, env)
            if link.state == ACTIVE:
                link.state = SUSPENDED  # from here on, items of either side stay on their side
                self._send(session, link.lead_partner_id, WorkWaitingApproval(link_id=link.id), link.id)
            else:
                log.warning("Insource Complete on link %s ignored: the link is %s", link.id, link.state)
        elif isinstance(payload, OutsourceRejected):
            self._require(is_lead, sender, env)
            if link.state == SUSPENDED:
                link.state = ACTIVE
                self._send(session, link.insourcing_partner_id, WorkRejected(link_id=link.id, reason=payload.reason), link.id)
        elif isinstance(payload, OutsourceCompleted):
            self._require(is_lead, sender, env)
            if link.state in (ACTIVE, SUSPENDED):
                link.state = TERMINATED
                self._send(
                    session, link.insourcing_partner_id, WorkCompleted(link_id=link.id, approved=payload.approved), link.id
                )
        elif isinstance(payload, MirrorRefused):
            await self._refused(session, link, sender, payload)
        elif isinstance(payload, (ItemCreated, ItemUpdated, ItemDeleted, AttachmentChunk)):
            await self._mirror(session, link, sender, is_lead, payload)
        else:
            raise Rejected(f"{env.type} is not for the bridge")

    @staticmethod
    def _require(allowed: bool, sender: str, env: Envelope) -> None:
        if not allowed:
            raise Rejected(f"{sender} may not send {env.type} on this link")

    async def _requested(self, session: AsyncSession, sender: str, link: Link | None, payload: OutsourceRequested) -> None:
        if link is not None:
            raise Rejected(f"link {payload.link_id} exists already")
        target = payload.insourcing_partner_id
        if target not in self.partners or target == sender:
            raise Rejected(f"{sender} cannot outsource to {target!r}: not a partner this bridge serves")
        session.add(
            Link(
                id=payload.link_id,
                state=PENDING,
                lead_partner_id=sender,
                lead_ticket_id=payload.lead_ticket_id,
                insourcing_partner_id=target,
                last_event_at=utcnow(),
            )
        )
        self._send(
            session,
            target,
            WorkRequested(
                link_id=payload.link_id,
                lead_partner_id=sender,
                lead_partner_name=payload.lead_partner_name,
                lead_ticket_number=payload.lead_ticket_number,
                title=payload.title,
                description=payload.description,
                instructions=payload.instructions,
                terms=payload.terms,
            ),
            payload.link_id,
        )

    async def _refused(self, session: AsyncSession, link: Link, sender: str, payload: MirrorRefused) -> None:
        """The receiving partner had suspended or ended synchronization before the mirror arrived."""
        mapping = await session.scalar(
            select(ItemMirror).where(ItemMirror.link_id == link.id, ItemMirror.mirror_id == payload.mirror_id)
        )
        if mapping is None or mapping.source_partner_id == sender or mapping.deleted:
            return
        mapping.deleted = True
        self._send(session, mapping.source_partner_id, ItemUnshared(link_id=link.id, item_id=mapping.source_item_id), link.id)

    async def _mirror(self, session: AsyncSession, link: Link, sender: str, is_lead: bool, payload) -> None:
        if isinstance(payload, (ItemCreated, ItemUpdated)):
            check_fields(payload)
        if isinstance(payload, AttachmentChunk):
            # The rest of an attachment whose first part crossed follows it, whatever happened since.
            mapping = await session.get(ItemMirror, (link.id, payload.item_id))
            if mapping is not None and not mapping.deleted and mapping.source_partner_id == sender:
                self._send(session, mapping.target_partner_id(link), MirrorChunk(
                    link_id=link.id, mirror_id=mapping.mirror_id, index=payload.index, count=payload.count,
                    data=payload.data), link.id)
            return
        if link.state != ACTIVE:
            log.info("link %s is %s: %s of item %s stays on its side", link.id, link.state, payload.type, payload.item_id)
            if isinstance(payload, ItemCreated):
                # Its creator marks it as not shared.
                self._send(session, sender, ItemUnshared(link_id=link.id, item_id=payload.item_id), link.id)
            return
        target = link.insourcing_partner_id if is_lead else link.lead_partner_id
        if isinstance(payload, ItemCreated):
            values = dict(
                link_id=link.id,
                source_item_id=payload.item_id,
                source_partner_id=sender,
                mirror_id=str(uuid.uuid5(MIRROR_NAMESPACE, f"{link.id}:{payload.item_id}")),
                kind="note" if (is_lead and payload.kind == "time_entry") else payload.kind,
                deleted=False,
            )
            # The common case in one round trip; an item announced twice keeps its first mapping.
            inserted = await session.scalar(
                insert(ItemMirror).values(**values).on_conflict_do_nothing().returning(ItemMirror.mirror_id)
            )
            mapping = ItemMirror(**values)
            if inserted is None:
                mapping = await session.get(ItemMirror, (link.id, payload.item_id))
                if mapping.source_partner_id != sender:
                    raise Rejected(f"{sender} did not create item {payload.item_id}")
                if mapping.deleted:
                    log.info("item %s on link %s was deleted or refused; not mirrored again", payload.item_id, link.id)
                    return
            self._send(session, target, self._upsert(link, mapping, is_lead, payload), link.id)
            return
        mapping = await session.get(ItemMirror, (link.id, payload.item_id))
        if mapping is None or mapping.deleted:
            log.info("no mirror of item %s on link %s: %s not forwarded", payload.item_id, link.id, payload.type)
            return
        if mapping.source_partner_id != sender:
            raise Rejected(f"{sender} did not create item {payload.item_id}")
        if isinstance(payload, ItemUpdated):
            self._send(session, target, self._upsert(link, mapping, is_lead, payload), link.id)
        else:
            mapping.deleted = True
            self._send(session, target, MirrorDelete(link_id=link.id, mirror_id=mapping.mirror_id), link.id)

    @staticmethod
    def _upsert(link: Link, mapping: ItemMirror, is_lead: bool, payload: ItemBody) -> MirrorUpsert:
        fields = payload.fields
        if is_lead and payload.kind == "time_entry":
            fields = lead_time_entry_as_note(fields)  # the lead's time is described to the partner, not billed
        return MirrorUpsert(
            link_id=link.id,
            mirror_id=mapping.mirror_id,
            kind=mapping.kind,
            fields=fields,
            # The partner's notes must not reach the lead's customer.
            internal=(not is_lead) and mapping.kind == "note",
            chunk_count=payload.chunk_count,
        )

    @staticmethod
    def _send(session: AsyncSession, partner_id: str, payload: Payload, link_id: str) -> None:
        Publisher(inbound_topic(partner_id), "bridge").emit(session, payload, link_id)
