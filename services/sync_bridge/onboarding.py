"""Onboarding at run time (SPEC section 10): the hub operator adds, rotates and removes partners through
the bridge's API (`/api/partners`, the `partners` permission) or its command line. Adding one makes its
Kafka user, its two topics and their ACLs and its signing key, and answers its onboarding bundle once;
removing one takes its user, ACLs and keys away and ends its open links. The bridge keeps only what it
must hold, encrypted with BRIDGE_SECRET_KEY: the signing keys, and what the broker keeps of each partner's
password (to give its user back to a broker that lost its metadata); the password itself is in the
partner's bundle alone."""
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography.fernet import MultiFernet
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync_bridge.directory import CHANNEL, Directory, Member
from services.sync_bridge.links import send
from services.sync_bridge.models import DirectoryVersion, Link, Partner, PartnerKey
from services.sync_bridge.settings import BridgeSettings
from shared.contracts.messages import DirectoryChanged, DirectoryEntry, PartnerLeft
from shared.domain import workflow
from shared.platform.bundle import Bundle
from shared.platform.db import utcnow
from shared.platform.errors import Conflict, NotFound, Unavailable
from shared.platform.kafka import (
    KafkaAccess,
    bridge_grants,
    create_acls,
    ensure_topics,
    inbound_topic,
    list_topics,
    outbound_topic,
    partner_grants,
    partner_group,
)
from shared.platform.kafka_users import (
    ScramCredential,
    delete_acls_of,
    set_scram_credential,
    set_scram_password,
    user_exists,
)

log = logging.getLogger(__name__)
# A partner id becomes a topic name, a consumer group and a Kafka user name: lowercase letters, digits
# and inner hyphens, 2 to 64 of them.
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
RESERVED_IDS = {"bridge"}
ABANDONED = timedelta(minutes=2)  # an onboarding row this old never finished  # the bridge signs its own messages as "bridge"


class PartnerIn(BaseModel):
    id: str = Field(description="lowercase letters, digits and inner hyphens, 2-64 characters; never reused",
                    examples=["globex"], json_schema_extra={"pattern": ID_PATTERN})
    name: str = Field(min_length=1, max_length=200, description="the company's name, as other partners see it")
    role: Literal["lead", "insourcing"]

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not re.fullmatch(ID_PATTERN, value):
            raise ValueError("a partner id is 2-64 lowercase letters, digits and inner hyphens (it names Kafka "
                             "topics and a Kafka user)")
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            raise ValueError("a name is printable text")
        return value


class PartnerOut(BaseModel):
    id: str
    name: str
    role: Literal["lead", "insourcing"] | None = Field(description="null: configured in BRIDGE_PARTNERS without a role")
    status: Literal["active", "removed"]
    source: Literal["api", "configured"] = Field(description="onboarded through the API (or the command line), "
                                                             "or configured in the bridge's environment")
    created_at: datetime | None
    removed_at: datetime | None = None


class Onboarded(BaseModel):
    partner: PartnerOut
    bundle: Bundle = Field(description="shown this once: the partner's Kafka password and signing key")


@dataclass
class Hub:
    """What onboarding works with: the bridge's settings and database, the directory it serves from,
    and the hub's Kafka as its super user (None: a broker without users, such as Tansu)."""

    settings: BridgeSettings
    sessions: Callable[[], AsyncSession]
    directory: Directory
    box: MultiFernet | None

    def _kafka(self) -> KafkaAccess:
        """The access that creates topics, users and ACLs."""
        access = self.settings.kafka_access()
        if self.settings.kafka_admin_username:
            return access.as_user(self.settings.kafka_admin_username, self.settings.kafka_admin_password)
        if self.settings.kafka_username:
            raise Unavailable("the hub's Kafka has users, and the bridge was given no admin to create one for a "
                              "partner: set BRIDGE_KAFKA_ADMIN_USERNAME and BRIDGE_KAFKA_ADMIN_PASSWORD")
        return access

    def require_box(self) -> MultiFernet:
        if self.box is None:
            raise Unavailable("BRIDGE_SECRET_KEY is not set: the bridge keeps partners' signing keys encrypted "
                              "with it (see docs/configuration.md)")
        return self.box

    # --- the operations ------------------------------------------------------------------------

    async def list(self) -> list[PartnerOut]:
        async with self.sessions() as session:
            rows = list(await session.scalars(select(Partner).where(Partner.membership != "onboarding")))
        configured = [PartnerOut(id=m.id, name=m.name, role=m.role, status="active", source="configured",
                                 created_at=None) for m in self.directory.members.values() if m.configured]
        return configured + [_out(p) for p in sorted(rows, key=lambda p: p.created_at)]

    async def add(self, new: PartnerIn) -> Onboarded:
        box = self.require_box()
        kafka = self._kafka()
        ca_pem = self._ca_pem()  # read before anything is made: the bundle is shown once
        if new.id in self.directory.members and self.directory.members[new.id].configured:
            raise Conflict(f"partner id {new.id!r} is taken (configured in BRIDGE_PARTNERS)")
        username = f"partner-{new.id}" if kafka.username else None
        async with self.sessions() as session, session.begin():
            known = await session.get(Partner, new.id, with_for_update=True)
            if known is not None and known.membership == "onboarding" and known.changed_at < utcnow() - ABANDONED:
                await session.delete(known)  # an onboarding that never finished (its process died): taken over
                await session.flush()
            elif known is not None:
                why = "was removed; a partner id is never given again" if known.membership == "removed" else "is taken"
                raise Conflict(f"partner id {new.id!r} {why}")
            inserted = await session.scalar(
                insert(Partner).values(id=new.id, name=new.name, role=new.role, membership="onboarding",
                                       kafka_username=username).on_conflict_do_nothing().returning(Partner.id))
            if inserted is None:  # another request onboarding the same id got there first
                raise Conflict(f"partner id {new.id!r} is taken")
        password = secrets.token_urlsafe(32)
        credential = ScramCredential.of(password)
        try:
            if {outbound_topic(new.id), inbound_topic(new.id)} & set(await list_topics(kafka)):
                raise Conflict(f"the hub's Kafka already has topics of {new.id!r} (a partner this bridge does not "
                               "list: configured elsewhere, or from an earlier hub): choose another id")
            await self._provision(kafka, new.id, username, credential)
        except Exception as exc:
            async with self.sessions() as session, session.begin():
                await session.execute(delete(Partner).where(Partner.id == new.id, Partner.membership == "onboarding"))
            if isinstance(exc, Conflict):
                raise
            raise Unavailable(f"the hub's Kafka refused to onboard {new.id}: {exc}; remove nothing, try again "
                              "(what was made is made again, or given to the next partner with this id)") from exc
        key_id, key = "k1", secrets.token_urlsafe(32)
        async with self.sessions() as session, session.begin():
            partner = await session.get(Partner, new.id, with_for_update=True)
            if partner is None or partner.membership != "onboarding":
                raise Conflict(f"the onboarding of {new.id!r} was taken over by another (it took over 2 minutes)")
            partner.membership, partner.changed_at = "active", func.now()
            if username:
                partner.kafka_credential_encrypted = box.encrypt(credential.to_json().encode())
            session.add(PartnerKey(partner_id=new.id, key_id=key_id, secret_encrypted=box.encrypt(key.encode())))
            await session.flush()
            # Served from this moment by this replica's relay too (a first message to a new lead is signed
            # with its key, not refused as a stranger's); the others load it at the NOTIFY.
            self.directory.admit(Member(new.id, new.name, new.role, "active", False, [(key_id, key.encode(), None)]))
            await announce(session, self.directory)
            await _notify(session)
        partner = await self._reload(new.id)
        return Onboarded(partner=_out(partner), bundle=self._bundle(partner, ca_pem, password, key_id, key))

    async def rotate(self, partner_id: str) -> Onboarded:
        """One transaction around it all, the partner's row locked: two rotations (a double click) or a
        rotation and a removal take turns, and the password in Kafka is the one the bundle shows."""
        box = self.require_box()
        kafka = self._kafka()
        ca_pem = self._ca_pem()
        password, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        credential = ScramCredential.of(password)
        async with self.sessions() as session, session.begin():
            partner = await self._onboarded(session, partner_id, lock=True)
            if partner.kafka_username:
                try:
                    await set_scram_credential(kafka, partner.kafka_username, credential)
                except Exception as exc:
                    raise Unavailable(f"the hub's Kafka refused the new password of {partner_id}: {exc}; "
                                      "nothing changed") from exc
            keys = list(await session.scalars(select(PartnerKey).where(PartnerKey.partner_id == partner_id)))
            grace_ends = utcnow() + timedelta(seconds=self.settings.key_grace_s)
            previous = {}
            for old in keys:
                if old.valid_until is None:
                    old.valid_until = grace_ends
                if old.valid_until > utcnow():
                    previous[old.key_id] = box.decrypt(old.secret_encrypted).decode()
            key_id = f"k{1 + max((int(k.key_id[1:]) for k in keys if k.key_id[1:].isdigit()), default=0)}"
            session.add(PartnerKey(partner_id=partner_id, key_id=key_id, secret_encrypted=box.encrypt(key.encode())))
            partner.changed_at = func.now()
            if partner.kafka_username:
                partner.kafka_credential_encrypted = box.encrypt(credential.to_json().encode())
            await _notify(session)
        partner = await self._reload(partner_id)
        return Onboarded(partner=_out(partner), bundle=self._bundle(partner, ca_pem, password, key_id, key, previous))

    async def remove(self, partner_id: str) -> PartnerOut:
        """Out of the directory at once (what it sends is parked from now on), its open links ended and the
        other party told; then its Kafka user and ACLs go. Asked again, it only finishes the Kafka part."""
        async with self.sessions() as session, session.begin():
            partner = await self._onboarded(session, partner_id, lock=True, removed_too=True)
            if partner.membership == "active":
                partner.membership, partner.removed_at, partner.changed_at = "removed", func.now(), func.now()
                partner.kafka_credential_encrypted = None
                await session.execute(delete(PartnerKey).where(PartnerKey.partner_id == partner_id))
                await end_links(session, partner)
                await session.flush()
                await announce(session, self.directory)
                await _notify(session)
        if partner.kafka_username:
            kafka = self._kafka()
            try:
                await delete_acls_of(kafka, f"User:{partner.kafka_username}")
                # Its password is replaced by one nobody holds rather than its credential deleted: on Apache
                # Kafka 4.1.1 a deleted SCRAM credential, replayed when the broker restarted, was seen to leave
                # it refusing every SCRAM login (two CI runs out of four). Either way the partner cannot log in.
                await set_scram_password(kafka, partner.kafka_username, secrets.token_urlsafe(32))
            except Exception as exc:
                raise Unavailable(f"{partner_id} is out of the directory, but the hub's Kafka did not delete its "
                                  f"user and ACLs ({exc}): remove it again to finish") from exc
        return _out(await self._reload(partner_id))

    # --- the pieces ----------------------------------------------------------------------------

    async def _provision(self, kafka: KafkaAccess, partner_id: str, username: str | None,
                         credential: ScramCredential) -> None:
        await ensure_topics(kafka, [outbound_topic(partner_id), inbound_topic(partner_id)],
                            self.settings.kafka_topic_partitions, replication=self.settings.replication())
        if username is None:
            return
        await set_scram_credential(kafka, username, credential)
        await create_acls(kafka, self._grants(partner_id, username))

    def _grants(self, partner_id: str, username: str | None) -> list:
        grants = partner_grants(username, partner_id, partner_group(partner_id)) if username else []
        if self.settings.kafka_username:
            grants += bridge_grants(self.settings.kafka_username, [partner_id], "sync_bridge")
        return grants

    async def restore_kafka(self) -> None:
        """Every topic the directory needs, made again if the broker lost it; with the hub's super user,
        each onboarded partner's user (from what the broker kept of its password) and every ACL too, so
        a broker that lost its metadata serves every partner again. Nothing is sent while every topic is
        there (this runs at each consumer and relay start). Without it, the topics the bridge
        may make, and a warning for the others (the operator's to restore)."""
        partitions = self.settings.kafka_topic_partitions
        try:
            kafka = self._kafka()
        except Unavailable:
            kafka = None
        if kafka is None or not kafka.username:
            await ensure_topics(self.settings.kafka_access(), self.directory.topics(), partitions, skip_refused=True,
                                replication=self.settings.replication())
            return
        if not set(self.directory.topics()) - set(await list_topics(kafka)):
            return  # nothing lost: users and ACLs are as onboarding left them (and each ACL sent is a request)
        await ensure_topics(kafka, self.directory.topics(), partitions, replication=self.settings.replication())
        async with self.sessions() as session:
            partners = list(await session.scalars(select(Partner).where(Partner.membership == "active")))
        grants = bridge_grants(self.settings.kafka_username, [], "sync_bridge") if self.settings.kafka_username else []
        for member in self.directory.members.values():
            grants += self._grants(member.id, None)  # the bridge reads and writes every partner's topics
        for partner in partners:
            if partner.kafka_username and partner.kafka_credential_encrypted and self.box is not None:
                if not await user_exists(kafka, partner.kafka_username):
                    credential = ScramCredential.from_json(self.box.decrypt(partner.kafka_credential_encrypted).decode())
                    await set_scram_credential(kafka, partner.kafka_username, credential)
                    log.warning("the hub's Kafka had lost partner %s's user: given back", partner.id)
                grants += partner_grants(partner.kafka_username, partner.id, partner_group(partner.id))
        await create_acls(kafka, grants)

    async def _onboarded(self, session: AsyncSession, partner_id: str, lock: bool = False,
                         removed_too: bool = False) -> Partner:
        member = self.directory.members.get(partner_id)
        if member is not None and member.configured:
            raise Conflict(f"{partner_id} is configured in BRIDGE_PARTNERS; change it there")
        partner = await session.get(Partner, partner_id, with_for_update=lock)
        if partner is None or partner.membership == "onboarding":
            raise NotFound(f"no partner {partner_id!r}")
        if partner.membership == "removed" and not removed_too:
            raise Conflict(f"{partner_id} was removed from the hub")
        return partner

    async def _reload(self, partner_id: str) -> Partner:
        """The row as committed, and this replica's directory up to date before the answer goes."""
        async with self.sessions() as session:
            await self.directory.load(session)
            return await session.get(Partner, partner_id)

    def _ca_pem(self) -> str | None:
        cafile = self.settings.kafka_ssl_cafile
        try:
            return Path(cafile).read_text() if cafile else None
        except OSError as exc:
            raise Unavailable(f"the hub's CA (KAFKA_SSL_CAFILE={cafile}) cannot be read: {exc.strerror}") from None

    def _bundle(self, partner: Partner, ca_pem: str | None, password: str, key_id: str, key: str,
                previous: dict[str, str] | None = None) -> Bundle:
        return Bundle(
            partner_id=partner.id, partner_name=partner.name, role=partner.role,
            bootstrap_servers=self.settings.public_bootstrap_servers or self.settings.kafka_bootstrap_servers,
            ca_pem=ca_pem,
            username=partner.kafka_username, password=password if partner.kafka_username else None,
            signing_key_id=key_id, signing_key=key, outbound_topic=outbound_topic(partner.id),
            inbound_topic=inbound_topic(partner.id), previous_signing_keys=previous or {})


def _out(partner: Partner) -> PartnerOut:
    return PartnerOut(id=partner.id, name=partner.name, role=partner.role, status=partner.membership, source="api",
                      created_at=partner.created_at, removed_at=partner.removed_at)


async def _notify(session: AsyncSession) -> None:
    """Every replica loads the directory again when this transaction commits."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


async def end_links(session: AsyncSession, partner: Partner) -> None:
    """Each open link of a removed partner ends, and the other party hears who left."""
    links = await session.scalars(
        select(Link).where(or_(Link.lead_partner_id == partner.id, Link.insourcing_partner_id == partner.id),
                           Link.state != workflow.LinkState.TERMINATED).with_for_update())
    for link in links:
        link.state = workflow.link("partner.removed", link.state)
        link.outcome, link.reason = "partner_left", f"{partner.name} ({partner.id}) was removed from the hub"
        other = link.insourcing_partner_id if link.lead_partner_id == partner.id else link.lead_partner_id
        send(session, other, PartnerLeft(link_id=link.id, partner_id=partner.id, partner_name=partner.name), link.id)


async def announce(session: AsyncSession, directory: Directory, to: list[str] | None = None) -> None:
    """Every active lead (or those in `to`, who asked) is sent the insourcing partners it may outsource to,
    whole, as the database has them in this transaction. A change raises the version first: its row lock
    makes concurrent changes take turns, so a later version never lists less than an earlier one. A lead
    never hears of another lead, nor itself; a partner configured without a role is sent none."""
    if to is None:
        version = await session.scalar(update(DirectoryVersion).where(DirectoryVersion.id == 1)
                                       .values(version=DirectoryVersion.version + 1).returning(DirectoryVersion.version))
    else:
        version = await session.scalar(select(DirectoryVersion.version).where(DirectoryVersion.id == 1))
    rows = list(await session.scalars(select(Partner).where(Partner.membership == "active")))
    configured = [m for m in directory.members.values() if m.configured]
    insourcing = [(m.id, m.name) for m in configured if m.role in ("insourcing", None)]
    insourcing += [(p.id, p.name) for p in rows if p.role == "insourcing"]
    leads = [m.id for m in configured if m.role == "lead"] + [p.id for p in rows if p.role == "lead"]
    for lead in (leads if to is None else to):
        entries = [DirectoryEntry(id=pid, name=name) for pid, name in sorted(insourcing, key=lambda e: e[1].lower())
                   if pid != lead]
        send(session, lead, DirectoryChanged(version=version or 0, partners=entries), None)
