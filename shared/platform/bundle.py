"""A partner's onboarding bundle (SPEC section 10): everything about Kafka and its signing key a
partner service needs, in one JSON file the hub hands it once (`PARTNER_BUNDLE_FILE`):

    {"partner_id", "partner_name", "role", "bootstrap_servers", "ca_pem", "username", "password",
     "signing_key_id", "signing_key", "outbound_topic", "inbound_topic", "previous_signing_keys"}

`ca_pem` is the hub operator's CA the broker's certificate is verified against (null: a broker
without TLS, Tansu's only way); `username` null: a broker without users. Fields a newer hub adds are
ignored. A bundle is a secret: it holds the partner's Kafka password and signing key."""
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from shared.platform.kafka import inbound_topic, outbound_topic

Role = Literal["lead", "insourcing"]


class Bundle(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    partner_id: str
    partner_name: str | None = None  # as the hub's directory names it (a partner's own setting wins)
    role: Role
    bootstrap_servers: str
    ca_pem: str | None
    username: str | None
    password: str | None
    signing_key_id: str
    signing_key: str
    outbound_topic: str
    inbound_topic: str
    # After a rotation: the keys it replaced, {key id: key}, which still verify what the bridge signed
    # with them (messages in flight, or sent before the bridge saw this partner use its new key).
    previous_signing_keys: dict[str, str] = {}

    @model_validator(mode="after")
    def _own_topics(self) -> "Bundle":
        expected = (outbound_topic(self.partner_id), inbound_topic(self.partner_id))
        if (self.outbound_topic, self.inbound_topic) != expected:
            raise ValueError(f"the topics must be the partner's own, {expected[0]} and {expected[1]}")
        return self

    @property
    def signing_keys(self) -> str:
        """As a partner's SIGNING_KEYS setting reads them: the new key signs, every one verifies."""
        keys = {self.signing_key_id: self.signing_key, **self.previous_signing_keys}
        return ",".join(f"{kid}:{key}" for kid, key in keys.items())


def load(path: str | Path, role: Role) -> Bundle:
    """The bundle at `path` for a partner service of `role`, or a refusal to start that names the problem."""
    where = f"PARTNER_BUNDLE_FILE={path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SystemExit(f"{where}: cannot be read ({exc.strerror})") from None
    try:
        bundle = Bundle.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'bundle'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"{where}: not an onboarding bundle ({problems})") from None
    if bundle.role != role:
        raise SystemExit(f"{where}: this bundle has role {bundle.role!r}; this service needs role {role!r}")
    return bundle
