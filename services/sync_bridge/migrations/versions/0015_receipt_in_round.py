"""the round under way when the bridge passed a mirror's receipt on (issue 28): a receipt passed on after
a round's questions is in flight for that round, not lost

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("item_mirrors", sa.Column("receipt_in_round", sa.String(36), nullable=True))


def downgrade() -> None:
    op.drop_column("item_mirrors", "receipt_in_round")
