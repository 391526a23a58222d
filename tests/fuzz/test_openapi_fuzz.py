"""Every service fuzzed from its own OpenAPI document with schemathesis, over real HTTP against the
running services, with a valid token and with none: no 5xx, every answer as the document describes
it (status, content type, headers, body), 401 without a token whatever the body, and the links from a
new ticket to its items walked. `make fuzz` runs the same with more examples (FUZZ_EXAMPLES); the
seed is fixed (FUZZ_SEED), so a failure reproduces. Each run's report is in var/test-logs/."""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import LOGS, ROOT, ServiceProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))  # per operation and phase
STATEFUL_SCENARIOS = 25
SEED = os.environ.get("FUZZ_SEED", "1127")
# Every check schemathesis has, less three. ensure_resource_availability reads a 404 after a create as
# a lost resource, but GET /api/tickets/{ticket_id}/sync answers 404 for a ticket never linked (SPEC
# section 9). positive_data_acceptance and negative_data_rejection judge the request schemas, which
# describe less than the code checks (decimal digits, NUL bytes PostgreSQL refuses, numbers sent as
# strings): such input gets a 4xx naming the problem, which the document describes.
WITH_TOKEN_CHECKS = ["all"]
WITH_TOKEN_EXCLUDED = ["ensure_resource_availability", "positive_data_acceptance", "negative_data_rejection"]
WITHOUT_TOKEN_CHECKS = ["refused_without_a_token", "not_a_server_error", "status_code_conformance",
                        "content_type_conformance", "response_headers_conformance", "response_schema_conformance"]
TICKET_ITEMS = ("notes", "time-entries", "charges", "attachments")


SERVICES = ["lead_partner", "insourcing_partner", "sync_bridge"]


@dataclass
class FuzzRun:
    """One `st run` against a service's own /openapi.json, with its token or with none."""

    service: ServiceProcess
    token: bool
    process: subprocess.Popen
    events_path: Path
    log: Path

    @classmethod
    def start(cls, service: ServiceProcess, token: bool, folder: Path) -> "FuzzRun":
        events_path = folder / "events.ndjson"
        if token:
            phases, checks = "examples,coverage,fuzzing,stateful", WITH_TOKEN_CHECKS
        else:
            phases, checks = "fuzzing", WITHOUT_TOKEN_CHECKS
        # EXAMPLES per operation and phase; the stateful phase walks more scenarios than that (it costs
        # a second), so that with every operation the API has, some reach a new ticket's items.
        config = folder / "schemathesis.toml"
        config.write_text(f"generation.max-examples = {EXAMPLES}\n\n[phases.stateful]\n"
                          f"generation.max-examples = {max(EXAMPLES, STATEFUL_SCENARIOS)}\n")
        command = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{service.url}/openapi.json",
            "--phases", phases, "--checks", ",".join(checks), "--seed", SEED,
            "--generation-database", "none", "--request-timeout", "30", "--no-color",
            "--report", "ndjson", "--report-ndjson-path", str(events_path),
        ]
        if token:
            command += ["--exclude-checks", ",".join(WITH_TOKEN_EXCLUDED),
                        "--header", f"Authorization: Bearer {service.token}"]
        log = LOGS / f"fuzz-{service.name}-{'with' if token else 'without'}-token.txt"
        process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.checks"})
        return cls(service, token, process, events_path, log)

    def events(self) -> list[dict]:
        """Waits for the run; fails the test with schemathesis' own report of what went wrong."""
        returncode = self.process.wait(timeout=600)
        assert returncode == 0, f"{self.log}:\n{self.log.read_text()[-15000:]}"
        events = [json.loads(line) for line in self.events_path.read_text().splitlines()]
        print(f"{self.service.name} {'with' if self.token else 'without'} a token: {requests_sent(events)} requests")
        return events


@pytest.fixture(scope="module")
def fuzz_runs(services, tmp_path_factory):
    """All six runs at once (each service with a token and with none): on two cores the suite is
    shorter than one run after another."""
    runs = {(name, token): FuzzRun.start(services[name], token, tmp_path_factory.mktemp(f"fuzz-{name}"))
            for name in SERVICES for token in (True, False)}
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.parametrize("name", SERVICES)
def test_every_answer_with_a_token_is_as_the_services_openapi_document_says(fuzz_runs, name):
    events = fuzz_runs[name, True].events()
    if name != "sync_bridge":  # the bridge's links are made by messages, not by its API
        reached = calls_on_new_tickets_items(events)
        print(f"{name}: the stateful phase called {sorted(reached)} on tickets it created")
        assert reached, "the stateful phase never used a ticket it had created"


@pytest.mark.parametrize("name", SERVICES)
def test_every_call_without_a_token_is_401_whatever_its_body(fuzz_runs, name):
    fuzz_runs[name, False].events()


def scenarios(events: list[dict]):
    for event in events:
        if finished := event.get("ScenarioFinished"):
            yield finished


def requests_sent(events: list[dict]) -> int:
    return sum(len(scenario["recorder"].get("interactions", {})) for scenario in scenarios(events))


def calls_on_new_tickets_items(events: list[dict]) -> set[str]:
    """The stateful phase's calls on the items of a ticket it had created: by the link from
    POST /api/tickets, or with a ticket id drawn from what POST /api/tickets answered. Whatever they
    answered, the checks judged it against the document."""
    reached = set()
    for scenario in scenarios(events):
        if scenario["phase"] != "stateful":
            continue
        for node in scenario["recorder"].get("cases", {}).values():
            case = node["value"]
            on_items = any(case["path"].startswith(f"/api/tickets/{{ticket_id}}/{kind}") for kind in TICKET_ITEMS)
            linked = (node.get("transition") or {}).get("id", "").startswith("POST /api/tickets -> ")
            drawn = any(draw.get("source_operation") == "POST /api/tickets" for draw in case["meta"].get("pool_draws", []))
            if on_items and (linked or drawn):
                reached.add(f"{case['method']} {case['path']}")
    return reached
