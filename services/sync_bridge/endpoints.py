"""The bridge's HTTP API: the link registry and the parked messages, behind the bridge token."""
from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select

from services.sync_bridge.models import Link
from shared.auth import Permission, SessionDep, require
from shared.errors import NotFound
from shared.inbox import dead_letters

router = APIRouter(prefix="/api", tags=["bridge"], dependencies=[Depends(require(Permission.LINKS))])


class LinkOut(BaseModel):
    id: str
    state: str
    lead_partner_id: str
    lead_ticket_id: str
    insourcing_partner_id: str
    insourcing_ticket_id: str | None
    mirrored_to_lead: int
    mirrored_to_insourcing: int
    created_at: datetime
    last_event_at: datetime | None


class DeadLetterOut(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str | None
    type: str | None
    reason: str
    parked_at: datetime


@router.get("/links", response_model=list[LinkOut], summary="All links, newest first")
async def list_links(session: SessionDep, state: str | None = None):
    query = select(Link).order_by(Link.created_at.desc())
    if state:
        query = query.where(Link.state == state)
    return list((await session.scalars(query)).all())


@router.get("/links/{link_id}", response_model=LinkOut, summary="One link")
async def read_link(link_id: str, session: SessionDep):
    link = await session.get(Link, link_id)
    if link is None:
        raise NotFound(f"link {link_id} not found")
    return link


@router.get("/dead-letters", response_model=list[DeadLetterOut], summary="Messages the bridge parked, newest first")
async def list_dead_letters(session: SessionDep):
    return await dead_letters(session)
