"""Versioned message contracts. Every Kafka message is an Envelope whose payload is validated
against the model registered for its (type, schema_version); anything else is refused loudly."""
import json
import uuid
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.platform.db import utcnow


class ContractError(ValueError):
    """A message this consumer does not understand: it is parked, never applied."""


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


def envelope(payload: Payload, *, source: str, link_id: str | None) -> Envelope:
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
