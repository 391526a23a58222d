"""The hub's Kafka interface as an AsyncAPI 3.0 document (SPEC section 11), generated from the contracts
(shared/contracts, and the item fields of shared/domain/tickets/schemas.py that travel in them): the
two topics of a partner, every message type and schema_version with its JSON Schema, the key and the
signature headers, and what each of the three services sends and receives. `docs/asyncapi.yaml` is this
document committed; the bridge serves it at /asyncapi.json; `make test` fails when they differ.

    python -m services.sync_bridge.asyncapi [--check]   # writes docs/asyncapi.yaml (--check: only compares)
"""
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from shared.contracts import messages  # noqa: F401  (registers every contract)
from shared.contracts.envelope import BRIDGE, INSOURCING, LEAD, Envelope, Payload, contracts
from shared.domain.tickets.schemas import FIELD_MODELS
from shared.platform.signing import KEY_ID_HEADER, SIGNATURE_HEADER

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
SCHEMAS = "#/components/schemas/{model}"
CHANNELS = {"outbound": "partnerOutbound", "inbound": "partnerInbound"}
OPERATIONS = {  # operation id: (the service, what it does, on which topic)
    "leadSends": (LEAD, "send", "outbound"),
    "leadReceives": (LEAD, "receive", "inbound"),
    "insourcingSends": (INSOURCING, "send", "outbound"),
    "insourcingReceives": (INSOURCING, "receive", "inbound"),
    "bridgeReceives": (BRIDGE, "receive", "outbound"),
    "bridgeSends": (BRIDGE, "send", "inbound"),
}
SERVICE_NAMES = {LEAD: "a lead partner's service", INSOURCING: "an insourcing partner's service",
                 BRIDGE: "the sync bridge (the hub)"}

DESCRIPTION = """\
How a partner's service and the hub's sync bridge talk over Kafka (partner ticket outsourcing with
synchronized tickets). Each partner has two topics: it writes `psa.{partnerId}.outbound`, which only the
bridge reads, and reads `psa.{partnerId}.inbound`, which only the bridge writes. Its Kafka user (SASL/SCRAM
over TLS) may do nothing else; it consumes in group `psa.{partnerId}`.

A company joins when the hub's operator onboards it and hands it a bundle, once: a JSON object with
`partner_id`, `partner_name`, `role` (`lead` or `insourcing`), `bootstrap_servers`, `ca_pem` (the hub's CA,
PEM), `username` and `password` (its Kafka user, SASL/SCRAM-SHA-256 over TLS), `signing_key_id` and
`signing_key` (the HMAC key it shares with the bridge), `outbound_topic`, `inbound_topic`, and after a
key rotation `previous_signing_keys` ({key id: key}, still valid for a grace period).

Every record:
- has the link id as its key (UTF-8) when it belongs to a link, so that a link's messages stay in order;
  the envelope's `link_id` and the payload's `link_id` are the same id (the bridge refuses a message where
  they differ);
- has a JSON envelope (UTF-8) as its value: `type` and `schema_version` name the payload's schema below;
  `event_id` is a new UUID for every message sent (a resend too), `occurred_at` an ISO 8601 time with its
  zone, and `source` the writer's partner id (`bridge` for the bridge);
- carries two headers, their values UTF-8: `signature-key-id`, the id of the key, and `signature`, the
  HMAC-SHA256 in lowercase hex over the topic's name, a line feed (0x0A) and the value's exact bytes. The
  key is the UTF-8 bytes of the bundle's `signing_key` as it is (no decoding); the bridge signs a partner's
  inbound topic with the same key. A reader checks the signature before it parses anything; one that fails
  (or names a key it does not hold) is parked, never applied.

A partner's consumer group is `psa.{partnerId}`; a new group starts at the earliest offset. Ids the
partner makes (`item_id`, its ticket id) are UUIDs; its ticket number is whatever its users know the ticket
by (this implementation: `T` + date + sequence, e.g. `T20261207.0001`).

Readers are tolerant: a field a reader does not know, in the envelope or a payload, is ignored. A field is
only ever added as optional; any other change is a new `schema_version`, and a producer sends a new
version only from the release after every reader learnt it. A reader accepts the versions of its own and of
the previous release. A message a reader cannot use (unknown type or version, invalid, unsigned) is parked
with its reason on the reader's dead-letter list, and the rest keeps flowing.

The conversation of a link (`L` the lead, `I` the insourcing partner, `B` the bridge):
- L `outsource.requested` -> B -> I `link.requested`; I `insource.accepted` (or `insource.declined`) ->
  B -> L `link.accepted` (`link.declined`). L `outsource.canceled` -> I `link.canceled`.
- Either side `item.created` / `item.updated` / `item.deleted` (+ `attachment.chunk`) -> B -> the other
  side `mirror.upsert` / `mirror.delete` (+ `mirror.chunk`); it answers `mirror.applied` (or
  `mirror.refused`) -> B -> the creator `item.delivered` (`item.refused`, `item.unshared`).
- I `insource.completion_requested` -> L `link.waiting_approval` (synchronization suspended); L
  `outsource.rejected` -> I `link.rejected` (it resumes) or L `outsource.completed` -> I `link.completed`
  (the link ends).
- Reconciliation: a side `sync.reconcile_requested`; B asks both `sync.manifest_requested`, each answers
  `sync.manifest` parts; B sends `sync.resend_requested` to a creator when the other side lacks an item,
  then `sync.reconciled` to both.
- The hub: a lead `directory.requested` -> `directory.partners`; `link.partner_left` when the hub
  removed the other partner of an open link.

Delivery is at least once: a reader applies each `event_id` once and answers what it applied
(`mirror.applied`, `item.delivered`), so a sender knows what the other side holds."""


def version() -> str:
    """This release's version: pyproject.toml where the source tree is, else the installed package's."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.exists():
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    return metadata.version("partner-ticket-sync")


def message_id(model: type[Payload]) -> str:
    return f"{model.type}.v{model.schema_version}"


def _summary(model: type[Payload]) -> str:
    return " ".join((model.__doc__ or "").split()) or model.type


def _envelope(model: type[Payload]) -> dict[str, Any]:
    """The record's value: the envelope, its type and version fixed, its payload this model's schema."""
    schema = Envelope.model_json_schema()
    properties = schema["properties"]
    properties["type"] = {"const": model.type, "type": "string"}
    properties["schema_version"] = {"const": model.schema_version, "type": "integer"}
    properties["payload"] = {"$ref": SCHEMAS.format(model=model.__name__)}
    properties["source"]["description"] = "the partner id of the producer, or `bridge`"
    properties["link_id"]["description"] = "the link the message belongs to (the record's key too)"
    properties["event_id"]["description"] = "unique per event: a reader applies each event_id once"
    schema.pop("title", None)
    return schema


def _message(model: type[Payload]) -> dict[str, Any]:
    routes = (f"written by {', '.join(SERVICE_NAMES[s] for s in model.senders)}; "
              f"read by {', '.join(SERVICE_NAMES[r] for r in model.receivers)}")
    return {
        "name": model.type,
        "title": f"{model.type} (schema_version {model.schema_version})",
        "summary": _summary(model),
        "description": routes + ("" if model.sending else
                                 ". Read but not sent yet: producers switch to it in the next release.")
                              + (". Informs only: sent from the release that adds it; a reader of an older release"
                                 " parks it as unknown and loses only what it tells." if model.informs_only else ""),
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/SignatureHeaders"},
        "payload": _envelope(model),
        "bindings": {"kafka": {"key": {"$ref": "#/components/schemas/LinkKey"}, "bindingVersion": "0.5.0"}},
        **({"x-informs-only": True} if model.informs_only else {}),
    }


def _carried(moving: list[type[Payload]], service: str, action: str) -> list[type[Payload]]:
    """What `service` sends or receives of the messages on one topic: it reads every version it knows,
    and sends only those marked as sent in this release."""
    if action == "send":
        return [m for m in moving if service in m.senders and m.sending]
    return [m for m in moving if service in m.receivers]


@cache
def document() -> dict[str, Any]:
    models = contracts()
    kinds = list(FIELD_MODELS.values())
    _, schemas = models_json_schema([(m, "validation") for m in [*models, *kinds]], ref_template=SCHEMAS)
    components = dict(sorted(schemas.get("$defs", {}).items()))
    for kind, model in FIELD_MODELS.items():
        # The API refuses a field it does not know; a message's reader ignores it (see the description).
        components[model.__name__].pop("additionalProperties", None)
        components[model.__name__]["description"] = f"The fields of an item of kind `{kind.value}`."
    components["SignatureHeaders"] = {
        "type": "object",
        "required": [KEY_ID_HEADER, SIGNATURE_HEADER],
        "properties": {
            KEY_ID_HEADER: {"type": "string", "description": "the id of the signing key, e.g. `k1`"},
            SIGNATURE_HEADER: {"type": "string", "pattern": "^[0-9a-f]{64}$",
                               "description": "hex HMAC-SHA256 of topic + \"\\n\" + the value's bytes"},
        },
    }
    components["LinkKey"] = {"type": "string", "description": "the link id, UTF-8; absent on messages of no link"}
    on = {"outbound": [m for m in models if BRIDGE in m.receivers],
          "inbound": [m for m in models if BRIDGE in m.senders]}
    channels = {
        CHANNELS[direction]: {
            "address": f"psa.{{partnerId}}.{direction}",
            "title": f"A partner's {direction} topic",
            "description": ("The partner writes it; only the bridge reads it." if direction == "outbound"
                            else "Only the bridge writes it; the partner reads it in group `psa.{partnerId}`."),
            "parameters": {"partnerId": {"$ref": "#/components/parameters/partnerId"}},
            "messages": {message_id(m): {"$ref": f"#/components/messages/{message_id(m)}"} for m in on[direction]},
        }
        for direction in ("outbound", "inbound")
    }
    operations = {}
    for op_id, (service, action, direction) in OPERATIONS.items():
        chosen = _carried(on[direction], service, action)
        operations[op_id] = {
            "action": action,
            "title": f"{SERVICE_NAMES[service].capitalize()} {action}s on the {direction} topic",
            "channel": {"$ref": f"#/channels/{CHANNELS[direction]}"},
            "messages": [{"$ref": f"#/channels/{CHANNELS[direction]}/messages/{message_id(m)}"} for m in chosen],
            "tags": [{"name": service}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Partner ticket sync: the Kafka interface", "version": version(),
                 "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {"hub": {
            "host": "{bootstrap}",
            "protocol": "kafka-secure",
            "description": "The hub's Kafka: TLS with the hub's CA, a SASL/SCRAM-SHA-256 user per partner.",
            "variables": {"bootstrap": {"description": "`bootstrap_servers` of the partner's onboarding bundle"}},
            "security": [{"$ref": "#/components/securitySchemes/partnerUser"}],
        }},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {message_id(m): _message(m) for m in models},
            "schemas": components,
            "securitySchemes": {"partnerUser": {
                "type": "scramSha256",
                "description": "`username` and `password` of the partner's onboarding bundle; ACLs let the user "
                               "write its outbound topic, read its inbound one, and consume in group psa.{partnerId}",
            }},
            "parameters": {"partnerId": {
                "description": "the partner's id on the hub (lowercase letters, digits and hyphens, 2-64)"}},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Text of several lines as a YAML block, so that the committed document reads as prose."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def main(argv: list[str]) -> int:
    text = to_yaml(document())
    if "--check" in argv:
        if not COMMITTED.exists() or COMMITTED.read_text() != text:
            print(f"{COMMITTED.relative_to(ROOT)} differs from what the contracts generate: "
                  "run `python -m services.sync_bridge.asyncapi` and commit it", file=sys.stderr)
            return 1
        return 0
    COMMITTED.write_text(text)
    print(f"wrote {COMMITTED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
