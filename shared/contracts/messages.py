"""The messages that cross Kafka. Partners publish on their outbound topic; the bridge publishes
on each partner's inbound topic. Every message of a link carries the link id as its key."""
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.contracts.envelope import INSOURCING, LEAD, Message, Payload, inbound, outbound
from shared.contracts.limits import MAX_AMOUNT

# What a note, time entry, charge or attachment holds: checked by each reader as that kind's API checks it.
FIELDS = ("the item's fields, as its kind's schema says: NoteFields, TimeEntryFields, ChargeFields or"
          " AttachmentFields (an attachment's bytes follow in `count` chunks, base64)")

# Raw bytes per attachment chunk: base64 makes it ~4/3 larger, well under Kafka's 1 MiB.
CHUNK_BYTES = 512 * 1024


class Terms(Message):
    # Finite numbers a price can hold: an hourly rate becomes the unit price of the partner's labor charge.
    model_config = ConfigDict(allow_inf_nan=False)
    rate_type: Literal["hourly", "flat"]
    rate: float = Field(ge=0, lt=MAX_AMOUNT)
    authorized_hours: float | None = Field(None, gt=0, lt=MAX_AMOUNT)
    authorized_charge: float | None = Field(None, ge=0, lt=MAX_AMOUNT)


# --- partner -> bridge (on the partner's outbound topic) -----------------------------------------


@outbound(LEAD)
class OutsourceRequested(Payload):
    """Lead -> bridge: outsource this ticket to `insourcing_partner_id` (a new link)."""

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


@outbound(LEAD)
class OutsourceCanceled(Payload):
    """Lead -> bridge: the lead withdrew its request before the insourcing partner accepted."""

    type = "outsource.canceled"
    link_id: str


@outbound(INSOURCING)
class InsourceAccepted(Payload):
    """Insourcing -> bridge: it took the work; its ticket now exists and synchronization starts."""

    type = "insource.accepted"
    link_id: str
    insourcing_ticket_id: str
    insourcing_ticket_number: str


@outbound(INSOURCING)
class InsourceDeclined(Payload):
    """Insourcing -> bridge: it will not take the work, and why."""

    type = "insource.declined"
    link_id: str
    reason: str


class ItemBody(Payload):
    link_id: str
    item_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]
    fields: dict[str, Any] = Field(description=FIELDS)
    chunk_count: int = 0  # attachments: how many attachment.chunk messages follow
    version: int = Field(1, ge=1)  # the item's version on its creator's side; its receipt names it


@outbound(LEAD, INSOURCING)
class ItemCreated(ItemBody):
    """Partner -> bridge: a note, time entry, charge or attachment made on this side's linked ticket."""

    type = "item.created"


@outbound(LEAD, INSOURCING)
class ItemUpdated(ItemBody):
    """Partner -> bridge: a shared item was edited on this side; `version` grows with each edit."""

    type = "item.updated"


@outbound(LEAD, INSOURCING)
class ItemDeleted(Payload):
    """Partner -> bridge: a shared item was deleted on this side (its last version)."""

    type = "item.deleted"
    link_id: str
    item_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]
    version: int = Field(1, ge=1)  # the deletion is the item's last version


@outbound(LEAD, INSOURCING)
class AttachmentChunk(Payload):
    """Partner -> bridge: one piece of an attachment's bytes (`index` of `count`), after its item.created."""

    type = "attachment.chunk"
    link_id: str
    item_id: str
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: str  # base64


# --- bridge -> partner (on the partner's inbound topic) ------------------------------------------


@inbound(INSOURCING)
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


@inbound(INSOURCING)
class WorkCanceled(Payload):
    """Bridge -> the insourcing partner: the lead withdrew the work before it was accepted."""

    type = "link.canceled"
    link_id: str


@inbound(LEAD)
class WorkAccepted(Payload):
    """Bridge -> the lead: the insourcing partner accepted; its ticket number."""

    type = "link.accepted"
    link_id: str
    partner_ticket_number: str


@inbound(LEAD)
class WorkDeclined(Payload):
    """Bridge -> the lead: the insourcing partner (or the hub, for an unknown partner) declined, and why."""

    type = "link.declined"
    link_id: str
    reason: str


@inbound(LEAD, INSOURCING)
class MirrorUpsert(Payload):
    """Create or update the mirror `mirror_id` of an item of the other ticket."""

    type = "mirror.upsert"
    link_id: str
    mirror_id: str
    kind: Literal["note", "time_entry", "charge", "attachment"]
    fields: dict[str, Any] = Field(description=FIELDS)
    internal: bool = False
    chunk_count: int = 0
    # What the mirror mirrors: the original's version and content hash (reconciliation compares them).
    source_version: int = Field(1, ge=1)
    source_hash: str = ""


@inbound(LEAD, INSOURCING)
class MirrorChunk(Payload):
    """Bridge -> partner: one piece of a mirrored attachment's bytes (`index` of `count`)."""

    type = "mirror.chunk"
    link_id: str
    mirror_id: str
    index: int = Field(ge=0)
    count: int = Field(ge=1)
    data: str


@inbound(LEAD, INSOURCING)
class MirrorDelete(Payload):
    """Bridge -> partner: the original of this mirror was deleted; delete the mirror."""

    type = "mirror.delete"
    link_id: str
    mirror_id: str
    source_version: int = Field(1, ge=1)


# --- completion (SPEC section 3, last four rows) -------------------------------------------------


@outbound(INSOURCING)
class InsourceCompletionRequested(Payload):
    """Insourcing -> bridge: "Notify Lead Partner > Insource Complete"."""

    type = "insource.completion_requested"
    link_id: str


@outbound(LEAD)
class OutsourceRejected(Payload):
    """Lead -> bridge: the lead rejected the Insource Complete, and why; synchronization resumes."""

    type = "outsource.rejected"
    link_id: str
    reason: str


@outbound(LEAD)
class OutsourceCompleted(Payload):
    """Lead -> bridge: approved, or set Complete at any time (the results are the same)."""

    type = "outsource.completed"
    link_id: str
    approved: bool


@outbound(LEAD, INSOURCING)
class MirrorRefused(Payload):
    """Partner -> bridge: this side did not store the mirror: it arrived after this side suspended or
    ended synchronization, or its fields fail the checks this side's API makes."""

    type = "mirror.refused"
    link_id: str
    mirror_id: str
    reason: str = "the partner had already suspended or ended synchronization when it arrived"
    # Set when only an edit was refused: this version of the original; the mirror keeps the one before.
    source_version: int | None = Field(None, ge=1)


@inbound(LEAD)
class WorkWaitingApproval(Payload):
    """Bridge -> the lead: the insourcing partner asked for approval; synchronization is suspended."""

    type = "link.waiting_approval"
    link_id: str
    round: int = Field(1, ge=1)  # the how-manieth Insource Complete of the link (a resent one applies once)


@inbound(INSOURCING)
class WorkRejected(Payload):
    """Bridge -> the insourcing partner: the lead rejected its Insource Complete; synchronization resumes."""

    type = "link.rejected"
    link_id: str
    reason: str
    round: int = Field(1, ge=1)  # the Insource Complete it rejects


@inbound(INSOURCING)
class WorkCompleted(Payload):
    """Bridge -> the insourcing partner: the lead approved (or set Complete); the link has ended."""

    type = "link.completed"
    link_id: str
    approved: bool


@inbound(LEAD, INSOURCING)
class ItemUnshared(Payload):
    """Bridge -> the item's creator: the item did not cross (synchronization was suspended or over)."""

    type = "item.unshared"
    link_id: str
    item_id: str
    reason: str = "synchronization was suspended or over when it arrived"


# --- delivery receipts and reconciliation (SPEC section 9) ---------------------------------------


@outbound(LEAD, INSOURCING)
class MirrorApplied(Payload):
    """Partner -> bridge: this side committed the mirror of that version (or its deletion)."""

    type = "mirror.applied"
    link_id: str
    mirror_id: str
    source_version: int = Field(ge=1)


@inbound(LEAD, INSOURCING)
class ItemDelivered(Payload):
    """Bridge -> the item's creator: the other side holds that version of the item."""

    type = "item.delivered"
    link_id: str
    item_id: str
    version: int = Field(ge=1)


@inbound(LEAD, INSOURCING)
class ItemRefused(Payload):
    """Bridge -> the item's creator: this version (an edit or the deletion) did not cross; the item
    stays shared and the other side keeps the version it had."""

    type = "item.refused"
    link_id: str
    item_id: str
    version: int = Field(ge=1)
    reason: str


@outbound(LEAD, INSOURCING)
class ReconcileRequested(Payload):
    """Partner -> bridge: something of this link is unconfirmed (or the broker lost data)."""

    type = "sync.reconcile_requested"
    link_id: str
    reason: str
    # When the partner saw the broker lose data: a round started before then may have lost its question.
    lost_since: datetime | None = None


@inbound(LEAD)
class LinkUnknown(Payload):
    """Bridge -> partner: it asked about a link the bridge never heard of (its request was lost)."""

    type = "sync.link_unknown"
    link_id: str


@inbound(LEAD, INSOURCING)
class ManifestRequested(Payload):
    """Bridge -> partner: describe what you hold of this link (answered after everything before it)."""

    type = "sync.manifest_requested"
    link_id: str
    round_id: str


class ManifestItem(Message):
    item_id: str
    version: int
    hash: str
    delivery: str | None = None


class ManifestMirror(Message):
    mirror_id: str
    source_version: int
    source_hash: str


class SideStatus(Message):
    """A partner's own view of the link's workflow."""

    known: bool = True  # False: this side has never heard of the link
    status: str | None = None  # its Outsource Status or Insource Status
    rounds: int = 0  # how many Insource Completes it has seen (lead) or asked for (insourcing)
    reason: str | None = None  # its last reject or decline reason
    approved: bool | None = None  # lead, Complete: approved (True) or set Complete (False)
    ticket_id: str | None = None  # insourcing: its ticket, once accepted
    ticket_number: str | None = None


class SideHealth(Message):
    pending: int = 0
    delivered: int = 0
    refused: int = 0
    oldest_pending_at: str | None = None
    last_sent_at: str | None = None
    last_received_at: str | None = None


MANIFEST_PART = 2_000  # entries per manifest message, well under Kafka's 1 MiB


@outbound(LEAD, INSOURCING)
class Manifest(Payload):
    """Partner -> bridge: one part of what this side holds of the link's shared set."""

    type = "sync.manifest"
    link_id: str
    round_id: str
    part: int = Field(ge=0)
    parts: int = Field(ge=1)
    side: SideStatus
    health: SideHealth
    items: list[ManifestItem] = Field(default_factory=list, max_length=MANIFEST_PART)
    mirrors: list[ManifestMirror] = Field(default_factory=list, max_length=MANIFEST_PART)


@inbound(LEAD, INSOURCING)
class ResendRequested(Payload):
    """Bridge -> an item's creator: send these items again (the other side lacks them or holds an old version)."""

    type = "sync.resend_requested"
    link_id: str
    item_ids: list[str] = Field(max_length=MANIFEST_PART)


@inbound(LEAD, INSOURCING)
class Reconciled(Payload):
    """Bridge -> both partners: a reconciliation of the link ended."""

    type = "sync.reconciled"
    link_id: str
    round_id: str
    in_sync: bool
    repairs: int


# --- the hub's partner directory (SPEC section 10) -----------------------------------------------


@inbound(LEAD, INSOURCING)
class PartnerLeft(Payload):
    """Bridge -> the other party of an open link: the hub removed this link's other partner. The link
    is over: nothing crosses again, and the receiver's outsourcing (or received work) is Canceled."""

    type = "link.partner_left"
    link_id: str
    partner_id: str
    partner_name: str


class DirectoryEntry(Message):
    id: str = Field(max_length=64)
    name: str = Field(max_length=200)


@outbound(LEAD)
class DirectoryRequested(Payload):
    """Lead -> bridge: send me the insourcing partners I may outsource to (a lead asks at each start)."""

    type = "directory.requested"


@inbound(LEAD)
class DirectoryChanged(Payload):
    """Bridge -> a lead partner: every active insourcing partner of the hub, whole, each time the
    directory changes or the lead asks. `version` only grows: a lead keeps the highest it has seen.
    A lead hears of no other lead; an insourcing partner is sent no directory."""

    type = "directory.partners"
    version: int = Field(ge=0)
    partners: list[DirectoryEntry] = Field(max_length=10_000)
