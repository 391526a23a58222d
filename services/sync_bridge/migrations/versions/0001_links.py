"""link registry and messaging plumbing

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from shared.platform.migrations import create_plumbing_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables(op)
    op.create_table(
        "links",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lead_partner_id", sa.String(100), nullable=False),
        sa.Column("lead_ticket_id", sa.String(36), nullable=False),
        sa.Column("insourcing_partner_id", sa.String(100), nullable=False),
        sa.Column("insourcing_ticket_id", sa.String(36)),
        sa.Column("mirrored_to_lead", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mirrored_to_insourcing", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    raise NotImplementedError("the first migration is not reversible")
