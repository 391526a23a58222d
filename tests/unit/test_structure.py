"""How the code is held together (docs/architecture.md): one place commits a request's work, and the
outbox hooks only onto the project's own sessions."""
import ast
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.platform import outbox
from shared.platform.db import UnitOfWork

ROOT = Path(__file__).resolve().parents[2]


def test_no_endpoint_commits_the_request_commits_once_in_its_session_dependency():
    commits = []
    for path in [*ROOT.glob("services/*/endpoints.py"), ROOT / "shared" / "domain" / "tickets" / "endpoints.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
                commits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert commits == []


def test_the_outbox_listens_to_the_projects_sessions_not_to_every_sqlalchemy_session():
    assert event.contains(UnitOfWork, "before_commit", outbox._write_staged)
    assert not event.contains(Session, "before_commit", outbox._write_staged)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_shared_is_in_layers_platform_and_contracts_never_import_the_domain():
    """shared/platform (database, Kafka, outbox, inbox, web shell, tokens) and shared/contracts know
    nothing of tickets or the workflow; the domain may use both."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for layer in ("platform", "contracts")
        for path in (ROOT / "shared" / layer).glob("*.py")
        for module in _imports(path)
        if module.startswith(("shared.domain", "shared.partner", "services"))
    ]
    assert offenders == []
