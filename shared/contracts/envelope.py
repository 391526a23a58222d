"""Versioned message contracts. Every Kafka message is an Envelope whose payload is validated
against the model registered for its (type, schema_version); anything else is refused loudly.

Readers are tolerant (SPEC section 11): a field they do not know, in the envelope or anywhere in a
payload, is ignored, so a partner one release ahead may add an optional field without a new
`schema_version`. The signature is checked over the exact bytes before any of this runs, so nothing
unauthenticated gets in by being ignored. Any other change is a new `schema_version`
(docs/architecture.md, "Changing a message")."""
import functools
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.platform.db import utcnow

# The parties of the Kafka interface: a partner writes its outbound topic, the bridge its inbound one.
LEAD, INSOURCING, BRIDGE = "lead", "insourcing", "bridge"


class ContractError(ValueError):
    """A message this consumer does not understand: it is parked, never applied."""


class Message(BaseModel):
    """A part of a message: fields a reader does not know are ignored (tolerant reader)."""

    model_config = ConfigDict(extra="ignore")


class Payload(Message):
    type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    # Where it travels (set by @outbound or @inbound): who writes it, and who reads it.
    senders: ClassVar[tuple[str, ...]] = ()
    receivers: ClassVar[tuple[str, ...]] = ()
    # False while a new version is being introduced: readers accept it, producers do not send it yet.
    sending: ClassVar[bool] = True
    # A new type that only tells of a feature (SPEC section 11): a reader of the last release, which does
    # not know it, loses that feature alone (it parks the message with its reason; the rest flows), so
    # it is sent from the release that adds it. A type a reader must act on follows the two steps.
    informs_only: ClassVar[bool] = False
    # Nobody waits for it (a receipt): its relay may hold it a moment (`waits_a_moment`).
    may_wait: ClassVar[bool] = False


class Envelope(Message):
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    schema_version: int
    occurred_at: datetime = Field(default_factory=utcnow)
    # The partner (or "bridge") that produced the event; the bridge checks it against the link.
    source: str
    link_id: str | None = None
    payload: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


_REGISTRY: dict[tuple[str, int], type[Payload]] = {}


def contract(cls: type[Payload]) -> type[Payload]:
    """Class decorator: register a payload model under its type and schema version."""
    key = (cls.type, cls.schema_version)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise RuntimeError(f"contract {key} registered twice")
    _REGISTRY[key] = cls
    return cls


def _routed(senders: tuple[str, ...], receivers: tuple[str, ...], sending: bool) -> Callable[[type[Payload]], type[Payload]]:
    def register(cls: type[Payload]) -> type[Payload]:
        cls.senders, cls.receivers, cls.sending = senders, receivers, sending
        return contract(cls)

    return register


def outbound(*senders: str, sending: bool = True) -> Callable[[type[Payload]], type[Payload]]:
    """A message the partners named write on their own outbound topic, for the bridge."""
    return _routed(senders, (BRIDGE,), sending)


def inbound(*receivers: str, sending: bool = True) -> Callable[[type[Payload]], type[Payload]]:
    """A message the bridge writes on the inbound topic of the partners named."""
    return _routed((BRIDGE,), receivers, sending)


@functools.cache
def waits_a_moment(type_: str) -> bool:
    """Whether messages of this type may wait a moment before they are sent (`Payload.may_wait`)."""
    return any(cls.may_wait for (name, _), cls in _REGISTRY.items() if name == type_)


def contracts() -> list[type[Payload]]:
    """Every message of the Kafka interface (test-only contracts have no route), by type and version."""
    return sorted((c for c in _REGISTRY.values() if c.senders), key=lambda c: (c.type, c.schema_version))


def envelope(payload: Payload, *, source: str, link_id: str | None) -> Envelope:
    if not payload.sending:
        raise RuntimeError(f"{payload.type} v{payload.schema_version} is read but not sent yet in this release")
    return Envelope(
        type=payload.type,
        schema_version=payload.schema_version,
        source=source,
        link_id=link_id,
        payload=payload.model_dump(mode="json"),
    )


def parse(raw: bytes | None) -> tuple[Envelope, Payload]:
    if raw is None:
        raise ContractError("empty message")
    try:
        env = Envelope.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ContractError(f"not an envelope: {exc}") from exc
    model = _REGISTRY.get((env.type, env.schema_version))
    if model is None:
        raise ContractError(f"unknown message type {env.type!r} version {env.schema_version}")
    try:
        return env, model.model_validate(env.payload)
    except ValidationError as exc:
        raise ContractError(f"invalid {env.type} v{env.schema_version} payload: {exc}") from exc
