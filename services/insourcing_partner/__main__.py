from pathlib import Path

from services.insourcing_partner.app import create_app
from services.insourcing_partner.settings import InsourcingSettings
from shared.partner import PARTNER_PERMISSIONS
from shared.platform import cli


def main() -> None:
    cli.main(
        "insourcing_partner", InsourcingSettings, create_app, Path(__file__).parent / "migrations", "ip", PARTNER_PERMISSIONS
    )


if __name__ == "__main__":
    main()
