"""The bridge's HTTP API: the link registry, behind the bridge token."""
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Integer, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge import kept_manifests
from services.sync_bridge.models import ItemMirror, Link, Repair
from services.sync_bridge.reconciliation import start_round
from shared.domain.workflow import LinkState
from shared.platform import paging
from shared.platform.auth import Permission, SessionDep, api_router
from shared.platform.db import plain_sql
from shared.platform.errors import NotFound
from shared.platform.inbox import InboxConsumer

router = api_router("/api", ["bridge"], Permission.LINKS)
MAX_QUERY = 100  # longer than any ticket number or link id an operator would paste


class LinkOut(BaseModel):
    id: str
    state: str
    lead_partner_id: str
    lead_partner_name: str = Field(description="as the hub's partner directory names it (its id if the directory does not)")
    lead_ticket_id: str
    lead_ticket_number: str | None = Field(description="the number the lead's users know its ticket by")
    insourcing_partner_id: str
    insourcing_partner_name: str = Field(description="as the hub's partner directory names it (its id if the directory does not)")
    insourcing_ticket_id: str | None
    insourcing_ticket_number: str | None = Field(description="the insourcing partner's ticket number, once it accepted")
    mirrored_to_lead: int = Field(description="the insourcing partner's items that have a mirror on the lead ticket")
    mirrored_to_insourcing: int = Field(description="the lead partner's items that have a mirror on the insourcing ticket")
    created_at: datetime
    last_event_at: datetime | None


PartnerNames = Callable[[str], str]


def partner_names(request: Request) -> PartnerNames:
    """A partner's name as the hub's directory holds it (a removed partner keeps its name there), or its id."""
    directory = getattr(request.app.state, "directory", None)

    def name(partner_id: str) -> str:
        member = directory.get(partner_id) if directory is not None else None
        return member.name if member is not None else partner_id

    return name


async def with_counts(session: AsyncSession, links: list[Link], names: PartnerNames) -> list[LinkOut]:
    """Counted when asked rather than kept on the link: mirroring stays one row lighter per item."""
    counts = {}
    if links:
        rows = await session.execute(
            select(ItemMirror.link_id, ItemMirror.source_partner_id, func.count())
            .where(ItemMirror.link_id.in_([link.id for link in links]), ItemMirror.deleted.is_(False))
            .group_by(ItemMirror.link_id, ItemMirror.source_partner_id)
        )
        counts = {(link_id, source): n for link_id, source, n in rows}
    return [
        LinkOut(
            **{name: getattr(link, name) for name in LinkOut.model_fields
               if not name.startswith("mirrored_to_") and not name.endswith("_partner_name")},
            lead_partner_name=names(link.lead_partner_id),
            insourcing_partner_name=names(link.insourcing_partner_id),
            mirrored_to_insourcing=counts.get((link.id, link.lead_partner_id), 0),
            mirrored_to_lead=counts.get((link.id, link.insourcing_partner_id), 0),
        )
        for link in links
    ]


def _like(text: str) -> str:
    """`text` matched as it is: LIKE's wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _matching(pattern: str) -> ColumnElement[bool]:
    return or_(*(column.ilike(pattern, escape="\\")
                 for column in (Link.lead_ticket_number, Link.insourcing_ticket_number, Link.id)))


async def find_links(session: AsyncSession, state: str | None, q: str, limit: int,
                     cursor: str | None) -> tuple[list[Link], str | None]:
    """A page of links, newest first (the API and the Links page). `q` is either side's ticket number
    or the link id, case aside: whole, it finds the links that have it (T20261207.0001 does not also
    find T20261207.00010); otherwise the links with a number or id that starts so."""
    where = [Link.state == state] if state else []
    if "\x00" in q:  # no number or id holds one (and PostgreSQL text cannot)
        return [], None
    if q := q.strip():
        whole = _matching(_like(q))
        has_whole = await session.scalar(select(exists().where(*where, whole)))
        where.append(whole if has_whole else _matching(f"{_like(q)}%"))
    query = paging.after(select(Link).where(*where), Link.created_at, Link.id, cursor, newest_first=True)
    return paging.page(list((await session.scalars(query.limit(limit + 1))).all()), limit,
                       lambda link: link.created_at, lambda link: link.id)


@router.get("/links", response_model=paging.page_of(LinkOut, "LinkPage"),
            summary="The links, newest first, a page at a time")
async def list_links(
    request: Request,
    session: SessionDep,
    state: Annotated[LinkState | None, Query(description="only links in this state")] = None,
    q: Annotated[str, Query(max_length=MAX_QUERY, description="either side's ticket number, or the link id, whole "
                                                               "or its start (case does not matter)")] = "",
    limit: paging.Limit = paging.PAGE_DEFAULT,
    cursor: paging.Cursor = None,
):
    links, next_cursor = await find_links(session, state, q, limit, cursor)
    return {"items": await with_counts(session, links, partner_names(request)), "next_cursor": next_cursor}


@router.get("/links/{link_id}", response_model=LinkOut, summary="One link")
async def read_link(request: Request, link_id: str, session: SessionDep):
    link = await session.get(Link, link_id)
    if link is None:
        raise NotFound(f"link {link_id} not found")
    [out] = await with_counts(session, [link], partner_names(request))
    return out


class AnswerOut(BaseModel):
    described: str = Field(description="`changes`: only what changed since the answer before, which the bridge"
                           " keeps (issue 28); `everything`: the whole set (a first round, a partner of 1.0.0, or"
                           " a kept answer that did not add up)")
    entries: int = Field(description="items, mirrors and removals the answer listed")
    held: int = Field(description="items and mirrors the side holds of the link, which the round compared")


class SideHealthOut(BaseModel):
    partner_id: str
    ticket_id: str | None
    status: str | None = Field(description="the side's Outsource Status or Insource Status, as it last said")
    pending: int
    delivered: int
    refused: int
    oldest_pending_at: datetime | None
    last_sent_at: datetime | None
    last_received_at: datetime | None
    last_answer: AnswerOut | None = Field(None, description="what the side's answer to the last round described")


class RepairOut(BaseModel):
    what: str
    at: datetime


class RepairsOut(BaseModel):
    count: int
    last_at: datetime | None
    recent: list[RepairOut] = Field(description="the latest repairs, newest first (at most 20)")


class LinkHealthOut(BaseModel):
    link_id: str
    link_state: str
    in_sync: bool | None = Field(description="the last reconciliation found no difference (null: none ran yet)")
    last_reconciled_at: datetime | None
    reconciling: bool = Field(description="a reconciliation round is under way or due")
    lead: SideHealthOut
    insourcing: SideHealthOut
    repairs: RepairsOut


class ReconcileOut(BaseModel):
    link_id: str
    round_id: str


def _side(partner_id: str, ticket_id: str | None, seen: dict | None) -> SideHealthOut:
    seen = seen or {}
    return SideHealthOut(partner_id=partner_id, ticket_id=ticket_id, status=seen.get("status"),
                         **{name: seen.get(name, 0 if name in ("pending", "delivered", "refused") else None)
                            for name in ("pending", "delivered", "refused", "oldest_pending_at", "last_sent_at",
                                         "last_received_at", "last_answer")})


@router.get("/links/{link_id}/health", response_model=LinkHealthOut,
            summary="The link's synchronization as the bridge sees both sides, and what reconciliation repaired")
async def link_health(link_id: str, session: SessionDep):
    return await health_of(session, link_id)


async def health_of(session: AsyncSession, link_id: str) -> LinkHealthOut:
    """The link's synchronization as the bridge last saw both sides (the API and the operator page)."""
    link = await session.get(Link, link_id)
    if link is None:
        raise NotFound(f"link {link_id} not found")
    recent = await session.scalars(select(Repair).where(Repair.link_id == link_id).order_by(Repair.id.desc()).limit(20))
    return LinkHealthOut(
        link_id=link.id, link_state=link.state, in_sync=link.in_sync, last_reconciled_at=link.last_reconciled_at,
        reconciling=bool(link.round_id or link.reconcile_due),
        lead=_side(link.lead_partner_id, link.lead_ticket_id, link.lead_health),
        insourcing=_side(link.insourcing_partner_id, link.insourcing_ticket_id, link.insourcing_health),
        repairs=RepairsOut(count=link.repairs, last_at=link.last_repair_at,
                           recent=[RepairOut(what=r.what, at=r.at) for r in recent]),
    )


@router.post("/links/{link_id}/reconcile", status_code=202, response_model=ReconcileOut,
             summary="Reconcile the link now: both partners are asked what they hold, and differences are repaired")
async def reconcile_now(link_id: str, session: SessionDep, everything: Annotated[bool, Query(description=(
        "ask both sides for everything they hold, not only what changed since the answers the bridge keeps"
        " (which it forgets)"))] = False):
    return await reconcile(session, link_id, everything)


async def reconcile(session: AsyncSession, link_id: str, everything: bool = False) -> ReconcileOut:
    """Starts a reconciliation round of the link, under its row lock (the API and the operator page)."""
    link = await session.get(Link, link_id, with_for_update=True)
    if link is None:
        raise NotFound(f"link {link_id} not found")
    if everything:
        await kept_manifests.forget(await plain_sql(session), link.id)
    return ReconcileOut(link_id=link.id, round_id=await start_round(session, link))


MAX_BACKLOG_LINKS = 50


class PartitionBacklogOut(BaseModel):
    topic: str
    partition: int
    waiting: int = Field(description="records the broker holds on this partition that the bridge has not applied yet")


class LinkBacklogOut(BaseModel):
    link_id: str
    link_state: str
    lead_pending: int = Field(description="the lead's items waiting for the partner's receipt, as the lead last said")
    insourcing_pending: int = Field(description="the same for the insourcing partner's items")
    oldest_pending_at: datetime | None
    reported_at: datetime | None = Field(description="when the partners said so: the link's last reconciliation")


class BacklogOut(BaseModel):
    waiting: int = Field(description="records on the partners' topics this replica has not applied yet")
    partitions: list[PartitionBacklogOut] = Field(
        description="each partition this replica reads, most waiting first (none while its consumer restarts)")
    links: list[LinkBacklogOut] = Field(
        description="the open links whose partners said, at their last reconciliation, that items were waiting "
                    f"for a receipt, most first (at most {MAX_BACKLOG_LINKS})")


def _pending(side):
    return func.coalesce(side["pending"].astext.cast(Integer), 0)


@router.get("/backlog", response_model=BacklogOut,
            summary="What waits: records per partition not applied by the bridge yet, and the links with items awaiting a receipt")
async def backlog(request: Request, session: SessionDep):
    return await backlog_of(session, getattr(request.app.state, "consumer", None))


async def backlog_of(session: AsyncSession, consumer: InboxConsumer | None) -> BacklogOut:
    """Backpressure an operator can see (the API and the links page): the bridge's lag per partition
    (live, as its last fetch saw each partition's end) and each link's receipts outstanding on either
    side (as the partners last reported them in reconciliation; ended links are left out)."""
    lag = dict(consumer.lag) if consumer is not None else {}
    partitions = sorted((PartitionBacklogOut(topic=tp.topic, partition=tp.partition, waiting=n) for tp, n in lag.items()),
                        key=lambda p: (-p.waiting, p.topic, p.partition))
    pending = _pending(Link.lead_health) + _pending(Link.insourcing_health)
    rows = await session.scalars(select(Link).where(pending > 0, Link.state != "terminated")
                                 .order_by(pending.desc(), Link.id).limit(MAX_BACKLOG_LINKS))
    links = []
    for link in rows:
        sides = [side or {} for side in (link.lead_health, link.insourcing_health)]
        oldest = [side["oldest_pending_at"] for side in sides if side.get("oldest_pending_at")]
        links.append(LinkBacklogOut(link_id=link.id, link_state=link.state, lead_pending=sides[0].get("pending", 0),
                                    insourcing_pending=sides[1].get("pending", 0),
                                    oldest_pending_at=min(oldest, key=datetime.fromisoformat) if oldest else None,
                                    reported_at=link.last_reconciled_at))
    return BacklogOut(waiting=sum(lag.values()), partitions=partitions, links=links)
