from services.lead_partner.models import metadata
from shared.platform.migrations import run_env

run_env(metadata)
