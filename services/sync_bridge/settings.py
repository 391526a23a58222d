"""Configuration of the sync bridge, from BRIDGE_* variables (and KAFKA_*)."""
import json
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.platform.config import CommonSettings


class BridgeSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/sync_bridge"
    port: int = 8003
    api_token: str | None = None
    # Partners served from the environment, beside those onboarded through the API (SPEC section 10):
    # `id[:role[:name]]`, comma-separated, in BRIDGE_PARTNERS (no role: the partner may lead or insource).
    partners: Annotated[list[str], NoDecode] = ["lead-partner:lead:Lead Partner", "insourcing-partner:insourcing:Insourcing Partner"]
    # The keys the bridge shares with each configured partner, as JSON: {"lead-partner": "key-id:secret", ...}.
    signing_keys: dict[str, str] = {}
    # Fernet keys (comma-separated, newest first) that encrypt the signing keys of onboarded partners.
    secret_key: str | None = Field(None, repr=False)
    # The hub's Kafka super user, with which the bridge creates and deletes partners' users and ACLs.
    kafka_admin_username: str | None = None
    kafka_admin_password: str | None = Field(None, repr=False)
    # The Kafka address a partner's bundle names (the hub's published one); default KAFKA_BOOTSTRAP_SERVERS.
    public_bootstrap_servers: str | None = None
    # How long a rotated signing key still verifies (and may still sign, until a replica sees the partner
    # use its new one).
    key_grace_s: float = Field(86_400.0, ge=0, validation_alias=AliasChoices("BRIDGE_KEY_GRACE_S", "KEY_GRACE_S"))

    @field_validator("partners", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    def configured_partners(self) -> dict[str, tuple[str | None, str]]:
        """BRIDGE_PARTNERS as {id: (role or None, name)}."""
        configured = {}
        for entry in self.partners:
            pid, _, rest = entry.partition(":")
            role, _, name = rest.partition(":")
            if role not in ("", "lead", "insourcing"):
                raise SystemExit(f"BRIDGE_PARTNERS: {entry!r}: the role is lead or insourcing")
            configured[pid.strip()] = (role or None, name.strip() or pid.strip())
        return configured
