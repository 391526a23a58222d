"""Alembic plumbing shared by the three services (each keeps its own migrations folder and its own
database), plus the DDL of the tables every service or both partners have in common."""
import asyncio
import base64
import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from shared.platform.inbox import MAX_KEPT_BYTES
from shared.platform.records import escaped, pack_headers, unpack_headers


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str) -> None:
    command.upgrade(alembic_config(migrations_dir, url), "head")


def run_env(target_metadata: sa.MetaData) -> None:
    """The body of every service's migrations/env.py (online mode, async engine). `target_metadata`
    is the service's models' metadata: `alembic check` and autogenerate compare with it."""
    url = context.config.get_main_option("sqlalchemy.url")

    def migrate(connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            await connection.run_sync(migrate)
            await connection.commit()
        await engine.dispose()

    asyncio.run(main())


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    ]


def create_plumbing_tables(op) -> None:
    """Tokens, outbox (with the trigger that wakes the relay), inbox and dead letters."""
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("permissions", postgresql.ARRAY(sa.String(50)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255)),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    # The relay scans only what is left to publish.
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))
    op.execute(
        "CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_notify('outbox', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("key", sa.String(255)),
        sa.Column("event_id", sa.String(36)),
        sa.Column("type", sa.String(100)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("value", sa.LargeBinary),
        sa.Column("parked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_topic"),
    )


def add_dead_letter_handling(op) -> None:
    """Dead letters keep their headers (the signature, for a replay) and who replayed or discarded them."""
    op.add_column("dead_letters", sa.Column("headers", postgresql.JSONB))
    op.add_column("dead_letters", sa.Column("resolved_at", sa.DateTime(timezone=True)))
    op.add_column("dead_letters", sa.Column("resolved_by", sa.String(255)))
    op.add_column("dead_letters", sa.Column("resolution", sa.Text))


def drop_dead_letter_handling(op) -> None:
    for column in ("resolution", "resolved_by", "resolved_at", "headers"):
        op.drop_column("dead_letters", column)


def bound_dead_letters(op) -> None:
    """Dead letters keep at most a prefix of an oversized message, with its size and SHA-256; rows
    parked before keep what they have, and any over the bound are cut to it."""
    op.add_column("dead_letters", sa.Column("size", sa.BigInteger))
    op.add_column("dead_letters", sa.Column("sha256", sa.String(64)))
    op.add_column("dead_letters", sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()))
    op.execute("UPDATE dead_letters SET size = length(value), sha256 = encode(sha256(value), 'hex') "
               "WHERE value IS NOT NULL")
    op.execute(f"UPDATE dead_letters SET value = substring(value FROM 1 FOR {MAX_KEPT_BYTES}), truncated = true "
               f"WHERE length(value) > {MAX_KEPT_BYTES}")


def unbound_dead_letters(op) -> None:
    for column in ("truncated", "sha256", "size"):
        op.drop_column("dead_letters", column)


def keep_records_as_bytes(op) -> None:
    """Dead letters keep a record's key and headers as bytes (a NUL in a key, stored as text, was
    refused by PostgreSQL and wedged the consumer), and are known by their record's fingerprint too,
    so a record at an offset already parked from a topic since made again is parked as well."""
    op.drop_constraint("uq_dead_letters_topic", "dead_letters", type_="unique")
    op.add_column("dead_letters", sa.Column("record_sha256", sa.String(64)))
    op.create_unique_constraint("uq_dead_letters_topic", "dead_letters", ["topic", "partition", "offset", "record_sha256"])
    op.alter_column("dead_letters", "key", type_=sa.LargeBinary, postgresql_using="convert_to(key, 'UTF8')")
    op.add_column("dead_letters", sa.Column("packed_headers", sa.LargeBinary))
    connection = op.get_bind()
    for letter_id, headers in connection.execute(sa.text("SELECT id, headers FROM dead_letters WHERE headers IS NOT NULL")):
        packed = pack_headers([(name, base64.b64decode(value)) for name, value in headers])
        connection.execute(sa.text("UPDATE dead_letters SET packed_headers = :packed WHERE id = :id"),
                           {"packed": packed, "id": letter_id})
    op.drop_column("dead_letters", "headers")
    op.alter_column("dead_letters", "packed_headers", new_column_name="headers")


def keep_records_as_text(op) -> None:
    op.add_column("dead_letters", sa.Column("json_headers", postgresql.JSONB))
    op.add_column("dead_letters", sa.Column("text_key", sa.String(255)))
    connection = op.get_bind()
    for letter_id, key, headers in connection.execute(sa.text("SELECT id, key, headers FROM dead_letters")):
        listed = [[escaped(name), base64.b64encode(value or b"").decode()] for name, value in unpack_headers(headers)]
        connection.execute(sa.text("UPDATE dead_letters SET json_headers = CAST(:listed AS jsonb), text_key = :key "
                                   "WHERE id = :id"),
                           {"listed": json.dumps(listed) if headers is not None else None,
                            "key": escaped(key, 255), "id": letter_id})
    for column in ("headers", "key"):
        op.drop_column("dead_letters", column)
    op.alter_column("dead_letters", "json_headers", new_column_name="headers")
    op.alter_column("dead_letters", "text_key", new_column_name="key")
    op.drop_constraint("uq_dead_letters_topic", "dead_letters", type_="unique")
    op.execute("DELETE FROM dead_letters a USING dead_letters b WHERE a.id > b.id AND a.topic = b.topic "
               "AND a.partition = b.partition AND a.offset = b.offset")
    op.drop_column("dead_letters", "record_sha256")
    op.create_unique_constraint("uq_dead_letters_topic", "dead_letters", ["topic", "partition", "offset"])


def create_stream_positions(op) -> None:
    op.create_table(
        "stream_positions",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def add_partner_sync_tables(op) -> None:
    """Delivery receipts, item versions, mirrors' sources, deletion tombstones and link health."""
    for column in (
        sa.Column("link_id", sa.String(36)),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("delivery_status", sa.String(10)),
        sa.Column("delivery_at", sa.DateTime(timezone=True)),
        sa.Column("delivery_reason", sa.Text),
        sa.Column("source_version", sa.Integer),
        sa.Column("source_hash", sa.String(64)),
    ):
        op.add_column("ticket_items", column)
    op.create_index("ix_ticket_items_pending", "ticket_items", ["ticket_id"],
                    postgresql_where=sa.text("delivery_status = 'pending'"))
    op.add_column("incoming_attachments", sa.Column("source_version", sa.Integer, nullable=False, server_default="1"))
    op.add_column("incoming_attachments", sa.Column("source_hash", sa.String(64)))
    op.create_table(
        "item_deletions",
        sa.Column("item_id", sa.String(36), primary_key=True),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("link_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("delivery_status", sa.String(10), nullable=False),
        sa.Column("delivery_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_item_deletions_ticket_id", "item_deletions", ["ticket_id"])
    op.create_table(
        "link_sync",
        sa.Column("link_id", sa.String(36), primary_key=True),
        *(sa.Column(name, sa.DateTime(timezone=True)) for name in (
            "last_sent_at", "last_received_at", "changed_at", "confirmed_through", "manifest_as_of", "pending_since",
            "last_reconciled_at")),
        sa.Column("in_sync", sa.Boolean),
        sa.Column("requested_at", sa.DateTime(timezone=True)),
        sa.Column("request_reason", sa.Text),
    )
    create_stream_positions(op)


def drop_partner_sync_tables(op) -> None:
    op.drop_table("stream_positions")
    op.drop_table("link_sync")
    op.drop_table("item_deletions")
    op.drop_column("incoming_attachments", "source_hash")
    op.drop_column("incoming_attachments", "source_version")
    op.drop_index("ix_ticket_items_pending", "ticket_items")
    for column in ("source_hash", "source_version", "delivery_reason", "delivery_at", "delivery_status", "version",
                   "link_id"):
        op.drop_column("ticket_items", column)


def create_ticket_tables(op) -> None:
    """The ticket core both partner services have."""
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "ticket_number_counters",
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("last", sa.Integer, nullable=False),
    )
    op.create_table(
        "ticket_items",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
        sa.Column("ticket_id", sa.String(36), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("origin", sa.String(10), nullable=False),
        sa.Column("internal", sa.Boolean, nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("lock", sa.String(16)),
        sa.Column("released", sa.Boolean, nullable=False),
        sa.Column("fields", postgresql.JSONB, nullable=False),
        *_timestamps(),
    )
    op.create_index("ix_ticket_items_ticket_id_kind", "ticket_items", ["ticket_id", "kind", "seq"])
    op.create_table(
        "attachment_contents",
        sa.Column("item_id", sa.String(36), sa.ForeignKey("ticket_items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )


def create_mirror_tables(op) -> None:
    """Staging for attachment mirrors whose chunks are still arriving (both partners)."""
    op.create_table(
        "incoming_attachments",
        sa.Column("mirror_id", sa.String(36), primary_key=True),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("fields", postgresql.JSONB, nullable=False),
        sa.Column("internal", sa.Boolean, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "incoming_chunks",
        sa.Column("mirror_id", sa.String(36), primary_key=True),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def create_notification_table(op) -> None:
    """E-mail notifications, written with the change they announce and sent from this outbox."""
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("to", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("ticket_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_notifications_unsent", "notifications", ["id"], postgresql_where=sa.text("sent_at IS NULL"))


def add_change_points(op) -> None:
    """Every write of a ticket item takes the next number of one sequence, and a deleted item leaves
    its id with the number of its deletion (both partners, issue 28): a reconciliation answer then
    describes only what changed after the point the bridge last kept. Triggers, so that no write
    path can forget it."""
    op.execute("CREATE SEQUENCE ticket_item_changes")
    op.add_column("ticket_items", sa.Column("change_point", sa.BigInteger, nullable=True))
    op.execute("UPDATE ticket_items SET change_point = nextval('ticket_item_changes')")
    op.alter_column("ticket_items", "change_point", nullable=False,
                    server_default=sa.text("nextval('ticket_item_changes')"))
    op.create_index("ix_ticket_items_changes", "ticket_items", ["ticket_id", "change_point"])
    op.create_table(
        "ticket_item_removals",
        sa.Column("item_id", sa.String(36), primary_key=True),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("change_point", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ticket_item_removals_changes", "ticket_item_removals", ["ticket_id", "change_point"])
    op.execute("""
        CREATE FUNCTION ticket_item_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                IF OLD.link_id IS NULL THEN
                    RETURN OLD;  -- never in a link's set: nobody keeps it
                END IF;
                INSERT INTO ticket_item_removals (item_id, ticket_id, change_point)
                VALUES (OLD.id, OLD.ticket_id, nextval('ticket_item_changes'))
                ON CONFLICT (item_id) DO UPDATE SET change_point = excluded.change_point;
                RETURN OLD;
            END IF;
            NEW.change_point := nextval('ticket_item_changes');
            RETURN NEW;
        END $$""")
    op.execute("CREATE TRIGGER ticket_items_change_point BEFORE UPDATE ON ticket_items"
               " FOR EACH ROW EXECUTE FUNCTION ticket_item_changed()")
    op.execute("CREATE TRIGGER ticket_items_removal AFTER DELETE ON ticket_items"
               " FOR EACH ROW EXECUTE FUNCTION ticket_item_changed()")


def drop_change_points(op) -> None:
    op.execute("DROP TRIGGER ticket_items_removal ON ticket_items")
    op.execute("DROP TRIGGER ticket_items_change_point ON ticket_items")
    op.execute("DROP FUNCTION ticket_item_changed()")
    op.drop_table("ticket_item_removals")
    op.drop_index("ix_ticket_items_changes", "ticket_items")
    op.drop_column("ticket_items", "change_point")
    op.execute("DROP SEQUENCE ticket_item_changes")
