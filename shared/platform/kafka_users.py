"""The hub's Kafka users, changed at run time: the bridge onboards a partner (a SCRAM-SHA-256 user and
its password), locks one out (a password nobody holds) and deletes every ACL naming it, on Apache Kafka. aiokafka 0.14
has no SCRAM credential requests, so they are defined here with its own protocol classes."""
import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field

from aiokafka.errors import for_code
from aiokafka.protocol.admin import DeleteAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from shared.platform.kafka import KafkaAccess, _admin

SCRAM_SHA_256 = 1  # Kafka's ScramMechanism id
RESOURCE_NOT_FOUND = 91  # the user has no such credential (aiokafka knows no name for it)
ANY = 1  # the ACL filters' wildcard for resource type, pattern type, operation and permission


class AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("deletions", CompactArray(
            ("name", CompactString("utf-8")),
            ("mechanism", Int8),
            ("tags", TaggedFields),
        )),
        ("upsertions", CompactArray(
            ("name", CompactString("utf-8")),
            ("mechanism", Int8),
            ("iterations", Int32),
            ("salt", CompactBytes),
            ("salted_password", CompactBytes),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequest_v0]):
    API_KEY = 51

    def __init__(self, deletions: list[tuple[str, int]], upsertions: list[tuple[str, int, int, bytes, bytes]]):
        self._deletions = deletions
        self._upsertions = upsertions

    def build(self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
              ) -> AlterUserScramCredentialsRequest_v0:
        return request_struct_class([(*d, {}) for d in self._deletions], [(*u, {}) for u in self._upsertions], {})


class DescribeUserScramCredentialsResponse_v0(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("credential_infos", CompactArray(
                ("mechanism", Int8),
                ("iterations", Int32),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class DescribeUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = DescribeUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("users", CompactArray(
            ("name", CompactString("utf-8")),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class DescribeUserScramCredentialsRequest(Request[DescribeUserScramCredentialsRequest_v0]):
    API_KEY = 50

    def __init__(self, users: list[str]):
        self._users = users

    def build(self, request_struct_class: type[DescribeUserScramCredentialsRequest_v0]
              ) -> DescribeUserScramCredentialsRequest_v0:
        return request_struct_class([(user, {}) for user in self._users], {})


async def _send(access: KafkaAccess, request: Request) -> Response:
    admin = _admin(access)
    await admin.start()
    try:
        return await admin._send_request(request)
    finally:
        await admin.close()


def _raise(code: int, what: str, message: str | None) -> None:
    # The code goes into the text: aiokafka turns the SCRAM codes (91 to 93) into "UnknownError -1".
    raise for_code(code)(f"{what}: Kafka error {code}: {message or 'no message'}")


@dataclass(frozen=True)
class ScramCredential:
    """What the broker keeps of a SCRAM-SHA-256 password: the salt, the iteration count and the salted
    password (SCRAM's Hi(), PBKDF2-HMAC-SHA256). Enough to give the same user back to a broker that lost
    its metadata. Not the password, but as sensitive: SCRAM's client proof can be made from it, so it is
    kept encrypted."""

    iterations: int
    salt: bytes = field(repr=False)
    salted_password: bytes = field(repr=False)

    @classmethod
    def of(cls, password: str, iterations: int = 8192) -> "ScramCredential":
        salt = secrets.token_bytes(32)
        return cls(iterations, salt, hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations))

    def to_json(self) -> str:
        return json.dumps({"iterations": self.iterations, "salt": base64.b64encode(self.salt).decode(),
                           "salted_password": base64.b64encode(self.salted_password).decode()})

    @classmethod
    def from_json(cls, text: str) -> "ScramCredential":
        data = json.loads(text)
        return cls(data["iterations"], base64.b64decode(data["salt"]), base64.b64decode(data["salted_password"]))


async def set_scram_password(admin: KafkaAccess, username: str, password: str, iterations: int = 8192) -> None:
    """Creates `username` or replaces its password. The broker is sent only the salted password
    (SCRAM's Hi(), PBKDF2-HMAC-SHA256), never the password; it takes 4096 to 16384 iterations."""
    await set_scram_credential(admin, username, ScramCredential.of(password, iterations))


async def set_scram_credential(admin: KafkaAccess, username: str, credential: ScramCredential) -> None:
    """Creates `username` or replaces its password, given as what the broker keeps of it."""
    request = AlterUserScramCredentialsRequest(
        [], [(username, SCRAM_SHA_256, credential.iterations, credential.salt, credential.salted_password)])
    response = await _send(admin, request)
    for user, code, message, _ in response.results:
        if code:
            _raise(code, f"setting the SCRAM-SHA-256 password of Kafka user {user!r}", message)


async def user_exists(admin: KafkaAccess, username: str) -> bool:
    """Whether `username` has a SCRAM-SHA-256 credential, i.e. can log in with a password."""
    response = await _send(admin, DescribeUserScramCredentialsRequest([username]))
    if response.error_code:
        _raise(response.error_code, f"describing Kafka user {username!r}", response.error_message)
    for user, code, message, credentials, _ in response.results:
        if code == RESOURCE_NOT_FOUND:
            return False
        if code:
            _raise(code, f"describing Kafka user {user!r}", message)
        return any(mechanism == SCRAM_SHA_256 for mechanism, _, _ in credentials)
    return False


async def delete_acls_of(admin: KafkaAccess, principal: str) -> int:
    """Deletes every ACL naming `principal` (e.g. "User:lead-partner-svc"), on any resource, and
    returns how many there were. Kafka 4 serves DeleteAcls from v1, whose null strings match anything."""
    request = DeleteAclsRequest(ANY, None, ANY, principal, None, ANY, ANY)
    response = await _send(admin, request)
    deleted = 0
    for code, message, matching in response.filter_responses:
        if code:
            _raise(code, f"deleting the ACLs of {principal!r}", message)
        for acl_code, acl_message, *acl in matching:
            if acl_code:
                _raise(acl_code, f"deleting the ACL {acl} of {principal!r}", acl_message)
            deleted += 1
    return deleted
