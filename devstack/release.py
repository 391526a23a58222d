"""`make release VERSION=x.y.z`: cut a release (SPEC section 11). From a clean tree whose contracts are
current and compatible with the last release's, it sets the version in pyproject.toml, dates the
CHANGELOG's Unreleased section, records the release's contracts under docs/contracts/<version>/, commits
and tags that, then names the release's commit in tests/compat/previous-release (a second commit), so
that the next release's `make test` runs its services against today's."""
import argparse
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CHANGELOG = ROOT / "CHANGELOG.md"
PREVIOUS = ROOT / "tests" / "compat" / "previous-release"
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
UNRELEASED = "## Unreleased"


class ReleaseError(Exception):
    pass


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def current_version() -> str:
    return re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.M).group(1)


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in SEMVER.match(version).groups())


def check(version: str) -> str:
    """Why this release cannot be cut now, or the CHANGELOG's text for it."""
    if not SEMVER.match(version):
        raise ReleaseError(f"VERSION must be MAJOR.MINOR.PATCH, such as 1.2.0 (got {version!r})")
    if PREVIOUS.exists():
        last = PREVIOUS.read_text().split()[0]
        if _as_tuple(version) <= _as_tuple(last):
            raise ReleaseError(f"{version} is not after the last release, {last}")
    if git("status", "--porcelain"):
        raise ReleaseError("the working tree has changes: commit or stash them first")
    if git("tag", "--list", f"v{version}"):
        raise ReleaseError(f"the tag v{version} exists already")
    if not subprocess.run(["git", "config", "user.email"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
        raise ReleaseError("git has no user.email here: set one (git config user.email ...) to commit the release")
    text = CHANGELOG.read_text() if CHANGELOG.exists() else ""
    section = text.split(UNRELEASED, 1)[1].split("\n## ", 1)[0].strip() if UNRELEASED in text else ""
    if not section:
        raise ReleaseError(f"{CHANGELOG.name} has nothing under '{UNRELEASED}': say what this release changes")
    contracts = subprocess.run([sys.executable, "-m", "services.sync_bridge.asyncapi", "--check"], cwd=ROOT)
    if contracts.returncode:
        raise ReleaseError("docs/asyncapi.yaml is not what the code generates")
    if PREVIOUS.exists():
        compat = subprocess.run([sys.executable, "-m", "shared.contracts.compat"], cwd=ROOT)
        if compat.returncode:
            raise ReleaseError("the contracts break the last release's (above): give the changed types a new schema_version")
    return section


def cut(version: str) -> str:
    check(version)
    recorded = ROOT / "docs" / "contracts" / version
    try:
        _record(version, recorded)
        git("commit", "-q", "-m", f"Release {version}")
    except (subprocess.CalledProcessError, OSError) as exc:
        # Nothing half-made stays: the files go back to the last commit, the recorded contracts away.
        subprocess.run(["git", "reset", "-q", "HEAD", "--", "."], cwd=ROOT)
        subprocess.run(["git", "checkout", "--", str(PYPROJECT), str(CHANGELOG), "docs/asyncapi.yaml"], cwd=ROOT)
        shutil.rmtree(recorded, ignore_errors=True)
        raise ReleaseError(f"{exc}: {getattr(exc, 'stderr', '') or ''}".strip()) from exc
    commit = git("rev-parse", "HEAD")
    git("tag", f"v{version}", commit)
    PREVIOUS.parent.mkdir(parents=True, exist_ok=True)
    PREVIOUS.write_text(f"{version} {commit}\n")
    git("add", str(PREVIOUS))
    git("commit", "-q", "-m", f"tests/compat/previous-release: {version}, the release the compat tests run against")
    return commit


def _record(version: str, recorded: Path) -> None:
    """The release's files: its version, its document recorded, its CHANGELOG section dated; staged."""
    PYPROJECT.write_text(re.sub(r'^version = "[^"]+"', f'version = "{version}"', PYPROJECT.read_text(), count=1,
                                flags=re.M))
    subprocess.run([sys.executable, "-m", "services.sync_bridge.asyncapi"], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    recorded.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "docs" / "asyncapi.yaml", recorded / "asyncapi.yaml")
    CHANGELOG.write_text(CHANGELOG.read_text().replace(
        UNRELEASED, f"{UNRELEASED}\n\n## {version} ({date.today().isoformat()})", 1))
    git("add", str(PYPROJECT), str(CHANGELOG), "docs/asyncapi.yaml", str(recorded))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version")
    args = parser.parse_args()
    try:
        commit = cut(args.version)
    except ReleaseError as exc:
        print(f"release {args.version}: not cut: {exc}", file=sys.stderr)
        return 1
    print(f"released {args.version} at {commit[:12]} (tag v{args.version}); tests/compat/previous-release names it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
