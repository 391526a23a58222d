from pathlib import Path

from services.lead_partner.app import create_app
from services.lead_partner.settings import LeadSettings
from shared.partner import PARTNER_PERMISSIONS
from shared.platform import cli


def main() -> None:
    cli.main("lead_partner", LeadSettings, create_app, Path(__file__).parent / "migrations", "lp", PARTNER_PERMISSIONS)


if __name__ == "__main__":
    main()
