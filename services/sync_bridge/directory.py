"""The hub's partner directory as the bridge serves it (SPEC section 10): the partners configured in
BRIDGE_PARTNERS and those onboarded at run time (services/sync_bridge/onboarding.py keeps them in the
database), each with the signing keys it shares with the bridge. Every replica holds it in memory and
loads it again when any process changes it (NOTIFY) and every few seconds; the consumer then reads
the new partners' topics without a restart."""
import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sync_bridge.models import Partner, PartnerKey
from shared.platform.db import asyncpg_dsn, utcnow
from shared.platform.kafka import inbound_topic, outbound_topic
from shared.platform.signing import KEY_ID_HEADER, BadSignature, KeyRing

log = logging.getLogger(__name__)
CHANNEL = "partners_changed"  # NOTIFYed by whoever changes the directory, in its transaction
RELOAD_EVERY_S = 5.0  # and loaded again this often anyway, in case a notification was missed


class DirectoryError(RuntimeError):
    """The directory cannot be loaded as stored (a key BRIDGE_SECRET_KEY does not open)."""


def partner_of(topic: str) -> str | None:
    """psa.<partner>.outbound or psa.<partner>.inbound -> <partner>."""
    parts = topic.split(".")
    if len(parts) == 3 and parts[0] == "psa" and parts[2] in ("outbound", "inbound"):
        return parts[1]
    return None


def secret_box(keys: str | None) -> MultiFernet | None:
    """BRIDGE_SECRET_KEY: Fernet keys, comma-separated, newest first (the first encrypts, every one
    decrypts, so the key is rotated by putting a new one first). None when unset."""
    if not keys:
        return None
    try:
        return MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()])
    except ValueError:
        raise SystemExit("BRIDGE_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes each, comma-separated); "
                         "make one with: python -c 'from cryptography.fernet import Fernet; "
                         "print(Fernet.generate_key().decode())'") from None


@dataclass
class Member:
    """One partner as the bridge serves it."""

    id: str
    name: str
    role: str | None  # lead | insourcing; None: configured without a role (may do either)
    status: str  # active | removed
    configured: bool  # from BRIDGE_PARTNERS, not the API
    # Newest first, each with the time it stops verifying (None: it is the current one).
    keys: list[tuple[str, bytes, datetime | None]] = field(default_factory=list, repr=False)
    created_at: datetime | None = None
    removed_at: datetime | None = None

    def may(self, role: str) -> bool:
        return self.status == "active" and self.role in (role, None)


class Directory:
    """The partners, and the key ring of each: it signs what the bridge writes to a partner's inbound
    topic and verifies what arrives on its outbound one, as `Signatures` does for a fixed set."""

    def __init__(self, configured: dict[str, tuple[str | None, str, KeyRing]], box: MultiFernet | None):
        self._configured = configured  # id -> (role, name, key ring)
        self._box = box
        self.members: dict[str, Member] = {}
        # Keys the partner has signed with since this process started: the bridge answers in a new
        # key only once the partner uses it (or the old one's grace ends), so a partner still running
        # on its old bundle reads what the bridge sends meanwhile.
        self._adopted: set[tuple[str, str]] = set()
        self._void = secrets.token_bytes(32)  # signs what is still staged for a removed partner
        self._listeners: list[Callable[[], None]] = []
        self._load_configured()

    def _load_configured(self) -> None:
        for pid, (role, name, ring) in self._configured.items():
            keys = [(kid, secret, None) for kid, secret in ring.keys.items()]
            self.members[pid] = Member(pid, name, role, "active", True, keys)

    @classmethod
    def of(cls, roles: dict[str, str]) -> "Directory":
        """Partners {id: role} with fresh keys and nothing onboarded (handler tests and benches)."""
        return cls({pid: (role, pid, KeyRing.parse(KeyRing.generate())) for pid, role in roles.items()}, None)

    def admit(self, member: Member) -> None:
        """A partner just onboarded here, served before the reload its commit announces."""
        before = self.topics()
        self.members[member.id] = member
        if self.topics() != before:
            for listener in self._listeners:
                listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    # --- loading ---------------------------------------------------------------------------------

    async def load(self, session: AsyncSession) -> None:
        partners = list(await session.scalars(select(Partner).where(Partner.membership != "onboarding")))
        keys = list(await session.scalars(select(PartnerKey).order_by(PartnerKey.created_at.desc())))
        members = {}
        for p in partners:
            if p.id in self._configured:
                continue
            ring = [(k.key_id, self._decrypt(k), k.valid_until) for k in keys if k.partner_id == p.id]
            members[p.id] = Member(p.id, p.name, p.role, p.membership, False, ring, p.created_at, p.removed_at)
        before = self.topics()
        self.members = members
        self._load_configured()
        if self.topics() != before:
            for listener in self._listeners:
                listener()

    def _decrypt(self, key: PartnerKey) -> bytes:
        """Raises DirectoryError (the directory keeps what it had; a start waits, saying why)."""
        if self._box is None:
            raise DirectoryError("the bridge's database holds onboarded partners' keys, and BRIDGE_SECRET_KEY is not set")
        try:
            return self._box.decrypt(key.secret_encrypted)
        except InvalidToken:
            raise DirectoryError(f"BRIDGE_SECRET_KEY does not open the key {key.key_id} of partner {key.partner_id}: "
                                 "it is not the key (or one of the keys) the secrets were stored with") from None

    async def follow(self, sessions: async_sessionmaker[AsyncSession], database_url: str) -> None:
        """Loads the directory again whenever it changes (NOTIFY) and every RELOAD_EVERY_S."""
        changed = asyncio.Event()
        conn = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(asyncpg_dsn(database_url))
                    await conn.add_listener(CHANNEL, lambda *_: changed.set())
                async with sessions() as session:
                    await self.load(session)
            except asyncio.CancelledError:
                if conn is not None:
                    await conn.close()
                raise
            except DirectoryError as exc:
                log.error("the partner directory was not loaded again (the one loaded before is served): %s", exc)
            except Exception:
                log.warning("could not load the partner directory; trying again", exc_info=True)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
                conn = None
            try:
                await asyncio.wait_for(changed.wait(), RELOAD_EVERY_S)
            except asyncio.TimeoutError:
                pass
            changed.clear()

    # --- what it answers -----------------------------------------------------------------------

    def get(self, partner_id: str) -> Member | None:
        return self.members.get(partner_id)

    def active(self, role: str) -> list[Member]:
        return sorted((m for m in self.members.values() if m.may(role)), key=lambda m: m.name.lower())

    def topics(self) -> list[str]:
        """What the bridge reads and writes: every partner's two topics. A removed partner's outbound
        topic is still read, so that whatever arrives from it is parked with the reason."""
        return sorted(t for pid in self.members for t in (outbound_topic(pid), inbound_topic(pid)))

    def outbound_topics(self) -> list[str]:
        return sorted(outbound_topic(pid) for pid in self.members)

    # --- signatures ----------------------------------------------------------------------------

    def _valid(self, member: Member) -> list[tuple[str, bytes, datetime | None]]:
        now = utcnow()
        return [k for k in member.keys if k[2] is None or k[2] > now]

    def sign(self, topic: str, value: bytes) -> list[tuple[str, bytes]]:
        member = self.members.get(partner_of(topic) or "")
        valid = self._valid(member) if member is not None and member.status == "active" else []
        if not valid:
            # Staged before its partner was removed: nobody can read that topic any more.
            return KeyRing({"void": self._void}, "void").sign(topic, value)
        newest = valid[0]
        older = next((k for k in valid[1:]), None)
        adopted = member.configured or (member.id, newest[0]) in self._adopted  # configured: both ends rotate by hand
        use = newest if older is None or adopted else older
        return KeyRing({use[0]: use[1]}, use[0]).sign(topic, value)

    def verify(self, topic: str, headers, value: bytes | None) -> None:
        pid = partner_of(topic)
        member = self.members.get(pid or "")
        if member is None:
            raise BadSignature(f"no key is shared for topic {topic}: no partner {pid!r} in the directory")
        if member.status == "removed":
            raise BadSignature(f"partner removed: {member.id} was removed from the hub "
                               f"{member.removed_at:%Y-%m-%d %H:%M:%S} UTC" if member.removed_at else
                               f"partner removed: {member.id} was removed from the hub")
        found = {name: data for name, data in (headers or ())}
        kid = (found.get(KEY_ID_HEADER) or b"").decode(errors="replace")
        retired = next((k for k in member.keys if k[0] == kid and k[2] is not None and k[2] <= utcnow()), None)
        if retired is not None:
            raise BadSignature(f"signed with key {kid!r} of {member.id}, retired {retired[2]:%Y-%m-%d %H:%M:%S} UTC "
                               "(its grace, KEY_GRACE_S, has ended)")
        valid = self._valid(member)
        if not valid:
            raise BadSignature(f"no key is shared with {member.id}")
        KeyRing({k: s for k, s, _ in valid}, valid[0][0]).verify(topic, headers, value)
        self._adopted.add((member.id, kid))
