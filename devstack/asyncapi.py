"""The AsyncAPI document checked by the AsyncAPI project's own parser (`@asyncapi/parser`, the
JavaScript parser its tools are built on), not by a Python re-implementation: what it accepts is what
AsyncAPI Studio, the generator and the CLI accept. Its packages come exactly from the committed
tools/asyncapi/package-lock.json (`npm ci`), so every machine checks with the same parser and rules.

    python -m devstack.asyncapi --install      # installs into tools/asyncapi/node_modules if stale
    python -m devstack.asyncapi docs/asyncapi.yaml

prints one line per diagnostic and exits with the validator's status: 0 valid (warnings allowed),
1 any error, 2 an unreadable file."""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "asyncapi"
VALIDATOR = TOOLS / "validate.mjs"
TIMEOUT_S = 120


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"the AsyncAPI validator needs Node.js 20.17 or newer with npm: `{name}` is not on PATH")
    return found


def ensure_installed() -> Path:
    """tools/asyncapi with its node_modules as the lock file says. npm writes node_modules/.package-lock.json
    at each install, so one older than the lock file means the lock changed since. `--ignore-scripts`:
    the only install script in the tree is a usage-telemetry ping (@scarf/scarf); the parser needs none."""
    installed, lock = TOOLS / "node_modules" / ".package-lock.json", TOOLS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _tool("node")
        subprocess.run([_tool("npm"), "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=TOOLS, check=True)
    return TOOLS


def validate(path: str | Path) -> subprocess.CompletedProcess:
    """validate.mjs's verdict on one document: its lines on stdout, its exit status."""
    ensure_installed()
    return subprocess.run([_tool("node"), str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=TIMEOUT_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.asyncapi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path, help="the AsyncAPI document (YAML or JSON)")
    parser.add_argument("--install", action="store_true", help="only install the parser from the lock file")
    args = parser.parse_args(argv)
    if args.file is None and not args.install:
        parser.error("name a file, or --install")
    try:
        ensure_installed()
        if args.file is None:
            return
        result = validate(args.file)
    except (RuntimeError, subprocess.CalledProcessError) as err:  # npm has said what went wrong
        sys.exit(f"devstack.asyncapi: {err}")
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
