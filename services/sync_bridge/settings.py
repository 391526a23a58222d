"""Configuration of the sync bridge, from BRIDGE_* variables (and KAFKA_*)."""
from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from shared.platform.config import CommonSettings


class BridgeSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="BRIDGE_")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/sync_bridge"
    port: int = 8003
    api_token: str | None = None
    # The partners whose topics the bridge serves (comma-separated ids in BRIDGE_PARTNERS).
    partners: list[str] = ["lead-partner", "insourcing-partner"]
    # The keys the bridge shares with each partner, as JSON: {"lead-partner": "key-id:secret", ...}.
    signing_keys: dict[str, str] = {}

    @field_validator("partners", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value
