"""ticket core and messaging plumbing

Revision ID: 0001
Revises:
"""
from alembic import op

from shared.platform.migrations import create_plumbing_tables, create_ticket_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables(op)
    create_ticket_tables(op)


def downgrade() -> None:
    raise NotImplementedError("the first migration is not reversible")
