import sys
from pathlib import Path

from services.sync_bridge.app import create_app
from services.sync_bridge.settings import BridgeSettings
from shared.platform import cli
from shared.platform.auth import Permission


def main() -> None:
    if sys.argv[1:2] == ["partners"]:  # the hub's partner directory (services/sync_bridge/partners_api.py)
        from services.sync_bridge.partners_api import cli as partners

        partners(sys.argv[2:])
        return
    cli.main("sync_bridge", BridgeSettings, create_app, Path(__file__).parent / "migrations", "sb",
             [Permission.LINKS, Permission.PARTNERS])


if __name__ == "__main__":
    main()
