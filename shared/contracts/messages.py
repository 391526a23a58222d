"""The messages that cross Kafka. Partners publish on their outbound topic; the bridge publishes
on each partner's inbound topic. Every message of a link carries the link id as its key."""
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.contracts.envelope import INSOURCING, LEAD, Message, Payload, inbound, outbound
from shared.contracts.limits import MAX_AMOUNT

# Raw bytes per attachment chunk: base64 makes it ~4/3 larger, well under Kafka's 1 MiB.
CHUNK_BYTES = 512 * 1024

# What a note, time entry, charge or attachment holds: checked by each reader as that kind's API checks it.
FIELDS = ("the item's fields, as its kind's schema says: NoteFields, TimeEntryFields, ChargeFields or"
          " AttachmentFields (an attachment's bytes follow in `chunk_count` chunk messages)")
ITEM_ID = "the item's id on its creator's side, a UUID; the bridge knows the item by (link, item_id)"
VERSION = ("the item's version on its creator's side: 1 when created, one more with each edit, and one more"
           " for its deletion; the receipt (item.delivered, item.refused) names the version it confirms")
CHUNK_COUNT = f"attachments: how many chunk messages carry its bytes ({CHUNK_BYTES} bytes each, the last fewer)"
CHUNK_DATA = (f"base64 (RFC 4648, padded) of bytes [index * {CHUNK_BYTES}, (index + 1) * {CHUNK_BYTES}) of the"
              " attachment; the whole must match the `size` and `sha256` of its AttachmentFields")
MIRROR_ID = ("the bridge's id of this mirror, a UUID, the same for the item's whole life: the receiver stores"
             " the mirror under it and names it in mirror.applied, mirror.refused and sync.manifest")
HASH = ("SHA-256, lowercase hex, of the UTF-8 bytes of the JSON text {\"kind\": kind, \"fields\": fields} with"
        " keys sorted, no whitespace (separators ',' and ':') and non-ASCII characters escaped as \\uXXXX"
        " (Python's json.dumps(sort_keys=True, separators=(',', ':'))), `fields` as the item's last message sent them")



class Terms(Message):
    # Finite numbers a price can hold: an hourly rate becomes the unit price of the partner's labor charge.
    model_config = ConfigDict(allow_inf_nan=False)
    rate_type: Literal["hourly", "flat"]
    rate: float = Field(ge=0, lt=MAX_AMOUNT)
    authorized_hours: float | None = Field(None, gt=0, lt=MAX_AMOUNT)
    authorized_charge: float | None = Field(None, ge=0, lt=MAX_AMOUNT)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the rate and the"
                                 " charges (the lead's LEAD_CURRENCY); absent from a lead of release 1.0.0: not stated")


AMOUNT = Field(pattern=r"^[0-9]{1,10}\.[0-9]{2}$", description="a decimal with two places, as a string")


class TermsV2(Message):
    """The terms of message version 2: every amount a decimal string with two places, never a float."""

    rate_type: Literal["hourly", "flat"]
    rate: str = AMOUNT
    authorized_hours: str | None = Field(None, pattern=r"^[0-9]{1,10}\.[0-9]{2}$")
    authorized_charge: str | None = Field(None, pattern=r"^[0-9]{1,10}\.[0-9]{2}$")
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217 (absent: not stated)")


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


@outbound(LEAD, sending=False)
class OutsourceRequestedV2(OutsourceRequested):
    """Lead -> bridge: as version 1, the terms' amounts exact (decimal strings with two places, SPEC section
    12). Read from this release on; leads send it from the next one (docs/architecture.md, "Changing a
    message")."""

    schema_version = 2
    terms: TermsV2 | None


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
    item_id: str = Field(description=ITEM_ID)
    kind: Literal["note", "time_entry", "charge", "attachment"]
    fields: dict[str, Any] = Field(description=FIELDS)
    chunk_count: int = Field(0, description=CHUNK_COUNT)
    version: int = Field(1, ge=1, description=VERSION)


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
    item_id: str = Field(description=ITEM_ID)
    kind: Literal["note", "time_entry", "charge", "attachment"]
    version: int = Field(1, ge=1, description=VERSION)


@outbound(LEAD, INSOURCING)
class AttachmentChunk(Payload):
    """Partner -> bridge: one piece of an attachment's bytes (`index` of `count`), sent after the item's
    item.created (or its resend), in order, with the same key."""

    type = "attachment.chunk"
    link_id: str
    item_id: str = Field(description=ITEM_ID)
    index: int = Field(ge=0)
    count: int = Field(ge=1, description="the item message's chunk_count")
    data: str = Field(description=CHUNK_DATA)


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


@inbound(INSOURCING, sending=False)
class WorkRequestedV2(WorkRequested):
    """Bridge -> the insourcing partner: as version 1, the terms' amounts exact (decimal strings with two
    places). Read from this release on; the bridge sends it from the next one."""

    schema_version = 2
    terms: TermsV2 | None


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
    """Bridge -> partner: create or update the mirror `mirror_id` of an item of the other ticket. Answer
    mirror.applied once it is stored (an attachment: once all its chunks arrived and its sha256 matches),
    or mirror.refused when this side does not store it (synchronization suspended or over here, or fields
    this side's API would refuse). A source_version older than the one held is applied as a no-op."""

    type = "mirror.upsert"
    link_id: str
    mirror_id: str = Field(description=MIRROR_ID)
    kind: Literal["note", "time_entry", "charge", "attachment"] = Field(
        description="a lead's time entry arrives at the insourcing partner as a note describing it")
    fields: dict[str, Any] = Field(description=FIELDS)
    internal: bool = Field(False, description="keep the mirror internal: the insourcing partner's notes reach the"
                                              " lead as internal notes, never shown to the lead's customer")
    chunk_count: int = Field(0, description=CHUNK_COUNT)
    # What the mirror mirrors: the original's version and content hash (reconciliation compares them).
    source_version: int = Field(1, ge=1, description="the original's version this mirror holds")
    source_hash: str = Field("", description="the original's content hash (sync.manifest's `hash`), kept with the"
                                             " mirror and answered in sync.manifest")


@inbound(LEAD, INSOURCING)
class MirrorChunk(Payload):
    """Bridge -> partner: one piece of a mirrored attachment's bytes (`index` of `count`), after its
    mirror.upsert, in order."""

    type = "mirror.chunk"
    link_id: str
    mirror_id: str = Field(description=MIRROR_ID)
    index: int = Field(ge=0)
    count: int = Field(ge=1, description="the mirror.upsert's chunk_count")
    data: str = Field(description=CHUNK_DATA)


@inbound(LEAD, INSOURCING)
class MirrorDelete(Payload):
    """Bridge -> partner: the original of this mirror was deleted; delete the mirror."""

    type = "mirror.delete"
    link_id: str
    mirror_id: str
    source_version: int = Field(1, ge=1)


# --- completion (SPEC section 3, last four rows) -------------------------------------------------

STATEMENT = ("the statement this Insource Complete asks approval of: version, currency, lines, totals, warnings,"
             " every amount a decimal string; its SHA-256 is that of its canonical JSON (sorted keys, no"
             " whitespace, UTF-8)")
SETTLED_VERSION = "the version of the statement the link ended with (absent from a release-1.0.0 lead)"
SETTLED_SHA256 = "the SHA-256 of that statement's canonical JSON: the one the lead approved"
SETTLED_BODY = ("set when the lead's Complete at any time froze the statement itself, from what had crossed by"
                " then: the statement, as in insource.completion_requested")
SHA256_HEX = r"^[0-9a-f]{64}$"


@outbound(INSOURCING)
class InsourceCompletionRequested(Payload):
    """Insourcing -> bridge: "Notify Lead Partner > Insource Complete"."""

    type = "insource.completion_requested"
    link_id: str
    # SPEC section 12: the statement frozen with this Insource Complete (absent from a release-1.0.0 partner).
    statement: dict[str, Any] | None = Field(None, description=STATEMENT)


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
    # SPEC section 12: which statement the link ended with.
    statement_version: int | None = Field(None, ge=1, description=SETTLED_VERSION)
    statement_sha256: str | None = Field(None, pattern=SHA256_HEX, description=SETTLED_SHA256)
    statement: dict[str, Any] | None = Field(None, description=SETTLED_BODY)


@outbound(LEAD, INSOURCING)
class MirrorRefused(Payload):
    """Partner -> bridge: this side did not store the mirror: it arrived after this side suspended or
    ended synchronization, or its fields fail the checks this side's API makes."""

    type = "mirror.refused"
    link_id: str
    mirror_id: str = Field(description=MIRROR_ID)
    reason: str = "the partner had already suspended or ended synchronization when it arrived"
    # Set when only an edit was refused: this version of the original; the mirror keeps the one before.
    source_version: int | None = Field(None, ge=1, description=(
        "set when only an edit (or the deletion) was refused: the original's version refused, and the mirror"
        " keeps the one before (the creator hears item.refused); null when the mirror was not stored at all"
        " (the creator hears item.unshared)"))


@inbound(LEAD)
class WorkWaitingApproval(Payload):
    """Bridge -> the lead: the insourcing partner asked for approval; synchronization is suspended."""

    type = "link.waiting_approval"
    link_id: str
    round: int = Field(1, ge=1)  # the how-manieth Insource Complete of the link (a resent one applies once)
    # SPEC section 12: the statement frozen with this Insource Complete (absent from a release-1.0.0 partner).
    statement: dict[str, Any] | None = Field(None, description=STATEMENT)


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
    # SPEC section 12: which statement the link ended with.
    statement_version: int | None = Field(None, ge=1, description=SETTLED_VERSION)
    statement_sha256: str | None = Field(None, pattern=SHA256_HEX, description=SETTLED_SHA256)
    statement: dict[str, Any] | None = Field(None, description=SETTLED_BODY)


# --- billing (SPEC section 12) --------------------------------------------------------------------

INVOICE_NUMBER = "the insourcing partner's own invoice number, as it wrote it (1 to 64 characters)"


class _Invoice(Payload):
    """What both messages of an invoice carry (a base of the two contracts, not one itself)."""

    link_id: str
    statement_version: int = Field(ge=1, description="the version of the statement invoiced")
    statement_sha256: str = Field(pattern=SHA256_HEX, description="the SHA-256 of the statement invoiced")
    invoice_number: str = Field(min_length=1, max_length=64, description=INVOICE_NUMBER)
    statement: dict[str, Any] | None = Field(None, description=(
        "the statement invoiced, for a lead that never received it (its copy is kept as it came and hashed"
        " again)"))


@outbound(INSOURCING)
class InsourceInvoiced(_Invoice):
    """Insourcing -> bridge: the partner invoiced the lead for the statement the link ended with."""

    type = "insource.invoiced"
    informs_only = True  # a lead of release 1.0.0 parks it and shows no invoice; the rest flows


@inbound(LEAD)
class WorkInvoiced(_Invoice):
    """Bridge -> the lead: the partner invoiced the statement the link ended with."""

    type = "link.invoiced"
    informs_only = True  # a lead of release 1.0.0 parks it and shows no invoice; the rest flows


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
    may_wait = True
    link_id: str
    mirror_id: str
    source_version: int = Field(ge=1)


@inbound(LEAD, INSOURCING)
class ItemDelivered(Payload):
    """Bridge -> the item's creator: the other side holds that version of the item."""

    type = "item.delivered"
    may_wait = True
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
    """Partner -> bridge: something of this link is unconfirmed (or the broker lost data): a partner sends it
    when an item it sent or a change of the link has waited longer than a grace period for its receipt, or
    when its inbound topic's offsets went back or skipped ahead. The bridge answers with a reconciliation
    round (sync.manifest_requested), or, to a lead, sync.link_unknown."""

    type = "sync.reconcile_requested"
    link_id: str
    reason: str = Field(description="in words, for the operator")
    # When the partner saw the broker lose data: a round started before then may have lost its question.
    lost_since: datetime | None = Field(None, description="when this side saw the broker lose data: a round that"
                                                          " started before then may have lost its question")


@inbound(LEAD)
class LinkUnknown(Payload):
    """Bridge -> a lead: it asked about a link the bridge never heard of (its outsource.requested was lost):
    send it again."""

    type = "sync.link_unknown"
    link_id: str


@inbound(LEAD, INSOURCING)
class ManifestRequested(Payload):
    """Bridge -> partner: describe what you hold of this link (answered after everything before it)."""

    type = "sync.manifest_requested"
    link_id: str
    round_id: str
    since: int | None = Field(None, description=(
        "describe only what changed after this point of your own (the `as_of` of an answer the bridge"
        " keeps); null: describe everything. From the release after 1.0.0 on; a partner of 1.0.0"
        " ignores it and describes everything"))


class ManifestItem(Message):
    """An item this side created and shares on the link (not internal, not deleted)."""

    item_id: str = Field(description=ITEM_ID)
    version: int = Field(description="its latest version")
    hash: str = Field(description=HASH)
    delivery: str | None = Field(None, description="`pending` (sent, not confirmed), `delivered` or `refused`")


class ManifestMirror(Message):
    """A mirror this side holds of the other side's item."""

    mirror_id: str = Field(description=MIRROR_ID)
    source_version: int = Field(description="the mirror.upsert's source_version it holds")
    source_hash: str = Field(description="the mirror.upsert's source_hash it holds")


class SideStatus(Message):
    """A partner's own view of the link's workflow."""

    known: bool = Field(True, description="false: this side has never heard of the link")
    status: str | None = Field(None, description="the lead's Outsource Status (Assigned, In Progress, Waiting"
                               " Approval, Declined, Canceled, Complete) or the insourcing partner's Insource Status"
                               " (Pending, In Progress, Waiting Approval, Declined, Canceled, Complete)")
    rounds: int = Field(0, description="how many Insource Completes it has seen (lead) or asked for (insourcing)")
    reason: str | None = Field(None, description="its last reject or decline reason")
    approved: bool | None = Field(None, description="lead, Complete: approved (true) or set Complete (false)")
    ticket_id: str | None = Field(None, description="insourcing: its ticket's id, once accepted")
    ticket_number: str | None = Field(None, description="insourcing: its ticket's number, once accepted")
    keeps_statements: bool = Field(False, description="it keeps statements (from the release after 1.0.0 on)")
    statement_version: int | None = Field(None, description=(
        "the version of the statement it holds: the one waiting for approval or the one the link ended with"
        " (SPEC section 12); null when it holds none"))
    statement_sha256: str | None = Field(None, description="the SHA-256 of that statement")
    statement: dict[str, Any] | None = Field(None, description=(
        "lead, Complete: the statement its Complete froze itself (from what had crossed), for a completion"
        " the bridge never read; null otherwise"))


class SideHealth(Message):
    """This side's counts of its own shared items on the link, for the operator's view."""

    pending: int = Field(0, description="items whose latest version is not confirmed yet")
    delivered: int = 0
    refused: int = 0
    oldest_pending_at: str | None = Field(None, description="ISO 8601, UTC")
    last_sent_at: str | None = Field(None, description="ISO 8601, UTC")
    last_received_at: str | None = Field(None, description="ISO 8601, UTC")


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
    # From the release after 1.0.0 on (a bridge of 1.0.0 ignores them): an answer that describes only
    # what changed, and what lets the bridge check the whole it keeps.
    as_of: int | None = Field(None, description=(
        "the point of this side's own changes the answer describes the link as of; the bridge asks"
        " `since` it next time. Null: a partner of 1.0.0, which always describes everything"))
    since: int | None = Field(None, description=(
        "the request's `since` this answer honoured: `items` and `mirrors` are only those changed after it,"
        " and `removed` the ids that left the set. Null: the answer describes everything"))
    removed: list[str] = Field(default_factory=list, max_length=MANIFEST_PART, description=(
        "ids of items and mirrors that left the set after `since` (deleted, unshared, made internal)"))
    digest: str | None = Field(None, description=(
        "the whole set as `count:sum`: the number of items and mirrors, and the sum of the first 15 hex"
        " digits of the MD5 of each one's `i:<item_id>:<version>:<delivery>` or"
        " `m:<mirror_id>:<source_version>:<source_hash>`, as integers. The bridge checks what it keeps"
        " against it, and asks for everything when they differ"))


@inbound(LEAD, INSOURCING)
class ResendRequested(Payload):
    """Bridge -> an item's creator: send these items again (the other side lacks them or holds an old
    version): each as an item.created of its latest version with a new event_id (an attachment with all
    its chunks), or its item.deleted when it was deleted; ids this side never shared are skipped."""

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
