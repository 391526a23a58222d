"""mirror counts are counted on read, not kept on each link

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("links", "mirrored_to_lead")
    op.drop_column("links", "mirrored_to_insourcing")


def downgrade() -> None:
    op.add_column("links", sa.Column("mirrored_to_insourcing", sa.Integer, nullable=False, server_default="0"))
    op.add_column("links", sa.Column("mirrored_to_lead", sa.Integer, nullable=False, server_default="0"))
