"""Configuration of the insourcing partner service, from INSOURCING_* variables (and KAFKA_*, SMTP_*)."""
from pydantic_settings import SettingsConfigDict

from shared.partner import PartnerSettings


class InsourcingSettings(PartnerSettings):
    ROLE = "insourcing"
    model_config = SettingsConfigDict(env_prefix="INSOURCING_")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/insourcing_partner"
    port: int = 8002
    notify_email: str = "service-desk@insourcing-partner.example"
    partner_id: str = "insourcing-partner"
    partner_name: str = "Insourcing Partner"
