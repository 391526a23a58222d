from services.sync_bridge.models import metadata
from shared.platform.migrations import run_env

run_env(metadata)
