"""reconciliation: what the bridge decided, rounds, manifests and repairs

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.platform.migrations import create_stream_positions

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LINK_COLUMNS = [
    sa.Column("request", postgresql.JSONB),
    sa.Column("insourcing_ticket_number", sa.String(32)),
    sa.Column("rounds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("outcome", sa.String(16)),
    sa.Column("approved", sa.Boolean),
    sa.Column("reason", sa.Text),
    sa.Column("round_id", sa.String(36)),
    sa.Column("round_started_at", sa.DateTime(timezone=True)),
    sa.Column("reconcile_due", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_reconciled_at", sa.DateTime(timezone=True)),
    sa.Column("in_sync", sa.Boolean),
    sa.Column("repairs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_repair_at", sa.DateTime(timezone=True)),
    sa.Column("lead_health", postgresql.JSONB),
    sa.Column("insourcing_health", postgresql.JSONB),
]


def upgrade() -> None:
    for column in _LINK_COLUMNS:
        op.add_column("links", column)
    op.create_index("ix_links_reconciling", "links", ["id"], postgresql_where=sa.text("reconcile_due OR round_id IS NOT NULL"))
    op.create_index("ix_item_mirrors_mirror", "item_mirrors", ["link_id", "mirror_id"])
    op.create_table(
        "manifest_parts",
        sa.Column("round_id", sa.String(36), primary_key=True),
        sa.Column("side", sa.String(100), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),
        sa.Column("parts", sa.Integer, nullable=False),
        sa.Column("body", postgresql.JSONB, nullable=False),
    )
    op.create_table(
        "repairs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("link_id", sa.String(36), nullable=False),
        sa.Column("round_id", sa.String(36), nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_repairs_link", "repairs", ["link_id", "id"])
    create_stream_positions(op)


def downgrade() -> None:
    op.drop_table("stream_positions")
    op.drop_table("repairs")
    op.drop_table("manifest_parts")
    op.drop_index("ix_item_mirrors_mirror", "item_mirrors")
    op.drop_index("ix_links_reconciling", "links")
    for column in reversed(_LINK_COLUMNS):
        op.drop_column("links", column.name)
