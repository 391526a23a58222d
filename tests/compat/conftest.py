"""The previous release's partner services beside today's bridge and partners (SPEC section 11)."""
import pytest

from tests.compat.release import Release, build
from tests.harness import LOGS, PartnerServices

_ran_against: list[Release] = []


@pytest.fixture(scope="session")
def previous() -> Release:
    release = build()
    _ran_against.append(release)
    return release


@pytest.fixture(scope="session")
def release_partners(base_env, infrastructure, tmp_path_factory, previous: Release):
    """Starts a partner of the previous release from its onboarding bundle; stopped at the end."""
    partners = PartnerServices(base_env, infrastructure.postgres_admin_url, tmp_path_factory.mktemp("release-bundles"))
    yield lambda bundle: partners.start(bundle, python=previous.python, cwd=previous.source)
    partners.stop()


def pytest_terminal_summary(terminalreporter):
    if _ran_against:
        release = _ran_against[0]
        venv = f"its virtualenv built in {release.built_in_s:.0f} s" if release.built_in_s else "its virtualenv cached"
        line = (f"compat tests: partners of release {release.version} ({release.commit[:12]}, tests/compat/"
                f"previous-release) against today's bridge and partners; {venv}")
        terminalreporter.write_line(line)
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "summary.txt", "a") as out:
            out.write(line + "\n")
