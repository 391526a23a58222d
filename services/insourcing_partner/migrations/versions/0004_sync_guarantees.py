"""delivery receipts, reconciliation and sync health

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from shared.platform.migrations import add_partner_sync_tables, drop_partner_sync_tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_partner_sync_tables(op)
    op.add_column("received_work", sa.Column("rounds", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("received_work", "rounds")
    drop_partner_sync_tables(op)
