"""an item the bridge passed on during a reconciliation round is in flight for that round, not a
difference

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("item_mirrors", sa.Column("forwarded_in_round", sa.String(36), nullable=True))


def downgrade() -> None:
    op.drop_column("item_mirrors", "forwarded_in_round")
