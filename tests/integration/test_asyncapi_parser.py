"""tools/asyncapi/validate.mjs run by real Node.js on the AsyncAPI project's own parser, installed from
the lock file: a valid 3.0.0 document passes, realistic mistakes fail and are named. The payload is
shaped as pydantic v2's model_json_schema() writes it (title, default, const, anyOf with null, $ref
into components/schemas), the form our own schemas take."""
import pytest

from devstack import asyncapi

DOCUMENT = """\
asyncapi: 3.0.0
info:
  title: Partner ticket sync
  version: 1.0.0
channels:
  partnerOutbound:
    address: 'psa.{partnerId}.outbound'
    parameters:
      partnerId:
        description: The sending partner's id.
    messages:
      ticketChanged:
        $ref: '#/components/messages/TicketChanged'
operations:
  sendTicketChanged:
    action: send
    channel:
      $ref: '#/channels/partnerOutbound'
    messages:
      - $ref: '#/channels/partnerOutbound/messages/ticketChanged'
components:
  messages:
    TicketChanged:
      contentType: application/json
      payload:
        title: TicketChanged
        type: object
        required: [ticket_id]
        properties:
          kind: {const: ticket.changed, default: ticket.changed, title: Kind, type: string}
          ticket_id: {title: Ticket Id, type: string}
          status: {$ref: '#/components/schemas/Status', default: open}
          assignee:
            anyOf: [{type: string}, {type: 'null'}]
            default: null
            title: Assignee
  schemas:
    Status:
      title: Status
      type: string
      enum: [open, closed]
"""


@pytest.fixture(scope="module", autouse=True)
def installed():
    asyncapi.ensure_installed()


def check(tmp_path, text: str):
    path = tmp_path / "asyncapi.yaml"
    path.write_text(text)
    return path, asyncapi.validate(path)


def test_a_valid_document_passes(tmp_path):
    path, result = check(tmp_path, DOCUMENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("error ")]
    assert result.stdout.splitlines()[-1] == f"valid AsyncAPI 3.0.0: {path}"


@pytest.mark.parametrize(("wrong", "right", "named"), [
    ("$ref: '#/channels/partnerOutbound'\n", "$ref: '#/channels/partnerInbound'\n",
     "error #/operations/sendTicketChanged/channel/$ref: '#/channels/partnerInbound' does not exist"),
    ("      ticketChanged:\n        $ref:", "      - $ref:",
     'error #/channels/partnerOutbound/messages: "messages" property type must be object'),
    ("    address:", "    adress:",
     'error #/channels/partnerOutbound/adress: Property "adress" is not expected to be here'),
], ids=["operation-channel-missing", "messages-as-list", "address-misspelt"])
def test_a_broken_document_fails_naming_the_problem(tmp_path, wrong, right, named):
    assert DOCUMENT.count(wrong) == 1
    _, result = check(tmp_path, DOCUMENT.replace(wrong, right))
    assert result.returncode == 1
    assert named in result.stdout.splitlines(), result.stdout
    assert "valid AsyncAPI" not in result.stdout


def test_an_unreadable_file_is_status_2(tmp_path):
    result = asyncapi.validate(tmp_path / "missing.yaml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
