"""Configuration of the lead partner service, from LEAD_* variables (and the shared KAFKA_*, SMTP_*)."""
from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from shared.partner import PartnerSettings


class KnownPartner(BaseModel):
    id: str
    name: str


class LeadSettings(PartnerSettings):
    ROLE = "lead"
    model_config = SettingsConfigDict(env_prefix="LEAD_")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/lead_partner"
    port: int = 8001
    notify_email: str = "service-desk@lead-partner.example"
    partner_id: str = "lead-partner"
    partner_name: str = "Lead Partner"
    # The insourcing partners this lead may outsource to (JSON list in LEAD_PARTNERS).
    partners: list[KnownPartner] = [KnownPartner(id="insourcing-partner", name="Insourcing Partner")]
