"""The bridge's HTTP API: the link registry, behind the bridge token."""
from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge.models import ItemMirror, Link
from shared.platform.auth import Permission, SessionDep, require
from shared.platform.errors import NotFound

router = APIRouter(prefix="/api", tags=["bridge"], dependencies=[Depends(require(Permission.LINKS))])


class LinkOut(BaseModel):
    id: str
    state: str
    lead_partner_id: str
    lead_ticket_id: str
    insourcing_partner_id: str
    insourcing_ticket_id: str | None
    mirrored_to_lead: int = Field(description="the insourcing partner's items that have a mirror on the lead ticket")
    mirrored_to_insourcing: int = Field(description="the lead partner's items that have a mirror on the insourcing ticket")
    created_at: datetime
    last_event_at: datetime | None


async def with_counts(session: AsyncSession, links: list[Link]) -> list[LinkOut]:
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
            **{name: getattr(link, name) for name in LinkOut.model_fields if not name.startswith("mirrored_to_")},
            mirrored_to_insourcing=counts.get((link.id, link.lead_partner_id), 0),
            mirrored_to_lead=counts.get((link.id, link.insourcing_partner_id), 0),
        )
        for link in links
    ]


@router.get("/links", response_model=list[LinkOut], summary="All links, newest first")
async def list_links(session: SessionDep, state: str | None = None):
    query = select(Link).order_by(Link.created_at.desc())
    if state:
        query = query.where(Link.state == state)
    return await with_counts(session, list((await session.scalars(query)).all()))


@router.get("/links/{link_id}", response_model=LinkOut, summary="One link")
async def read_link(link_id: str, session: SessionDep):
    link = await session.get(Link, link_id)
    if link is None:
        raise NotFound(f"link {link_id} not found")
    [out] = await with_counts(session, [link])
    return out
