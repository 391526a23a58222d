"""An attachment's name is one line of text: no C0 control character, no DEL and no C1 control character
(U+0080-U+009F), at the API and at every door a mirror passes (issue 23: bytes ED A0 80 were stored
as "í\\x80.txt")."""
import hashlib

import pytest
from pydantic import ValidationError

from shared.domain.tickets.schemas import AttachmentFields, AttachmentUpdate
from shared.domain.tickets.validation import InvalidItem, valid_fields

CONTENT = b"hello"


def _attachment(filename: str) -> dict:
    return {"filename": filename, "content_type": "text/plain", "size": len(CONTENT),
            "sha256": hashlib.sha256(CONTENT).hexdigest()}


@pytest.mark.parametrize("name, found", [
    ("í\x80.txt", "U+0080"), ("report\x85.pdf", "U+0085"), ("a\x9f", "U+009F"), ("line\nbreak.txt", "U+000A"),
    ("tab\there", "U+0009"), ("del\x7f.txt", "U+007F"),
])
def test_a_filename_with_a_control_character_is_refused_naming_the_character(name, found):
    with pytest.raises(ValidationError) as refused:
        AttachmentFields.model_validate(_attachment(name))
    error = refused.value.errors()[0]
    assert error["loc"] == ("filename",) and "control characters" in error["msg"] and found in error["msg"]
    with pytest.raises(ValidationError):
        AttachmentUpdate.model_validate({"filename": name})


def test_a_partner_refuses_a_mirrored_attachment_whose_name_holds_a_c1_character():
    with pytest.raises(InvalidItem) as refused:
        valid_fields("attachment", _attachment("í\x80.txt"))
    assert "filename" in refused.value.reason and "U+0080" in refused.value.reason


@pytest.mark.parametrize("name", ["í.txt", "Grüße\u00a0an alle.pdf", "报告.docx", "\u00a0nbsp-first.txt", "emoji 📎.png"])
def test_names_in_any_script_around_the_c1_range_still_pass(name):
    assert AttachmentFields.model_validate(_attachment(name)).filename == name.strip()
