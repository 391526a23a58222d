"""a partition's position in two numbers (issue 28): the next offset after what was applied, moved in
the applying transaction, and the offset last committed to Kafka; a fetch between the two is a replay

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stream_positions", sa.Column("committed_offset", sa.BigInteger(), nullable=True))
    # Until now the one number was saved after each commit: it was the committed offset.
    op.execute("UPDATE stream_positions SET committed_offset = next_offset")


def downgrade() -> None:
    op.drop_column("stream_positions", "committed_offset")
