"""What the bridge keeps of each side's answer to a reconciliation round (issue 28), so that the next
round asks a side only for what changed after the point that answer described, and still compares
the whole: the kept entries with the changes laid over them, checked against the digest of the
whole that the side computed itself. A kept answer that does not add up (a side restored from a
backup, a removal it forgot, a bridge that lost its own) is dropped, and both sides are asked for
everything again: the cost of a busy link's round is what changed, never a wrong comparison."""
import logging

from shared.contracts.messages import Manifest, ManifestItem, ManifestMirror
from shared.domain import manifests
from shared.platform.db import PlainSql

log = logging.getLogger(__name__)


class Counts:
    """For /metrics: answers kept, and whole answers asked again because a kept one did not add up."""

    incremental = 0
    whole = 0
    dropped = 0


async def since(db: PlainSql, link_id: str) -> dict[str, int]:
    """The point each side's kept answer describes, by partner: what to ask it `since`."""
    return {row["partner_id"]: row["as_of"] for row in await db.fetch(
        "SELECT partner_id, as_of FROM kept_manifests WHERE link_id = $1", link_id)}


async def forget(db: PlainSql, link_id: str, partner_id: str | None = None) -> None:
    """Drop what is kept of a side (every side when None): the next round asks it for everything."""
    for table in ("kept_manifests", "kept_manifest_entries"):
        await db.execute(f"DELETE FROM {table} WHERE link_id = $1 AND ($2::varchar IS NULL OR partner_id = $2)",
                         link_id, partner_id)


async def take(db: PlainSql, link_id: str, partner_id: str, head: Manifest, items: list[ManifestItem],
               mirrors: list[ManifestMirror], removed: list[str]) -> tuple[list[ManifestItem], list[ManifestMirror]] | None:
    """One side's answer laid over what is kept of it: its whole set, in the order the bridge first
    heard of each entry; None when it cannot be trusted (then nothing is kept of the link: the caller
    asks both sides for everything, which always ends in a comparison)."""
    kept_as_of = await db.fetchval(
        "SELECT as_of FROM kept_manifests WHERE link_id = $1 AND partner_id = $2", link_id, partner_id)
    if head.since is None:
        await db.execute("DELETE FROM kept_manifest_entries WHERE link_id = $1 AND partner_id = $2", link_id, partner_id)
    elif head.since != kept_as_of:
        log.warning("link %s: %s answered since %s, but the bridge keeps its answer as of %s: asking for everything",
                    link_id, partner_id, head.since, kept_as_of)
        return await _drop(db, link_id)
    elif removed:
        await db.execute("DELETE FROM kept_manifest_entries WHERE link_id = $1 AND partner_id = $2"
                         " AND entry_id = ANY($3::varchar[])", link_id, partner_id, removed)
    entries = [(i.item_id, False, i.version, i.hash, i.delivery) for i in items]
    entries += [(m.mirror_id, True, m.source_version, m.source_hash, None) for m in mirrors]
    if entries:
        await db.execute(
            "INSERT INTO kept_manifest_entries (link_id, partner_id, entry_id, mirror, version, hash, delivery)"
            " SELECT $1, $2, * FROM unnest($3::varchar[], $4::bool[], $5::int[], $6::varchar[], $7::varchar[])"
            " ON CONFLICT (link_id, partner_id, entry_id) DO UPDATE SET mirror = excluded.mirror,"
            " version = excluded.version, hash = excluded.hash, delivery = excluded.delivery",
            link_id, partner_id, *(list(column) for column in zip(*entries)))
    rows = await db.fetch(
        "SELECT entry_id, mirror, version, hash, delivery FROM kept_manifest_entries"
        " WHERE link_id = $1 AND partner_id = $2 ORDER BY position", link_id, partner_id)
    whole_items = [ManifestItem(item_id=r["entry_id"], version=r["version"], hash=r["hash"], delivery=r["delivery"])
                   for r in rows if not r["mirror"]]
    whole_mirrors = [ManifestMirror(mirror_id=r["entry_id"], source_version=r["version"], source_hash=r["hash"])
                     for r in rows if r["mirror"]]
    held = manifests.digest([*map(manifests.item_entry, whole_items), *map(manifests.mirror_entry, whole_mirrors)])
    if held != head.digest:
        if head.since is None:
            # Listed whole, so still compared; but nothing is kept of a side whose lists and digest
            # disagree (a bug of its own), and it is asked for everything each time.
            log.warning("link %s: %s's answer does not add up to its own digest (%s, it says %s): nothing kept of it",
                        link_id, partner_id, held, head.digest)
            Counts.dropped += 1
            await forget(db, link_id, partner_id)
            return whole_items, whole_mirrors
        log.warning("link %s: what the bridge keeps of %s's answer does not add up to the whole it holds"
                    " (%s, it says %s): asking both sides for everything", link_id, partner_id, held, head.digest)
        return await _drop(db, link_id)
    if head.since is None:
        Counts.whole += 1
    else:
        Counts.incremental += 1
    await db.execute(
        "INSERT INTO kept_manifests (link_id, partner_id, as_of) VALUES ($1, $2, $3)"
        " ON CONFLICT (link_id, partner_id) DO UPDATE SET as_of = excluded.as_of", link_id, partner_id, head.as_of)
    return whole_items, whole_mirrors


async def _drop(db: PlainSql, link_id: str) -> None:
    Counts.dropped += 1
    await forget(db, link_id)
    return None
