"""What a partner says it holds of a link when the bridge reconciles it (SPEC section 9): its shared
items and its mirrors, all of them or only those written after the point the bridge last kept, and
a digest of the whole so the bridge can check what it keeps (issue 28: a busy link's round cost the
whole ticket, re-read and re-hashed on both partners under the ticket's lock, every few seconds).

Every write of a ticket item takes the next change point of one sequence, and a deletion leaves the
item's id with its own (triggers, shared/platform/migrations.py). A writer of a ticket's items holds
the ticket's row, and so does the answer: every write it does not see is numbered after it."""
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.contracts.messages import ManifestItem, ManifestMirror
from shared.domain.tickets.rules import Origin, content_hash
from shared.platform.db import PlainSql

# One entry of the digest, as the bridge computes it in Python and the partner in SQL.
_ENTRY_SQL = ("('x' || substr(md5(CASE WHEN origin = '" + Origin.LOCAL + "'"
              " THEN 'i:' || id || ':' || version || ':' || coalesce(delivery_status, '')"
              " ELSE 'm:' || id || ':' || coalesce(source_version, 1) || ':' || coalesce(source_hash, '') END),"
              " 1, 15))::bit(60)::bigint")
# The link's set on one side: the items it created and shares (not internal), and its mirrors.
_IN_SET = ("link_id = $2 AND (origin = '" + Origin.PARTNER + "' OR (origin = '" + Origin.LOCAL + "'"
           " AND shared AND NOT internal))")


def item_entry(item: ManifestItem) -> str:
    return f"i:{item.item_id}:{item.version}:{item.delivery or ''}"


def mirror_entry(mirror: ManifestMirror) -> str:
    return f"m:{mirror.mirror_id}:{mirror.source_version}:{mirror.source_hash}"


def digest(entries: Iterable[str]) -> str:
    """`count:sum` of a set's entries (see `Manifest.digest`): equal digests say the same set."""
    count = total = 0
    for entry in entries:
        count += 1
        total += int(hashlib.md5(entry.encode()).hexdigest()[:15], 16)
    return f"{count}:{total}"


@dataclass
class Description:
    """One side's answer: everything (`since` None) or what changed after `since`."""

    as_of: int
    since: int | None
    digest: str
    items: list[ManifestItem] = field(default_factory=list)
    mirrors: list[ManifestMirror] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


async def describe(db: PlainSql, ticket_id: str, link_id: str, since: int | None) -> Description:
    """The link's set on this side (the ticket's row locked by the caller), whole or since a point.
    Removal records up to `since` are forgotten: the bridge keeps what came after them."""
    # The sum as text: as a numeric, asyncpg hands it over as a Decimal that prints with an exponent
    # when it ends in zeros, and the bridge's integer would never match it.
    count, total = await db.fetchrow(
        f"SELECT count(*), coalesce(sum({_ENTRY_SQL}), 0)::text FROM ticket_items WHERE ticket_id = $1 AND {_IN_SET}",
        ticket_id, link_id)
    as_of = await db.fetchval(
        "SELECT greatest((SELECT max(change_point) FROM ticket_items WHERE ticket_id = $1),"
        " (SELECT max(change_point) FROM ticket_item_removals WHERE ticket_id = $1), 0)", ticket_id)
    answer = Description(as_of=as_of, since=since, digest=f"{count}:{total}")
    after = [] if since is None else [since]
    rows = await db.fetch(
        "SELECT id, kind, origin, version, fields, delivery_status, source_version, source_hash,"
        f" ({_IN_SET}) AS in_set FROM ticket_items WHERE ticket_id = $1"
        f"{' AND change_point > $3' if after else ''} ORDER BY seq", ticket_id, link_id, *after)
    for row in rows:
        if not row["in_set"]:
            if after:
                answer.removed.append(row["id"])  # unshared, made internal: it left the set
        elif row["origin"] == Origin.LOCAL:
            answer.items.append(ManifestItem(item_id=row["id"], version=row["version"], delivery=row["delivery_status"],
                                             hash=content_hash(row["kind"], row["fields"])))
        else:
            answer.mirrors.append(ManifestMirror(mirror_id=row["id"], source_version=row["source_version"] or 1,
                                                 source_hash=row["source_hash"] or ""))
    if after:
        answer.removed += [row["item_id"] for row in await db.fetch(
            "SELECT item_id FROM ticket_item_removals WHERE ticket_id = $1 AND change_point > $2", ticket_id, since)]
    # What the bridge keeps covers the removals up to the point it asked since (or, asked for everything,
    # up to this answer): it never asks from before that again, except after losing what it kept, and
    # then a missing removal shows in the digest and it asks for everything.
    await db.execute("DELETE FROM ticket_item_removals WHERE ticket_id = $1 AND change_point <= $2",
                     ticket_id, answer.as_of if since is None else since)
    return answer
