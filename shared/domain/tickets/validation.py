"""The one check of an item's fields that every door applies (SPEC section 5 limits): the API when a
client writes, the bridge before it forwards, and each partner before it stores a mirror. A signed
message is trusted to come from its sender, not to be well formed: a bug in one service must not
put into another's database what that service's own API would refuse."""
from typing import Any

from pydantic import ValidationError

from shared.contracts.limits import MAX_ATTACHMENT_BYTES
from shared.contracts.messages import CHUNK_BYTES
from shared.domain.tickets.rules import ItemKind
from shared.domain.tickets.schemas import FIELD_MODELS, stored_fields
from shared.platform.errors import size_in_words

MAX_CHUNKS = MAX_ATTACHMENT_BYTES // CHUNK_BYTES + 1
MAX_REASON = 1_000  # characters of a refusal's reason: it travels in a receipt and is shown to the creator


class InvalidItem(ValueError):
    """Fields the API would have refused; `reason` names each field and what is wrong with it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def describe(exc: ValidationError) -> str:
    """The fields and what is wrong with each, without the input (it may be megabytes long)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'fields'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


def valid_fields(kind: str, fields: Any) -> dict[str, Any]:
    """The fields of an item of `kind`, as they are stored; InvalidItem when the API would refuse them.
    A field this release does not know is left out, not refused (a tolerant reader, SPEC section 11):
    a partner a release ahead may send one more optional field."""
    try:
        model = FIELD_MODELS[ItemKind(kind)]
    except ValueError:
        raise InvalidItem(f"there is no item kind {kind!r}"[:MAX_REASON]) from None
    if isinstance(fields, dict):
        fields = {name: value for name, value in fields.items() if name in model.model_fields}
    try:
        return stored_fields(model.model_validate(fields), exclude=set())
    except ValidationError as exc:
        raise InvalidItem(f"invalid {ItemKind(kind).value.replace('_', ' ')}: {describe(exc)}"[:MAX_REASON]) from exc


def valid_item(kind: str, fields: Any, chunk_count: int) -> dict[str, Any]:
    """valid_fields, and for an attachment no more chunks of bytes than the largest attachment makes."""
    checked = valid_fields(kind, fields)
    if kind == ItemKind.ATTACHMENT and chunk_count > MAX_CHUNKS:
        raise InvalidItem(f"an attachment of {chunk_count} chunks is over the limit of {MAX_CHUNKS} chunks of"
                          f" {size_in_words(CHUNK_BYTES)} (attachments up to {size_in_words(MAX_ATTACHMENT_BYTES)})")
    return checked
