"""HTTP request and response bodies of the ticket core, with the limits of SPEC section 5."""
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from shared.contracts.limits import (
    AMOUNT_DECIMALS,
    AMOUNT_DIGITS,
    MAX_ATTACHMENT_BYTES,
    MAX_HOURS,
    MAX_TEXT,
    MAX_TITLE,
)
from shared.domain.money import TermsOut
from shared.domain.tickets.rules import ItemKind, TicketStatus
from shared.platform.paging import page_of


def _storable(text: str) -> str:
    """PostgreSQL stores neither a NUL character nor half a surrogate pair: refused here, on the field,
    instead of by the database after the checks have passed."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("must not contain an unpaired surrogate") from None
    return text


def _one_line(text: str) -> str:
    """No control character, C0 (a line break, U+0000-U+001F), DEL or C1 (U+0080-U+009F: what bytes
    ED A0 80 in a name decoded to): each would reach a download's headers or a partner's screen."""
    for c in text:
        if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F:
            raise ValueError(f"must not contain control characters such as a line break (found U+{ord(c):04X})")
    return text


def _media_type(text: str) -> str:
    kind, slash, _ = text.partition("/")
    if not (kind and slash and text.isascii() and text.isprintable()):
        raise ValueError("must be a media type in printable ASCII, such as text/plain")
    return text


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE),
                  AfterValidator(_storable)]
OptionalTitle = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE), AfterValidator(_storable)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_storable)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT), AfterValidator(_storable)]
Filename = Annotated[Title, AfterValidator(_one_line)]
ContentType = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE),
                        AfterValidator(_media_type)]
# Amounts are exact decimals inside, plain JSON numbers outside (finite: a Decimal refuses NaN and infinity).
Number = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
Hours = Annotated[Decimal, Field(gt=0, le=MAX_HOURS, max_digits=6, decimal_places=2)]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_DECIMALS)]
Price = Annotated[Decimal, Field(ge=0, max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_DECIMALS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketCreate(Strict):
    title: Title
    description: Text = ""


class TicketUpdate(Strict):
    title: Title | None = None
    description: Text | None = None
    status: TicketStatus | None = None


class PartnerLinkOut(BaseModel):
    status: str
    link_id: str
    partner_id: str
    partner_name: str = Field(description="the other partner's name, as the hub's directory gave it")
    partner_ticket_number: str | None
    terms: TermsOut | None = Field(None, description="what the lead pays: rate, authorized hours, currency")


class TicketOut(BaseModel):
    id: str
    number: str
    title: str
    description: str
    status: TicketStatus
    created_at: datetime
    updated_at: datetime


# --- items: what a client sends ----------------------------------------------------------------


# Each kind's fields as they are stored and as they travel between the partners; what a client
# sends to create one adds `internal`.


class NoteFields(Strict):
    title: OptionalTitle = ""
    body: Body


class NoteCreate(NoteFields):
    internal: bool = False


class NoteUpdate(Strict):
    title: OptionalTitle | None = None
    body: Body | None = None


class TimeEntryFields(Strict):
    resource: Title
    date_worked: date
    hours: Hours
    summary: Body
    billable: bool = True


class TimeEntryCreate(TimeEntryFields):
    internal: bool = False


class TimeEntryUpdate(Strict):
    resource: Title | None = None
    date_worked: date | None = None
    hours: Hours | None = None
    summary: Body | None = None
    billable: bool | None = None


class ChargeFields(Strict):
    name: Title
    description: Text = ""
    quantity: Quantity
    unit_price: Price
    billable: bool = True


class ChargeCreate(ChargeFields):
    internal: bool = False


class ChargeUpdate(Strict):
    name: Title | None = None
    description: Text | None = None
    quantity: Quantity | None = None
    unit_price: Price | None = None
    billable: bool | None = None


class AttachmentFields(Strict):
    """An attachment's description (its bytes travel in chunks); the API makes it from the upload."""

    filename: Filename
    content_type: ContentType
    size: int = Field(ge=0, le=MAX_ATTACHMENT_BYTES)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class AttachmentUpdate(Strict):
    filename: Filename | None = None


# --- items: what a client reads ------------------------------------------------------------------


class DeliveryOut(BaseModel):
    """On the creator's side of a shared item: has the other partner got its latest version?"""

    status: Literal["pending", "delivered", "refused"]
    at: datetime
    reason: str | None = Field(None, description="why the bridge or the other partner refused it")


class ItemOut(BaseModel):
    id: str
    ticket_id: str
    origin: str
    internal: bool
    shared: bool
    editable: bool
    delivery: DeliveryOut | None = Field(
        description="the delivery receipt of a shared item on its creator's side; null for items never sent"
    )
    created_at: datetime
    updated_at: datetime


class NoteOut(ItemOut):
    title: str
    body: str


class TimeEntryOut(ItemOut):
    resource: str
    date_worked: date
    hours: Number
    summary: str
    billable: bool


class ChargeOut(ItemOut):
    name: str
    description: str
    quantity: Number
    unit_price: Number
    billable: bool


class AttachmentOut(ItemOut):
    filename: str
    content_type: str
    size: int
    sha256: str


# --- paging (SPEC section 5): oldest first, a page at a time ---------------------------------------

# A cursor of items is opaque to clients: it names the last item of the page before (its creation order).
CURSOR_PATTERN = r"^[0-9]{1,18}$"


def page_model(out_model: type[ItemOut]) -> type[BaseModel]:
    """`{items, next_cursor}` of one kind, as every list of the product pages."""
    return page_of(out_model, f"{out_model.__name__.removesuffix('Out')}Page")


FIELD_MODELS: dict[ItemKind, type[Strict]] = {
    ItemKind.NOTE: NoteFields,
    ItemKind.TIME_ENTRY: TimeEntryFields,
    ItemKind.CHARGE: ChargeFields,
    ItemKind.ATTACHMENT: AttachmentFields,
}
CREATE_MODELS: dict[ItemKind, type[Strict]] = {
    ItemKind.NOTE: NoteCreate,
    ItemKind.TIME_ENTRY: TimeEntryCreate,
    ItemKind.CHARGE: ChargeCreate,
}
UPDATE_MODELS: dict[ItemKind, type[Strict]] = {
    ItemKind.NOTE: NoteUpdate,
    ItemKind.TIME_ENTRY: TimeEntryUpdate,
    ItemKind.CHARGE: ChargeUpdate,
    ItemKind.ATTACHMENT: AttachmentUpdate,
}
OUT_MODELS: dict[ItemKind, type[ItemOut]] = {
    ItemKind.NOTE: NoteOut,
    ItemKind.TIME_ENTRY: TimeEntryOut,
    ItemKind.CHARGE: ChargeOut,
    ItemKind.ATTACHMENT: AttachmentOut,
}


def stored_fields(model: BaseModel, *, exclude: set[str] = frozenset({"internal"})) -> dict[str, Any]:
    """The kind-specific fields as they go into the JSONB column (decimals and dates as strings)."""
    return model.model_dump(mode="json", exclude=exclude, exclude_unset=False)
