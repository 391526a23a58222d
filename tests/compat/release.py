"""The previous release, built to run beside today's services (SPEC section 11): a git worktree of the
commit named in tests/compat/previous-release, and a virtualenv with that release installed (not
editable, so it outlives the worktree), cached per commit under ~/.cache/partner-ticket-sync/compat."""
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.contracts.compat import previous_release
from tests.harness import ROOT

log = logging.getLogger(__name__)
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "partner-ticket-sync" / "compat"


@dataclass(frozen=True)
class Release:
    version: str
    commit: str
    source: Path  # its worktree: the services run from it
    python: str  # its virtualenv's interpreter
    built_in_s: float  # 0 when the cached virtualenv served


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def _worktree(commit: str) -> Path:
    path = ROOT / "var" / "compat" / commit[:12]
    if (path / ".git").exists() and subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                                                   text=True).stdout.strip() == commit:
        return path
    shutil.rmtree(path, ignore_errors=True)
    _git("worktree", "prune")
    _git("worktree", "add", "--detach", "--force", str(path), commit)
    return path


def _virtualenv(commit: str, source: Path) -> tuple[Path, float]:
    venv = CACHE / f"{commit[:12]}-py{sys.version_info.major}{sys.version_info.minor}"
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python, 0.0
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
                   check=True, cwd=source)
    (venv / ".installed").touch()
    return python, time.monotonic() - started


def build() -> Release:
    version, commit = previous_release()
    source = _worktree(commit)
    python, took = _virtualenv(commit, source)
    log.info("release %s (%s) from %s, %s", version, commit[:12], source,
             f"its virtualenv built in {took:.0f}s" if took else "its virtualenv cached")
    return Release(version, commit, source, str(python), took)
