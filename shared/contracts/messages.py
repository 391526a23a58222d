"""The messages that cross Kafka. Partners publish on their outbound topic; the bridge publishes
on each partner's inbound topic. Every message of a link carries the link id as its key."""
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.envelope import Payload, contract

# Raw bytes per attachment chunk: base64 makes it ~4/3 larger, well under Kafka's 1 MiB.
CHUNK_BYTES = 512 * 1024


class Terms(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_type: Literal["hourly", "flat"]
    rate: float = Field(ge=0)
    authorized_hours: float | None = Field(None, gt=0)
    authorized_charge: float | None = Field(None, ge=0)


# --- partner -> bridge (on the partner's outbound topic) -----------------------------------------


@contract
class OutsourceRequested(Payload):
    type = "outsource.requested"
    link_id: str
    lead_partner_name: str
    lead_ticket_id: str
    lead_ticket_number: str
    insourcing_partner_id: str
    title: str
    description: str
    instructions: str
    terms: Terms | None


@contract
class OutsourceCanceled(Payload):
    type = "outsource.canceled"
    link_id: str


@contract
class InsourceAccepted(Payload):
    type = "insource.accepted"
    link_id: str
    insourcing_ticket_id: str
    insourcing_ticket_number: str


@contract
class InsourceDeclined(Payload):
    type = "insource.declined"
    link_id: str
    reason: str


class ItemBody(Payload):
    link_id: str
    item_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]
    fields: dict[str, Any]
    chunk_count: int = 0  # attachments: how many attachment.chunk messages follow


@contract
class ItemCreated(ItemBody):
    type = "item.created"


@contract
class ItemUpdated(ItemBody):
    type = "item.updated"


@contract
class ItemDeleted(Payload):
    type = "item.deleted"
    link_id: str
    item_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]


@contract
class AttachmentChunk(Payload):
    type = "attachment.chunk"
    link_id: str
    item_id: str
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: str  # base64


# --- bridge -> partner (on the partner's inbound topic) ------------------------------------------


@contract
class WorkRequested(Payload):
    """To the insourcing partner: a lead partner asks it to take a ticket."""

    type = "link.requested"
    link_id: str
    lead_partner_id: str
    lead_partner_name: str
    lead_ticket_number: str
    title: str
    description: str
    instructions: str
    terms: Terms | None


@contract
class WorkCanceled(Payload):
    type = "link.canceled"
    link_id: str


@contract
class WorkAccepted(Payload):
    type = "link.accepted"
    link_id: str
    partner_ticket_number: str


@contract
class WorkDeclined(Payload):
    type = "link.declined"
    link_id: str
    reason: str


@contract
class MirrorUpsert(Payload):
    """Create or update the mirror `mirror_id` of an item of the other ticket."""

    type = "mirror.upsert"
    link_id: str
    mirror_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]
    fields: dict[str, Any]
    internal: bool = False
    chunk_count: int = 0


@contract
class MirrorChunk(Payload):
    type = "mirror.chunk"
    link_id: str
    mirror_id: str
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: str


@contract
class MirrorDelete(Payload):
    type = "mirror.delete"
    link_id: str
    mirror_id: str


# --- completion (SPEC section 3, last four rows) -------------------------------------------------


@contract
class InsourceCompletionRequested(Payload):
    """Insourcing -> bridge: "Notify Lead Partner > Insource Complete"."""

    type = "insource.completion_requested"
    link_id: str


@contract
class OutsourceRejected(Payload):
    type = "outsource.rejected"
    link_id: str
    reason: str


@contract
class OutsourceCompleted(Payload):
    """Lead -> bridge: approved, or set Complete at any time (the results are the same)."""

    type = "outsource.completed"
    link_id: str
    approved: bool


@contract
class MirrorRefused(Payload):
    """Partner -> bridge: a mirror arrived after this side suspended or ended synchronization."""

    type = "mirror.refused"
    link_id: str
    mirror_id: str


@contract
class WorkWaitingApproval(Payload):
    type = "link.waiting_approval"
    link_id: str


@contract
class WorkRejected(Payload):
    type = "link.rejected"
    link_id: str
    reason: str


@contract
class WorkCompleted(Payload):
    type = "link.completed"
    link_id: str
    approved: bool


@contract
class ItemUnshared(Payload):
    """Bridge -> the item's creator: the item did not cross (synchronization was suspended or over)."""

    type = "item.unshared"
    link_id: str
    item_id: str
