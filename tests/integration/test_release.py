"""`make release` (SPEC section 11) in a clone of this repository: it refuses a version that is not after
the last, a dirty tree and a failed commit without leaving anything half-made, and otherwise cuts the
release: the version, the recorded contracts, the dated CHANGELOG, the tag, and the commit named for the
next release's compat tests."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import ROOT


def git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True, text=True).stdout.strip()


def release(clone: Path, version: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack.release", version], cwd=clone, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def clone(tmp_path) -> Path:
    path = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
    git(path, "config", "user.email", "release@example.test")
    git(path, "config", "user.name", "Release test")
    # The release command of this checkout, committed or not.
    shutil.copyfile(ROOT / "devstack" / "release.py", path / "devstack" / "release.py")
    if git(path, "status", "--porcelain"):
        git(path, "commit", "-q", "-am", "the release command under test")
    return path


def test_a_release_is_refused_when_it_is_not_after_the_last_or_the_tree_is_dirty(clone):
    last = (clone / "tests" / "compat" / "previous-release").read_text().split()[0]
    refused = release(clone, last)
    assert refused.returncode == 1 and f"is not after the last release, {last}" in refused.stderr
    assert release(clone, "1.0").returncode == 1
    (clone / "README.md").write_text("edited\n")
    dirty = release(clone, "99.0.0")
    assert dirty.returncode == 1 and "working tree has changes" in dirty.stderr


def test_a_failed_commit_leaves_nothing_half_made(clone):
    hook = clone / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'refused by the hook' >&2\nexit 1\n")
    hook.chmod(0o755)
    head = git(clone, "rev-parse", "HEAD")
    failed = release(clone, "99.0.0")
    assert failed.returncode == 1 and "refused by the hook" in failed.stderr, failed.stderr
    assert git(clone, "status", "--porcelain") == "" and git(clone, "rev-parse", "HEAD") == head
    assert not (clone / "docs" / "contracts" / "99.0.0").exists() and git(clone, "tag", "--list", "v99.0.0") == ""


def test_a_release_records_its_contracts_tags_its_commit_and_names_it_for_the_next(clone):
    cut = release(clone, "99.0.0")
    assert cut.returncode == 0, cut.stderr
    commit = git(clone, "rev-parse", "v99.0.0")
    assert (clone / "tests" / "compat" / "previous-release").read_text() == f"99.0.0 {commit}\n"
    assert 'version = "99.0.0"' in (clone / "pyproject.toml").read_text()
    recorded = yaml.safe_load((clone / "docs" / "contracts" / "99.0.0" / "asyncapi.yaml").read_text())
    assert recorded["info"]["version"] == "99.0.0" and recorded == yaml.safe_load((clone / "docs" / "asyncapi.yaml").read_text())
    changelog = (clone / "CHANGELOG.md").read_text()
    assert changelog.index("## Unreleased") < changelog.index("## 99.0.0 (")
    assert git(clone, "status", "--porcelain") == ""
    assert git(clone, "log", "-1", "--format=%s").startswith("tests/compat/previous-release: 99.0.0")
