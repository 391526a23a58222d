"""The Kafka interface as a contract (SPEC section 11): docs/asyncapi.yaml is what the code generates,
the AsyncAPI project's own parser accepts it, what it says each service reads is what each service
handles, and today's contracts keep the last release's services working."""
import json
import tempfile
from pathlib import Path

import httpx
import yaml

from devstack import asyncapi as parser
from services.insourcing_partner.received_work import Insourcing
from services.insourcing_partner.settings import InsourcingSettings
from services.lead_partner.outsourcing import LeadOutsourcing
from services.lead_partner.settings import LeadSettings
from services.sync_bridge.bridge import Bridge
from services.sync_bridge.directory import Directory
from services.sync_bridge.asyncapi import COMMITTED, document, message_id, to_yaml
from shared.contracts.compat import breaking_changes, previous_release, recorded
from shared.contracts.messages import DirectoryRequested, OutsourceRequested, OutsourceRequestedV2


def test_the_committed_document_is_what_the_code_generates():
    assert COMMITTED.read_text() == to_yaml(document()), (
        "docs/asyncapi.yaml differs from the contracts: run `python -m services.sync_bridge.asyncapi` and commit it")


def test_the_asyncapi_parser_accepts_the_committed_document():
    checked = parser.validate(COMMITTED)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid AsyncAPI 3.0.0" in checked.stdout


def test_the_parser_refuses_the_document_with_a_dangling_message():
    # The check is not a formality: one operation naming a message its channel lacks is an error.
    broken = json.loads(json.dumps(document()))
    broken["operations"]["leadSends"]["messages"].append({"$ref": "#/channels/partnerOutbound/messages/link.accepted.v1"})
    checked = parser.validate(_written(broken))
    assert checked.returncode == 1 and "leadSends" in checked.stdout, checked.stdout


def _written(doc: dict) -> Path:
    path = Path(tempfile.mkdtemp()) / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _read_by(operation: str) -> set[str]:
    return {ref["$ref"].rsplit("/", 1)[-1] for ref in document()["operations"][operation]["messages"]}


def _ids(handled) -> set[str]:
    return {message_id(model) for model in handled}


def test_what_the_document_says_each_service_reads_is_what_it_handles():
    lead = LeadOutsourcing(LeadSettings.model_construct(partner_id="lead-partner"))
    insourcing = Insourcing(InsourcingSettings.model_construct(partner_id="insourcing-partner"))
    bridge = Bridge(Directory({}, None))
    assert _read_by("leadReceives") == _ids(lead.bus.handlers)
    assert _read_by("insourcingReceives") == _ids(insourcing.bus.handlers)
    # The bridge answers these two before its bus: a lead's first message of a link, and of no link.
    assert _read_by("bridgeReceives") == _ids(bridge.bus.handlers) | _ids(
        [OutsourceRequested, OutsourceRequestedV2, DirectoryRequested])


def test_every_message_has_a_summary_and_every_payload_schema_is_in_the_document():
    doc = document()
    for name, message in doc["components"]["messages"].items():
        assert message["summary"] != message["name"], f"{name} has no docstring to describe it"
        ref = message["payload"]["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]
        assert ref in doc["components"]["schemas"], name
    assert {"NoteFields", "TimeEntryFields", "ChargeFields", "AttachmentFields"} <= doc["components"]["schemas"].keys()


def test_todays_contracts_keep_the_last_releases_services_working():
    version, commit = previous_release()
    assert breaking_changes(recorded(version), document()) == [], (
        f"a change breaks release {version}'s services: give the changed type a new schema_version")



def test_the_bridge_serves_the_committed_document_to_anyone(services):
    answer = httpx.get(f"{services['sync_bridge'].url}/asyncapi.json", timeout=10)  # no token: it is public
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == yaml.safe_load(COMMITTED.read_text())
