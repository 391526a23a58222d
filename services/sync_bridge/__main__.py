from pathlib import Path

from services.sync_bridge.app import create_app
from services.sync_bridge.settings import BridgeSettings
from shared.platform import cli
from shared.platform.auth import Permission


def main() -> None:
    cli.main("sync_bridge", BridgeSettings, create_app, Path(__file__).parent / "migrations", "sb", [Permission.LINKS])


if __name__ == "__main__":
    main()
