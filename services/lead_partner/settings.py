"""Configuration of the lead partner service, from LEAD_* variables (and the shared KAFKA_*, SMTP_*).
The insourcing partners it may outsource to are not configured: they come from the hub's directory."""
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.partner import PartnerSettings


class LeadSettings(PartnerSettings):
    ROLE = "lead"
    model_config = SettingsConfigDict(env_prefix="LEAD_")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/lead_partner"
    port: int = 8001
    notify_email: str = "service-desk@lead-partner.example"
    partner_id: str = "lead-partner"
    partner_name: str = "Lead Partner"
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the terms it outsources with")
